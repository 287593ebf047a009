//! What a block store does, whatever it keeps its data in: the RocksDB
//! [`Store`](super::Store) the node runs on and the in-memory
//! [`MemStore`](super::MemStore) of tests and the simulator both pass the
//! same contract tests (`store/contract_tests.rs`).

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::state::{StateChanges, StateReader};
use crate::{Block, Hash, Header};

/// Where a committed transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxLocation {
    pub block: Hash,
    pub height: u64,
    pub index: u32,
}

/// The values the state keys a block changed had before it.
pub type UndoRecord = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A raw key/value pair (engine state, state entries).
pub type RawEntry = (Vec<u8>, Vec<u8>);

/// A chain of blocks with its head, the state at the head, and the
/// consensus engine's persisted keys.
///
/// The contract:
/// - **Atomic commits.** [`ChainStore::commit_block`] makes a block the head
///   together with its state changes, indices and undo record, or changes
///   nothing; so does [`ChainStore::revert`]. A durable store survives a
///   crash at any instant with the last head whose write completed.
/// - **One head.** Commits extend the head (else
///   [`StoreError::NotExtendingHead`]); reverts move it back, restoring the
///   exact state before the reverted blocks, and keep the blocks stored
///   (not canonical). Genesis is never reverted; a block committed
///   without an undo record (a store of final blocks) is never reverted.
/// - **State reads** ([`StateReader`]) see the head's state.
/// - **Engine keys** are the engine's own keyspace, written atomically.
pub trait ChainStore: StateReader + Send + Sync + std::fmt::Debug {
    /// Writes the genesis block and state if the store is empty; otherwise
    /// checks that the store belongs to this genesis.
    fn init_genesis(&self, genesis: &Block, state: &StateChanges) -> Result<(), StoreError>;
    /// The genesis block's hash, once initialised.
    fn genesis_hash(&self) -> Result<Option<Hash>, StoreError>;
    /// The hash of the canonical head.
    fn head_hash(&self) -> Result<Hash, StoreError>;
    /// A stored header, canonical or not.
    fn header(&self, hash: &Hash) -> Result<Option<Header>, StoreError>;
    /// A stored block, canonical or not.
    fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError>;
    /// Whether a block with this hash is stored (canonical or not).
    fn has_block(&self, hash: &Hash) -> Result<bool, StoreError>;
    /// The hash of the canonical block at `height`.
    fn hash_at(&self, height: u64) -> Result<Option<Hash>, StoreError>;
    /// Where a transaction was committed on the canonical chain.
    fn tx_location(&self, tx: &Hash) -> Result<Option<TxLocation>, StoreError>;
    /// Makes `block` the new head, with the state `changes` its execution
    /// produced, atomically. The block must extend the head.
    fn commit_block(&self, block: &Block, changes: &StateChanges) -> Result<(), StoreError>;
    /// Moves the head back `n` blocks, restoring the exact state before
    /// them, atomically. Returns the reverted blocks, the old head first.
    fn revert(&self, n: u64) -> Result<Vec<Block>, StoreError>;
    /// Applies engine-state writes (`None` deletes) durably and atomically.
    fn engine_write(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), StoreError>;
    /// Every engine-state entry, in key order (read once at start).
    fn engine_entries(&self) -> Result<Vec<RawEntry>, StoreError>;

    /// The canonical head's header.
    fn head(&self) -> Result<Header, StoreError> {
        let hash = self.head_hash()?;
        self.header(&hash)?.ok_or_else(|| StoreError::Corrupt {
            what: "head".into(),
            reason: format!("header {hash} is missing"),
        })
    }

    /// The canonical block at `height`.
    fn block_at(&self, height: u64) -> Result<Option<Block>, StoreError> {
        match self.hash_at(height)? {
            Some(h) => self.block(&h),
            None => Ok(None),
        }
    }
}
