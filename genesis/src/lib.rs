//! Cairn's genesis: the `genesis.json` format that defines a network, and the
//! generator that writes a whole local network (genesis, keys, node configs).

pub mod config;
pub mod generate;
pub mod node_config;
pub mod upgrade;

pub use config::{
    Allocation, ConsensusConfig, EngineKind, Genesis, GenesisError, PbftParams, PowParams,
    RaftParams, Segment, Upgrade, Validator,
};
pub use generate::{generate, GeneratedNetwork, GeneratedNode, NetworkSpec, MAX_BENCH_ACCOUNTS};
pub use node_config::NodeConfig;
pub use upgrade::{add_upgrade, UpgradeSpec};
