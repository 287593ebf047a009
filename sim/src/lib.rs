//! A deterministic simulator for consensus engines.
//!
//! One process runs a whole network: N nodes, each the node's own driver
//! ([`cairn_driver::Driver`]) with its engine, mempool and store (in memory,
//! or RocksDB in a temporary directory), a network whose links delay, drop, duplicate and reorder messages and
//! can be cut (both ways or one way), crashes that lose everything but what
//! the node persisted, and clients that send signed transfers. Time is
//! logical: events run in order of their due time, ties in the order they
//! were scheduled, and every random choice comes from one RNG seeded by the
//! run's seed. The same seed replays the same run, byte for byte (the
//! optional trace records every event to prove it).
//!
//! The invariants ([`Violation`]) are checked as the run goes: agreement,
//! stability, validity and election safety after every step; liveness and
//! the clients' committed transfers by the scenario (see [`Sim::expect_progress`]
//! and [`Sim::finish`]). Engines and the driver run unchanged: the
//! simulator is only the IO shell around them (network, clocks, miners,
//! clients).
//!
//! The scenarios live in [`scenarios`]; the `cairn-sim` binary replays one
//! seed or soaks thousands.

pub mod byzantine;
mod checker;
mod client;
mod drive;
mod faults;
mod look;
mod net;
mod node;
mod pow;
pub mod scenarios;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex, OnceLock};

use cairn_chain::testkit::TestChain;
use cairn_chain::{codec, Block, ChainStore, Hash, MemStore, SecretKey, Transaction};
use cairn_consensus::{Action, ConsensusEngine, ConsensusMessage, EngineStatus, ValidatorId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use checker::Violation;
pub use client::{Ack, ClientConfig};
pub use net::LinkConfig;
pub use node::SimStore;
pub use pow::PowSim;

use checker::Checker;
use client::Client;
use net::Wire;
use node::SimNode;

/// Accounts the clients send from; the rest are for scenarios' bursts.
const CLIENT_ACCOUNTS: usize = 16;
const BURST_ACCOUNTS: usize = 256;

/// What an engine is started from: its place in the network, the store and
/// its head, every key it persisted, and a fresh seed for its randomness.
#[derive(Debug)]
pub struct EngineSetup<'a> {
    /// The segment of the consensus schedule the engine runs (0 for the
    /// genesis engine) and its first height.
    pub segment: u64,
    pub first_height: u64,
    /// The last height of a proof-of-work engine's run, where a final
    /// engine follows it.
    pub last_height: Option<u64>,
    /// Whether the segment before is proof-of-work (the first block may
    /// name any of its branches' blocks as its parent).
    pub after_pow: bool,
    /// The segment's validators, as node ids (`me` indexes this list).
    pub set: &'a [ValidatorId],
    pub me: ValidatorId,
    pub validators: u32,
    pub head: &'a Block,
    pub store: &'a SimStore,
    pub persisted: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    pub seed: u64,
}

/// Starts (or restarts) an engine.
pub type EngineFactory = Arc<dyn Fn(&EngineSetup<'_>) -> Box<dyn ConsensusEngine> + Send + Sync>;

/// A simulation's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub validators: u32,
    /// How every link behaves unless [`Sim::set_link`] says otherwise.
    pub link: LinkConfig,
    pub client: ClientConfig,
    /// Record every event (for the determinism check).
    pub trace: bool,
    /// Print what happens (roles, final blocks, faults) to stderr, for
    /// reading a replayed failure.
    pub log: bool,
    /// With `log`, also every consensus message delivered.
    pub log_messages: bool,
    /// Proof-of-work mode: simulated miners, no finality.
    pub pow: Option<PowSim>,
    /// Every node's store is RocksDB in a temporary directory (the node's
    /// store) instead of memory.
    pub rocksdb: bool,
    /// The first heights of the consensus schedule's segments after the
    /// genesis one: the factory is asked for segment `i`'s engine from
    /// `schedule[i - 1]` on.
    pub schedule: Vec<u64>,
    /// The validators (node ids) of each segment, by index; a segment
    /// without an entry (or with an empty one) has every node.
    pub sets: Vec<Vec<ValidatorId>>,
}

impl SimConfig {
    /// Whether the block at `height` is mined (proof-of-work), not final.
    pub fn pow_at(&self, height: u64) -> bool {
        self.pow
            .is_some_and(|p| height >= p.from_height && p.to_height.is_none_or(|t| height < t))
    }

    pub fn new(seed: u64, validators: u32) -> Self {
        Self {
            seed,
            validators,
            link: LinkConfig::reliable(),
            client: ClientConfig::default(),
            trace: false,
            log: false,
            log_messages: false,
            pow: None,
            rocksdb: false,
            schedule: Vec::new(),
            sets: Vec::new(),
        }
    }

    /// The validators (node ids) of segment `segment`.
    pub fn set_of(&self, segment: u64) -> Vec<ValidatorId> {
        match self.sets.get(segment as usize) {
            Some(set) if !set.is_empty() => set.clone(),
            _ => (0..self.validators).collect(),
        }
    }

    /// [`SimConfig::new`] with how a scenario is asked to run.
    pub fn with_options(seed: u64, validators: u32, opts: scenarios::Options) -> Self {
        let mut cfg = Self::new(seed, validators);
        cfg.trace = opts.trace;
        cfg.log = opts.log || opts.log_messages;
        cfg.log_messages = opts.log_messages;
        cfg.rocksdb = opts.rocksdb;
        cfg
    }

    /// The segment that holds `height`: its index, first height and the
    /// first height of the next one.
    pub fn segment_at(&self, height: u64) -> (u64, u64, Option<u64>) {
        let i = self.schedule.partition_point(|start| *start <= height);
        let first = if i == 0 { 0 } else { self.schedule[i - 1] };
        (i as u64, first, self.schedule.get(i).copied())
    }

    /// The execution parameters: the shared test chain's, with a
    /// configuration hash per segment of the schedule.
    pub fn params(&self) -> cairn_chain::ExecutionParams {
        let mut params = test_chain().params.clone();
        if !self.schedule.is_empty() {
            let mut segments = vec![(0, params.schedule.at(0))];
            for (i, start) in self.schedule.iter().enumerate() {
                let hash = Hash::digest(format!("cairn-sim/segment/{}", i + 1).as_bytes());
                segments.push((*start, hash));
            }
            if let Some(schedule) = cairn_chain::ConfigSchedule::new(segments) {
                params.schedule = schedule;
            }
        }
        params
    }
}

/// The sum of drivers' counters.
#[derive(Debug, Clone, Default)]
struct DriverTotals(cairn_driver::Stats);

impl DriverTotals {
    fn add(&mut self, s: &cairn_driver::Stats) {
        let t = &mut self.0;
        t.blocks_built += s.blocks_built;
        t.applied_blocks += s.applied_blocks;
        t.applied_transactions += s.applied_transactions;
        t.penalties += s.penalties;
        t.rejected_blocks += s.rejected_blocks;
        t.unproven_blocks += s.unproven_blocks;
        t.reorgs += s.reorgs;
        t.reverted_blocks += s.reverted_blocks;
        t.max_reorg_depth = t.max_reorg_depth.max(s.max_reorg_depth);
    }
}

/// Counters of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub crashes: u64,
    pub blocks_built: u64,
    /// Penalties engines asked for (misbehaving validators).
    pub penalties: u64,
    /// Synced blocks refused by `verify_final`.
    pub unproven_blocks: u64,
    /// Proof-of-work: blocks mined, blocks engines rejected, head moves
    /// that reverted blocks, and the most blocks one reverted.
    pub blocks_mined: u64,
    pub rejected_blocks: u64,
    pub reorgs: u64,
    pub max_reorg_depth: u64,
    /// Engines started at a scheduled height (every node counts).
    pub switches: u64,
}

// Deliveries dominate the queue; boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Event {
    Deliver {
        from: ValidatorId,
        to: ValidatorId,
        wire: Wire,
    },
    Timer {
        node: ValidatorId,
        incarnation: u64,
        at: u64,
    },
    Client,
    /// The node's periodic housekeeping (transaction rebroadcast).
    Housekeeping {
        node: ValidatorId,
        incarnation: u64,
    },
    /// A simulated miner found `block` for its job `job`.
    Mined {
        node: ValidatorId,
        incarnation: u64,
        job: u64,
        block: Block,
    },
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The key of simulated validator `i` (it also receives the block rewards).
pub fn validator_key(i: ValidatorId) -> SecretKey {
    SecretKey::from_label(&format!("cairn-sim/validator/{i}"))
}

/// The simulated network's genesis hash (what signatures cover).
pub fn network_hash() -> Hash {
    test_chain().genesis.hash()
}

/// The funded accounts and genesis every simulation shares (building the
/// keys takes a few milliseconds, so it is done once per process).
fn test_chain() -> &'static TestChain {
    static CHAIN: OnceLock<TestChain> = OnceLock::new();
    CHAIN.get_or_init(|| TestChain::new("cairn-sim", CLIENT_ACCOUNTS + BURST_ACCOUNTS, 1 << 40))
}

/// Observes every consensus message delivered: `(from, to, message)`.
pub type Observer = Box<dyn FnMut(ValidatorId, ValidatorId, &ConsensusMessage)>;

/// An engine-specific invariant over every action an engine returns, with
/// the engine's status after the call: `Err` is a violation.
pub type ActionCheck =
    Box<dyn FnMut(ValidatorId, &EngineStatus, &Action) -> Result<(), String> + Send>;

/// A simulated network of engines. See the module docs.
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    factory: EngineFactory,
    links: BTreeMap<(ValidatorId, ValidatorId), LinkConfig>,
    /// Cut directed links.
    blocked: BTreeSet<(ValidatorId, ValidatorId)>,
    /// Last delivery time per FIFO link.
    fifo: BTreeMap<(ValidatorId, ValidatorId), u64>,
    checker: Checker,
    client: Client,
    client_on: bool,
    burst_next: usize,
    /// Blocks each node built: (node, time, height, hash).
    built: Vec<(ValidatorId, u64, u64, Hash)>,
    violation: Option<(u64, Violation)>,
    observer: Option<Observer>,
    action_check: Arc<Mutex<Option<ActionCheck>>>,
    /// The first failed action check, until the simulator sees it.
    check_failed: Arc<Mutex<Option<String>>>,
    /// Nodes whose block builds fail.
    failing_builds: Arc<Mutex<BTreeSet<ValidatorId>>>,
    /// Blocks the withholding miner keeps to itself, with their miner.
    withheld: Vec<(ValidatorId, Block)>,
    /// The withholding miner publishes what it mines for now.
    honest_for_now: bool,
    trace: Option<Vec<u8>>,
    stats: Stats,
    /// What the drivers of crashed incarnations did.
    retired: DriverTotals,
    /// Nodes a scenario made faulty (Byzantine, an invalid miner): the only
    /// ones an honest node may penalise.
    faulty: BTreeSet<ValidatorId>,
    /// The first penalty of an honest node.
    blamed: Option<String>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.cfg.seed)
            .field("now", &self.now)
            .field("nodes", &self.nodes.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// A network of `cfg.validators` fresh nodes, all up, clients running.
    pub fn new(cfg: SimConfig, factory: EngineFactory) -> Self {
        let chain = test_chain();
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let skew = cfg.pow.map(|p| p.clock_skew_ms);
        // Proof-of-work reverts blocks; final blocks keep no undo records.
        let undo = cfg.pow.is_some();
        let stores: Vec<Arc<SimStore>> = (0..cfg.validators)
            .map(|_| {
                let store = if cfg.rocksdb {
                    SimStore::rocksdb(undo).unwrap_or_else(|e| panic!("a RocksDB store: {e}"))
                } else {
                    SimStore::Memory(MemStore::new(undo))
                };
                store
                    .init_genesis(&chain.genesis, &chain.genesis_state)
                    .unwrap_or_else(|e| panic!("genesis: {e}"));
                Arc::new(store)
            })
            .collect();
        let nodes = stores
            .into_iter()
            .zip(0..)
            .map(|(store, id)| SimNode {
                id,
                driver: None,
                incarnation: 0,
                store,
                // Wall clocks differ per node, like real ones.
                // (Proof-of-work checks timestamps: clocks roughly agree.)
                clock_offset: match skew {
                    // The network starts at its genesis time (0 here).
                    Some(s) => 1_000 + rng.gen_range(0..=s),
                    None => rng.gen_range(1_700_000_000_000..1_800_000_000_000),
                },
                wake: None,
                mining_job: 0,
                pool_clock: Arc::new(std::sync::atomic::AtomicU64::new(0)),
                segment: 0,
                reverted: 0,
                shown: None,
            })
            .collect();
        let recipients = chain.keys.iter().map(SecretKey::address).collect();
        let client_cfg = cfg.client;
        let client = Client::new(
            &chain.params.chain_id,
            chain.params.genesis_hash,
            &chain.keys[..client_cfg.accounts.min(CLIENT_ACCOUNTS)],
            recipients,
        );
        let trace = cfg.trace.then(Vec::new);
        let mut sim = Self {
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            factory,
            links: BTreeMap::new(),
            blocked: BTreeSet::new(),
            fifo: BTreeMap::new(),
            checker: Checker::default(),
            client,
            client_on: true,
            burst_next: 0,
            built: Vec::new(),
            violation: None,
            observer: None,
            action_check: Arc::new(Mutex::new(None)),
            check_failed: Arc::new(Mutex::new(None)),
            failing_builds: Arc::new(Mutex::new(BTreeSet::new())),
            withheld: Vec::new(),
            honest_for_now: false,
            trace,
            stats: Stats::default(),
            retired: DriverTotals::default(),
            faulty: cfg.pow.and_then(|p| p.invalid_miner).into_iter().collect(),
            blamed: None,
            cfg,
        };
        for id in 0..sim.cfg.validators {
            sim.start(id);
        }
        sim.schedule(client_cfg.interval_ms, Event::Client);
        sim
    }

    // ----- time -----

    /// Node `node` misbehaves on purpose: honest nodes may penalise it.
    pub fn mark_faulty(&mut self, node: ValidatorId) {
        self.faulty.insert(node);
    }

    /// Simulated milliseconds since the start.
    pub fn now(&self) -> u64 {
        self.now
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + delay,
            seq: self.seq,
            event,
        }));
    }

    /// The first violation, with the time it happened.
    pub fn violation(&self) -> Option<&(u64, Violation)> {
        self.violation.as_ref()
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.cfg.log {
            eprintln!("{:>8} ms  {}", self.now, what());
        }
    }

    fn fail(&mut self, v: Violation) {
        if self.violation.is_none() {
            self.record(b'!', u32::MAX, v.to_string().as_bytes());
            self.violation = Some((self.now, v));
        }
    }

    fn result(&self) -> Result<(), Violation> {
        match &self.violation {
            Some((_, v)) => Err(v.clone()),
            None => Ok(()),
        }
    }

    /// Runs every event due up to `now + ms`.
    pub fn run_for(&mut self, ms: u64) -> Result<(), Violation> {
        let end = self.now + ms;
        self.run_until(end, |_| false)?;
        Ok(())
    }

    /// Runs events until `done` holds (checked after every event) or the
    /// clock passes `deadline`; returns whether `done` held.
    pub fn run_until(
        &mut self,
        deadline: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Result<bool, Violation> {
        loop {
            self.result()?;
            if done(self) {
                return Ok(true);
            }
            let due = match self.queue.peek() {
                Some(Reverse(s)) if s.at <= deadline => s.at,
                _ => {
                    self.now = self.now.max(deadline);
                    return Ok(done(self));
                }
            };
            let Some(Reverse(s)) = self.queue.pop() else {
                return Ok(false);
            };
            self.now = due;
            self.stats.events += 1;
            self.process(s.event);
        }
    }

    /// Runs until `done` holds, or fails with a liveness violation naming
    /// `what` after `bound_ms`.
    pub fn within(
        &mut self,
        bound_ms: u64,
        what: &str,
        done: impl FnMut(&Sim) -> bool,
    ) -> Result<(), Violation> {
        let deadline = self.now + bound_ms;
        if self.run_until(deadline, done)? {
            Ok(())
        } else {
            Err(Violation::Liveness {
                detail: format!("{what}: not within {bound_ms} ms ({})", self.describe()),
            })
        }
    }

    /// Each node's height, role and term, for messages.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match n.status() {
                Some(s) => {
                    format!("n{}:h{} {} t{}", n.id, n.height(), s.role, s.term)
                }
                None => format!("n{}:h{} down", n.id, n.height()),
            })
            .collect();
        parts.join(", ")
    }

    // ----- invariants the scenario asks for -----

    /// Liveness: every up node in `nodes` makes a block final above the
    /// highest final anywhere now, within `bound_ms`.
    pub fn expect_progress(
        &mut self,
        nodes: &[ValidatorId],
        bound_ms: u64,
    ) -> Result<(), Violation> {
        let target = self.final_height() + 1;
        let nodes = nodes.to_vec();
        self.within(
            bound_ms,
            &format!("height {target} on nodes {nodes:?}"),
            |s| nodes.iter().all(|&n| !s.is_up(n) || s.height(n) >= target),
        )
    }

    /// The end of a run: every final chain agrees with the others and holds
    /// every transfer a client saw committed.
    pub fn finish(&mut self) -> Result<(), Violation> {
        self.result()?;
        if let Some(detail) = self.blamed.clone() {
            return Err(Violation::Blame { detail });
        }
        let chains: Vec<Vec<Block>> = self.nodes.iter().map(|n| n.store.chain()).collect();
        for (node, chain) in self.nodes.iter().zip(&chains) {
            // Final blocks: the mined ones after a switch have their own
            // checks.
            for b in chain
                .iter()
                .skip(1)
                .filter(|b| !self.cfg.pow_at(b.header.height))
            {
                if self.checker.final_at(b.header.height) != Some(b.hash()) {
                    return Err(Violation::Agreement {
                        height: b.header.height,
                        node: node.id,
                        first: self.checker.final_at(b.header.height).unwrap_or_default(),
                        second: b.hash(),
                    });
                }
            }
        }
        for ack in &self.client.acks {
            if self.cfg.pow_at(ack.height) {
                // Confirmed on a mined block before a switch to a final
                // engine: in every chain that passed the switch.
                let end = self.cfg.pow.and_then(|p| p.to_height);
                for (node, chain) in self.nodes.iter().zip(&chains) {
                    let passed = end.is_some_and(|end| chain.len() as u64 > end);
                    if passed
                        && !chain
                            .iter()
                            .any(|b| b.transactions.iter().any(|t| t.hash() == ack.tx))
                    {
                        return Err(Violation::LostTransaction {
                            tx: ack.tx,
                            height: ack.height,
                            node: node.id,
                        });
                    }
                }
                continue;
            }
            for (node, chain) in self.nodes.iter().zip(&chains) {
                let Some(b) = chain.get(ack.height as usize) else {
                    continue;
                };
                let found =
                    b.hash() == ack.block && b.transactions.iter().any(|t| t.hash() == ack.tx);
                if !found {
                    return Err(Violation::LostTransaction {
                        tx: ack.tx,
                        height: ack.height,
                        node: node.id,
                    });
                }
            }
        }
        if self.cfg.pow.is_some_and(|p| p.to_height.is_none()) {
            return self.finish_pow();
        }
        Ok(())
    }

    // ----- clients -----

    /// Sends `count` fresh transfers straight to `node`, one every
    /// `spacing_ms` (from accounts of their own: the clients' accounting
    /// is not disturbed, and they may be lost).
    pub fn burst(
        &mut self,
        node: ValidatorId,
        count: usize,
        spacing_ms: u64,
    ) -> Result<(), Violation> {
        let chain = test_chain();
        for _ in 0..count {
            let key = &chain.keys[CLIENT_ACCOUNTS + self.burst_next % BURST_ACCOUNTS];
            let nonce = (self.burst_next / BURST_ACCOUNTS) as u64;
            self.burst_next += 1;
            let to = chain.keys[self.rng.gen_range(0..CLIENT_ACCOUNTS)].address();
            let tx = Transaction::new_signed(
                key,
                &chain.params.chain_id,
                &chain.params.genesis_hash,
                to,
                1,
                1,
                nonce,
            );
            self.submit(node, tx, false);
            self.run_for(spacing_ms)?;
        }
        Ok(())
    }

    fn client_turn(&mut self) {
        let interval = self.cfg.client.interval_ms.max(1);
        self.schedule(interval, Event::Client);
        if !self.client_on {
            return;
        }
        // Wallets do not use a miner that withholds its blocks.
        let withholder = self.cfg.pow.and_then(|p| p.withholding_miner);
        let up: Vec<ValidatorId> = self
            .up_nodes()
            .into_iter()
            .filter(|n| Some(*n) != withholder)
            .collect();
        if up.is_empty() {
            return;
        }
        let resubmit = self.cfg.client.resubmit_ms;
        let Some(sub) = self.client.turn(&mut self.rng, self.now, resubmit) else {
            return;
        };
        let node = up[self.rng.gen_range(0..up.len())];
        self.submit(node, sub.tx, true);
    }

    // ----- the network -----

    fn link(&self, from: ValidatorId, to: ValidatorId) -> LinkConfig {
        self.links
            .get(&(from, to))
            .copied()
            .unwrap_or(self.cfg.link)
    }

    fn send(&mut self, from: ValidatorId, to: ValidatorId, wire: Wire) {
        if to >= self.cfg.validators || to == from || self.blocked.contains(&(from, to)) {
            self.stats.dropped += 1;
            return;
        }
        let link = self.link(from, to);
        if link.drop_rate > 0.0 && self.rng.gen_bool(link.drop_rate.min(1.0)) {
            self.stats.dropped += 1;
            return;
        }
        let copies = if link.duplicate_rate > 0.0 && self.rng.gen_bool(link.duplicate_rate.min(1.0))
        {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self
                .rng
                .gen_range(link.min_delay_ms..=link.max_delay_ms.max(link.min_delay_ms));
            if !link.reorder {
                let last = self.fifo.entry((from, to)).or_insert(0);
                let at = (self.now + delay).max(*last);
                *last = at;
                delay = at - self.now;
            }
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    wire: wire.clone(),
                },
            );
        }
    }

    fn process(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, wire } => {
                if self.blocked.contains(&(from, to)) || !self.nodes[to as usize].up() {
                    self.stats.dropped += 1;
                    return;
                }
                self.stats.delivered += 1;
                if self.trace.is_some() {
                    let bytes = codec::encode(&wire);
                    self.record(wire.kind(), to, Hash::digest(&bytes).as_ref());
                }
                self.deliver(from, to, wire);
            }
            Event::Timer {
                node,
                incarnation,
                at,
            } => self.wake(node, incarnation, at),
            Event::Client => self.client_turn(),
            Event::Housekeeping { node, incarnation } => self.housekeeping(node, incarnation),
            Event::Mined {
                node,
                incarnation,
                job,
                block,
            } => self.mined(node, incarnation, job, block),
        }
    }

    fn record(&mut self, kind: u8, node: ValidatorId, data: &[u8]) {
        if let Some(t) = self.trace.as_mut() {
            t.extend_from_slice(&self.now.to_le_bytes());
            t.push(kind);
            t.extend_from_slice(&node.to_le_bytes());
            t.extend_from_slice(&(data.len() as u32).to_le_bytes());
            t.extend_from_slice(data);
        }
    }
}
