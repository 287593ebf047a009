//! A deterministic simulator for consensus engines.
//!
//! One process runs a whole network: N nodes, each an engine behind a
//! driver that does what the real node's driver does (persist, build blocks
//! from a mempool, execute and store final blocks, sync blocks from peers),
//! a network whose links delay, drop, duplicate and reorder messages and
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
//! and [`Sim::finish`]). Engines run unchanged: the simulator only sees the
//! [`ConsensusEngine`] trait.
//!
//! The scenarios live in [`scenarios`]; the `cairn-sim` binary replays one
//! seed or soaks thousands.

pub mod byzantine;
mod checker;
mod client;
mod net;
mod node;
mod pow_driver;
pub mod scenarios;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::OnceLock;

use cairn_chain::state::read_account;
use cairn_chain::testkit::TestChain;
use cairn_chain::{
    codec, execute_block, propose_block, Address, Block, Executed, Hash, Header, MemState, Overlay,
    SecretKey, SignatureCheck, Transaction,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use checker::Violation;
pub use client::{Ack, ClientConfig};
pub use net::LinkConfig;
pub use pow_driver::PowSim;

use crate::{Action, ConsensusEngine, ConsensusMessage, EngineStatus, Input, ValidatorId};
use checker::Checker;
use client::Client;
use net::Wire;
use node::SimNode;

/// Most final blocks in one block-sync answer (as the node's p2p layer).
const SYNC_BATCH: usize = 64;
/// A sync request without an answer is given up after this long.
const SYNC_TIMEOUT_MS: u64 = 1_000;
/// Accounts the clients send from; the rest are for scenarios' bursts.
const CLIENT_ACCOUNTS: usize = 16;
const BURST_ACCOUNTS: usize = 256;

/// What an engine is started from: its place in the network, the store's
/// head, every key it persisted, and a fresh seed for its randomness.
#[derive(Debug)]
pub struct EngineSetup<'a> {
    pub me: ValidatorId,
    pub validators: u32,
    pub head: &'a Block,
    /// The node's chain, genesis first (`head` is its last block).
    pub chain: &'a [Block],
    pub persisted: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    pub seed: u64,
}

/// Starts (or restarts) an engine.
pub type EngineFactory = Box<dyn Fn(&EngineSetup<'_>) -> Box<dyn ConsensusEngine>>;

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
    /// Proof-of-work mode: simulated miners, no finality.
    pub pow: Option<PowSim>,
}

impl SimConfig {
    pub fn new(seed: u64, validators: u32) -> Self {
        Self {
            seed,
            validators,
            link: LinkConfig::reliable(),
            client: ClientConfig::default(),
            trace: false,
            log: false,
            pow: None,
        }
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

/// Executes blocks for every simulated node, remembering results: a block's
/// hash commits to its parent, and so to the state it runs on, so the first
/// node to execute a block validates it fully (signatures, nonces,
/// balances, state root) and the others reuse the outcome after checking
/// that it extends their chain.
#[derive(Debug, Default)]
struct Executor {
    results: BTreeMap<Hash, Executed>,
    /// Transactions whose signature is known good (signed by the clients
    /// or verified once): the hash covers the signature.
    verified: BTreeSet<Hash>,
}

impl Executor {
    fn signature_check(&self, txs: &[Transaction]) -> SignatureCheck {
        if txs.iter().all(|t| self.verified.contains(&t.hash())) {
            SignatureCheck::AlreadyVerified
        } else {
            SignatureCheck::Verify
        }
    }

    fn execute(
        &mut self,
        state: &impl cairn_chain::StateReader,
        parent: &Header,
        block: &Block,
    ) -> Result<Executed, String> {
        let hash = block.hash();
        if let Some(done) = self.results.get(&hash) {
            if block.header.parent == parent.hash() && block.header.height == parent.height + 1 {
                return Ok(done.clone());
            }
        }
        let check = self.signature_check(&block.transactions);
        let executed = execute_block(state, &test_chain().params, parent, block, check)
            .map_err(|e| e.to_string())?;
        if check == SignatureCheck::Verify {
            self.verified
                .extend(block.transactions.iter().map(Transaction::hash));
        }
        self.results.insert(hash, executed.clone());
        Ok(executed)
    }
}

/// Observes every consensus message delivered: `(from, to, message)`.
pub type Observer = Box<dyn FnMut(ValidatorId, ValidatorId, &ConsensusMessage)>;

/// An engine-specific invariant over every action an engine returns, with
/// the engine's status after the call: `Err` is a violation.
pub type ActionCheck = Box<dyn FnMut(ValidatorId, &EngineStatus, &Action) -> Result<(), String>>;

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
    proposers: Vec<Address>,
    exec: Executor,
    checker: Checker,
    client: Client,
    client_on: bool,
    burst_next: usize,
    /// Blocks each node built: (node, time, height, hash).
    built: Vec<(ValidatorId, u64, u64, Hash)>,
    violation: Option<(u64, Violation)>,
    observer: Option<Observer>,
    action_check: Option<ActionCheck>,
    trace: Option<Vec<u8>>,
    stats: Stats,
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
        let mut state = MemState::default();
        state.apply(&chain.genesis_state);
        let skew = cfg.pow.map(|p| p.clock_skew_ms);
        let nodes = (0..cfg.validators)
            .map(|id| SimNode {
                id,
                engine: None,
                incarnation: 0,
                disk: BTreeMap::new(),
                chain: vec![chain.genesis.clone()],
                state: state.clone(),
                // Wall clocks differ per node, like real ones.
                // (Proof-of-work checks timestamps: clocks roughly agree.)
                clock_offset: match skew {
                    // The network starts at its genesis time (0 here).
                    Some(s) => 1_000 + rng.gen_range(0..=s),
                    None => rng.gen_range(1_700_000_000_000..1_800_000_000_000),
                },
                mining_job: 0,
                origins: BTreeMap::new(),
                sync_locator: Vec::new(),
                mempool: BTreeMap::new(),
                timer: None,
                syncing: None,
                shown: None,
            })
            .collect();
        let proposers = (0..cfg.validators)
            .map(|i| validator_key(i).address())
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
            proposers,
            exec: Executor::default(),
            checker: Checker::default(),
            client,
            client_on: true,
            burst_next: 0,
            built: Vec::new(),
            violation: None,
            observer: None,
            action_check: None,
            trace,
            stats: Stats::default(),
            cfg,
        };
        for id in 0..sim.cfg.validators {
            sim.start(id);
        }
        sim.schedule(client_cfg.interval_ms, Event::Client);
        sim
    }

    // ----- time -----

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
            .map(|n| match &n.engine {
                Some(e) => {
                    let s = e.status();
                    format!("n{}:h{} {} t{}", n.id, n.height(), s.role, s.term)
                }
                None => format!("n{}:h{} down", n.id, n.height()),
            })
            .collect();
        parts.join(", ")
    }

    // ----- faults -----

    /// Cuts the link `from → to` (one way).
    pub fn cut(&mut self, from: ValidatorId, to: ValidatorId) {
        self.log(|| format!("cut n{from} -> n{to}"));
        self.blocked.insert((from, to));
    }

    /// Cuts `node` off from everyone, both ways.
    pub fn isolate(&mut self, node: ValidatorId) {
        for other in 0..self.cfg.validators {
            if other != node {
                self.cut(node, other);
                self.cut(other, node);
            }
        }
    }

    /// Splits the network: nodes talk only within their group (nodes in
    /// no group are isolated).
    pub fn partition(&mut self, groups: &[Vec<ValidatorId>]) {
        let group_of = |n: ValidatorId| groups.iter().position(|g| g.contains(&n));
        for a in 0..self.cfg.validators {
            for b in 0..self.cfg.validators {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    self.cut(a, b);
                }
            }
        }
    }

    /// Restores the link between `a` and `b`, both ways.
    pub fn connect(&mut self, a: ValidatorId, b: ValidatorId) {
        self.log(|| format!("connect n{a} <-> n{b}"));
        self.blocked.remove(&(a, b));
        self.blocked.remove(&(b, a));
    }

    /// Restores every link (link settings are kept).
    pub fn heal(&mut self) {
        self.log(|| "heal every link".into());
        self.blocked.clear();
    }

    /// Sets how the link `from → to` behaves.
    pub fn set_link(&mut self, from: ValidatorId, to: ValidatorId, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// Sets every link's behaviour.
    pub fn set_all_links(&mut self, link: LinkConfig) {
        self.links.clear();
        self.cfg.link = link;
    }

    /// Crashes `node`: it loses its engine, mempool, timers and syncs; its
    /// store and persisted engine state stay.
    pub fn crash(&mut self, node: ValidatorId) {
        let n = &mut self.nodes[node as usize];
        if n.engine.take().is_some() {
            n.mempool.clear();
            n.timer = None;
            n.syncing = None;
            n.origins.clear();
            n.mining_job += 1;
            self.stats.crashes += 1;
            self.record(b'c', node, &[]);
            self.log(|| format!("n{node} crashes"));
        }
    }

    /// Starts `node` again from what it persisted (no-op if it is up).
    pub fn restart(&mut self, node: ValidatorId) {
        if !self.nodes[node as usize].up() {
            self.start(node);
        }
    }

    fn start(&mut self, id: ValidatorId) {
        let seed = self.rng.gen();
        let n = &mut self.nodes[id as usize];
        n.incarnation += 1;
        let engine = (self.factory)(&EngineSetup {
            me: id,
            validators: self.cfg.validators,
            head: n.head(),
            chain: &n.chain,
            persisted: &n.disk,
            seed,
        });
        n.engine = Some(engine);
        self.record(b's', id, &[]);
        self.log(|| {
            format!(
                "n{id} starts at height {}",
                self.nodes[id as usize].height()
            )
        });
        self.feed(id, Input::Tick);
        if self.cfg.pow.is_some() {
            self.pow_connected(id);
        }
    }

    /// Stops or resumes the clients.
    pub fn set_clients(&mut self, on: bool) {
        self.client_on = on;
    }

    // ----- looking in -----

    pub fn validators(&self) -> u32 {
        self.cfg.validators
    }

    pub fn is_up(&self, node: ValidatorId) -> bool {
        self.nodes[node as usize].up()
    }

    pub fn up_nodes(&self) -> Vec<ValidatorId> {
        self.nodes.iter().filter(|n| n.up()).map(|n| n.id).collect()
    }

    /// The engine's status, if the node is up.
    pub fn status(&self, node: ValidatorId) -> Option<EngineStatus> {
        self.nodes[node as usize]
            .engine
            .as_ref()
            .map(|e| e.status())
    }

    /// Height of the node's final chain.
    pub fn height(&self, node: ValidatorId) -> u64 {
        self.nodes[node as usize].height()
    }

    /// The node's final chain, genesis first.
    pub fn chain(&self, node: ValidatorId) -> &[Block] {
        &self.nodes[node as usize].chain
    }

    /// The highest height final on any node.
    pub fn final_height(&self) -> u64 {
        if self.cfg.pow.is_some() {
            // Nothing is final: the highest head.
            return self.nodes.iter().map(SimNode::height).max().unwrap_or(0);
        }
        self.checker.final_height()
    }

    /// The block final at `height` anywhere, if any.
    pub fn final_at(&self, height: u64) -> Option<Hash> {
        self.checker.final_at(height)
    }

    /// Up nodes that consider themselves leader (or primary).
    pub fn leaders(&self) -> Vec<ValidatorId> {
        self.nodes
            .iter()
            .filter(|n| {
                n.engine
                    .as_ref()
                    .is_some_and(|e| matches!(e.status().role, "leader" | "primary"))
            })
            .map(|n| n.id)
            .collect()
    }

    /// The leader that every up node in `nodes` follows in the same term.
    pub fn agreed_leader(&self, nodes: &[ValidatorId]) -> Option<ValidatorId> {
        let statuses: Vec<EngineStatus> = nodes.iter().filter_map(|&n| self.status(n)).collect();
        let first = statuses.first()?;
        let leader = first.leader?;
        let agreed = statuses.len() == nodes.len()
            && statuses
                .iter()
                .all(|s| s.leader == Some(leader) && s.term == first.term);
        agreed.then_some(leader)
    }

    /// Blocks built by `node` at or after `since` ms: (height, hash).
    pub fn built_by(&self, node: ValidatorId, since: u64) -> Vec<(u64, Hash)> {
        self.built
            .iter()
            .filter(|b| b.0 == node && b.1 >= since)
            .map(|b| (b.2, b.3))
            .collect()
    }

    /// Transfers the clients saw committed.
    pub fn acks(&self) -> &[Ack] {
        &self.client.acks
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Calls `observer` with every consensus message delivered.
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Checks every action of every engine with `check`.
    pub fn check_actions(&mut self, check: ActionCheck) {
        self.action_check = Some(check);
    }

    /// The trace so far (empty unless `SimConfig::trace`).
    pub fn trace(&self) -> &[u8] {
        self.trace.as_deref().unwrap_or(&[])
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
        if self.cfg.pow.is_some() {
            return self.finish_pow();
        }
        for node in &self.nodes {
            for b in node.chain.iter().skip(1) {
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
            for node in &self.nodes {
                let Some(b) = node.chain.get(ack.height as usize) else {
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
            self.exec.verified.insert(tx.hash());
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
        let up = self.up_nodes();
        if up.is_empty() {
            return;
        }
        let resubmit = self.cfg.client.resubmit_ms;
        let Some(sub) = self.client.turn(&mut self.rng, self.now, resubmit) else {
            return;
        };
        self.exec.verified.insert(sub.hash);
        let node = up[self.rng.gen_range(0..up.len())];
        self.submit(node, sub.tx, true);
    }

    /// A wallet hands `tx` to `node`, which gossips it to the others.
    fn submit(&mut self, node: ValidatorId, tx: Transaction, gossip: bool) {
        if !self.nodes[node as usize].up() {
            return;
        }
        if gossip {
            for to in 0..self.cfg.validators {
                if to != node {
                    self.send(node, to, Wire::Tx(tx.clone()));
                }
            }
        }
        if self.nodes[node as usize].add_tx(tx) {
            let count = self.nodes[node as usize].ready_count();
            self.feed(node, Input::TransactionsAvailable { count });
        }
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
            } => {
                let n = &mut self.nodes[node as usize];
                if n.up() && n.incarnation == incarnation && n.timer == Some(at) {
                    n.timer = None;
                    self.record(b't', node, &at.to_le_bytes());
                    self.feed(node, Input::Tick);
                }
            }
            Event::Client => self.client_turn(),
            Event::Mined {
                node,
                incarnation,
                job,
                block,
            } => self.mined(node, incarnation, job, block),
        }
    }

    fn deliver(&mut self, from: ValidatorId, to: ValidatorId, wire: Wire) {
        match wire {
            Wire::Consensus(msg) => {
                if let Some(obs) = self.observer.as_mut() {
                    obs(from, to, &msg);
                }
                self.feed(to, Input::Message { from, msg });
            }
            Wire::Tx(tx) => self.submit(to, tx, false),
            Wire::SyncRequest { from_height } => {
                let chain = &self.nodes[to as usize].chain;
                let blocks: Vec<Block> = chain
                    .iter()
                    .skip(from_height as usize)
                    .take(SYNC_BATCH)
                    .cloned()
                    .collect();
                self.send(to, from, Wire::SyncResponse { blocks });
            }
            Wire::SyncResponse { blocks } => self.import(to, from, blocks),
            Wire::Block(block) => self.block_arrives(to, from, block),
            Wire::LocatorRequest { locator } => self.serve_locator(to, from, &locator),
            Wire::LocatorResponse { blocks } => self.locator_response(to, from, blocks),
        }
    }

    fn node_clock(&self, node: ValidatorId) -> u64 {
        self.now + self.nodes[node as usize].clock_offset
    }

    // ----- the driver -----

    /// Feeds `input` to `node`'s engine and carries out the actions, and
    /// then the inputs they cause, in order.
    fn feed(&mut self, node: ValidatorId, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            if self.violation.is_some() {
                return;
            }
            let now_ms = self.node_clock(node);
            let Some(engine) = self.nodes[node as usize].engine.as_mut() else {
                return;
            };
            let actions = engine.handle(now_ms, input);
            if let Some(check) = self.action_check.as_mut() {
                let status = engine.status();
                for action in &actions {
                    if let Err(e) = check(node, &status, action) {
                        self.fail(Violation::Scenario(format!("node {node}: {e}")));
                        return;
                    }
                }
            }
            for action in actions {
                if self.violation.is_some() {
                    return;
                }
                self.act(node, action, &mut inputs);
            }
            let n = &self.nodes[node as usize];
            if let Some(status) = n.engine.as_ref().map(|e| e.status()) {
                // Proof-of-work heads go back on reorganisations: its
                // invariants are checked by its driver and `finish`.
                if self.cfg.pow.is_none() {
                    if let Err(v) = self.checker.on_status(node, &status, n.height()) {
                        self.fail(v);
                    }
                }
                if self.cfg.log {
                    let shown = (status.role, status.term, status.leader);
                    if self.nodes[node as usize].shown != Some(shown) {
                        self.nodes[node as usize].shown = Some(shown);
                        self.log(|| {
                            format!(
                                "n{node} {} of term {} (leader {:?})",
                                shown.0, shown.1, shown.2
                            )
                        });
                    }
                }
            }
        }
    }

    fn act(&mut self, node: ValidatorId, action: Action, inputs: &mut VecDeque<Input>) {
        match action {
            Action::Send { to, msg } => self.send(node, to, Wire::Consensus(msg)),
            Action::Broadcast { msg } => {
                for to in 0..self.cfg.validators {
                    if to != node {
                        self.send(node, to, Wire::Consensus(msg.clone()));
                    }
                }
            }
            Action::Persist(writes) => {
                let disk = &mut self.nodes[node as usize].disk;
                for (k, v) in writes {
                    match v {
                        Some(v) => disk.insert(k, v),
                        None => disk.remove(&k),
                    };
                }
            }
            Action::BuildBlock {
                parent,
                height,
                engine_data,
                uncommitted,
            } => match self.build(node, parent, height, engine_data, &uncommitted) {
                Ok(block) => {
                    let hash = block.hash();
                    self.record(b'b', node, hash.as_ref());
                    self.built.push((node, self.now, height, hash));
                    self.stats.blocks_built += 1;
                    inputs.push_back(Input::BlockBuilt { block });
                }
                // The node logs and builds nothing; so does the simulator.
                Err(e) => self.record(b'B', node, e.as_bytes()),
            },
            Action::Commit { blocks } => {
                for block in blocks {
                    self.commit(node, block);
                }
                let count = self.nodes[node as usize].ready_count();
                inputs.push_back(Input::TransactionsAvailable { count });
            }
            Action::Sync { peer, .. } => {
                let now = self.now;
                let n = &mut self.nodes[node as usize];
                if peer == node || n.syncing.is_some_and(|(_, until)| until > now) {
                    return;
                }
                n.syncing = Some((peer, now + SYNC_TIMEOUT_MS));
                let from_height = n.height() + 1;
                self.send(node, peer, Wire::SyncRequest { from_height });
            }
            Action::ValidateBlock { block } => {
                let n = &self.nodes[node as usize];
                let valid = self
                    .exec
                    .execute(&n.state, &n.head().header, &block)
                    .is_ok();
                inputs.push_back(Input::BlockValidated {
                    hash: block.hash(),
                    valid,
                });
            }
            Action::Penalize { peer, reason } => {
                self.stats.penalties += 1;
                self.record(b'p', node, reason.as_bytes());
                self.log(|| format!("n{node} penalises n{peer}: {reason}"));
            }
            Action::SetHead { revert, apply } => self.set_head(node, revert, apply, inputs),
            Action::Mine { block } => self.mine(node, block),
            Action::StopMining => self.nodes[node as usize].mining_job += 1,
            Action::FetchBlocks { hash, locator } => self.fetch_blocks(node, hash, locator),
            Action::RejectBlock { hash, reason } => {
                self.stats.rejected_blocks += 1;
                self.record(b'r', node, hash.as_ref());
                self.log(|| format!("n{node} rejects block {hash}: {reason}"));
            }
            Action::SetTimer { at_ms } => {
                let n = &mut self.nodes[node as usize];
                n.timer = Some(at_ms);
                let delay = at_ms.saturating_sub(self.now + n.clock_offset);
                let incarnation = n.incarnation;
                self.schedule(
                    delay,
                    Event::Timer {
                        node,
                        incarnation,
                        at: at_ms,
                    },
                );
            }
        }
    }

    /// What the node's driver does on `BuildBlock`.
    fn build(
        &mut self,
        node: ValidatorId,
        parent: Hash,
        height: u64,
        engine_data: Vec<u8>,
        uncommitted: &[Block],
    ) -> Result<Block, String> {
        let n = &self.nodes[node as usize];
        let mut overlay = Overlay::new(&n.state);
        let mut parent_header = n.head().header.clone();
        for b in uncommitted {
            let ex = self
                .exec
                .execute(&overlay, &parent_header, b)
                .map_err(|e| format!("uncommitted block {}: {e}", b.header.height))?;
            overlay.apply(&ex.changes);
            parent_header = b.header.clone();
        }
        if parent_header.hash() != parent || parent_header.height + 1 != height {
            return Err(format!(
                "asked for a block on {parent} at {height}, the chain ends at {}",
                parent_header.height
            ));
        }
        let candidates: Vec<Transaction> = n
            .mempool
            .iter()
            .filter(|((sender, nonce), _)| {
                *nonce
                    >= read_account(&overlay, sender)
                        .ok()
                        .flatten()
                        .map_or(0, |a| a.nonce)
            })
            .map(|(_, tx)| tx.clone())
            .collect();
        let timestamp = (self.now + n.clock_offset).max(parent_header.timestamp_ms);
        let proposal = propose_block(
            &overlay,
            &test_chain().params,
            &parent_header,
            self.proposers[node as usize],
            timestamp,
            candidates,
            engine_data,
        )
        .map_err(|e| e.to_string())?;
        Ok(proposal.block)
    }

    /// The engine made `block` final: store it, or report what is wrong.
    fn commit(&mut self, node: ValidatorId, block: Block) {
        let n = &self.nodes[node as usize];
        let height = block.header.height;
        if height <= n.height() {
            if n.chain[height as usize].hash() != block.hash() {
                self.fail(Violation::Stability {
                    node,
                    detail: format!("engine committed another block at final height {height}"),
                });
            }
            return;
        }
        if height != n.height() + 1 || block.header.parent != n.head().hash() {
            self.fail(Violation::Stability {
                node,
                detail: format!(
                    "engine committed block {height} that does not extend the final chain at {}",
                    n.height()
                ),
            });
            return;
        }
        self.append_final(node, block);
    }

    /// Executes `block` on the node's head and appends it. Returns false
    /// (after recording a validity violation) when it does not apply.
    fn append_final(&mut self, node: ValidatorId, block: Block) -> bool {
        let n = &mut self.nodes[node as usize];
        let result = self.exec.execute(&n.state, &n.head().header, &block);
        match result {
            Ok(executed) => {
                n.state.apply(&executed.changes);
                n.prune_mempool(&block);
                self.record(b'f', node, block.hash().as_ref());
                self.log(|| {
                    format!(
                        "n{node} final {} {} ({} txs)",
                        block.header.height,
                        block.hash(),
                        block.transactions.len()
                    )
                });
                // Proof-of-work blocks are not final: its driver checks
                // confirmations instead.
                if self.cfg.pow.is_none() {
                    if let Err(v) = self.checker.on_final(node, &block) {
                        self.fail(v);
                    }
                    self.client.observe(node, &block);
                }
                self.nodes[node as usize].chain.push(block);
                true
            }
            Err(error) => {
                self.fail(Violation::Validity {
                    node,
                    height: block.header.height,
                    error,
                });
                false
            }
        }
    }

    /// Block sync's answer: import the final blocks that extend the head.
    fn import(&mut self, node: ValidatorId, peer: ValidatorId, blocks: Vec<Block>) {
        let n = &mut self.nodes[node as usize];
        if n.syncing.map(|(p, _)| p) != Some(peer) {
            return;
        }
        n.syncing = None;
        let full = blocks.len() >= SYNC_BATCH;
        let mut imported = 0;
        for block in blocks {
            let n = &self.nodes[node as usize];
            if block.header.height <= n.height() {
                continue;
            }
            if block.header.height != n.height() + 1 || block.header.parent != n.head().hash() {
                break;
            }
            let proof = n.engine.as_ref().map(|e| e.verify_final(&block));
            if let Some(Err(e)) = proof {
                self.stats.unproven_blocks += 1;
                self.log(|| format!("n{node} refuses synced block {}: {e}", block.header.height));
                break;
            }
            let (height, hash, engine_data) = (
                block.header.height,
                block.hash(),
                block.header.engine_data.clone(),
            );
            if !self.append_final(node, block) {
                return;
            }
            imported += 1;
            self.feed(
                node,
                Input::Committed {
                    height,
                    hash,
                    engine_data,
                },
            );
        }
        if full && imported > 0 {
            let n = &mut self.nodes[node as usize];
            n.syncing = Some((peer, self.now + SYNC_TIMEOUT_MS));
            let from_height = n.height() + 1;
            self.send(node, peer, Wire::SyncRequest { from_height });
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
