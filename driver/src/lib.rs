//! Cairn's driver: everything between a consensus engine and the store,
//! without IO, shared by the node and the simulator.
//!
//! The engine decides ([`ConsensusEngine`]); the driver carries out its
//! actions against the store and the mempool — it builds, validates,
//! executes and commits blocks, moves the head across branches, imports
//! blocks from block sync, persists the engine's state — and returns the
//! [`Effect`]s that need the outside world (messages, block requests,
//! penalties, gossip, miners) to an IO shell: the node's event loop over
//! libp2p, or the simulator's network of events. The shell also owns the
//! clock: every call carries its time in milliseconds, and
//! [`Driver::wake_at`] says when to call [`Driver::tick`] next.
//!
//! What stops a node: only a block the engine made final that cannot be
//! committed, a conflict with a final block, or a store that fails
//! ([`DriverError`]). Everything else — a block that cannot be built, a
//! proposal or a peer's block that does not execute — is logged, answered
//! as the engine contract says, and the node goes on.
//!
//! Peers are the shell's own identifiers (`P`): libp2p peer ids in the
//! node, validator indices in the simulator.

pub mod admit;
mod blocks;
pub mod bodies;
mod fork;
pub mod mempool;
mod segments;
pub mod serve;
mod settle;
pub mod start;
mod sync;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_chain::{
    Address, Block, ChainStore, Executed, ExecutionParams, Hash, Header, StateError, StoreError,
    Transaction,
};
use cairn_consensus::{
    Action, ConsensusEngine, ConsensusMessage, EngineStatus, FinalityError, Input, ValidatorId,
};
use foldhash::{HashMap, HashMapExt};

pub use admit::{admit, Admitted};
pub use mempool::{Mempool, Rejection};
pub use segments::{segment_state, SegmentEngine, SegmentStart};

/// Most block origins remembered (to penalise or ask the sender).
const MAX_ORIGINS: usize = 10_000;
/// Pending transactions a block could take are gossiped again once they
/// have been pending this long since last gossiped (see
/// [`Mempool::rebroadcast`]), at most this many per round. Blocks come
/// every 100 ms (Raft, PBFT) or 2 s (proof-of-work): a transaction still
/// pending after 10 s has likely been missed by the block builder (a
/// leader that restarted, a peer whose pool was full).
const REBROADCAST_AFTER_MS: u64 = 10_000;
const MAX_REBROADCAST: usize = 20_000;
/// How long a transaction may wait behind a nonce gap before it is dropped.
pub const WAITING_LIFETIME_MS: u64 = 10 * 60 * 1_000;
/// How often the shell calls [`Driver::housekeeping`].
pub const HOUSEKEEPING_EVERY_MS: u64 = 5_000;

/// What the shell calls a peer: copied around, compared, logged.
pub trait Peer: Copy + Eq + std::hash::Hash + std::fmt::Debug + std::fmt::Display {}
impl<T: Copy + Eq + std::hash::Hash + std::fmt::Debug + std::fmt::Display> Peer for T {}

/// A driver's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub genesis_hash: Hash,
    pub params: ExecutionParams,
    /// This node's validator index, if it is one.
    pub me: Option<ValidatorId>,
    /// Where the rewards of blocks this node builds go.
    pub reward: Address,
    /// Most transactions in a block this node builds.
    pub block_max: usize,
    /// Most blocks one sync answer carries: a full answer means more follow.
    pub sync_batch: u32,
    /// A sync request without an answer is given up after this long.
    pub sync_timeout_ms: u64,
    /// Most hashes in a block locator.
    pub max_locator: usize,
    /// Most pending transactions pushed to a peer that connects.
    pub push_max: usize,
}

/// Checks that a block received by sync is final, on a node without an
/// engine (an observer).
pub type FinalityCheck = Box<dyn Fn(&Block) -> Result<(), FinalityError> + Send>;

/// What the shell must do for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<P> {
    /// Sign (with the validator key) and send a consensus message.
    Send {
        to: P,
        msg: ConsensusMessage,
    },
    /// Sign and send a consensus message to every validator.
    Broadcast {
        msg: ConsensusMessage,
    },
    /// Ask `peer` for its final blocks from height `from`.
    GetBlocks {
        peer: P,
        from: u64,
    },
    /// Ask `peer` for the blocks of its chain after the first hash of
    /// `locator` it has.
    GetBlocksAfter {
        peer: P,
        locator: Vec<Hash>,
    },
    /// `peer` sent something provably wrong.
    Penalize {
        peer: P,
        reason: String,
    },
    /// Gossip these transactions (they came back to the mempool).
    GossipTransactions {
        txs: Vec<Transaction>,
    },
    /// Send the pending transactions to a peer that just connected.
    PushTransactions {
        peer: P,
        txs: Vec<Transaction>,
    },
    /// Search a nonce for this template (replaces the current job).
    Mine {
        block: Block,
    },
    StopMining,
    /// Announce a block the engine made final (its header).
    Announce {
        header: Header,
    },
    /// This node built a block (for logs and the simulator's records).
    Built {
        height: u64,
        hash: Hash,
    },
    /// `block` is now the store's head (committed, imported by sync, or
    /// applied on a new branch).
    Applied {
        block: Block,
    },
    /// The engine of the schedule's segment that starts at `height` took
    /// over (validators, keys and peers may have changed).
    Switched {
        height: u64,
    },
}

/// What stops the node. Each message carries its cause (no `source`), so
/// a chain of contexts prints every cause once.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the store failed: {0}")]
    Store(StoreError),
    #[error("reading state: {0}")]
    State(StateError),
    #[error("cannot apply final block {height}: {reason}")]
    FinalBlock { height: u64, reason: String },
    #[error("the engine made block {hash} final at height {height}, where the chain holds {held}")]
    ConflictingFinal { height: u64, hash: Hash, held: Hash },
    #[error("the mempool's lock is poisoned")]
    Poisoned,
    #[error("cannot start the consensus engine scheduled from height {height}: {reason}")]
    Switch { height: u64, reason: String },
}

impl From<StoreError> for DriverError {
    fn from(e: StoreError) -> Self {
        DriverError::Store(e)
    }
}

impl From<StateError> for DriverError {
    fn from(e: StateError) -> Self {
        DriverError::State(e)
    }
}

/// What a driver did since it started (the node's metrics, the
/// simulator's statistics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub blocks_built: u64,
    /// Blocks that became the head, and their transactions.
    pub applied_blocks: u64,
    pub applied_transactions: u64,
    /// Penalties engines asked for (misbehaving validators).
    pub penalties: u64,
    /// Blocks found invalid (by the engine or on execution).
    pub rejected_blocks: u64,
    /// Blocks set aside without blame (a timestamp ahead of this clock).
    pub ignored_blocks: u64,
    /// Synced blocks without a proof of finality.
    pub unproven_blocks: u64,
    /// Head moves that reverted blocks, blocks reverted, the deepest.
    pub reorgs: u64,
    pub reverted_blocks: u64,
    pub max_reorg_depth: u64,
    /// Transactions gossiped again, and dropped after waiting too long
    /// behind a nonce gap.
    pub rebroadcast: u64,
    pub expired: u64,
    /// Engines started at a scheduled height.
    pub switches: u64,
}

/// The driver. See the crate docs.
pub struct Driver<S: ChainStore, P: Peer> {
    cfg: Config,
    store: Arc<S>,
    pool: Arc<Mutex<Mempool>>,
    engine: Option<Box<dyn ConsensusEngine>>,
    observer_check: Option<FinalityCheck>,
    /// The peer of each validator, where known.
    validator_peers: Vec<Option<P>>,
    /// Connected peers, in the order they connected (sync sources rotate).
    peers: Vec<P>,
    /// The peer a sync request is in flight to, and when to give up.
    syncing: Option<(P, u64)>,
    /// Peers whose last sync request went unanswered or failed, not asked
    /// again until the time given: a peer this node hears from but cannot
    /// reach (a one-way cut) must not hold every sync up.
    sync_avoid: Vec<(P, u64)>,
    /// The locator of the block fetch in flight (proof-of-work).
    sync_locator: Vec<Hash>,
    /// Who sent each recent block.
    origins: HashMap<Hash, P>,
    /// Executions of the last blocks this node built or validated:
    /// committing or building on them does not execute them again.
    executed: VecDeque<(Hash, Executed)>,
    /// Blocks this node built that are not committed yet, with their
    /// transaction counts (still in the mempool, no longer ready).
    in_flight: Vec<(Hash, usize)>,
    /// The engine's timer.
    timer: Option<u64>,
    status: Option<EngineStatus>,
    stats: Stats,
    effects: Vec<Effect<P>>,
    /// Blocks found invalid since the last [`Driver::block`] began.
    rejected: Vec<Hash>,
    /// Blocks set aside without blame since the last [`Driver::block`].
    ignored: Vec<Hash>,
    /// Whether the engine said this node leads, after the last input.
    leading: bool,
    /// The segment of the schedule whose engine runs.
    segment: u64,
    /// Where the next search for a peer to sync from starts.
    sync_rotation: usize,
    /// The highest final height announced above the head, and how many
    /// more peers to ask for it when one has nothing newer (it may not
    /// have committed it yet).
    sync_goal: Option<(u64, usize)>,
    /// The height of the first synced block made under another consensus
    /// configuration than this node's schedule names: the schedules
    /// differ, and the node stops syncing rather than fork.
    diverged: Option<u64>,
    /// The first height past the engine's segment of the schedule, and
    /// how to start the next segment's engine.
    segment_end: Option<u64>,
    segment_start: Option<SegmentStart<P>>,
    /// The first height of the engine's segment when the segment before
    /// is proof-of-work: its block may name any parent (see `settle`).
    open_parent: Option<u64>,
    /// What waits for the head to become such a block's parent.
    settle: Option<settle::Settle<P>>,
}

impl<S: ChainStore, P: Peer> std::fmt::Debug for Driver<S, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("me", &self.cfg.me)
            .field("engine", &self.engine)
            .field("syncing", &self.syncing)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S: ChainStore, P: Peer> Driver<S, P> {
    /// A driver over `store` and `pool`; `engine` is `None` on an observer.
    /// `validator_peers[i]` is validator `i`'s peer, where known.
    pub fn new(
        cfg: Config,
        store: Arc<S>,
        pool: Arc<Mutex<Mempool>>,
        engine: Option<Box<dyn ConsensusEngine>>,
        validator_peers: Vec<Option<P>>,
    ) -> Self {
        let status = engine.as_ref().map(|e| e.status());
        Self {
            cfg,
            store,
            pool,
            engine,
            observer_check: None,
            validator_peers,
            peers: Vec::new(),
            syncing: None,
            sync_avoid: Vec::new(),
            sync_locator: Vec::new(),
            origins: HashMap::new(),
            executed: VecDeque::new(),
            in_flight: Vec::new(),
            timer: None,
            status,
            stats: Stats::default(),
            effects: Vec::new(),
            rejected: Vec::new(),
            ignored: Vec::new(),
            leading: false,
            segment: 0,
            sync_rotation: 0,
            sync_goal: None,
            diverged: None,
            segment_end: None,
            segment_start: None,
            open_parent: None,
            settle: None,
        }
    }

    /// How an observer (no engine) checks that synced blocks are final.
    pub fn with_observer_check(mut self, check: FinalityCheck) -> Self {
        self.observer_check = Some(check);
        self
    }

    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    pub fn mempool(&self) -> &Arc<Mutex<Mempool>> {
        &self.pool
    }

    /// The engine's status after the last call (`None` on an observer).
    pub fn status(&self) -> Option<&EngineStatus> {
        self.status.as_ref()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether blocks become final when committed (Raft, PBFT, observers)
    /// rather than by the most work (proof-of-work).
    fn final_blocks(&self) -> bool {
        self.engine.as_ref().is_none_or(|e| e.final_blocks())
    }

    /// When the shell should call [`Driver::tick`] next: the engine's
    /// timer, or the deadline of a sync in flight.
    pub fn wake_at(&self) -> Option<u64> {
        let sync = self.syncing.map(|(_, until)| until);
        match (self.timer, sync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pool(&self) -> Result<MutexGuard<'_, Mempool>, DriverError> {
        self.pool.lock().map_err(|_| DriverError::Poisoned)
    }

    fn done(&mut self) -> Vec<Effect<P>> {
        std::mem::take(&mut self.effects)
    }

    /// Whether the last [`Driver::block`] found block `hash` invalid (the
    /// engine refused it, or it did not execute when it became the head):
    /// a gossiped block is judged once the driver has seen it.
    pub fn rejected_by_last_block(&self, hash: &Hash) -> bool {
        self.rejected.contains(hash)
    }

    /// Whether the last [`Driver::block`] set block `hash` aside without
    /// blame (it may be valid later): a gossiped block goes no further, and
    /// its sender is not penalised.
    pub fn ignored_by_last_block(&self, hash: &Hash) -> bool {
        self.ignored.contains(hash)
    }

    // ----- inputs from the shell -----

    /// Time passed: gives up a sync past its deadline and ticks the engine.
    pub fn tick(&mut self, now_ms: u64) -> Result<Vec<Effect<P>>, DriverError> {
        if let Some((peer, until)) = self.syncing {
            if until <= now_ms {
                self.syncing = None;
                self.avoid_for_sync(now_ms, peer);
                self.fetch_elsewhere(now_ms, peer)?;
            }
        }
        self.settle_tick(now_ms)?;
        if self.timer.is_some_and(|at| at <= now_ms) {
            self.timer = None;
        }
        self.feed(now_ms, Input::Tick)?;
        Ok(self.done())
    }

    /// Every [`HOUSEKEEPING_EVERY_MS`]: gossips again the pending
    /// transactions a block could take that stayed pending, and drops those
    /// that waited too long behind a nonce gap.
    pub fn housekeeping(&mut self) -> Result<Vec<Effect<P>>, DriverError> {
        let (txs, expired) = {
            let mut pool = self.pool()?;
            let now = pool.now_ms();
            let expired = pool.expire_waiting(now, WAITING_LIFETIME_MS);
            (
                pool.rebroadcast(now, REBROADCAST_AFTER_MS, MAX_REBROADCAST),
                expired,
            )
        };
        if expired > 0 {
            tracing::info!(
                expired,
                "dropped transactions that waited {} minutes behind a nonce gap",
                WAITING_LIFETIME_MS / 60_000
            );
        }
        self.stats.expired += expired as u64;
        self.stats.rebroadcast += txs.len() as u64;
        if !txs.is_empty() {
            tracing::debug!("gossiping {} pending transactions again", txs.len());
            self.effects.push(Effect::GossipTransactions { txs });
        }
        Ok(self.done())
    }

    /// A consensus message of the schedule's segment `segment` whose
    /// signature the shell checked (against that segment's validators),
    /// delivered by `origin`. A message of an earlier segment is stale;
    /// one of a later segment means the sender went on without this node,
    /// which syncs (from `origin` if it may, from another peer otherwise).
    pub fn message(
        &mut self,
        now_ms: u64,
        origin: P,
        from: ValidatorId,
        segment: u64,
        msg: ConsensusMessage,
    ) -> Result<Vec<Effect<P>>, DriverError> {
        if segment > self.segment {
            self.catch_up(now_ms, origin)?;
        } else if segment == self.segment && Some(from) != self.cfg.me {
            self.feed(now_ms, Input::Message { from, msg })?;
        }
        Ok(self.done())
    }

    /// A validator of a later segment of the schedule signed a message:
    /// this node is behind, and catches up (what [`Self::message`] does
    /// with such a message, for a shell that does not decode it further).
    pub fn later_segment_heard(
        &mut self,
        now_ms: u64,
        origin: P,
    ) -> Result<Vec<Effect<P>>, DriverError> {
        self.catch_up(now_ms, origin)?;
        Ok(self.done())
    }

    /// The height where a synced block showed that this node's schedule
    /// differs from its peers' (it no longer syncs).
    pub fn diverged(&self) -> Option<u64> {
        self.diverged
    }

    /// Whether final blocks wait for the head to move onto the parent the
    /// first final block after proof-of-work names (the engine may count
    /// them committed meanwhile).
    pub fn settling(&self) -> bool {
        self.settle.as_ref().is_some_and(|s| !s.commits.is_empty())
    }

    /// The index of the schedule's segment whose engine runs (0 for the
    /// genesis engine).
    pub fn segment(&self) -> u64 {
        self.segment
    }

    /// New transactions entered the mempool: tells the engine what is
    /// ready.
    pub fn transactions_added(&mut self, now_ms: u64) -> Result<Vec<Effect<P>>, DriverError> {
        let count = self.ready_count()?;
        if count > 0 {
            self.feed(now_ms, Input::TransactionsAvailable { count })?;
        }
        Ok(self.done())
    }

    /// A peer connected: it may have missed the gossip of what is pending
    /// here (push it), and on a proof-of-work chain it may have mined
    /// while apart (ask it for what follows this chain).
    pub fn peer_connected(&mut self, now_ms: u64, peer: P) -> Result<Vec<Effect<P>>, DriverError> {
        if !self.peers.contains(&peer) {
            self.peers.push(peer);
        }
        if self.final_blocks() {
            // A node that restarts or comes back from a cut may be behind
            // while the network is idle, and nothing else would tell it:
            // it asks (an empty answer if the peer has nothing newer).
            self.start_sync(now_ms, peer)?;
        } else if self.syncing.is_none() {
            let locator = serve::locator(&*self.store)?;
            self.fetch_after(now_ms, peer, locator);
        }
        let pending = self.pool()?.pending(self.cfg.push_max);
        if !pending.is_empty() {
            self.effects
                .push(Effect::PushTransactions { peer, txs: pending });
        }
        Ok(self.done())
    }

    pub fn peer_disconnected(&mut self, peer: P) {
        self.peers.retain(|p| *p != peer);
        if self.syncing.is_some_and(|(p, _)| p == peer) {
            self.syncing = None;
        }
    }

    /// A block request to `peer` failed (or its answer did not decode).
    pub fn sync_failed(&mut self, now_ms: u64, peer: P) {
        if self.syncing.is_some_and(|(p, _)| p == peer) {
            self.syncing = None;
            self.avoid_for_sync(now_ms, peer);
        }
    }

    /// Remembers who sent block `hash` (to ask or blame it later).
    pub fn remember_origin(&mut self, hash: Hash, peer: P) {
        if self.origins.len() >= MAX_ORIGINS {
            self.origins.clear();
        }
        self.origins.insert(hash, peer);
    }

    /// A block from a peer (proof-of-work gossip) for the engine.
    pub fn block(
        &mut self,
        now_ms: u64,
        from: P,
        block: Block,
    ) -> Result<Vec<Effect<P>>, DriverError> {
        self.rejected.clear();
        self.ignored.clear();
        if self.final_blocks() {
            // A mined block while this node still runs a final engine (or
            // none): the network has switched to proof-of-work and this
            // node is behind — no message of its engine will come to
            // bring it the blocks. It syncs from the sender.
            return self.announced(now_ms, from, block.header.height);
        }
        self.remember_origin(block.hash(), from);
        self.feed(now_ms, Input::Block { block })?;
        Ok(self.done())
    }

    /// A block this node's miners found, for the engine. The shell
    /// publishes it first: applying it (executing, a synced write) takes
    /// time its rivals use.
    pub fn mined(&mut self, now_ms: u64, block: Block) -> Result<Vec<Effect<P>>, DriverError> {
        tracing::info!(height = block.header.height, hash = %block.hash(), "mined a block");
        self.feed(now_ms, Input::Block { block })?;
        Ok(self.done())
    }

    /// A block announced by `from` that this node cannot assemble (it
    /// lacks transactions): fetch it and what leads to it from the sender,
    /// unless a fetch is under way.
    pub fn fetch_block(
        &mut self,
        now_ms: u64,
        from: P,
        hash: Hash,
        parent: Hash,
    ) -> Vec<Effect<P>> {
        self.remember_origin(hash, from);
        if self.syncing.is_none() {
            self.fetch_after(now_ms, from, vec![parent]);
        }
        self.done()
    }

    /// A peer announced a final block at `height`: a node more than one
    /// block behind syncs from it.
    pub fn announced(
        &mut self,
        now_ms: u64,
        from: P,
        height: u64,
    ) -> Result<Vec<Effect<P>>, DriverError> {
        let head = self.store.head()?.height;
        // One block behind is normal for a validator (the next commit
        // brings it), unless that block ends its engine's segment (no later
        // message of the engine would bring it). An observer has no engine
        // to bring it: it syncs every block announced.
        let behind = height > head + 1
            || (height > head && (self.engine.is_none() || self.past_segment(height + 1)));
        if self.final_blocks() && behind {
            // Peers that answer with nothing newer are followed by others
            // (see `import`), each asked once for this announcement.
            let tries = self.peers.len();
            self.sync_goal = Some(match self.sync_goal {
                Some((goal, left)) if goal >= height => (goal, left),
                _ => (height, tries),
            });
            // The announcement may come through a relayer this node does
            // not take blocks from (a non-validator, under Raft).
            self.sync_from_any(now_ms, Some(from), None)?;
        }
        Ok(self.done())
    }

    /// A peer's answer to a block request.
    pub fn blocks(
        &mut self,
        now_ms: u64,
        from: P,
        blocks: Vec<Block>,
    ) -> Result<Vec<Effect<P>>, DriverError> {
        if self.syncing.map(|(p, _)| p) != Some(from) {
            return Ok(self.done());
        }
        if self.settle.is_some() {
            self.settle_blocks(now_ms, from, blocks)?;
        } else if self.final_blocks() {
            self.import(now_ms, from, blocks)?;
        } else {
            self.fork_blocks(now_ms, from, blocks)?;
        }
        Ok(self.done())
    }

    // ----- the engine -----

    /// Hands one input to the engine and carries out its actions (and the
    /// inputs those produce) in order.
    fn feed(&mut self, now_ms: u64, input: Input) -> Result<(), DriverError> {
        let mut queue = VecDeque::from([input]);
        loop {
            while let Some(input) = queue.pop_front() {
                let Some(engine) = self.engine.as_mut() else {
                    return Ok(());
                };
                let actions = engine.handle(now_ms, input);
                for action in actions {
                    queue.extend(self.act(now_ms, action)?);
                }
                if self.switch_if_due()? {
                    // What the old engine's actions produced is for it only.
                    queue.clear();
                    queue.push_back(Input::Tick);
                    let count = self.ready_count()?;
                    if count > 0 {
                        queue.push_back(Input::TransactionsAvailable { count });
                    }
                }
            }
            let Some(engine) = &self.engine else {
                return Ok(());
            };
            let st = engine.status();
            let leading = self.cfg.me.is_some() && st.leader == self.cfg.me;
            // Nothing in flight, or no longer leading: the blocks this node
            // built are committed or gone.
            if st.uncommitted == 0 || !leading {
                self.in_flight.clear();
            }
            let took_over = leading && !self.leading;
            self.leading = leading;
            self.status = Some(st);
            // A node that starts leading hears what is ready at once: what
            // it was told as a follower may be stale, and transactions
            // already pending here may never be offered again.
            if took_over {
                let count = self.ready_count()?;
                if count > 0 {
                    queue.push_back(Input::TransactionsAvailable { count });
                    continue;
                }
            }
            return Ok(());
        }
    }

    /// Every action of the last engine call, for tests of what engines
    /// emit through the driver.
    fn act(&mut self, now_ms: u64, action: Action) -> Result<Vec<Input>, DriverError> {
        match action {
            Action::Send { to, msg } => {
                if let Some(Some(peer)) = self.validator_peers.get(to as usize) {
                    self.effects.push(Effect::Send { to: *peer, msg });
                }
            }
            Action::Broadcast { msg } => self.effects.push(Effect::Broadcast { msg }),
            // Durable before any later Send leaves (the engine contract):
            // effects go out after this call returns.
            Action::Persist(writes) => self.store.engine_write(&writes)?,
            Action::BuildBlock {
                parent,
                height,
                engine_data,
                uncommitted,
            } => return self.on_build(now_ms, parent, height, engine_data, uncommitted),
            Action::Commit { blocks } => {
                for block in blocks {
                    let Some(block) = self.hold_commit(now_ms, block)? else {
                        continue;
                    };
                    if self.past_segment(block.header.height) {
                        tracing::error!(
                            height = block.header.height,
                            "the engine made a block past its segment of the schedule final; \
                             not committed"
                        );
                        break;
                    }
                    self.commit_final(block)?;
                    self.end_settling_if_final()?;
                }
                let count = self.ready_count()?;
                return Ok(vec![Input::TransactionsAvailable { count }]);
            }
            Action::Sync { peer, .. } => {
                if let Some(Some(p)) = self.validator_peers.get(peer as usize).copied() {
                    self.start_sync(now_ms, p)?;
                }
            }
            Action::SetTimer { at_ms } => self.timer = Some(at_ms),
            Action::ValidateBlock { block } => {
                if let Some(answer) = self.hold_validation(now_ms, &block)? {
                    return Ok(answer);
                }
                let hash = block.hash();
                let checked = if self.past_segment(block.header.height) {
                    Err(blocks::BlockProblem::PastSegment)
                } else {
                    self.validate(&block)
                };
                let valid = match checked {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(height = block.header.height, %hash, "invalid proposal: {e}");
                        false
                    }
                };
                return Ok(vec![Input::BlockValidated { hash, valid }]);
            }
            Action::SetHead { revert, apply } => return self.set_head(revert, apply),
            Action::Mine { block } => self.effects.push(Effect::Mine { block }),
            Action::StopMining => self.effects.push(Effect::StopMining),
            Action::FetchBlocks { hash, locator } => {
                if let Some(peer) = self.origins.get(&hash).copied() {
                    if self.syncing.is_none() {
                        self.fetch_after(now_ms, peer, locator);
                    }
                }
            }
            Action::RejectBlock { hash, reason } => {
                self.stats.rejected_blocks += 1;
                self.rejected.push(hash);
                tracing::warn!(%hash, "invalid block: {reason}");
                if let Some(peer) = self.origins.get(&hash).copied() {
                    self.effects.push(Effect::Penalize {
                        peer,
                        reason: format!("invalid block {hash}: {reason}"),
                    });
                }
            }
            Action::IgnoreBlock { hash, reason } => {
                self.stats.ignored_blocks += 1;
                self.ignored.push(hash);
                tracing::info!(%hash, "block set aside: {reason}");
            }
            Action::Penalize { peer, reason } => {
                self.stats.penalties += 1;
                tracing::warn!(validator = peer, "misbehaving validator: {reason}");
                if let Some(Some(p)) = self.validator_peers.get(peer as usize).copied() {
                    self.effects.push(Effect::Penalize { peer: p, reason });
                }
            }
        }
        Ok(Vec::new())
    }

    /// What the engine is told is ready (up to a full block; the mempool's
    /// hint, without a store read per sender), less what blocks in flight
    /// already carry.
    fn ready_count(&self) -> Result<usize, DriverError> {
        let carried: usize = self.in_flight.iter().map(|(_, n)| n).sum();
        Ok(self
            .pool()?
            .ready_hint(self.cfg.block_max + carried)
            .saturating_sub(carried))
    }
}
