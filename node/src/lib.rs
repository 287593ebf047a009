//! The Cairn node: the mempool, the driver that runs a consensus engine over
//! the store and the network, the HTTP API, metrics, and the devnet
//! supervisor behind `cairn-node devnet`.

pub mod api;
pub mod devnet;
pub mod http;
pub mod ingest;
pub mod mempool;
pub mod metrics;
pub mod miner;
pub mod node;
