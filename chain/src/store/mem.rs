//! A block store in memory, for tests and the simulator: the same contract
//! as the RocksDB store (see [`ChainStore`]), nothing on disk. A simulated
//! crash keeps it, as a real crash keeps the disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::{ChainStore, RawEntry, StoreError, TxLocation, UndoRecord};
use crate::state::{StateChanges, StateError, StateReader};
use crate::{Block, Hash, Header};

#[derive(Debug, Default)]
struct Inner {
    genesis: Option<Hash>,
    head: Option<Hash>,
    blocks: HashMap<Hash, Block>,
    /// The canonical chain: `heights[h]` is the hash at height `h`.
    heights: Vec<Hash>,
    tx_index: HashMap<Hash, (u64, u32)>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    undo: HashMap<Hash, UndoRecord>,
    engine: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// An in-memory [`ChainStore`].
#[derive(Debug)]
pub struct MemStore {
    inner: Mutex<Inner>,
    undo: bool,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new(true)
    }
}

impl MemStore {
    /// An empty store; `undo` as [`super::Store::set_undo`].
    pub fn new(undo: bool) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            undo,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Corrupt {
            what: "memory store".into(),
            reason: "a writer panicked".into(),
        })
    }

    /// The canonical chain, genesis first.
    pub fn chain(&self) -> Result<Vec<Block>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .heights
            .iter()
            .filter_map(|h| inner.blocks.get(h).cloned())
            .collect())
    }

    /// Every state entry, in key order.
    pub fn state_entries(&self) -> Result<Vec<RawEntry>, StoreError> {
        Ok(self
            .lock()?
            .state
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

fn apply(
    state: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
) {
    for (k, v) in changes {
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(&k),
        };
    }
}

impl StateReader for MemStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.lock()?.state.get(key).cloned())
    }
}

impl ChainStore for MemStore {
    fn init_genesis(&self, genesis: &Block, state: &StateChanges) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let hash = genesis.hash();
        if let Some(stored) = inner.genesis {
            if stored != hash {
                return Err(StoreError::GenesisMismatch {
                    stored,
                    expected: hash,
                });
            }
            return Ok(());
        }
        inner.blocks.insert(hash, genesis.clone());
        inner.heights = vec![hash];
        apply(&mut inner.state, state.clone());
        inner.genesis = Some(hash);
        inner.head = Some(hash);
        Ok(())
    }

    fn genesis_hash(&self) -> Result<Option<Hash>, StoreError> {
        Ok(self.lock()?.genesis)
    }

    fn head_hash(&self) -> Result<Hash, StoreError> {
        self.lock()?.head.ok_or(StoreError::NotInitialised)
    }

    fn header(&self, hash: &Hash) -> Result<Option<Header>, StoreError> {
        Ok(self.lock()?.blocks.get(hash).map(|b| b.header.clone()))
    }

    fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        Ok(self.lock()?.blocks.get(hash).cloned())
    }

    fn has_block(&self, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self.lock()?.blocks.contains_key(hash))
    }

    fn hash_at(&self, height: u64) -> Result<Option<Hash>, StoreError> {
        let inner = self.lock()?;
        Ok(usize::try_from(height)
            .ok()
            .and_then(|h| inner.heights.get(h))
            .copied())
    }

    fn tx_location(&self, tx: &Hash) -> Result<Option<TxLocation>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.tx_index.get(tx).and_then(|&(height, index)| {
            let block = *inner.heights.get(height as usize)?;
            Some(TxLocation {
                block,
                height,
                index,
            })
        }))
    }

    fn commit_block(&self, block: &Block, changes: &StateChanges) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let head = inner.head.ok_or(StoreError::NotInitialised)?;
        let hash = block.hash();
        if block.header.parent != head {
            return Err(StoreError::NotExtendingHead {
                block: hash,
                parent: block.header.parent,
                head,
            });
        }
        if self.undo {
            let undo: UndoRecord = changes
                .keys()
                .map(|k| (k.clone(), inner.state.get(k).cloned()))
                .collect();
            inner.undo.insert(hash, undo);
        }
        for (i, tx) in block.transactions.iter().enumerate() {
            inner
                .tx_index
                .insert(tx.hash(), (block.header.height, i as u32));
        }
        apply(&mut inner.state, changes.clone());
        inner.blocks.insert(hash, block.clone());
        inner.heights.push(hash);
        inner.head = Some(hash);
        Ok(())
    }

    fn revert(&self, n: u64) -> Result<Vec<Block>, StoreError> {
        let mut inner = self.lock()?;
        let height = (inner.heights.len() as u64).saturating_sub(1);
        if n > height {
            return Err(StoreError::RevertPastGenesis {
                requested: n,
                height,
            });
        }
        // Checked before anything changes: a revert is all or nothing.
        let keep = inner.heights.len() - n as usize;
        if let Some(block) = inner.heights[keep..]
            .iter()
            .find(|h| !inner.undo.contains_key(*h))
        {
            return Err(StoreError::NoUndo { block: *block });
        }
        let mut reverted = Vec::with_capacity(n as usize);
        while inner.heights.len() > keep {
            let Some(hash) = inner.heights.pop() else {
                break;
            };
            let undo = inner.undo.remove(&hash).unwrap_or_default();
            apply(&mut inner.state, undo);
            let block = inner
                .blocks
                .get(&hash)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt {
                    what: "chain".into(),
                    reason: format!("canonical block {hash} is missing"),
                })?;
            for tx in &block.transactions {
                inner.tx_index.remove(&tx.hash());
            }
            reverted.push(block);
        }
        inner.head = inner.heights.last().copied();
        Ok(reverted)
    }

    fn engine_write(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        apply(&mut self.lock()?.engine, writes.iter().cloned());
        Ok(())
    }

    fn engine_entries(&self) -> Result<Vec<RawEntry>, StoreError> {
        Ok(self
            .lock()?
            .engine
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
