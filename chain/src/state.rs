//! Account state as a key-value map, read through [`StateReader`] and changed
//! through an [`Overlay`] that collects writes for one atomic commit.
//!
//! Keys (all in one keyspace, the store's `state` column family):
//! - `a` ‖ address (20 bytes) → [`Account`]
//! - `p` ‖ tier (1 byte) ‖ index (8 bytes, big-endian) → a page of 30
//!   state-tree node hashes (see [`crate::state_tree`])
//! - `c` → number of accounts (u64)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{codec, Address};

/// An account: its balance, the nonce its next transaction must carry, and its
/// fixed position among the leaves of the state tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
    /// Leaf index in the state tree, assigned when the account is created.
    pub index: u64,
}

/// Reading state failed below the state layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("storage error: {0}")]
    Storage(String),
    #[error("corrupt state entry {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Read access to a state keyspace.
pub trait StateReader {
    /// The value stored at `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
}

impl<R: StateReader + ?Sized> StateReader for &R {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        (**self).get(key)
    }
}

/// Writes to apply atomically: `Some(value)` sets, `None` deletes. Ordered,
/// so that applying them is deterministic.
pub type StateChanges = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// An in-memory state keyspace (tests, the simulator, benchmarks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemState {
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemState {
    /// Applies `changes`.
    pub fn apply(&mut self, changes: &StateChanges) {
        for (k, v) in changes {
            match v {
                Some(v) => {
                    self.entries.insert(k.clone(), v.clone());
                }
                None => {
                    self.entries.remove(k);
                }
            }
        }
    }
}

impl StateReader for MemState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.entries.get(key).cloned())
    }
}

/// Pending writes layered over a base state: reads see the writes first.
#[derive(Debug)]
pub struct Overlay<R> {
    base: R,
    changes: StateChanges,
}

impl<R: StateReader> Overlay<R> {
    pub fn new(base: R) -> Self {
        Self {
            base,
            changes: StateChanges::new(),
        }
    }

    /// Records a write.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.changes.insert(key, Some(value));
    }

    /// Layers a block's changes (sets and deletes) on top.
    pub fn apply(&mut self, changes: &StateChanges) {
        for (k, v) in changes {
            self.changes.insert(k.clone(), v.clone());
        }
    }

    /// The writes collected so far.
    pub fn changes(&self) -> &StateChanges {
        &self.changes
    }

    /// Consumes the overlay, returning its writes.
    pub fn into_changes(self) -> StateChanges {
        self.changes
    }
}

impl<R: StateReader> StateReader for Overlay<R> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        match self.changes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }
}

/// The state key of an account.
pub fn account_key(address: &Address) -> Vec<u8> {
    let mut k = Vec::with_capacity(21);
    k.push(b'a');
    k.extend_from_slice(&address.0);
    k
}

/// The state key holding the number of accounts.
pub const ACCOUNT_COUNT_KEY: &[u8] = b"c";

/// Reads an account (`None` if it does not exist).
pub fn read_account(
    state: &impl StateReader,
    address: &Address,
) -> Result<Option<Account>, StateError> {
    let key = account_key(address);
    state
        .get(&key)?
        .map(|bytes| {
            codec::decode::<Account>(&bytes, 64).map_err(|e| StateError::Corrupt {
                key: format!("account {address}"),
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// Reads the number of accounts.
pub fn read_account_count(state: &impl StateReader) -> Result<u64, StateError> {
    match state.get(ACCOUNT_COUNT_KEY)? {
        None => Ok(0),
        Some(bytes) => codec::decode::<u64>(&bytes, 8).map_err(|e| StateError::Corrupt {
            key: "account count".into(),
            reason: e.to_string(),
        }),
    }
}
