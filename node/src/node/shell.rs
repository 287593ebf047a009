//! The node's IO shell around the driver: one loop that sleeps until the
//! driver's next wake-up or the next event (network, miners, new
//! transactions, signals), hands each to the driver, and carries out the
//! effects it returns over libp2p, the miners and the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_chain::{codec, Block, ChainStore, CompactBlock, Header, PublicKey, SecretKey, Store};
use cairn_consensus::{SignedMessage, ValidatorId};
use cairn_driver::{Driver, DriverError, Effect};
use cairn_genesis::ConsensusConfig;
use cairn_p2p::{Command, Event, GossipId, Topic, Verdict};
use libp2p::PeerId;
use tokio::sync::mpsc;

use crate::miner::Miner;
use crate::shared::{now_ms, Shared};

mod relay;

/// How long without a committed transaction before an idle node gives
/// memory back.
const IDLE_RELEASE: Duration = Duration::from_secs(10);
/// How often the driver's housekeeping runs (rebroadcast, expiry).
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(cairn_driver::HOUSEKEEPING_EVERY_MS);
/// The largest block announcement (a header) accepted.
const MAX_ANNOUNCEMENT_BYTES: usize = 64 * 1024;
/// The engine hears of new transactions at most this often: counting what
/// is ready walks the pending senders.
const OFFER_EVERY: Duration = Duration::from_millis(20);
/// The longest the loop sleeps with nothing asked for.
const MAX_SLEEP: Duration = Duration::from_secs(1);

pub(super) struct Shell {
    shared: Arc<Shared>,
    driver: Driver<Store, PeerId>,
    key: Option<SecretKey>,
    /// The validator keys of each segment of the consensus schedule.
    segment_keys: Vec<Vec<PublicKey>>,
    /// The segment whose engine runs, and this node's index among its
    /// validators (what outgoing messages are signed as).
    segment: u64,
    me: Option<ValidatorId>,
    net_cmd: mpsc::Sender<Command>,
    /// Gossiped transactions go to the admission thread.
    ingest: std::sync::mpsc::SyncSender<crate::ingest::Payload>,
    miner: Option<Miner>,
    is_pow: bool,
    /// When to tell the engine about new transactions, and when it last was.
    offer_at: Option<Instant>,
    last_offer: Instant,
    /// When a block with transactions was last committed, and whether
    /// memory was given back since (see [`Shell::release_memory_when_idle`]).
    last_commit: Instant,
    memory_released: bool,
    next_housekeeping: Instant,
    /// The driver's counters as last copied to the metrics.
    seen: cairn_driver::Stats,
    /// Consensus messages waiting for transactions from a peer.
    waiting: relay::WaitingMessages,
}

impl Shell {
    pub(super) fn new(
        shared: Arc<Shared>,
        driver: Driver<Store, PeerId>,
        key: Option<SecretKey>,
        segment_keys: Vec<Vec<PublicKey>>,
        net_cmd: mpsc::Sender<Command>,
        ingest: std::sync::mpsc::SyncSender<crate::ingest::Payload>,
        miner: Option<Miner>,
    ) -> Self {
        let now = Instant::now();
        let segment = driver.segment();
        let is_pow = Self::pow_segment(&shared, segment);
        let me = Self::index_in(&segment_keys, segment, key.as_ref());
        let shell = Self {
            shared,
            driver,
            key,
            segment_keys,
            segment,
            me,
            net_cmd,
            ingest,
            miner,
            is_pow,
            offer_at: None,
            last_offer: now,
            last_commit: now,
            memory_released: true,
            next_housekeeping: now + HOUSEKEEPING_EVERY,
            seen: cairn_driver::Stats::default(),
            waiting: relay::WaitingMessages::default(),
        };
        shell.trust_raft_validators();
        shell
    }

    /// Under Raft, transactions gossiped by a validator's node are admitted
    /// without a second signature check (see [`Shared::trusted_peers`]);
    /// set at the start and at every switch of engine.
    fn trust_raft_validators(&self) {
        let peers = self
            .shared
            .genesis
            .segments()
            .get(self.segment as usize)
            .filter(|s| matches!(s.consensus, ConsensusConfig::Raft(_)))
            .map(|s| {
                s.validators
                    .iter()
                    .filter_map(|v| super::peer_of(&v.p2p_address))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(mut trusted) = self.shared.trusted_peers.write() {
            *trusted = peers;
        }
    }

    /// Runs until SIGINT or SIGTERM; an error is what stops the node.
    pub(super) async fn run(
        &mut self,
        mut events: mpsc::Receiver<Event>,
        mut mined: mpsc::UnboundedReceiver<Block>,
    ) -> Result<()> {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let shared = self.shared.clone();
        let effects = self.driver.tick(now_ms());
        self.after(effects).await?;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
                _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                _ = tokio::time::sleep_until(wake.into()) => self.on_wake().await?,
                _ = shared.offer.notified() => {
                    let at = Instant::now().max(self.last_offer + OFFER_EVERY);
                    self.offer_at = Some(self.offer_at.map_or(at, |t| t.min(at)));
                }
                Some(block) = mined.recv() => {
                    self.shared.metrics.mined_blocks.inc();
                    // Announced before it is applied here (execution and
                    // a synced write): every millisecond helps its rivals.
                    self.command(Command::Publish {
                        topic: Topic::Blocks,
                        data: CompactBlock::of(&block).encode(),
                    })
                    .await;
                    let effects = self.driver.mined(now_ms(), block);
                    self.after(effects).await?;
                }
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await?,
                    None => bail!("the network task stopped"),
                },
            }
        }
        Ok(())
    }

    /// The earliest of the driver's wake-up, a pending offer and the
    /// housekeeping.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut wake = self.next_housekeeping.min(now + MAX_SLEEP);
        if let Some(at) = self.driver.wake_at() {
            let ms = at.saturating_sub(now_ms());
            wake = wake.min(now + Duration::from_millis(ms));
        }
        if let Some(at) = self.offer_at {
            wake = wake.min(at);
        }
        wake
    }

    async fn on_wake(&mut self) -> Result<()> {
        let now = Instant::now();
        if self.offer_at.is_some_and(|at| at <= now) {
            self.offer_at = None;
            self.last_offer = now;
            let effects = self.driver.transactions_added(now_ms());
            self.after(effects).await?;
        }
        if self.driver.wake_at().is_some_and(|at| at <= now_ms()) {
            let effects = self.driver.tick(now_ms());
            self.after(effects).await?;
        }
        if self.next_housekeeping <= now {
            self.next_housekeeping = now + HOUSEKEEPING_EVERY;
            let effects = self.driver.housekeeping();
            self.after(effects).await?;
            // Expired (and any other) dropped transactions, for the event
            // stream; taken even with no subscriber, so none goes stale.
            let dropped = self
                .shared
                .mempool
                .lock()
                .map(|mut p| p.take_dropped())
                .unwrap_or_default();
            self.shared.events.dropped(dropped);
            // The loop's own heap (this thread is no runtime worker).
            cairn_allocator::collect_if_requested();
        }
        self.release_memory_when_idle();
        Ok(())
    }

    /// Carries out what a driver call returned and publishes the engine's
    /// status; a driver error stops the node.
    async fn after(
        &mut self,
        effects: std::result::Result<Vec<Effect<PeerId>>, DriverError>,
    ) -> Result<()> {
        let effects = effects.context("the driver stopped")?;
        for effect in effects {
            self.carry(effect).await;
        }
        self.update_metrics();
        Ok(())
    }

    fn update_metrics(&mut self) {
        let m = &self.shared.metrics;
        let s = self.driver.stats().clone();
        m.rejected_blocks
            .inc_by(s.rejected_blocks.saturating_sub(self.seen.rejected_blocks));
        m.reorgs.inc_by(s.reorgs.saturating_sub(self.seen.reorgs));
        if s.reorgs > self.seen.reorgs {
            self.shared.events.reorg(
                s.reverted_blocks.saturating_sub(self.seen.reverted_blocks),
                self.driver.status().map_or(0, |st| st.committed_height),
            );
        }
        m.reverted_blocks
            .inc_by(s.reverted_blocks.saturating_sub(self.seen.reverted_blocks));
        m.rebroadcast
            .inc_by(s.rebroadcast.saturating_sub(self.seen.rebroadcast));
        m.expired
            .inc_by(s.expired.saturating_sub(self.seen.expired));
        self.seen = s;
        if let Some(st) = self.driver.status() {
            m.set_engine(st);
            if let Ok(mut s) = self.shared.engine.lock() {
                self.shared.events.engine(&s, st);
                *s = st.clone();
            }
        }
    }

    /// Whether segment `index` of the schedule is proof-of-work.
    fn pow_segment(shared: &Shared, index: u64) -> bool {
        shared
            .genesis
            .segments()
            .get(index as usize)
            .is_some_and(|s| matches!(s.consensus, ConsensusConfig::Pow(_)))
    }

    /// This node's index among the validators of `segment`, if it is one.
    fn index_in(
        segment_keys: &[Vec<PublicKey>],
        segment: u64,
        key: Option<&SecretKey>,
    ) -> Option<ValidatorId> {
        let public = key?.public_key();
        let keys = segment_keys.get(segment as usize)?;
        keys.iter()
            .position(|k| *k == public)
            .map(|i| i as ValidatorId)
    }

    async fn command(&self, cmd: Command) {
        let _ = self.net_cmd.send(cmd).await;
    }

    /// Penalising is never worth waiting for: dropped if the network task
    /// is that far behind.
    fn penalize(&self, peer: PeerId, reason: String) {
        let _ = self.net_cmd.try_send(Command::Penalize { peer, reason });
    }

    /// Tells the network what a gossip message turned out to be (forwarded
    /// if accepted, its deliverer penalised if rejected).
    fn judge(&self, peer: PeerId, id: Option<GossipId>, verdict: Verdict) {
        let _ = self.net_cmd.try_send(Command::Judge { peer, id, verdict });
    }

    /// Gossips transactions in batches (one message and one libp2p
    /// signature per batch, not per transaction).
    async fn gossip_transactions(&self, txs: &[cairn_chain::Transaction]) {
        for chunk in txs.chunks(cairn_p2p::MAX_GOSSIP_BATCH) {
            self.command(Command::Publish {
                topic: Topic::Transactions,
                data: codec::encode(chunk),
            })
            .await;
        }
    }

    async fn carry(&mut self, effect: Effect<PeerId>) {
        match effect {
            Effect::Send { to, msg } => {
                if let Some(data) = self.sign(&msg) {
                    self.command(Command::SendConsensus { peer: to, data })
                        .await;
                }
            }
            Effect::Broadcast { msg } => {
                if let Some(data) = self.sign(&msg) {
                    self.command(Command::Publish {
                        topic: Topic::Consensus,
                        data,
                    })
                    .await;
                }
            }
            Effect::GetBlocks { peer, from } => {
                self.command(Command::GetBlocks {
                    peer,
                    from,
                    max: cairn_p2p::MAX_BLOCKS_PER_REQUEST,
                })
                .await;
            }
            Effect::GetBlocksAfter { peer, locator } => {
                self.command(Command::GetBlocksAfter { peer, locator })
                    .await;
            }
            Effect::Penalize { peer, reason } => self.penalize(peer, reason),
            Effect::GossipTransactions { txs } => self.gossip_transactions(&txs).await,
            Effect::PushTransactions { peer, txs } => {
                let txs = vec![codec::encode(&txs)];
                self.command(Command::SendTransactions { peer, txs }).await;
            }
            Effect::Mine { block } => {
                if let Some(m) = &self.miner {
                    m.set_job(block);
                }
            }
            Effect::StopMining => {
                if let Some(m) = &self.miner {
                    m.stop();
                }
            }
            Effect::Announce { header } => {
                self.command(Command::Publish {
                    topic: Topic::Blocks,
                    data: codec::encode(&header),
                })
                .await;
            }
            Effect::Built { height, hash } => tracing::debug!(height, %hash, "built a block"),
            Effect::Switched { height } => {
                let segment = self.shared.genesis.segment_at(height);
                self.segment = segment.index as u64;
                self.is_pow = Self::pow_segment(&self.shared, self.segment);
                self.me = Self::index_in(&self.segment_keys, self.segment, self.key.as_ref());
                self.trust_raft_validators();
                self.shared.metrics.switches.inc();
                if self.driver.status().is_none() {
                    if let Ok(mut st) = self.shared.engine.lock() {
                        *st = crate::shared::observer_status(
                            segment.consensus.kind().as_str(),
                            height.saturating_sub(1),
                        );
                    }
                }
                tracing::info!(
                    height,
                    engine = %segment.consensus.kind(),
                    validators = segment.validators.len(),
                    validator = ?self.me,
                    "scheduled switch of consensus"
                );
                self.shared.events.switched(
                    height,
                    segment.consensus.kind().as_str(),
                    segment.validators.len(),
                );
            }
            Effect::Applied { block } => {
                if !block.transactions.is_empty() {
                    self.last_commit = Instant::now();
                    self.memory_released = false;
                }
                let m = &self.shared.metrics;
                m.height.set(block.header.height as i64);
                m.finalized.set(block.header.height as i64);
                m.blocks.inc();
                m.transactions.inc_by(block.transactions.len() as u64);
                let segment = self.shared.genesis.segment_at(block.header.height);
                let mined = matches!(segment.consensus, ConsensusConfig::Pow(_));
                self.shared.events.applied(&block, !mined);
                // A mined block deep enough to count as final in /status.
                if mined && self.shared.events.wanted() {
                    let deep = (block.header.height + 1)
                        .checked_sub(crate::api::POW_FINAL_CONFIRMATIONS)
                        .filter(|h| *h > 0);
                    if let Some(Ok(Some(b))) = deep.map(|h| self.shared.store.block_at(h)) {
                        self.shared
                            .events
                            .confirmed(&b, crate::api::POW_FINAL_CONFIRMATIONS);
                    }
                }
                // New proof-of-work parameters: the same engine goes on,
                // so the driver reports no switch; the first block under
                // them is the switch.
                if segment.index as u64 > self.segment && segment.start == block.header.height {
                    self.segment = segment.index as u64;
                    m.switches.inc();
                    tracing::info!(
                        height = block.header.height,
                        engine = %segment.consensus.kind(),
                        "scheduled switch of consensus parameters"
                    );
                    self.shared.events.switched(
                        block.header.height,
                        segment.consensus.kind().as_str(),
                        segment.validators.len(),
                    );
                }
            }
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
                    let verdict = self.on_consensus(from, &data).await?;
                    self.judge(from, id, verdict);
                }
                Topic::Blocks => {
                    let verdict = self.on_block_gossip(from, &data).await?;
                    self.judge(from, id, verdict);
                }
            },
            Event::Consensus { from, data } => {
                let verdict = self.on_consensus(from, &data).await?;
                self.judge(from, None, verdict);
            }
            Event::Blocks { from, blocks } => {
                let decoded: std::result::Result<Vec<Block>, _> =
                    blocks.iter().map(|d| Block::decode(d)).collect();
                match decoded {
                    Ok(blocks) => {
                        let effects = self.driver.blocks(now_ms(), from, blocks);
                        self.after(effects).await?;
                    }
                    Err(e) => {
                        self.penalize(from, format!("undecodable synced block: {e}"));
                        self.driver.sync_failed(now_ms(), from);
                    }
                }
            }
            Event::SyncFailed { peer } => self.driver.sync_failed(now_ms(), peer),
            Event::BlockTransactions { from, tag, txs } => {
                self.on_block_transactions(from, tag, txs).await?
            }
            Event::PeerConnected(peer) => {
                let effects = self.driver.peer_connected(now_ms(), peer);
                self.after(effects).await?;
            }
            Event::PeerDisconnected(peer) => self.driver.peer_disconnected(peer),
        }
        Ok(())
    }

    /// A consensus message delivered by `origin` (by gossip or sent
    /// directly): accepted (and forwarded, if gossiped) once its validator
    /// signature checks out.
    async fn on_consensus(&mut self, origin: PeerId, data: &[u8]) -> Result<Verdict> {
        let signed = match SignedMessage::decode(data) {
            Ok(m) => m,
            Err(e) => {
                self.shared.metrics.unauthenticated.inc();
                return Ok(Verdict::Reject(format!("invalid consensus message: {e}")));
            }
        };
        // A message of an earlier segment of the schedule is stale, not
        // wrong: its sender may not have heard of the switch yet.
        if signed.segment < self.segment {
            return Ok(Verdict::Ignore);
        }
        // A segment this node's schedule does not have: the sender runs
        // another schedule (or lies). Nothing to check it against, and
        // cheap to drop; not forwarded, nobody blamed.
        let Some(keys) = self.segment_keys.get(signed.segment as usize) else {
            self.shared.metrics.unauthenticated.inc();
            return Ok(Verdict::Ignore);
        };
        let segment = signed.segment;
        match signed.open(&self.shared.genesis_hash, keys) {
            Ok((sender, compact)) => {
                if segment > self.segment {
                    let effects = self.driver.later_segment_heard(now_ms(), origin);
                    self.after(effects).await?;
                } else if self.me.is_some_and(|me| me != sender) {
                    // Only a validator's engine reads the message (and
                    // only then are its blocks worth assembling).
                    self.deliver(origin, sender, segment, compact).await?;
                }
                Ok(Verdict::Accept)
            }
            Err(e) => {
                self.shared.metrics.unauthenticated.inc();
                Ok(Verdict::Reject(format!("invalid consensus message: {e}")))
            }
        }
    }

    /// The blocks topic: compact blocks under proof-of-work; under Raft and
    /// PBFT, final blocks announced by header (a node that learns it is
    /// behind syncs the blocks, and their proofs of finality, from the
    /// sender). Around a scheduled switch both kinds travel, from nodes on
    /// either side of it: neither is blamed for it.
    async fn on_block_gossip(&mut self, from: PeerId, data: &[u8]) -> Result<Verdict> {
        let header = codec::decode::<Header>(data, MAX_ANNOUNCEMENT_BYTES);
        if self.is_pow {
            if let Ok(header) = header {
                // A final block's announcement from a node of an earlier
                // segment, which has not switched yet.
                if (self.shared.genesis.segment_at(header.height).index as u64) < self.segment {
                    return Ok(Verdict::Ignore);
                }
            }
            return self.on_compact_block(from, data).await;
        }
        match header {
            Ok(header) => {
                let effects = self.driver.announced(now_ms(), from, header.height);
                self.after(effects).await?;
                Ok(Verdict::Accept)
            }
            Err(e) => {
                // A block mined after a switch to proof-of-work that this
                // node has not reached: it is behind, and syncs.
                if let Ok(compact) = CompactBlock::decode(data) {
                    let height = compact.header.height;
                    let segment = self.shared.genesis.segment_at(height);
                    // Work at the segment's minimum at the least: a seal
                    // of made-up difficulty 1 costs its sender nothing.
                    let worked = match segment.consensus {
                        ConsensusConfig::Pow(p) => cairn_consensus::pow::check_pow(&compact.header)
                            .is_ok_and(|seal| seal.difficulty >= p.min_difficulty),
                        _ => false,
                    };
                    if segment.index as u64 > self.segment && worked {
                        let effects = self.driver.announced(now_ms(), from, height);
                        self.after(effects).await?;
                        return Ok(Verdict::Ignore);
                    }
                }
                Ok(Verdict::Reject(format!(
                    "undecodable block announcement: {e}"
                )))
            }
        }
    }

    /// A block announced by gossip, as a [`CompactBlock`]: checked for its
    /// proof of work and its transaction root over the hashes (what the
    /// sender can be blamed for), assembled from the mempool and handed to
    /// the driver; when transactions are missing (this node never saw them,
    /// or committed them on another branch), the whole block is fetched
    /// from the sender. The verdict is the gossip's: a block with valid
    /// work and form is forwarded whether or not this node can assemble it
    /// yet.
    async fn on_compact_block(&mut self, from: PeerId, data: &[u8]) -> Result<Verdict> {
        let compact = match CompactBlock::decode(data) {
            Ok(c) => c,
            Err(e) => return Ok(Verdict::Reject(format!("undecodable block: {e}"))),
        };
        let seal = match cairn_consensus::pow::check_pow(&compact.header) {
            Ok(seal) => seal,
            Err(e) => {
                return Ok(Verdict::Reject(format!(
                    "block without a valid proof of work: {e}"
                )))
            }
        };
        // Cheap seals are refused before any other work: below the chain's
        // minimum they are invalid; far below the head's difficulty, not
        // worth assembling or forwarding (the engine holds neither).
        let min = match self
            .shared
            .genesis
            .segment_at(compact.header.height)
            .consensus
        {
            ConsensusConfig::Pow(p) => p.min_difficulty,
            _ => {
                return Ok(Verdict::Reject(format!(
                    "a proof-of-work block at height {}, where the schedule has no proof-of-work",
                    compact.header.height
                )))
            }
        };
        if seal.difficulty < min {
            return Ok(Verdict::Reject(format!(
                "difficulty {} is below the chain's minimum {min}",
                seal.difficulty
            )));
        }
        let (head, next_height) = self.driver.status().map_or((0, 0), |s| {
            (
                s.pow.as_ref().map_or(0, |p| p.difficulty),
                s.committed_height + 1,
            )
        });
        // Across a change of proof-of-work parameters the two rules'
        // difficulties are not comparable: only the minimum holds.
        let same_rule = self.shared.genesis.segment_at(compact.header.height).index
            == self.shared.genesis.segment_at(next_height).index;
        if same_rule && seal.difficulty < head / cairn_consensus::pow::FAR_BELOW {
            return Ok(Verdict::Ignore);
        }
        if let Err(e) = compact.check_format() {
            return Ok(Verdict::Reject(format!("malformed block: {e}")));
        }
        let hash = compact.hash();
        let parent = compact.header.parent;
        let assembled = {
            let pool = self
                .shared
                .mempool
                .lock()
                .map_err(|_| anyhow::anyhow!("mempool lock"))?;
            compact.assemble(|h| pool.get(h))
        };
        match assembled {
            Ok(block) => {
                self.shared.metrics.compact_block(true);
                let effects = self.driver.block(now_ms(), from, block);
                self.after(effects).await?;
                // Judged after the driver: a block the engine refused, or
                // that did not execute as the new head, goes no further.
                // (A block on a side branch is executed only once its
                // branch leads: until then it is forwarded on its work.)
                if self.driver.rejected_by_last_block(&hash) {
                    return Ok(Verdict::Reject(format!("invalid block {hash}")));
                }
                if self.driver.ignored_by_last_block(&hash) {
                    return Ok(Verdict::Ignore);
                }
                Ok(Verdict::Accept)
            }
            // Its transactions left the mempool when this node stored it
            // (a fetch or a sync got there first): nothing to do.
            Err(_) if self.shared.store.has_block(&hash)? => Ok(Verdict::Ignore),
            Err(missing) => {
                self.shared.metrics.compact_block(false);
                tracing::debug!(%hash, %from, missing, "block with transactions this node lacks: fetching it");
                let effects = self.driver.fetch_block(now_ms(), from, hash, parent);
                self.after(Ok(effects)).await?;
                Ok(Verdict::Accept)
            }
        }
    }
}
