//! One simulated node: what survives a crash (its store, with the engine's
//! persisted keys) and what does not (the driver with its engine and
//! mempool, pending timers, mining jobs).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use cairn_chain::{
    Block, ChainStore, Hash, Header, MemStore, StateChanges, StateError, StateReader, Store,
    StoreError, TxLocation,
};
use cairn_consensus::{Action, ConsensusEngine, EngineStatus, FinalityError, Input, ValidatorId};
use cairn_driver::Driver;

use crate::ActionCheck;

/// A simulated node's store: in memory, or RocksDB in a temporary
/// directory (the node's own store, for scenarios that run on it).
#[derive(Debug)]
pub enum SimStore {
    Memory(MemStore),
    RocksDb(Store, tempfile::TempDir),
}

impl SimStore {
    /// A RocksDB store in a fresh temporary directory.
    pub fn rocksdb(undo: bool) -> Result<Self, StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Open {
            path: std::env::temp_dir(),
            reason: e.to_string(),
        })?;
        let mut store = Store::open(dir.path())?;
        store.set_undo(undo);
        Ok(SimStore::RocksDb(store, dir))
    }

    fn inner(&self) -> &dyn ChainStore {
        match self {
            SimStore::Memory(s) => s,
            SimStore::RocksDb(s, _) => s,
        }
    }

    /// The canonical chain, genesis first.
    pub fn chain(&self) -> Vec<Block> {
        let height = self.head().map_or(0, |h| h.height);
        (0..=height)
            .map_while(|h| self.block_at(h).ok().flatten())
            .collect()
    }
}

impl StateReader for SimStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        self.inner().get(key)
    }
}

impl ChainStore for SimStore {
    fn init_genesis(&self, genesis: &Block, state: &StateChanges) -> Result<(), StoreError> {
        self.inner().init_genesis(genesis, state)
    }
    fn genesis_hash(&self) -> Result<Option<Hash>, StoreError> {
        self.inner().genesis_hash()
    }
    fn head_hash(&self) -> Result<Hash, StoreError> {
        self.inner().head_hash()
    }
    fn header(&self, hash: &Hash) -> Result<Option<Header>, StoreError> {
        self.inner().header(hash)
    }
    fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        self.inner().block(hash)
    }
    fn has_block(&self, hash: &Hash) -> Result<bool, StoreError> {
        self.inner().has_block(hash)
    }
    fn hash_at(&self, height: u64) -> Result<Option<Hash>, StoreError> {
        self.inner().hash_at(height)
    }
    fn tx_location(&self, tx: &Hash) -> Result<Option<TxLocation>, StoreError> {
        self.inner().tx_location(tx)
    }
    fn commit_block(&self, block: &Block, changes: &StateChanges) -> Result<(), StoreError> {
        self.inner().commit_block(block, changes)
    }
    fn revert(&self, n: u64) -> Result<Vec<Block>, StoreError> {
        self.inner().revert(n)
    }
    fn engine_write(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        self.inner().engine_write(writes)
    }
    fn engine_entries(&self) -> Result<Vec<cairn_chain::store::RawEntry>, StoreError> {
        self.inner().engine_entries()
    }
}

pub(crate) type SimDriver = Driver<SimStore, ValidatorId>;

#[derive(Debug)]
pub(crate) struct SimNode {
    pub(crate) id: ValidatorId,
    /// `None` while crashed.
    pub(crate) driver: Option<SimDriver>,
    /// Bumped at every start, so that timers of an earlier life are void.
    pub(crate) incarnation: u64,
    /// Durable: blocks, state and the engine's keys.
    pub(crate) store: Arc<SimStore>,
    /// The node's wall clock is the simulation's time plus this.
    pub(crate) clock_offset: u64,
    /// The wake-up scheduled for the driver (its clock).
    pub(crate) wake: Option<u64>,
    /// Proof-of-work: the current mining job (bumped to void a job).
    pub(crate) mining_job: u64,
    /// The node's clock as its mempool reads it (set before every call).
    pub(crate) pool_clock: Arc<std::sync::atomic::AtomicU64>,
    /// Blocks the driver had reverted at the last look (to see each
    /// reorganisation's depth).
    pub(crate) reverted: u64,
    /// Role, term and leader last logged.
    pub(crate) shown: Option<(&'static str, u64, Option<ValidatorId>)>,
    /// The schedule's segment its engine runs (what its messages carry).
    pub(crate) segment: u64,
}

impl SimNode {
    pub(crate) fn up(&self) -> bool {
        self.driver.is_some()
    }

    pub(crate) fn head(&self) -> Header {
        // The store always holds genesis: a failing read is a broken store.
        self.store
            .head()
            .unwrap_or_else(|e| panic!("node {}: {e}", self.id))
    }

    pub(crate) fn height(&self) -> u64 {
        self.head().height
    }

    pub(crate) fn status(&self) -> Option<&EngineStatus> {
        self.driver.as_ref().and_then(|d| d.status())
    }
}

/// An engine whose every output goes through the scenario's
/// [`ActionCheck`] (if any); a failed check is kept for the simulator.
pub(crate) struct Checked {
    pub(crate) node: ValidatorId,
    pub(crate) inner: Box<dyn ConsensusEngine>,
    pub(crate) check: Arc<Mutex<Option<ActionCheck>>>,
    pub(crate) failed: Arc<Mutex<Option<String>>>,
    /// Nodes whose block builds fail (the fault [`crate::Sim::fail_builds`]).
    pub(crate) failing_builds: Arc<Mutex<BTreeSet<ValidatorId>>>,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked")
            .field("node", &self.node)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ConsensusEngine for Checked {
    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        let mut actions = self.inner.handle(now_ms, input);
        if self
            .failing_builds
            .lock()
            .is_ok_and(|f| f.contains(&self.node))
        {
            // A build the driver cannot carry out: a parent it does not have.
            for a in &mut actions {
                if let Action::BuildBlock { parent, .. } = a {
                    *parent = Hash::digest(b"a parent this node does not have");
                }
            }
        }
        if let Ok(mut check) = self.check.lock() {
            if let Some(check) = check.as_mut() {
                let status = self.inner.status();
                for action in &actions {
                    if let Err(e) = check(self.node, &status, action) {
                        if let Ok(mut failed) = self.failed.lock() {
                            failed.get_or_insert(format!("node {}: {e}", self.node));
                        }
                    }
                }
            }
        }
        actions
    }
    fn status(&self) -> EngineStatus {
        self.inner.status()
    }
    fn verify_final(&self, block: &Block) -> Result<(), FinalityError> {
        self.inner.verify_final(block)
    }
    fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight()
    }
    fn final_blocks(&self) -> bool {
        self.inner.final_blocks()
    }
}
