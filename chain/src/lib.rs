//! Cairn's chain core: types, canonical encoding, signatures, the account
//! state and its transition, and the RocksDB block store.
//!
//! No async runtime and no other workspace crate: everything here is plain,
//! deterministic code that the node, the consensus engines, the genesis tool
//! and the wallet all share.

mod address;
mod block;
mod bytes;
pub mod codec;
pub mod error;
pub mod execution;
mod hash;
pub mod keyfile;
mod keys;
pub mod state;
pub mod state_tree;
pub mod store;
#[cfg(any(test, feature = "test-utils"))]
pub mod testkit;
mod transaction;

pub use address::{Address, ADDRESS_HRP};
pub use block::{
    transactions_root, transactions_root_of, Block, BlockFormatError, CompactBlock, Header,
    MAX_BLOCK_BYTES, MAX_BLOCK_TRANSACTIONS, MAX_COMPACT_BLOCK_BYTES, MAX_ENGINE_DATA_BYTES,
    MAX_SEAL_BYTES,
};
pub use error::ParseError;
pub use execution::{
    check_config, execute_block, execute_transactions, genesis_block, genesis_state, propose_block,
    ApplyError, BlockError, BlockExecutor, ConfigSchedule, Executed, ExecutionError,
    ExecutionParams, Proposal, SignatureCheck, TxRule,
};
pub use hash::Hash;
pub use keys::{verify_batch, PublicKey, SecretKey, Signature, SignatureError};
pub use state::{Account, MemState, Overlay, StateChanges, StateError, StateReader};
#[cfg(any(test, feature = "test-utils"))]
pub use store::MemStore;
pub use store::{ChainStore, StoreError, TxLocation};
#[cfg(feature = "rocksdb")]
pub use store::{Store, StoreMemory};
pub use transaction::{
    verify_transactions, Transaction, TransactionFormatError, MAX_CHAIN_ID_LEN,
    MAX_TRANSACTION_BYTES,
};
