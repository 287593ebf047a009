//! Block stores: the contract every store keeps ([`ChainStore`]), the
//! RocksDB store the node runs on ([`Store`], behind the default `rocksdb`
//! feature, so that code which only decodes and executes — fuzz targets —
//! builds without a C++ toolchain), and the in-memory store of tests and
//! the simulator.

use std::path::PathBuf;

use crate::state::StateError;
use crate::Hash;

mod chain_store;
#[cfg(any(test, feature = "test-utils"))]
mod mem;
#[cfg(feature = "rocksdb")]
mod rocks;

pub use chain_store::{ChainStore, RawEntry, TxLocation, UndoRecord};
#[cfg(any(test, feature = "test-utils"))]
pub use mem::MemStore;
#[cfg(feature = "rocksdb")]
pub use rocks::{Store, StoreMemory};

/// A store operation failed. Messages carry their cause (no `source`), so
/// a chain of contexts prints it once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("RocksDB: {0}")]
    Rocks(String),
    #[error("cannot open the database at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("the database belongs to genesis {stored}, not {expected}")]
    GenesisMismatch { stored: Hash, expected: Hash },
    #[error(
        "the database at {path} stores state in format {found}, this node reads format {expected}: \
         it was written by another version of Cairn; delete it to sync again (a devnet: --fresh)"
    )]
    Format {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("the database has no genesis block yet")]
    NotInitialised,
    #[error("block {block} has parent {parent}, but the head is {head}")]
    NotExtendingHead {
        block: Hash,
        parent: Hash,
        head: Hash,
    },
    #[error("block {block} has no undo record: it was committed as final and cannot be reverted")]
    NoUndo { block: Hash },
    #[error("cannot revert {requested} blocks from height {height}: genesis is never reverted")]
    RevertPastGenesis { requested: u64, height: u64 },
}

impl From<StoreError> for StateError {
    fn from(e: StoreError) -> Self {
        StateError::Storage(e.to_string())
    }
}

#[cfg(test)]
mod contract_tests;
