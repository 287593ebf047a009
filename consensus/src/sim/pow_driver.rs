//! The simulator's driver for proof-of-work: moving heads (with the state
//! and mempool changes a reorganisation makes), simulated miners, block
//! gossip and block fetches by locator, as the node does them.
//!
//! A miner's luck is real: the simulator searches nonces for the template
//! from a seeded start, and the block is found after as many hash attempts
//! as the search took, at [`PowSim::hash_ms`] simulated milliseconds each.

use std::collections::BTreeSet;

use cairn_chain::{Block, Hash, MemState};
use rand::Rng;

use super::{test_chain, Event, Sim, Violation, Wire, SYNC_BATCH, SYNC_TIMEOUT_MS};
use crate::pow::{header_work, locator_heights, search_nonce, with_nonce, PowSeal};
use crate::{Input, ValidatorId};

/// Proof-of-work simulation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowSim {
    /// Simulated milliseconds per hash attempt, per miner.
    pub hash_ms: u64,
    /// A client sees its transfer committed once it has this many
    /// confirmations on the node it looks at.
    pub confirmations: u64,
    /// Node clocks differ by up to this much.
    pub clock_skew_ms: u64,
}

impl Sim {
    /// What the node's driver does on `SetHead`.
    pub(super) fn set_head(
        &mut self,
        node: ValidatorId,
        revert: u64,
        apply: Vec<Block>,
        inputs: &mut std::collections::VecDeque<Input>,
    ) {
        let len = self.nodes[node as usize].chain.len() as u64;
        let Some(keep) = len.checked_sub(revert).filter(|k| *k >= 1) else {
            self.fail(Violation::Stability {
                node,
                detail: format!("asked to revert {revert} blocks of {}", len - 1),
            });
            return;
        };
        let reverted = self.nodes[node as usize].chain.split_off(keep as usize);
        if !reverted.is_empty() {
            self.stats.reorgs += 1;
            self.stats.max_reorg_depth = self.stats.max_reorg_depth.max(revert);
            self.record(b'R', node, &revert.to_le_bytes());
            self.log(|| format!("n{node} reverts {revert} blocks"));
            self.replay_state(node);
        }
        for block in apply {
            let n = &self.nodes[node as usize];
            if block.header.parent != n.head().hash() {
                self.fail(Violation::Stability {
                    node,
                    detail: format!(
                        "engine applies block {} that does not extend the head",
                        block.header.height
                    ),
                });
                return;
            }
            // Honest miners only: a block that does not execute is a bug.
            if !self.append_final(node, block) {
                return;
            }
            self.observe_confirmed(node);
        }
        // Transactions of the abandoned branch go back to the mempool
        // (`add_tx` refuses those the new branch already holds) and are
        // gossiped again: the other side of a healed partition never saw
        // them.
        let mut back = Vec::new();
        for b in &reverted {
            for tx in &b.transactions {
                if self.nodes[node as usize].add_tx(tx.clone()) {
                    back.push(tx.clone());
                }
            }
        }
        for tx in back {
            for to in 0..self.cfg.validators {
                if to != node {
                    self.send(node, to, Wire::Tx(tx.clone()));
                }
            }
        }
        if !reverted.is_empty() {
            inputs.push_back(Input::Reverted { blocks: reverted });
        }
        let count = self.nodes[node as usize].ready_count();
        inputs.push_back(Input::TransactionsAvailable { count });
    }

    /// Recomputes a node's state from genesis along its chain (execution
    /// results are cached by block hash).
    fn replay_state(&mut self, node: ValidatorId) {
        let chain = std::mem::take(&mut self.nodes[node as usize].chain);
        let mut state = MemState::default();
        state.apply(&test_chain().genesis_state);
        for pair in chain.windows(2) {
            match self.exec.execute(&state, &pair[0].header, &pair[1]) {
                Ok(ex) => state.apply(&ex.changes),
                Err(error) => {
                    self.fail(Violation::Validity {
                        node,
                        height: pair[1].header.height,
                        error,
                    });
                    break;
                }
            }
        }
        let n = &mut self.nodes[node as usize];
        n.chain = chain;
        n.state = state;
    }

    /// The client looking at `node` sees the block that just got its
    /// confirmations.
    fn observe_confirmed(&mut self, node: ValidatorId) {
        let Some(pow) = self.cfg.pow else {
            return;
        };
        let n = &self.nodes[node as usize];
        let Some(h) = (n.height() + 1).checked_sub(pow.confirmations.max(1)) else {
            return;
        };
        if h >= 1 {
            let block = n.chain[h as usize].clone();
            self.client.observe(node, &block);
        }
    }

    /// A new mining job: search the nonce now, find it after as many
    /// simulated hash attempts as the search took.
    pub(super) fn mine(&mut self, node: ValidatorId, block: Block) {
        let Some(pow) = self.cfg.pow else {
            return;
        };
        let n = &mut self.nodes[node as usize];
        n.mining_job += 1;
        let (job, incarnation) = (n.mining_job, n.incarnation);
        let Ok(seal) = PowSeal::decode(&block.header.engine_data) else {
            return;
        };
        let start: u64 = self.rng.gen();
        // Past 50 times the expected work (odds e^-50) the job is dropped.
        let limit = seal.difficulty.saturating_mul(50);
        let Some((nonce, tries)) = search_nonce(&block.header, start, limit) else {
            return;
        };
        let Some(header) = with_nonce(&block.header, nonce) else {
            return;
        };
        let mined = Block { header, ..block };
        self.schedule(
            tries.saturating_mul(pow.hash_ms.max(1)),
            Event::Mined {
                node,
                incarnation,
                job,
                block: mined,
            },
        );
    }

    pub(super) fn mined(&mut self, node: ValidatorId, incarnation: u64, job: u64, block: Block) {
        let n = &mut self.nodes[node as usize];
        if !n.up() || n.incarnation != incarnation || n.mining_job != job {
            return;
        }
        n.mining_job += 1;
        self.stats.blocks_mined += 1;
        let hash = block.hash();
        self.record(b'm', node, hash.as_ref());
        self.built.push((node, self.now, block.header.height, hash));
        self.log(|| format!("n{node} mines {} {hash}", block.header.height));
        for to in 0..self.cfg.validators {
            if to != node {
                self.send(node, to, Wire::Block(block.clone()));
            }
        }
        self.feed(node, Input::Block { block });
    }

    pub(super) fn block_arrives(&mut self, node: ValidatorId, from: ValidatorId, block: Block) {
        let n = &mut self.nodes[node as usize];
        if n.origins.len() > 100_000 {
            n.origins.clear();
        }
        n.origins.insert(block.hash(), from);
        self.feed(node, Input::Block { block });
    }

    pub(super) fn fetch_blocks(&mut self, node: ValidatorId, hash: Hash, locator: Vec<Hash>) {
        let now = self.now;
        let n = &mut self.nodes[node as usize];
        let Some(&peer) = n.origins.get(&hash) else {
            return;
        };
        if n.syncing.is_some_and(|(_, until)| until > now) {
            return;
        }
        n.syncing = Some((peer, now + SYNC_TIMEOUT_MS));
        n.sync_locator = locator.clone();
        self.send(node, peer, Wire::LocatorRequest { locator });
    }

    /// The peer's side of a fetch: its blocks after the first locator hash
    /// on its chain.
    pub(super) fn serve_locator(&mut self, node: ValidatorId, to: ValidatorId, locator: &[Hash]) {
        let chain = &self.nodes[node as usize].chain;
        let wanted: BTreeSet<&Hash> = locator.iter().collect();
        // The highest block of this chain the locator names.
        let start = chain
            .iter()
            .rposition(|b| wanted.contains(&b.hash()))
            .map(|i| i + 1);
        let blocks: Vec<Block> = match start {
            Some(s) => chain.iter().skip(s).take(SYNC_BATCH).cloned().collect(),
            None => Vec::new(),
        };
        self.send(node, to, Wire::LocatorResponse { blocks });
    }

    /// What a node does when it connects to its peers (here: when it
    /// starts): it asks each for the blocks after its chain (Bitcoin's
    /// initial block download), and each pushes it its pending
    /// transactions, as the node's p2p layer does.
    pub(super) fn pow_connected(&mut self, node: ValidatorId) {
        let locator = chain_locator(&self.nodes[node as usize].chain);
        self.nodes[node as usize].sync_locator = locator.clone();
        for peer in 0..self.cfg.validators {
            if peer == node || !self.nodes[peer as usize].up() {
                continue;
            }
            self.send(
                node,
                peer,
                Wire::LocatorRequest {
                    locator: locator.clone(),
                },
            );
            let pending: Vec<_> = self.nodes[peer as usize]
                .mempool
                .values()
                .cloned()
                .collect();
            for tx in pending {
                self.send(peer, node, Wire::Tx(tx));
            }
        }
    }

    pub(super) fn locator_response(
        &mut self,
        node: ValidatorId,
        peer: ValidatorId,
        blocks: Vec<Block>,
    ) {
        // Answers come only to requests (the fetch in flight, or those a
        // start sends to every peer).
        let n = &mut self.nodes[node as usize];
        if n.syncing.is_some_and(|(p, _)| p == peer) {
            n.syncing = None;
        }
        // More to come: ask again from the last block received, once this
        // batch is in (the fetch stays marked in flight meanwhile).
        let next = blocks
            .last()
            .filter(|_| blocks.len() >= SYNC_BATCH)
            .map(|last| {
                let mut locator = vec![last.hash()];
                locator.extend(n.sync_locator.iter().copied());
                locator
            });
        let busy = n.syncing.is_some_and(|(_, until)| until > self.now);
        let next = next.filter(|_| !busy);
        if next.is_some() {
            n.syncing = Some((peer, self.now + SYNC_TIMEOUT_MS));
        }
        for block in blocks {
            let n = &mut self.nodes[node as usize];
            n.origins.insert(block.hash(), peer);
            self.feed(node, Input::Block { block });
        }
        if let Some(locator) = next {
            self.send(node, peer, Wire::LocatorRequest { locator });
        }
    }

    // ----- looking in -----

    /// The node's head block hash.
    pub fn head_hash(&self, node: ValidatorId) -> Hash {
        self.nodes[node as usize].head().hash()
    }

    /// Cumulative work of the node's chain.
    pub fn chain_work(&self, node: ValidatorId) -> u128 {
        self.nodes[node as usize]
            .chain
            .iter()
            .map(|b| u128::from(header_work(&b.header)))
            .sum()
    }

    /// Forgets the deepest reorganisation so far (to measure one phase).
    pub fn reset_reorg_depth(&mut self) {
        self.stats.max_reorg_depth = 0;
    }

    /// Whether every up node in `nodes` has the same head.
    pub fn converged(&self, nodes: &[ValidatorId]) -> bool {
        let mut heads = nodes
            .iter()
            .filter(|&&n| self.is_up(n))
            .map(|&n| self.head_hash(n));
        match heads.next() {
            Some(first) => heads.all(|h| h == first),
            None => true,
        }
    }

    /// The end of a proof-of-work run: the nodes agree on one head, and
    /// every transfer a client saw confirmed (on any node, on any side of a
    /// partition) is in that chain.
    pub(super) fn finish_pow(&mut self) -> Result<(), Violation> {
        let all: Vec<ValidatorId> = (0..self.cfg.validators).collect();
        if !self.converged(&all) {
            return Err(Violation::Liveness {
                detail: format!("nodes end on different heads ({})", self.describe()),
            });
        }
        let chain = &self.nodes[0].chain;
        let txs: BTreeSet<Hash> = chain
            .iter()
            .flat_map(|b| b.transactions.iter().map(|t| t.hash()))
            .collect();
        for ack in &self.client.acks {
            if !txs.contains(&ack.tx) {
                return Err(Violation::LostTransaction {
                    tx: ack.tx,
                    height: ack.height,
                    node: 0,
                });
            }
        }
        Ok(())
    }
}

/// The block locator of a whole chain (genesis first).
fn chain_locator(chain: &[Block]) -> Vec<Hash> {
    let head = chain.len() as u64 - 1;
    locator_heights(head, 0)
        .into_iter()
        .filter_map(|h| chain.get(h as usize).map(Block::hash))
        .collect()
}
