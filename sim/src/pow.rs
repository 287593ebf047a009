//! Proof-of-work in the simulator: miners with real luck, and what a
//! scenario looks at (heads, work, convergence). Moving heads, fetching
//! branches and gossiping blocks are the driver's.
//!
//! A miner's luck is real: the simulator searches nonces for the template
//! from a seeded start, and the block is found after as many hash attempts
//! as the search took, at [`PowSim::hash_ms`] simulated milliseconds each.

use std::collections::BTreeSet;

use cairn_chain::{Block, ChainStore, Hash};
use cairn_consensus::pow::{header_work, search_nonce, with_nonce, PowSeal};
use cairn_consensus::ValidatorId;
use rand::Rng;

use super::{Event, Sim, Violation};

/// Proof-of-work simulation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowSim {
    /// The first mined height: 1, or the height of a scheduled switch to
    /// proof-of-work (the blocks below it are final).
    pub from_height: u64,
    /// The first height after it, where a final engine takes over.
    pub to_height: Option<u64>,
    /// Simulated milliseconds per hash attempt, per miner.
    pub hash_ms: u64,
    /// A client sees its transfer committed once it has this many
    /// confirmations on the node it looks at.
    pub confirmations: u64,
    /// Node clocks differ by up to this much.
    pub clock_skew_ms: u64,
    /// A miner that seals blocks whose contents are invalid (a made-up
    /// state root under valid work), as a hostile miner would.
    pub invalid_miner: Option<ValidatorId>,
    /// A miner that keeps the blocks it finds to itself until
    /// [`Sim::withhold`] turns it honest (a private branch, as in selfish
    /// mining).
    /// Wallets neither send to it nor look at it.
    pub withholding_miner: Option<ValidatorId>,
}

impl Sim {
    /// The client looking at `node` sees the block that just got its
    /// confirmations.
    pub(crate) fn observe_confirmed(&mut self, node: ValidatorId) {
        let Some(pow) = self.cfg.pow else {
            return;
        };
        if pow.withholding_miner == Some(node) {
            return;
        }
        let n = &self.nodes[node as usize];
        let Some(h) = (n.height() + 1).checked_sub(pow.confirmations.max(1)) else {
            return;
        };
        // Blocks below the switch were final, and seen so.
        if h >= pow.from_height.max(1) && self.cfg.pow_at(h) {
            if let Ok(Some(block)) = n.store.block_at(h) {
                self.client.observe(node, &block);
            }
        }
    }

    /// A new mining job: search the nonce now, find it after as many
    /// simulated hash attempts as the search took.
    pub(crate) fn mine(&mut self, node: ValidatorId, block: Block) {
        let Some(pow) = self.cfg.pow else {
            return;
        };
        let n = &mut self.nodes[node as usize];
        n.mining_job += 1;
        let (job, incarnation) = (n.mining_job, n.incarnation);
        let mut block = block;
        if pow.invalid_miner == Some(node) {
            let what = corrupt(&mut block);
            self.log(|| format!("n{node} seals a block with {what}"));
        }
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

    /// A miner found `block` for job `job`: the node's driver takes it (and
    /// announces it) if the job is still current.
    pub(crate) fn mined(&mut self, node: ValidatorId, incarnation: u64, job: u64, block: Block) {
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
        // Published before the node applies it, as the node does.
        if self.withholds(node) {
            self.withheld.push((node, block.clone()));
        } else {
            self.broadcast(node, crate::net::Wire::Block(block.clone()));
        }
        self.drive(node, |d, now| d.mined(now, block));
    }

    /// Whether `node` keeps the blocks it mines to itself.
    pub(crate) fn withholds(&self, node: ValidatorId) -> bool {
        !self.honest_for_now && self.cfg.pow.and_then(|p| p.withholding_miner) == Some(node)
    }

    /// Whether the withholding miner keeps what it mines to itself (the
    /// default) or, with `false`, publishes its private branch, oldest
    /// first, and every block it finds from then on — until it withholds
    /// again. A miner that kept withholding could never end on one head
    /// with the others: its own branch may well hold more work.
    pub fn withhold(&mut self, on: bool) {
        self.honest_for_now = !on;
        if on {
            return;
        }
        let blocks = std::mem::take(&mut self.withheld);
        self.log(|| format!("{} withheld blocks released", blocks.len()));
        for (from, block) in blocks {
            self.broadcast(from, crate::net::Wire::Block(block));
        }
    }

    /// Blocks withheld so far.
    pub fn withheld(&self) -> usize {
        self.withheld.len()
    }

    // ----- looking in -----

    /// The node's head block hash.
    pub fn head_hash(&self, node: ValidatorId) -> Hash {
        self.nodes[node as usize].head().hash()
    }

    /// Cumulative work of the node's chain.
    pub fn chain_work(&self, node: ValidatorId) -> u128 {
        self.nodes[node as usize]
            .store
            .chain()
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
    pub(crate) fn finish_pow(&mut self) -> Result<(), Violation> {
        let all: Vec<ValidatorId> = (0..self.cfg.validators).collect();
        if !self.converged(&all) {
            return Err(Violation::Liveness {
                detail: format!("nodes end on different heads ({})", self.describe()),
            });
        }
        let chain = self.nodes[0].store.chain();
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

/// What the invalid miner does to the block it seals, by height: a made-up
/// state root, a transfer whose signature does not verify, a transfer
/// included twice (its nonce spent twice). The transaction root is
/// recomputed, so the block's form is right and only executing it shows.
fn corrupt(block: &mut Block) -> &'static str {
    let kind = if block.transactions.is_empty() {
        0
    } else {
        block.header.height % 3
    };
    let what = match kind {
        1 => {
            block.transactions[0].signature.0[0] ^= 1;
            "a bad signature"
        }
        2 => {
            let again = block.transactions[0].clone();
            block.transactions.push(again);
            "a transfer spent twice"
        }
        _ => {
            block.header.state_root = Hash::digest(b"a made-up state root");
            "a made-up state root"
        }
    };
    block.header.tx_root = cairn_chain::transactions_root(&block.transactions);
    what
}
