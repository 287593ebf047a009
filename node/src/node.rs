//! The running node: opens the store, starts the network and the HTTP API,
//! starts the consensus engine, and hands them to the driver's shell
//! ([`shell`]), the one loop that writes blocks.

pub use crate::shared::ADMIN_COOKIE;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_chain::{ChainStore, Hash, SecretKey, Store};
use cairn_consensus::{ConsensusEngine, ValidatorId};
use cairn_driver::{Driver, Mempool};
use cairn_genesis::{ConsensusConfig, Genesis, NodeConfig};
use cairn_p2p::BlockSource;
use libp2p::PeerId;
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;
use crate::miner::Miner;
use crate::shared::{write_admin_cookie, Shared};

pub(crate) mod recent;
mod segment;
mod shell;

/// Raft: most blocks a leader has appended but not yet committed. The
/// next block is built on the uncommitted ones, so replication of one block
/// overlaps the building of the next.
const RAFT_PIPELINE: usize = 3;
/// A block request without an answer is given up after this long.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// What the network serves peers from: the store, and the blocks recently
/// sent in consensus messages.
struct StoreSource(Arc<Store>, Arc<Mutex<recent::RecentBlocks>>);

impl BlockSource for StoreSource {
    fn blocks(&self, from: u64, max: u32) -> Vec<Vec<u8>> {
        cairn_driver::serve::blocks(&*self.0, from, max, cairn_p2p::SYNC_RESPONSE_BUDGET)
            .unwrap_or_else(|e| {
                tracing::error!("serving blocks: {e}");
                Vec::new()
            })
    }

    fn blocks_after(&self, locator: &[Hash], max: u32) -> Vec<Vec<u8>> {
        cairn_driver::serve::blocks_after(&*self.0, locator, max, cairn_p2p::SYNC_RESPONSE_BUDGET)
            .unwrap_or_else(|e| {
                tracing::error!("serving blocks: {e}");
                Vec::new()
            })
    }

    fn block_transactions(&self, wanted: &[(Hash, Vec<u32>)]) -> Vec<Vec<u8>> {
        recent::answer(&self.1, &self.0, wanted)
    }
}

fn peer_of(addr: &str) -> Option<PeerId> {
    let ma: libp2p::Multiaddr = addr.parse().ok()?;
    ma.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// What a validator's engine is started with, for [`EngineWrap`].
#[derive(Debug, Clone)]
pub struct EngineContext {
    pub me: ValidatorId,
    pub validators: u32,
    pub key: Option<SecretKey>,
    /// The genesis hash (what consensus signatures cover).
    pub network: Hash,
}

/// Replaces a validator's engine with one built around it. Test binaries
/// use it to run a real node process with a Byzantine engine
/// (`cairn-byzantine`); `cairn-node` never does.
pub type EngineWrap =
    Box<dyn FnOnce(Box<dyn ConsensusEngine>, &EngineContext) -> Box<dyn ConsensusEngine>>;

/// Runs a node from its home directory until SIGINT/SIGTERM.
pub async fn run(home: &Path) -> Result<()> {
    run_with(home, None).await
}

/// [`run`], with the validator's engine replaced by what `wrap` makes of it.
pub async fn run_with(home: &Path, wrap: Option<EngineWrap>) -> Result<()> {
    let config = NodeConfig::load(home)?;
    let genesis_path = NodeConfig::resolve(home, &config.genesis);
    let genesis = Genesis::load(&genesis_path)?;
    let genesis_hash = genesis.hash();
    let (genesis_block, genesis_state) = genesis.build();

    let data_dir = NodeConfig::resolve(home, &config.data_dir);
    let mut store = Store::open(&data_dir)?;
    // Raft and PBFT commit final blocks, never reverted: undo records only
    // where the schedule has proof-of-work.
    store.set_undo(
        genesis
            .segments()
            .iter()
            .any(|s| matches!(s.consensus, ConsensusConfig::Pow(_))),
    );
    let store = Arc::new(store);
    store
        .init_genesis(&genesis_block, &genesis_state)
        .context("this database belongs to another network")?;
    segment::check_history(&genesis, &store)
        .with_context(|| format!("cannot run {}", genesis_path.display()))?;

    let validator_key = match &config.validator_key {
        Some(p) => Some(
            cairn_chain::keyfile::read_key_file(&NodeConfig::resolve(home, p))
                .context("reading the validator key")?,
        ),
        None => None,
    };
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
    // Validators (of every segment of the schedule) and bootstrap peers
    // always find a slot.
    let reserved = genesis
        .segments()
        .iter()
        .flat_map(|s| s.validators)
        .filter_map(|v| peer_of(&v.p2p_address))
        .chain(config.p2p.bootstrap.iter().filter_map(|b| peer_of(b)))
        .collect();
    let recent = Arc::new(Mutex::new(recent::RecentBlocks::default()));
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
        Arc::new(StoreSource(store.clone(), recent.clone())),
    )?;

    let block_max = config.block.max_transactions;
    let segments = segment::Segments {
        genesis: Arc::new(genesis.clone()),
        genesis_hash,
        store: store.clone(),
        key: validator_key.clone(),
        block_max,
        mining: config.mining.enabled,
    };
    let segment_keys = segments.keys();
    let first = segments.start(store.head()?.height + 1)?;
    let open_parent = first.open_parent;
    let (segment, segment_end, me, engine, validator_peers, observer_check) = (
        first.index,
        first.end,
        first.me,
        first.engine,
        first.validator_peers,
        first.observer_check,
    );
    let engine = match (engine, wrap, me) {
        (Some(engine), Some(wrap), Some(me)) => {
            tracing::warn!("this node runs a replaced consensus engine (a test binary)");
            let cx = EngineContext {
                me,
                validators: validator_peers.len() as u32,
                key: validator_key.clone(),
                network: genesis_hash,
            };
            Some(wrap(engine, &cx))
        }
        (engine, _, _) => engine,
    };
    let (mined_tx, mined_rx) = mpsc::unbounded_channel();
    // Miners idle until a proof-of-work segment gives them a template:
    // they start if one is still to come (or running).
    let head_height = store.head()?.height;
    let mines_ahead = genesis.segments().iter().any(|s| {
        matches!(s.consensus, ConsensusConfig::Pow(_)) && s.end.is_none_or(|e| e > head_height + 1)
    });
    let miner = match (mines_ahead, config.mining.enabled) {
        (true, true) => Some(
            Miner::start(config.mining.threads, mined_tx).context("starting the mining threads")?,
        ),
        (_, true) => {
            tracing::warn!(
                "mining is enabled in node.toml, but this network does not use proof-of-work \
                 (any more)"
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

    let status = match engine.as_ref() {
        Some(e) => e.status(),
        None => crate::shared::observer_status(
            genesis
                .segment_at(store.head()?.height + 1)
                .consensus
                .kind()
                .as_str(),
            store.head()?.height,
        ),
    };
    let shared = Arc::new(Shared {
        recent,
        trusted_peers: Default::default(),
        name: config.name.clone(),
        store: store.clone(),
        params: genesis.execution_params(),
        genesis_hash,
        node_id: net.local_peer_id.to_string(),
        validator_key: validator_key.as_ref().map(SecretKey::public_key),
        mempool: Arc::new(Mutex::new(
            Mempool::new(
                genesis.chain_id.clone(),
                config.mempool.max_transactions,
                config.mempool.max_per_sender,
            )
            .with_fee_floor(genesis.min_fee),
        )),
        engine: Mutex::new(status),
        peers: net.peers.clone(),
        metrics: Metrics::new(),
        offer: Notify::new(),
        banned: net.banned.clone(),
        net_commands: net.commands.clone(),
        admin_token: write_admin_cookie(home)?,
        network_dropped: net.dropped_events.clone(),
        sync_busy: net.busy_answers.clone(),
        events: crate::events::Events::default(),
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
    let driver_cfg = cairn_driver::Config {
        genesis_hash,
        params: shared.params.clone(),
        me,
        reward,
        block_max,
        sync_batch: cairn_p2p::MAX_BLOCKS_PER_REQUEST,
        sync_timeout_ms: SYNC_TIMEOUT.as_millis() as u64,
        max_locator: cairn_p2p::MAX_LOCATOR_HASHES,
        push_max: cairn_p2p::MAX_PUSHED_TRANSACTIONS,
    };
    let mut driver = Driver::new(
        driver_cfg,
        store.clone(),
        shared.mempool.clone(),
        engine,
        validator_peers,
    )
    .with_segments(
        segment,
        segment_end,
        Box::new(move |height| segments.start(height).map_err(|e| format!("{e:#}"))),
    )
    .with_open_parent(open_parent);
    if let Some(check) = observer_check {
        driver = driver.with_observer_check(check);
    }
    let mut shell = shell::Shell::new(
        shared.clone(),
        driver,
        validator_key,
        segment_keys,
        net.commands.clone(),
        ingest_tx,
        miner,
    );
    let result = shell.run(net.events, mined_rx).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    tracing::info!("node stopped at height {}", store.head()?.height);
    result
}
