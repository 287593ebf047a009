//! One simulated node: what survives a crash (the block store, the state,
//! the engine's persisted keys) and what does not (the engine, the mempool,
//! pending timers and syncs).

use std::collections::BTreeMap;

use cairn_chain::state::read_account;
use cairn_chain::{Address, Block, MemState, Transaction};

use crate::{ConsensusEngine, ValidatorId};

#[derive(Debug)]
pub(crate) struct SimNode {
    pub(crate) id: ValidatorId,
    /// `None` while crashed.
    pub(crate) engine: Option<Box<dyn ConsensusEngine>>,
    /// Bumped at every start, so that timers of an earlier life are void.
    pub(crate) incarnation: u64,
    // Durable.
    pub(crate) disk: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The final chain, genesis first: `chain[h]` is at height `h`.
    pub(crate) chain: Vec<Block>,
    pub(crate) state: MemState,
    /// The node's wall clock is the simulation's time plus this.
    pub(crate) clock_offset: u64,
    // Volatile.
    pub(crate) mempool: BTreeMap<(Address, u64), Transaction>,
    pub(crate) timer: Option<u64>,
    /// Block sync in progress: the peer asked and when to give up on it.
    pub(crate) syncing: Option<(ValidatorId, u64)>,
    /// Proof-of-work: the current mining job (bumped to void a job), who
    /// sent each block, and the locator of the block fetch in progress.
    pub(crate) mining_job: u64,
    pub(crate) origins: BTreeMap<cairn_chain::Hash, ValidatorId>,
    pub(crate) sync_locator: Vec<cairn_chain::Hash>,
    /// Role, term and leader last logged.
    pub(crate) shown: Option<(&'static str, u64, Option<ValidatorId>)>,
}

impl SimNode {
    pub(crate) fn up(&self) -> bool {
        self.engine.is_some()
    }

    pub(crate) fn head(&self) -> &Block {
        // The chain always holds genesis.
        &self.chain[self.chain.len() - 1]
    }

    pub(crate) fn height(&self) -> u64 {
        self.head().header.height
    }

    fn nonce(&self, address: &Address) -> u64 {
        read_account(&self.state, address)
            .ok()
            .flatten()
            .map_or(0, |a| a.nonce)
    }

    /// Adds a client's transaction unless it is stale or known.
    pub(crate) fn add_tx(&mut self, tx: Transaction) -> bool {
        let sender = tx.sender();
        if tx.nonce < self.nonce(&sender) {
            return false;
        }
        if self.mempool.contains_key(&(sender, tx.nonce)) {
            return false;
        }
        self.mempool.insert((sender, tx.nonce), tx);
        true
    }

    /// Drops transactions whose nonce the final state has passed.
    pub(crate) fn prune_mempool(&mut self, block: &Block) {
        let senders: Vec<Address> = block.transactions.iter().map(Transaction::sender).collect();
        for sender in senders {
            let nonce = self.nonce(&sender);
            let stale: Vec<(Address, u64)> = self
                .mempool
                .range((sender, 0)..(sender, nonce))
                .map(|(k, _)| *k)
                .collect();
            for k in stale {
                self.mempool.remove(&k);
            }
        }
    }

    /// What the driver reports with `Input::TransactionsAvailable`.
    pub(crate) fn ready_count(&self) -> usize {
        self.mempool.len()
    }
}
