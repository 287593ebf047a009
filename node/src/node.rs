//! The running node: opens the store, starts the network and the HTTP API,
//! and drives the consensus engine in one loop (the only writer of blocks).

use std::collections::{BTreeMap, VecDeque};

use foldhash::{HashMap, HashMapExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use cairn_chain::state::read_account;
use cairn_chain::{
    execute_block, propose_block, Address, Block, ExecutionParams, Hash, Header, Overlay,
    PublicKey, SecretKey, SignatureCheck, Store, Transaction,
};
use cairn_consensus::pow::{header_work, locator_heights, RetargetRule};
use cairn_consensus::raft::{block_term, CommittedHead};
use cairn_consensus::{
    Action, ConsensusEngine, EngineStatus, Input, Pbft, PbftConfig, Pow, PowConfig, Raft,
    RaftConfig, SignedMessage, ValidatorId,
};
use cairn_genesis::{ConsensusConfig, Genesis, NodeConfig};
use cairn_p2p::{BlockSource, Command, Event, GossipId, PeerInfo, Topic, Verdict};
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::mempool::Mempool;
use crate::metrics::Metrics;
use crate::miner::Miner;

mod pow;

/// How long without a committed transaction before an idle node gives
/// memory back.
const IDLE_RELEASE: Duration = Duration::from_secs(10);
/// How often a node looks for transactions to gossip again, which ones
/// (pending at least this long since last gossiped) and how many at most
/// (see [`Mempool::rebroadcast`]). Blocks come every 100 ms (Raft, PBFT) or
/// 2 s (proof-of-work): a transaction a block could take that is still
/// pending after 10 s has likely been missed by the block builder.
const REBROADCAST_EVERY: Duration = Duration::from_secs(5);
const REBROADCAST_AFTER: Duration = Duration::from_secs(10);
const MAX_REBROADCAST: usize = 20_000;
/// How long a transaction may wait behind a nonce gap before it is dropped.
const WAITING_LIFETIME: Duration = Duration::from_secs(10 * 60);
/// The largest block announcement (a header) accepted.
const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;
/// Most block origins remembered (to penalise or ask the sender).
const MAX_ORIGINS: usize = 10_000;
/// Raft: most blocks a leader has appended but not yet committed. The
/// next block is built on the uncommitted ones, so replication of one block
/// overlaps the building of the next.
const RAFT_PIPELINE: usize = 3;

/// Everything the HTTP API reads, shared with the driver.
#[derive(Debug)]
pub struct Shared {
    pub name: String,
    pub store: Arc<Store>,
    pub genesis: Genesis,
    pub genesis_hash: Hash,
    pub params: ExecutionParams,
    pub node_id: String,
    pub validator: Option<ValidatorId>,
    pub mempool: Mutex<Mempool>,
    pub engine: Mutex<EngineStatus>,
    pub peers: Arc<Mutex<Vec<PeerInfo>>>,
    pub metrics: Metrics,
    /// New transactions entered the mempool (API or gossip): the driver
    /// tells the engine on its next tick.
    pub offer_due: AtomicBool,
    /// Peers blocked by the operator or for misbehaviour.
    pub banned: Arc<Mutex<Vec<String>>>,
    /// Admin commands for the network (block and unblock peers).
    pub net_commands: mpsc::Sender<Command>,
    /// The admin API's bearer token (also in [`ADMIN_COOKIE`]).
    pub admin_token: String,
    /// Events the network task dropped (its queue to the driver was full).
    pub network_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Sync requests this node answered "busy" (over a peer's quota).
    pub sync_busy: Arc<std::sync::atomic::AtomicU64>,
}

/// The file in a node's home that holds the admin API's token, written
/// afresh (mode 0600) at every start, like bitcoind's `.cookie`.
pub const ADMIN_COOKIE: &str = "admin.cookie";

/// Writes a fresh random admin token to `home/admin.cookie`, readable by
/// the node's user only, and returns it.
fn write_admin_cookie(home: &Path) -> Result<String> {
    use rand::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let path = home.join(ADMIN_COOKIE);
    // A file left by another user or with wider rights is replaced, not
    // reused: the new one is created with mode 0600.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    Ok(token)
}

struct StoreSource(Arc<Store>);

impl BlockSource for StoreSource {
    fn blocks(&self, from: u64, max: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for h in from..from.saturating_add(u64::from(max)) {
            let Ok(Some(b)) = self.0.block_at(h) else {
                break;
            };
            let encoded = b.encode();
            bytes += encoded.len();
            out.push(encoded);
            if bytes >= cairn_p2p::SYNC_RESPONSE_BUDGET {
                break;
            }
        }
        out
    }

    fn blocks_after(&self, locator: &[Hash], max: u32) -> Vec<Vec<u8>> {
        for hash in locator {
            let Ok(Some(header)) = self.0.header(hash) else {
                continue;
            };
            if self.0.hash_at(header.height).ok().flatten() == Some(*hash) {
                return self.blocks(header.height + 1, max);
            }
        }
        Vec::new()
    }
}

/// The block locator of the store's canonical chain.
fn store_locator(store: &Store) -> Result<Vec<Hash>> {
    let head = store.head()?.height;
    let mut out = Vec::new();
    for h in locator_heights(head, 0) {
        if let Some(hash) = store.hash_at(h)? {
            out.push(hash);
        }
    }
    Ok(out)
}

/// Starts the proof-of-work engine from the store: the recent headers it
/// needs and the head's cumulative work (summed over the whole chain).
fn start_pow(store: &Store, p: &cairn_genesis::PowParams, mining: bool) -> Result<Pow> {
    let rule = RetargetRule {
        target_block_time_ms: p.target_block_time_ms,
        initial_difficulty: p.initial_difficulty,
        min_difficulty: p.min_difficulty,
        window: p.retarget_window,
    };
    let head = store.head()?.height;
    let keep_from = head.saturating_sub(Pow::headers_needed(&rule));
    let mut work: u128 = 0;
    let mut recent = Vec::new();
    for h in 0..=head {
        let hash = store
            .hash_at(h)?
            .with_context(|| format!("the store has no block at height {h}"))?;
        let header = store
            .header(&hash)?
            .with_context(|| format!("the store has no header {hash}"))?;
        work += u128::from(header_work(&header));
        if h >= keep_from {
            recent.push(header);
        }
    }
    let cfg = PowConfig {
        rule,
        max_future_drift_ms: p.max_future_drift_ms,
        mining,
        template_refresh_ms: 1_000,
        max_orphans: 1_024,
        max_side_bytes: cairn_consensus::pow::MAX_SIDE_BYTES,
    };
    Ok(Pow::new(cfg, &recent, work))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn peer_of(addr: &str) -> Option<PeerId> {
    let ma: libp2p::Multiaddr = addr.parse().ok()?;
    ma.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// Runs a node from its home directory until SIGINT/SIGTERM.
pub async fn run(home: &Path) -> Result<()> {
    let config = NodeConfig::load(home)?;
    let genesis_path = NodeConfig::resolve(home, &config.genesis);
    let genesis = Genesis::load(&genesis_path)?;
    let genesis_hash = genesis.hash();
    let (genesis_block, genesis_state) = genesis.build();

    let data_dir = NodeConfig::resolve(home, &config.data_dir);
    let mut store = Store::open(&data_dir)?;
    // Raft and PBFT commit final blocks, never reverted: no undo records.
    store.set_undo(matches!(genesis.consensus, ConsensusConfig::Pow(_)));
    let store = Arc::new(store);
    store
        .init_genesis(&genesis_block, &genesis_state)
        .context("this database belongs to another network")?;

    let validator_key = match &config.validator_key {
        Some(p) => Some(
            cairn_chain::keyfile::read_key_file(&NodeConfig::resolve(home, p))
                .context("reading the validator key")?,
        ),
        None => None,
    };
    let validator_keys: Vec<PublicKey> = genesis.validators.iter().map(|v| v.public_key).collect();
    let me = validator_key.as_ref().and_then(|k| {
        validator_keys
            .iter()
            .position(|p| *p == k.public_key())
            .map(|i| i as ValidatorId)
    });

    let p2p_path = NodeConfig::resolve(home, &config.p2p_key);
    let p2p_secret =
        cairn_chain::keyfile::read_key_file(&p2p_path).context("reading the p2p key")?;
    let keypair = cairn_p2p::Keypair::ed25519_from_bytes(p2p_secret.seed())
        .context("deriving the libp2p identity")?;
    let listen = config
        .p2p
        .listen
        .parse()
        .with_context(|| format!("p2p.listen {:?} is not a multiaddr", config.p2p.listen))?;
    let mut bootstrap = Vec::new();
    for b in &config.p2p.bootstrap {
        bootstrap.push(
            b.parse()
                .with_context(|| format!("p2p.bootstrap {b:?} is not a multiaddr"))?,
        );
    }
    let validator_peers: Vec<Option<PeerId>> = genesis
        .validators
        .iter()
        .map(|v| peer_of(&v.p2p_address))
        .collect();
    // Validators and bootstrap peers always find a slot.
    let reserved = validator_peers
        .iter()
        .flatten()
        .copied()
        .chain(config.p2p.bootstrap.iter().filter_map(|b| peer_of(b)))
        .collect();
    let net = cairn_p2p::start(
        cairn_p2p::Config {
            keypair,
            listen,
            bootstrap,
            genesis_hash,
            max_peers: config.p2p.max_peers,
            reserved,
            agent: format!("cairn-node/{}", env!("CARGO_PKG_VERSION")),
        },
        Arc::new(StoreSource(store.clone())),
    )?;

    let block_max = config.block.max_transactions;
    let engine: Option<Box<dyn ConsensusEngine>> = match (&genesis.consensus, me) {
        // Every proof-of-work node follows the most-work chain, validator
        // key or not.
        (ConsensusConfig::Pow(p), _) => {
            Some(Box::new(start_pow(&store, p, config.mining.enabled)?))
        }
        (_, None) => None,
        (ConsensusConfig::Raft(p), Some(me)) => {
            let head = store.head()?;
            let persisted: BTreeMap<Vec<u8>, Vec<u8>> =
                store.engine_entries()?.into_iter().collect();
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&genesis_hash.0[..8]);
            let cfg = RaftConfig {
                me,
                validators: validator_keys.len() as u32,
                election_timeout_ms: p.election_timeout_ms,
                heartbeat_ms: p.heartbeat_ms,
                block_interval_ms: p.block_interval_ms,
                empty_blocks: p.empty_blocks,
                full_block: block_max,
                // The driver reports what remains ready after each block
                // built and each commit, net of the blocks in flight.
                max_uncommitted: RAFT_PIPELINE,
                // Differs per node and per start: a restarted node must not
                // replay the same timeouts as before its crash.
                seed: u64::from_le_bytes(seed) ^ now_ms(),
            };
            let committed = CommittedHead {
                index: head.height,
                term: block_term(&head.engine_data),
                hash: head.hash(),
            };
            Some(Box::new(Raft::new(cfg, committed, &persisted)))
        }
        (ConsensusConfig::Pbft(p), Some(me)) => {
            let head = store.head()?;
            let persisted: BTreeMap<Vec<u8>, Vec<u8>> =
                store.engine_entries()?.into_iter().collect();
            let Some(key) = validator_key.clone() else {
                bail!("a PBFT validator needs its validator key");
            };
            let cfg = PbftConfig {
                me,
                validators: validator_keys.clone(),
                key,
                network: genesis_hash,
                block_interval_ms: p.block_interval_ms,
                view_timeout_ms: p.view_timeout_ms,
                empty_blocks: p.empty_blocks,
                full_block: block_max,
            };
            Some(Box::new(Pbft::new(cfg, &head, &persisted)))
        }
    };
    let (mined_tx, mined_rx) = mpsc::unbounded_channel();
    let miner = match (&genesis.consensus, config.mining.enabled) {
        (ConsensusConfig::Pow(_), true) => Some(
            Miner::start(config.mining.threads, mined_tx).context("starting the mining threads")?,
        ),
        (_, true) => {
            tracing::warn!(
                "mining is enabled in node.toml, but this network does not use proof-of-work"
            );
            None
        }
        _ => None,
    };
    let reward = config
        .mining
        .reward_address
        .or(validator_key.as_ref().map(SecretKey::address))
        .unwrap_or(cairn_chain::Address::ZERO);

    let status = engine.as_ref().map(|e| e.status()).unwrap_or(EngineStatus {
        engine: genesis.consensus.kind().as_str(),
        role: "observer",
        term: 0,
        leader: None,
        committed_height: store.head()?.height,
        uncommitted: 0,
        view_changes: 0,
        dropped_messages: 0,
        rejected_messages: 0,
        pow: None,
    });
    let is_pow = matches!(genesis.consensus, ConsensusConfig::Pow(_));
    let pipelined = matches!(genesis.consensus, ConsensusConfig::Raft(_));
    let shared = Arc::new(Shared {
        name: config.name.clone(),
        store: store.clone(),
        params: genesis.execution_params(),
        genesis_hash,
        node_id: net.local_peer_id.to_string(),
        validator: me,
        mempool: Mutex::new(
            Mempool::new(
                genesis.chain_id.clone(),
                config.mempool.max_transactions,
                config.mempool.max_per_sender,
            )
            .with_fee_floor(genesis.min_fee),
        ),
        engine: Mutex::new(status),
        peers: net.peers.clone(),
        metrics: Metrics::new(),
        offer_due: AtomicBool::new(false),
        banned: net.banned.clone(),
        net_commands: net.commands.clone(),
        admin_token: write_admin_cookie(home)?,
        network_dropped: net.dropped_events.clone(),
        sync_busy: net.busy_answers.clone(),
        genesis,
    });

    let listener = tokio::net::TcpListener::bind(config.rpc.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.rpc.listen))?;
    tracing::info!(
        name = %config.name,
        chain = %shared.genesis.chain_id,
        genesis = %genesis_hash,
        peer_id = %net.local_peer_id,
        validator = ?me,
        height = store.head()?.height,
        "node started; HTTP API on http://{}",
        config.rpc.listen
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let api = crate::api::router(shared.clone());
    let limits = crate::http::Limits {
        max_connections: config.rpc.max_connections,
        header_timeout: Duration::from_millis(config.rpc.header_timeout_ms),
        request_timeout: Duration::from_millis(config.rpc.request_timeout_ms),
    };
    let refused = {
        let shared = shared.clone();
        move || {
            shared.metrics.http_refused.inc();
        }
    };
    let server = tokio::spawn(crate::http::serve(
        listener,
        api,
        limits,
        stop_rx.clone(),
        refused,
    ));

    let (ingest_tx, ingest_rx) = std::sync::mpsc::sync_channel(crate::ingest::QUEUE);
    let _ingest = crate::ingest::spawn(shared.clone(), ingest_rx)
        .context("starting the transaction admission thread")?;
    let mut driver = Driver {
        shared: shared.clone(),
        engine,
        key: validator_key,
        me,
        validator_keys,
        validator_peers,
        net_cmd: net.commands.clone(),
        ingest: ingest_tx,
        syncing: None,
        miner,
        reward,
        is_pow,
        origins: HashMap::new(),
        sync_locator: Vec::new(),
        last_commit: Instant::now(),
        memory_released: true,
        last_rebroadcast: Instant::now(),
        executed: VecDeque::new(),
        in_flight: Vec::new(),
        pipelined,
        block_max,
    };
    let result = driver.run(net.events, mined_rx).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    tracing::info!("node stopped at height {}", store.head()?.height);
    result
}

struct Driver {
    shared: Arc<Shared>,
    engine: Option<Box<dyn ConsensusEngine>>,
    key: Option<SecretKey>,
    me: Option<ValidatorId>,
    validator_keys: Vec<PublicKey>,
    validator_peers: Vec<Option<PeerId>>,
    net_cmd: mpsc::Sender<Command>,
    /// Gossiped transactions go to the admission thread.
    ingest: std::sync::mpsc::SyncSender<crate::ingest::Payload>,
    /// The peer a sync request is in flight to, and since when.
    syncing: Option<(PeerId, Instant)>,
    /// Proof-of-work: the mining threads (if this node mines), where
    /// rewards go, who sent each recent block, and the locator of the
    /// block fetch in flight.
    miner: Option<Miner>,
    reward: cairn_chain::Address,
    is_pow: bool,
    origins: HashMap<Hash, PeerId>,
    sync_locator: Vec<Hash>,
    /// When a block with transactions was last committed (proof-of-work
    /// keeps mining empty blocks when idle), and whether memory was given
    /// back since (see [`Driver::release_memory_when_idle`]).
    last_commit: Instant,
    memory_released: bool,
    last_rebroadcast: Instant,
    /// The executions of the last blocks this node built or validated, by
    /// hash: committing (or building on) such a block does not execute it
    /// again.
    executed: VecDeque<(Hash, cairn_chain::Executed)>,
    /// Blocks this node built that are not committed yet, with their
    /// transaction counts: those transactions are still in the mempool but
    /// no longer ready for the next block.
    in_flight: Vec<(Hash, usize)>,
    /// Whether the engine builds blocks on uncommitted ones (Raft).
    pipelined: bool,
    /// Most transactions in a block this node builds (`[block]` in
    /// `node.toml`).
    block_max: usize,
}

impl Driver {
    async fn run(
        &mut self,
        mut events: mpsc::Receiver<Event>,
        mut mined: mpsc::UnboundedReceiver<Block>,
    ) -> Result<()> {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
                _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                _ = tick.tick() => self.on_tick().await?,
                Some(block) = mined.recv() => self.on_mined(block).await?,
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await?,
                    None => bail!("the network task stopped"),
                },
            }
        }
        Ok(())
    }

    async fn command(&self, cmd: Command) {
        let _ = self.net_cmd.send(cmd).await;
    }

    /// Gossips transactions in batches (one message and one libp2p
    /// signature per batch, not per transaction).
    async fn gossip_transactions(&self, txs: &[Transaction]) {
        for chunk in txs.chunks(cairn_p2p::MAX_GOSSIP_BATCH) {
            self.command(Command::Publish {
                topic: Topic::Transactions,
                data: cairn_chain::codec::encode(chunk),
            })
            .await;
        }
    }

    /// Penalising is never worth waiting for: dropped if the network task
    /// is that far behind.
    async fn penalize(&self, peer: PeerId, reason: String) {
        let _ = self.net_cmd.try_send(Command::Penalize { peer, reason });
    }

    /// Tells the network what a gossip message turned out to be (forwarded
    /// if accepted, its deliverer penalised if rejected).
    fn judge(&self, peer: PeerId, id: Option<GossipId>, verdict: Verdict) {
        let _ = self.net_cmd.try_send(Command::Judge { peer, id, verdict });
    }

    async fn on_tick(&mut self) -> Result<()> {
        // Once per tick, however many submissions and gossip batches came
        // in: counting what is ready walks the pending senders.
        if self.shared.offer_due.swap(false, Ordering::AcqRel) {
            self.offer_transactions().await?;
        }
        self.release_memory_when_idle();
        if self.last_rebroadcast.elapsed() >= REBROADCAST_EVERY {
            self.last_rebroadcast = Instant::now();
            self.rebroadcast().await;
        }
        // The driver's own heap (this thread is no runtime worker).
        cairn_allocator::collect_if_requested();
        if let Some((_, since)) = self.syncing {
            if since.elapsed() > Duration::from_secs(30) {
                self.syncing = None;
            }
        }
        self.feed(Input::Tick).await
    }

    /// Gossips again the pending transactions a block could take that
    /// stayed pending (see [`Mempool::rebroadcast`]).
    async fn rebroadcast(&mut self) {
        let (txs, expired) = match self.shared.mempool.lock() {
            Ok(mut pool) => {
                let now = Instant::now();
                let expired = pool.expire_waiting(now, WAITING_LIFETIME);
                (
                    pool.rebroadcast(now, REBROADCAST_AFTER, MAX_REBROADCAST),
                    expired,
                )
            }
            Err(_) => return,
        };
        if expired > 0 {
            tracing::info!(
                expired,
                "dropped transactions that waited {} minutes behind a nonce gap",
                WAITING_LIFETIME.as_secs() / 60
            );
            self.shared.metrics.expired.inc_by(expired as u64);
        }
        if !txs.is_empty() {
            tracing::debug!("gossiping {} pending transactions again", txs.len());
            self.shared.metrics.rebroadcast.inc_by(txs.len() as u64);
            self.gossip_transactions(&txs).await;
        }
    }

    /// After a load, a node that has committed no transaction for a while
    /// gives its memory back (in the background): RocksDB's memtables are
    /// flushed, the state cache emptied, then mimalloc's free pages
    /// returned. Without it a node keeps its peak size for ever.
    fn release_memory_when_idle(&mut self) {
        if self.memory_released || self.last_commit.elapsed() < IDLE_RELEASE {
            return;
        }
        self.memory_released = true;
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.release_memory() {
                tracing::warn!("flushing memtables: {e}");
            }
            // After the caches above are freed, so their pages go too;
            // every other thread of the node as it next goes idle.
            cairn_allocator::request_collect();
        });
    }

    /// What the engine is told is ready (up to a full block; the mempool's
    /// hint, without a store read per sender), less what blocks in flight
    /// already carry.
    fn ready_count(&self) -> Result<usize> {
        let pool = self
            .shared
            .mempool
            .lock()
            .map_err(|_| anyhow::anyhow!("mempool lock"))?;
        let carried: usize = self.in_flight.iter().map(|(_, n)| n).sum();
        Ok(pool
            .ready_hint(self.block_max + carried)
            .saturating_sub(carried))
    }

    /// Keeps an execution for [`Driver::commit`] and [`Driver::build`]:
    /// one per block in flight for a pipelined engine, else the last one.
    fn remember_execution(&mut self, hash: Hash, executed: cairn_chain::Executed) {
        let keep = if self.pipelined { RAFT_PIPELINE + 1 } else { 1 };
        while self.executed.len() >= keep {
            self.executed.pop_front();
        }
        self.executed.push_back((hash, executed));
    }

    fn take_execution(&mut self, hash: &Hash) -> Option<cairn_chain::Executed> {
        let i = self.executed.iter().position(|(h, _)| h == hash)?;
        self.executed.remove(i).map(|(_, ex)| ex)
    }

    async fn offer_transactions(&mut self) -> Result<()> {
        let count = self.ready_count()?;
        if count > 0 {
            self.feed(Input::TransactionsAvailable { count }).await?;
        }
        Ok(())
    }

    async fn on_event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Gossip {
                topic,
                from,
                data,
                id,
            } => match topic {
                Topic::Transactions => {
                    // Dropped when the admission thread is that far behind:
                    // the publishing node keeps them in its own mempool.
                    if let Err(e) = self
                        .ingest
                        .try_send(crate::ingest::Payload { from, data, id })
                    {
                        self.shared.metrics.gossip_dropped.inc();
                        let (std::sync::mpsc::TrySendError::Full(p)
                        | std::sync::mpsc::TrySendError::Disconnected(p)) = e;
                        self.judge(p.from, p.id, Verdict::Ignore);
                    }
                }
                Topic::Consensus => {
                    let verdict = self.on_consensus(&data).await?;
                    self.judge(from, id, verdict);
                }
                Topic::Blocks if self.is_pow => {
                    let verdict = self.on_compact_block(from, &data).await?;
                    self.judge(from, id, verdict);
                }
                // Raft and PBFT announce final blocks by header: a node
                // that learns it is behind syncs the blocks (and their
                // proofs of finality) from the sender.
                Topic::Blocks => {
                    let verdict =
                        match cairn_chain::codec::decode::<Header>(&data, MAX_ANNOUNCEMENT_BYTES) {
                            Ok(header) => {
                                let head = self.shared.store.head()?.height;
                                if header.height > head + 1 {
                                    self.start_sync(from).await;
                                }
                                Verdict::Accept
                            }
                            Err(e) => {
                                Verdict::Reject(format!("undecodable block announcement: {e}"))
                            }
                        };
                    self.judge(from, id, verdict);
                }
            },
            Event::Consensus { from, data } => {
                let verdict = self.on_consensus(&data).await?;
                self.judge(from, None, verdict);
            }
            Event::Blocks { from, blocks } => self.on_blocks(from, blocks).await?,
            Event::SyncFailed { peer } => {
                if self.syncing.map(|(p, _)| p) == Some(peer) {
                    self.syncing = None;
                }
            }
            // A peer that (re)connects may have missed the gossip of what
            // is pending here — a restarted primary would have nothing to
            // propose: push it.
            Event::PeerConnected(peer) => {
                // (Pending transactions are pushed below, as one batch.)
                // Proof-of-work: ask a new peer for what follows our chain
                // (it may have mined while we were apart).
                if self.is_pow && self.syncing.is_none() {
                    self.fetch_after(peer, store_locator(&self.shared.store)?)
                        .await;
                }
                let pending: Vec<Transaction> = self
                    .shared
                    .mempool
                    .lock()
                    .map(|p| p.pending(cairn_p2p::MAX_PUSHED_TRANSACTIONS))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    let txs = vec![cairn_chain::codec::encode(&pending)];
                    self.command(Command::SendTransactions { peer, txs }).await;
                }
            }
            // `/peers` and `/metrics` read the swarm task's peer list.
            Event::PeerDisconnected(_) => {}
        }
        Ok(())
    }

    /// A consensus message, by gossip or sent directly: accepted (and
    /// forwarded, if gossiped) once its validator signature checks out.
    async fn on_consensus(&mut self, data: &[u8]) -> Result<Verdict> {
        let opened = SignedMessage::decode(data)
            .and_then(|m| m.open(&self.shared.genesis_hash, &self.validator_keys));
        match opened {
            Ok((sender, msg)) => {
                if Some(sender) != self.me {
                    self.feed(Input::Message { from: sender, msg }).await?;
                }
                Ok(Verdict::Accept)
            }
            Err(e) => {
                self.shared.metrics.unauthenticated.inc();
                Ok(Verdict::Reject(format!("invalid consensus message: {e}")))
            }
        }
    }

    async fn start_sync(&mut self, peer: PeerId) {
        if self.syncing.is_some() || !self.validator_peers.contains(&Some(peer)) {
            return;
        }
        let from = match self.shared.store.head() {
            Ok(h) => h.height + 1,
            Err(_) => return,
        };
        tracing::info!(%peer, from, "syncing blocks");
        self.syncing = Some((peer, Instant::now()));
        self.command(Command::GetBlocks {
            peer,
            from,
            max: cairn_p2p::MAX_BLOCKS_PER_REQUEST,
        })
        .await;
    }

    /// Imports final blocks a validator peer sent. Raft tolerates crashes,
    /// not lies: blocks are taken from validator peers only, and each must
    /// extend the head and execute to its state root.
    async fn on_blocks(&mut self, from: PeerId, blocks: Vec<Vec<u8>>) -> Result<()> {
        if self.syncing.map(|(p, _)| p) != Some(from) {
            return Ok(());
        }
        if self.is_pow {
            return self.on_pow_blocks(from, blocks).await;
        }
        self.syncing = None;
        let full = blocks.len() as u32 >= cairn_p2p::MAX_BLOCKS_PER_REQUEST;
        let mut imported = 0;
        for data in blocks {
            let block = match Block::decode(&data) {
                Ok(b) => b,
                Err(e) => {
                    self.penalize(from, format!("undecodable synced block: {e}"))
                        .await;
                    return Ok(());
                }
            };
            let head = self.shared.store.head()?;
            if block.header.height <= head.height {
                continue;
            }
            if let Err(e) = self.verify_final(&block) {
                self.penalize(from, format!("synced block without proof of finality: {e}"))
                    .await;
                return Ok(());
            }
            if let Err(e) = self.commit(&head, &block) {
                self.penalize(from, format!("invalid synced block: {e}"))
                    .await;
                return Ok(());
            }
            imported += 1;
            self.feed(Input::Committed {
                height: block.header.height,
                hash: block.hash(),
                engine_data: block.header.engine_data.clone(),
            })
            .await?;
        }
        if imported > 0 {
            tracing::info!(
                imported,
                height = self.shared.store.head()?.height,
                "synced"
            );
        }
        if full && imported > 0 {
            self.start_sync(from).await;
        }
        Ok(())
    }

    /// Whether a synced block proves its finality: by the engine's rule on
    /// a validator, and on an observer (no engine) by the same check of a
    /// PBFT commit certificate against the genesis validators. Raft's
    /// blocks carry no proof (its validators are trusted not to lie) and
    /// are taken from validator peers only.
    fn verify_final(&self, block: &Block) -> Result<(), String> {
        match (&self.engine, &self.shared.genesis.consensus) {
            (Some(engine), _) => engine.verify_final(block),
            (None, ConsensusConfig::Pbft(_)) => cairn_consensus::pbft::verify_final_block(
                &self.shared.genesis_hash,
                &self.validator_keys,
                block,
            ),
            (None, _) => Ok(()),
        }
    }

    /// Executes a proposed block on the head's state without storing it.
    fn validate(&mut self, block: &Block) -> Result<()> {
        let head = self.shared.store.head()?;
        let executed = self.execute(&head, block)?;
        self.remember_execution(block.hash(), executed);
        Ok(())
    }

    /// Executes `block` on `head`'s state. Mempool transactions were
    /// verified on entry; the others are checked in one batch, then the
    /// block executes without checking signatures again.
    fn execute(&self, head: &Header, block: &Block) -> Result<cairn_chain::Executed> {
        let unverified: Vec<Transaction> = {
            let pool = self
                .shared
                .mempool
                .lock()
                .map_err(|_| anyhow::anyhow!("mempool lock"))?;
            block
                .transactions
                .iter()
                .filter(|tx| !pool.contains(&tx.hash()))
                .cloned()
                .collect()
        };
        if let Err((i, e)) =
            cairn_chain::verify_transactions(&unverified, &self.shared.genesis_hash)
        {
            bail!(
                "transaction {} has a bad signature: {e}",
                unverified[i].hash()
            );
        }
        Ok(execute_block(
            &*self.shared.store,
            &self.shared.params,
            head,
            block,
            SignatureCheck::AlreadyVerified,
        )?)
    }

    /// Executes and commits a block on `head` (validating it fully).
    fn commit(&mut self, head: &Header, block: &Block) -> Result<()> {
        let hash = block.hash();
        // A block built or validated here on this very head executes to the
        // same changes: reuse them.
        let cached = self.take_execution(&hash);
        let executed = match cached {
            Some(ex) if block.header.parent == head.hash() => ex,
            _ => self.execute(head, block)?,
        };
        let store = &self.shared.store;
        store.commit_block(block, &executed.changes)?;
        self.prune_senders(&block.transactions)?;
        if !block.transactions.is_empty() {
            self.last_commit = Instant::now();
            self.memory_released = false;
        }
        let m = &self.shared.metrics;
        m.height.set(block.header.height as i64);
        m.finalized.set(block.header.height as i64);
        m.blocks.inc();
        m.transactions.inc_by(block.transactions.len() as u64);
        tracing::info!(
            height = block.header.height,
            hash = %block.hash(),
            txs = block.transactions.len(),
            "committed block"
        );
        Ok(())
    }

    /// Brings the mempool's view of the senders of `txs` up to the store's
    /// head (their nonces and balances moved: a commit, or a revert), and
    /// drops what can no longer be included.
    pub(super) fn prune_senders(&self, txs: &[Transaction]) -> Result<()> {
        let senders: std::collections::BTreeSet<_> = txs.iter().map(Transaction::sender).collect();
        let mut next_nonces = Vec::with_capacity(senders.len());
        for s in senders {
            let account = read_account(&*self.shared.store, &s)?.unwrap_or_default();
            next_nonces.push((s, account.nonce, account.balance));
        }
        if let Ok(mut pool) = self.shared.mempool.lock() {
            pool.prune(next_nonces);
        }
        Ok(())
    }

    /// Hands one input to the engine and carries out its actions (and the
    /// inputs those produce) in order.
    async fn feed(&mut self, input: Input) -> Result<()> {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            // Wall-clock time: proof-of-work compares it with block
            // timestamps; the other engines only measure intervals.
            let now_ms = now_ms();
            let Some(engine) = self.engine.as_mut() else {
                return Ok(());
            };
            let actions = engine.handle(now_ms, input);
            for action in actions {
                queue.extend(self.act(action).await?);
            }
        }
        if let Some(engine) = &self.engine {
            let st = engine.status();
            // Nothing in flight, or no longer leading: the blocks this node
            // built are committed or gone.
            if st.uncommitted == 0 || st.leader != self.me {
                self.in_flight.clear();
            }
            self.shared.metrics.set_engine(&st);
            if let Ok(mut s) = self.shared.engine.lock() {
                *s = st;
            }
        }
        Ok(())
    }

    fn sign(&self, msg: &cairn_consensus::ConsensusMessage) -> Option<Vec<u8>> {
        let (me, key) = (self.me?, self.key.as_ref()?);
        Some(SignedMessage::sign(&self.shared.genesis_hash, me, key, msg).encode())
    }

    async fn act(&mut self, action: Action) -> Result<Vec<Input>> {
        match action {
            Action::Send { to, msg } => {
                if let (Some(data), Some(Some(peer))) =
                    (self.sign(&msg), self.validator_peers.get(to as usize))
                {
                    self.command(Command::SendConsensus { peer: *peer, data })
                        .await;
                }
            }
            Action::Broadcast { msg } => {
                if let Some(data) = self.sign(&msg) {
                    self.command(Command::Publish {
                        topic: Topic::Consensus,
                        data,
                    })
                    .await;
                }
            }
            Action::Persist(writes) => {
                // Durable before any later Send (the engine's contract).
                self.shared.store.engine_write(&writes)?;
            }
            Action::BuildBlock {
                parent,
                height,
                engine_data,
                uncommitted,
            } => {
                // A block that cannot be built is logged and not answered,
                // as the engine contract says: only a failed commit stops
                // the node. (A mining node's fork choice can ask for a build
                // on a peer's block that, in the same batch of actions,
                // turned out not to execute.)
                let block = match self.build(parent, height, engine_data, &uncommitted) {
                    Ok(block) => block,
                    Err(e) => {
                        tracing::warn!(%parent, height, "cannot build a block: {e:#}");
                        return Ok(Vec::new());
                    }
                };
                if !self.pipelined {
                    return Ok(vec![Input::BlockBuilt { block }]);
                }
                // Raft builds the next block while this one replicates: it
                // needs to know what is left for it.
                self.in_flight = uncommitted
                    .iter()
                    .chain(std::iter::once(&block))
                    .map(|b| (b.hash(), b.transactions.len()))
                    .collect();
                let count = self.ready_count()?;
                return Ok(vec![
                    Input::BlockBuilt { block },
                    Input::TransactionsAvailable { count },
                ]);
            }
            Action::Commit { blocks } => {
                for block in blocks {
                    let head = self.shared.store.head()?;
                    if block.header.height <= head.height {
                        continue;
                    }
                    // A committed block that does not apply means this node's
                    // state is wrong: stop rather than diverge.
                    self.commit(&head, &block).with_context(|| {
                        format!("cannot apply final block {}", block.header.height)
                    })?;
                    let hash = block.hash();
                    self.in_flight.retain(|(h, _)| *h != hash);
                    self.command(Command::Publish {
                        topic: Topic::Blocks,
                        data: cairn_chain::codec::encode(&block.header),
                    })
                    .await;
                }
                let count = self.ready_count()?;
                return Ok(vec![Input::TransactionsAvailable { count }]);
            }
            Action::Sync { peer, .. } => {
                if let Some(Some(p)) = self.validator_peers.get(peer as usize).copied() {
                    self.start_sync(p).await;
                }
            }
            Action::SetTimer { .. } => {} // the driver ticks every 20 ms
            Action::ValidateBlock { block } => {
                let hash = block.hash();
                let valid = match self.validate(&block) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(height = block.header.height, %hash, "invalid proposal: {e:#}");
                        false
                    }
                };
                return Ok(vec![Input::BlockValidated { hash, valid }]);
            }
            Action::SetHead { revert, apply } => return self.set_head(revert, apply).await,
            Action::Mine { block } => {
                if let Some(m) = &self.miner {
                    m.set_job(block);
                }
            }
            Action::StopMining => {
                if let Some(m) = &self.miner {
                    m.stop();
                }
            }
            Action::FetchBlocks { hash, locator } => {
                if let Some(peer) = self.origins.get(&hash).copied() {
                    let busy = self
                        .syncing
                        .is_some_and(|(_, since)| since.elapsed() < Duration::from_secs(10));
                    if !busy {
                        self.fetch_after(peer, locator).await;
                    }
                }
            }
            Action::RejectBlock { hash, reason } => {
                self.shared.metrics.rejected_blocks.inc();
                tracing::warn!(%hash, "invalid block: {reason}");
                if let Some(peer) = self.origins.get(&hash).copied() {
                    self.penalize(peer, format!("invalid block {hash}: {reason}"))
                        .await;
                }
            }
            Action::Penalize { peer, reason } => {
                tracing::warn!(validator = peer, "misbehaving validator: {reason}");
                if let Some(Some(p)) = self.validator_peers.get(peer as usize).copied() {
                    self.penalize(p, reason).await;
                }
            }
        }
        Ok(Vec::new())
    }

    /// Builds a block on `parent` (the last of `uncommitted`, or the head)
    /// from the mempool.
    fn build(
        &mut self,
        parent: Hash,
        height: u64,
        engine_data: Vec<u8>,
        uncommitted: &[Block],
    ) -> Result<Block> {
        let store = &self.shared.store;
        let params = &self.shared.params;
        let mut overlay = Overlay::new(&**store);
        let mut parent_header = store.head()?;
        for b in uncommitted {
            let hash = b.hash();
            match self.executed.iter().find(|(h, _)| *h == hash) {
                Some((_, ex)) => overlay.apply(&ex.changes),
                None => {
                    let ex = execute_block(
                        &overlay,
                        params,
                        &parent_header,
                        b,
                        SignatureCheck::AlreadyVerified,
                    )?;
                    overlay.apply(&ex.changes);
                }
            }
            parent_header = b.header.clone();
        }
        if parent_header.hash() != parent || parent_header.height + 1 != height {
            bail!(
                "engine asked for a block on {parent} at {height}, the chain ends at {}",
                parent_header.height
            );
        }
        // Senders' nonces after the blocks this one goes on.
        let mut ahead: HashMap<Address, u64> = HashMap::new();
        for tx in uncommitted.iter().flat_map(|b| &b.transactions) {
            let next = ahead.entry(tx.sender()).or_default();
            *next = (*next).max(tx.nonce.saturating_add(1));
        }
        let candidates = {
            let pool = self
                .shared
                .mempool
                .lock()
                .map_err(|_| anyhow::anyhow!("mempool lock"))?;
            pool.ready(self.block_max, |a| ahead.get(a).copied())
        };
        let proposer = self.reward;
        let timestamp = now_ms().max(parent_header.timestamp_ms);
        let proposal = propose_block(
            &overlay,
            params,
            &parent_header,
            proposer,
            timestamp,
            candidates,
            engine_data,
        )?;
        self.remember_execution(proposal.block.hash(), proposal.executed);
        if !proposal.rejected.is_empty() {
            // They no longer apply; kept, they would count as ready (and
            // keep the engine proposing) for ever.
            if let Ok(mut pool) = self.shared.mempool.lock() {
                for (tx, rule) in &proposal.rejected {
                    tracing::info!(hash = %tx.hash(), "dropping a transaction that no longer applies: {rule}");
                    pool.discard(tx);
                }
            }
        }
        Ok(proposal.block)
    }
}
