//! The simulator's IO shell around each node's [`Driver`]: it starts and
//! crashes drivers, carries their effects onto the simulated network,
//! delivers what arrives to them, and wakes them when they asked.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use cairn_chain::{Block, ChainStore};
use cairn_consensus::ConsensusEngine;
use cairn_consensus::ValidatorId;
use cairn_driver::admit::Signatures;
use cairn_driver::{
    serve, Config, Driver, DriverError, Effect, Mempool, SegmentEngine, SegmentStart,
    HOUSEKEEPING_EVERY_MS,
};

use crate::net::Wire;
use crate::node::{Checked, SimDriver};
use crate::{test_chain, validator_key, EngineSetup, Event, Sim, Violation};

/// Most blocks in one block-sync answer (as the node's p2p layer).
pub(crate) const SYNC_BATCH: u32 = 64;
/// A sync request without an answer is given up after this long.
const SYNC_TIMEOUT_MS: u64 = 1_000;
/// Bytes one sync answer may carry.
const SYNC_BUDGET: usize = 2 * cairn_chain::MAX_BLOCK_BYTES;
/// Most transactions in a block (the engines' `full_block`).
const BLOCK_MAX: usize = 1_000;

impl Sim {
    /// Starts `id`'s driver and engine from what its store holds: the
    /// engine of the schedule's segment after the head.
    pub(crate) fn start(&mut self, id: ValidatorId) {
        let seed = rand::Rng::gen(&mut self.rng);
        let head_height = self.nodes[id as usize].height();
        let mut make = self.segment_starter(id, seed);
        // The starter's segment and end (a run of proof-of-work segments
        // is one engine, as on the node).
        let (segment, end, engine, me, peers, open) = match make(head_height + 1) {
            Ok(e) => (
                e.index,
                e.end,
                e.engine,
                e.me,
                e.validator_peers,
                e.open_parent,
            ),
            Err(e) => return self.fail(Violation::Scenario(format!("node {id}: {e}"))),
        };
        let n = &mut self.nodes[id as usize];
        n.incarnation += 1;
        n.segment = segment;
        let store = n.store.clone();
        let chain = test_chain();
        let cfg = Config {
            genesis_hash: chain.genesis.hash(),
            params: self.cfg.params(),
            me,
            reward: validator_key(id).address(),
            block_max: BLOCK_MAX,
            sync_batch: SYNC_BATCH,
            sync_timeout_ms: SYNC_TIMEOUT_MS,
            max_locator: 128,
            push_max: 1_000,
        };
        let clock = n.pool_clock.clone();
        let pool = Arc::new(Mutex::new(
            Mempool::new(chain.params.chain_id.clone(), 100_000, 1_000)
                .with_clock(Arc::new(move || clock.load(Ordering::Relaxed))),
        ));
        n.driver = Some(
            Driver::new(cfg, store, pool, engine, peers)
                .with_segments(segment, end, make)
                .with_open_parent(open),
        );
        n.wake = None;
        n.reverted = 0;
        let incarnation = n.incarnation;
        self.schedule(
            HOUSEKEEPING_EVERY_MS,
            Event::Housekeeping {
                node: id,
                incarnation,
            },
        );
        self.record(b's', id, &[]);
        self.log(|| {
            format!(
                "n{id} starts at height {}",
                self.nodes[id as usize].height()
            )
        });
        self.drive(id, |d, now| d.tick(now));
        // It connects to every node that is up, and they to it.
        for peer in 0..self.cfg.validators {
            if peer != id && self.nodes[peer as usize].up() {
                self.drive(id, |d, now| d.peer_connected(now, peer));
                self.drive(peer, |d, now| d.peer_connected(now, id));
            }
        }
    }

    /// Starts `id`'s engine for the segment that holds a height, from
    /// what its store holds (the driver calls it again at every scheduled
    /// switch).
    fn segment_starter(&self, id: ValidatorId, seed: u64) -> SegmentStart<ValidatorId> {
        let factory = self.factory.clone();
        let store = self.nodes[id as usize].store.clone();
        let sim_cfg = self.cfg.clone();
        let check = self.action_check.clone();
        let failed = self.check_failed.clone();
        let failing_builds = self.failing_builds.clone();
        Box::new(move |height| {
            let (mut segment, mut first_height, mut end) = sim_cfg.segment_at(height);
            // As the node does: consecutive proof-of-work segments (the
            // last ones) are one engine, from the first of them on.
            let mined = sim_cfg.pow_at(height);
            if let Some(pow) = sim_cfg.pow.filter(|_| mined) {
                (segment, first_height, _) = sim_cfg.segment_at(pow.from_height);
                end = pow.to_height;
            }
            // Proof-of-work persists nothing (and is started again to check
            // a branch while the next engine runs, whose state stays).
            let persisted = if mined {
                Default::default()
            } else {
                cairn_driver::segment_state(&*store, segment).map_err(|e| e.to_string())?
            };
            let after_pow = !mined && first_height > 0 && sim_cfg.pow_at(first_height - 1);
            let head = match store.head_hash().and_then(|h| store.block(&h)) {
                Ok(Some(b)) => b,
                other => return Err(format!("cannot read the head: {other:?}")),
            };
            let set = sim_cfg.set_of(segment);
            let me = set.iter().position(|n| *n == id).map(|i| i as ValidatorId);
            let engine = me.map(|me| {
                let inner = factory(&EngineSetup {
                    segment,
                    first_height,
                    last_height: if mined { end.map(|e| e - 1) } else { None },
                    after_pow,
                    set: &set,
                    me,
                    validators: set.len() as u32,
                    head: &head,
                    store: &store,
                    persisted: &persisted,
                    seed: seed ^ segment,
                });
                Box::new(Checked {
                    node: id,
                    inner,
                    check: check.clone(),
                    failed: failed.clone(),
                    failing_builds: failing_builds.clone(),
                }) as Box<dyn ConsensusEngine>
            });
            Ok(SegmentEngine {
                index: segment,
                engine,
                me,
                validator_peers: set.iter().copied().map(Some).collect(),
                observer_check: None,
                end,
                open_parent: after_pow.then_some(first_height),
            })
        })
    }

    /// Crashes `node`: it loses its driver (engine, mempool, syncs), its
    /// timers and its mining job; its store stays.
    pub fn crash(&mut self, node: ValidatorId) {
        let n = &mut self.nodes[node as usize];
        if let Some(driver) = n.driver.take() {
            self.retired.add(driver.stats());
            n.wake = None;
            n.mining_job += 1;
            self.stats.crashes += 1;
            self.record(b'c', node, &[]);
            self.log(|| format!("n{node} crashes"));
        }
    }

    pub(crate) fn node_clock(&self, node: ValidatorId) -> u64 {
        self.now + self.nodes[node as usize].clock_offset
    }

    /// Calls `node`'s driver (if it is up) at the node's clock, then
    /// carries out the effects, checks the invariants and schedules its
    /// next wake-up.
    pub(crate) fn drive(
        &mut self,
        node: ValidatorId,
        call: impl FnOnce(&mut SimDriver, u64) -> Result<Vec<Effect<ValidatorId>>, DriverError>,
    ) {
        if self.violation.is_some() {
            return;
        }
        let now = self.node_clock(node);
        let at = self.now;
        let n = &mut self.nodes[node as usize];
        n.pool_clock.store(now, Ordering::Relaxed);
        let Some(driver) = n.driver.as_mut() else {
            return;
        };
        // With `--log`, what the driver logs names the node and the time.
        let span = tracing::info_span!("", node, at).entered();
        let result = call(driver, now);
        drop(span);
        let failed = self.check_failed.lock().ok().and_then(|mut f| f.take());
        if let Some(e) = failed {
            return self.fail(Violation::Scenario(e));
        }
        match result {
            Ok(effects) => {
                for effect in effects {
                    self.carry(node, effect);
                }
            }
            // The node would stop: an honest node never may.
            Err(e) => return self.fail(violation_of(node, e)),
        }
        self.after_call(node);
    }

    fn after_call(&mut self, node: ValidatorId) {
        let n = &self.nodes[node as usize];
        let Some(driver) = n.driver.as_ref() else {
            return;
        };
        let wake = driver.wake_at();
        let reverted = driver.stats().reverted_blocks;
        if reverted > n.reverted {
            let depth = reverted - n.reverted;
            self.nodes[node as usize].reverted = reverted;
            self.stats.max_reorg_depth = self.stats.max_reorg_depth.max(depth);
            self.record(b'R', node, &depth.to_le_bytes());
            self.log(|| format!("n{node} reverts {depth} blocks"));
        }
        let n = &self.nodes[node as usize];
        let Some(driver) = n.driver.as_ref() else {
            return;
        };
        if let Some(status) = driver.status().cloned() {
            // Proof-of-work heads go back on reorganisations: its
            // invariants are checked by `finish`.
            if !self.cfg.pow_at(n.height() + 1) && !driver.settling() {
                if let Err(v) = self.checker.on_status(node, n.segment, &status, n.height()) {
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
        let n = &mut self.nodes[node as usize];
        if let Some(at) = wake {
            if n.wake != Some(at) {
                n.wake = Some(at);
                let delay = at.saturating_sub(self.now + n.clock_offset);
                let incarnation = n.incarnation;
                self.schedule(
                    delay,
                    Event::Timer {
                        node,
                        incarnation,
                        at,
                    },
                );
            }
        }
    }

    /// The node's housekeeping, every [`HOUSEKEEPING_EVERY_MS`] as on the
    /// node.
    pub(crate) fn housekeeping(&mut self, node: ValidatorId, incarnation: u64) {
        let n = &self.nodes[node as usize];
        if !n.up() || n.incarnation != incarnation {
            return;
        }
        self.schedule(
            HOUSEKEEPING_EVERY_MS,
            Event::Housekeeping { node, incarnation },
        );
        self.drive(node, |d, _| d.housekeeping());
    }

    /// A wake-up the driver asked for.
    pub(crate) fn wake(&mut self, node: ValidatorId, incarnation: u64, at: u64) {
        let n = &mut self.nodes[node as usize];
        if n.up() && n.incarnation == incarnation && n.wake == Some(at) {
            n.wake = None;
            self.record(b't', node, &at.to_le_bytes());
            self.drive(node, |d, now| d.tick(now));
        }
    }

    pub(crate) fn broadcast(&mut self, from: ValidatorId, wire: Wire) {
        for to in 0..self.cfg.validators {
            if to != from {
                self.send(from, to, wire.clone());
            }
        }
    }

    /// Carries out one effect of `node`'s driver.
    fn carry(&mut self, node: ValidatorId, effect: Effect<ValidatorId>) {
        match effect {
            Effect::Send { to, msg } => {
                let segment = self.nodes[node as usize].segment;
                self.send(node, to, Wire::Consensus(segment, msg))
            }
            Effect::Broadcast { msg } => {
                let segment = self.nodes[node as usize].segment;
                self.broadcast(node, Wire::Consensus(segment, msg))
            }
            Effect::GetBlocks { peer, from } => {
                self.send(node, peer, Wire::SyncRequest { from_height: from })
            }
            Effect::GetBlocksAfter { peer, locator } => {
                self.send(node, peer, Wire::LocatorRequest { locator })
            }
            Effect::Penalize { peer, reason } => {
                self.record(b'p', node, reason.as_bytes());
                self.log(|| format!("n{node} penalises n{peer}: {reason}"));
                if self.blamed.is_none() && !self.faulty.contains(&peer) {
                    self.blamed = Some(format!(
                        "n{node} penalised honest n{peer} at {} ms: {reason}",
                        self.now
                    ));
                }
            }
            Effect::GossipTransactions { txs } => {
                for tx in txs {
                    self.broadcast(node, Wire::Tx(tx));
                }
            }
            Effect::PushTransactions { peer, txs } => {
                for tx in txs {
                    self.send(node, peer, Wire::Tx(tx));
                }
            }
            Effect::Mine { block } => self.mine(node, block),
            Effect::StopMining => self.nodes[node as usize].mining_job += 1,
            Effect::Announce { header } => self.broadcast(
                node,
                Wire::Announce {
                    height: header.height,
                },
            ),
            Effect::Built { height, hash } => {
                self.record(b'b', node, hash.as_ref());
                self.built.push((node, self.now, height, hash));
            }
            Effect::Applied { block } => self.applied(node, &block),
            Effect::Switched { height } => {
                let (segment, _, _) = self.cfg.segment_at(height);
                self.nodes[node as usize].segment = segment;
                self.stats.switches += 1;
                self.record(b'w', node, &height.to_le_bytes());
                self.log(|| format!("n{node} switches to segment {segment} at height {height}"));
            }
        }
    }

    /// `block` became `node`'s head.
    fn applied(&mut self, node: ValidatorId, block: &Block) {
        self.record(b'f', node, block.hash().as_ref());
        self.log(|| {
            format!(
                "n{node} applies {} {} ({} txs)",
                block.header.height,
                block.hash(),
                block.transactions.len()
            )
        });
        if self.cfg.pow_at(block.header.height) {
            // Not final: clients wait for confirmations.
            self.observe_confirmed(node);
            return;
        }
        if self.cfg.pow_at(block.header.height.saturating_sub(1)) {
            self.checker.mined_below(block.header.height);
        }
        if let Err(v) = self.checker.on_final(node, block) {
            self.fail(v);
        }
        // The first final block after proof-of-work settles the mined
        // blocks below it: a client sees their transfers final.
        if let Some(pow) = self
            .cfg
            .pow
            .filter(|p| p.to_height == Some(block.header.height))
        {
            for h in pow.from_height.max(1)..block.header.height {
                if let Ok(Some(b)) = self.nodes[node as usize].store.block_at(h) {
                    self.client.observe(node, &b);
                }
            }
        }
        self.client.observe(node, block);
    }

    /// What arrives at `to` from `from`.
    pub(crate) fn deliver(&mut self, from: ValidatorId, to: ValidatorId, wire: Wire) {
        match wire {
            Wire::Consensus(segment, msg) => {
                if self.cfg.log_messages {
                    let text = crate::look::describe_message(&msg);
                    self.log(|| format!("n{from} -> n{to}: {text}"));
                }
                if let Some(obs) = self.observer.as_mut() {
                    obs(from, to, &msg);
                }
                // The sender's index among its segment's validators.
                let Some(index) = self.cfg.set_of(segment).iter().position(|n| *n == from) else {
                    return;
                };
                let index = index as ValidatorId;
                self.drive(to, |d, now| d.message(now, from, index, segment, msg));
            }
            Wire::Tx(tx) => self.submit(to, tx, false),
            Wire::SyncRequest { from_height } => {
                let store = self.nodes[to as usize].store.clone();
                let blocks = serve::blocks(&*store, from_height, SYNC_BATCH, SYNC_BUDGET);
                self.answer(to, from, blocks, |blocks| Wire::SyncResponse { blocks });
            }
            Wire::LocatorRequest { locator } => {
                let store = self.nodes[to as usize].store.clone();
                let blocks = serve::blocks_after(&*store, &locator, SYNC_BATCH, SYNC_BUDGET);
                self.answer(to, from, blocks, |blocks| Wire::LocatorResponse { blocks });
            }
            Wire::SyncResponse { blocks } | Wire::LocatorResponse { blocks } => {
                self.drive(to, |d, now| d.blocks(now, from, blocks))
            }
            Wire::Block(block) => self.drive(to, |d, now| d.block(now, from, block)),
            Wire::Announce { height } => self.drive(to, |d, now| d.announced(now, from, height)),
        }
    }

    /// Sends the blocks a request asked for, as a peer reads them off the
    /// wire.
    fn answer(
        &mut self,
        node: ValidatorId,
        to: ValidatorId,
        encoded: Result<Vec<Vec<u8>>, cairn_chain::StoreError>,
        wire: fn(Vec<Block>) -> Wire,
    ) {
        let blocks: Result<Vec<Block>, String> = encoded.map_err(|e| e.to_string()).and_then(|e| {
            e.iter()
                .map(|b| Block::decode(b).map_err(|e| e.to_string()))
                .collect()
        });
        match blocks {
            Ok(blocks) => self.send(node, to, wire(blocks)),
            Err(e) => self.fail(Violation::Scenario(format!(
                "node {node} serving blocks: {e}"
            ))),
        }
    }

    /// A wallet (or a peer's gossip) hands `tx` to `node`, which gossips it
    /// on if the wallet sent it and it is new here.
    pub(crate) fn submit(&mut self, node: ValidatorId, tx: cairn_chain::Transaction, gossip: bool) {
        let now = self.node_clock(node);
        let n = &self.nodes[node as usize];
        let Some(driver) = n.driver.as_ref() else {
            return;
        };
        n.pool_clock.store(now, Ordering::Relaxed);
        let admitted = cairn_driver::admit(
            driver.mempool(),
            &*n.store,
            &test_chain().genesis.hash(),
            vec![tx],
            Signatures::Trusted,
        );
        if admitted.accepted.is_empty() {
            return;
        }
        if gossip {
            for tx in &admitted.accepted {
                self.broadcast(node, Wire::Tx(tx.clone()));
            }
        }
        self.drive(node, |d, now| d.transactions_added(now));
    }
}

/// What a driver error means for the simulation.
fn violation_of(node: ValidatorId, e: DriverError) -> Violation {
    match e {
        DriverError::FinalBlock { height, reason } => Violation::Validity {
            node,
            height,
            error: reason,
        },
        other => Violation::Stability {
            node,
            detail: other.to_string(),
        },
    }
}
