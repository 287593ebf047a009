//! The Cairn node: the IO shell that runs the driver (`cairn-driver`) over
//! the store and the network, the HTTP API, metrics, and the devnet
//! supervisor behind `cairn-node devnet`.

pub mod api;
pub mod dashboard;
pub mod devnet;
pub mod events;
pub mod http;
pub mod ingest;
pub mod init;
pub mod metrics;
pub mod miner;
pub mod node;
pub mod shared;
