//! `node.toml`: one node's configuration, written by the generator and read
//! by `cairn-node run --home DIR`. Relative paths are relative to the node's
//! home directory. Every section is optional and has a sensible default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cairn_chain::{Address, MAX_BLOCK_TRANSACTIONS};
use serde::{Deserialize, Serialize};

/// A node's configuration. See the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A name for logs and status output.
    pub name: String,
    /// The network's genesis file.
    #[serde(default = "default_genesis")]
    pub genesis: PathBuf,
    /// Where the node keeps its RocksDB database.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The validator's consensus key; absent on a node that only follows.
    #[serde(default)]
    pub validator_key: Option<PathBuf>,
    /// The libp2p identity key (created on first start if missing).
    #[serde(default = "default_p2p_key")]
    pub p2p_key: PathBuf,
    #[serde(default)]
    pub p2p: P2pConfig,
    #[serde(default)]
    pub rpc: RpcConfig,
    #[serde(default)]
    pub mempool: MempoolConfig,
    #[serde(default)]
    pub mining: MiningConfig,
    #[serde(default, skip_serializing_if = "BlockConfig::is_default")]
    pub block: BlockConfig,
}

/// Blocks this node builds (as a Raft leader, a PBFT primary or a miner).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlockConfig {
    /// Most transactions in a block this node builds; a block from a peer
    /// may hold up to the chain's limit ([`MAX_BLOCK_TRANSACTIONS`], the
    /// default). Under a load above what the network commits, blocks grow
    /// to this size: a lower value bounds what one block costs in memory and
    /// time.
    pub max_transactions: usize,
}

impl Default for BlockConfig {
    fn default() -> Self {
        Self {
            max_transactions: MAX_BLOCK_TRANSACTIONS,
        }
    }
}

impl BlockConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Peer-to-peer settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct P2pConfig {
    /// The multiaddr to listen on.
    pub listen: String,
    /// Peers to dial at start (multiaddrs ending in `/p2p/<peer id>`).
    pub bootstrap: Vec<String>,
    /// Most peers kept connected.
    pub max_peers: usize,
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            listen: "/ip4/127.0.0.1/tcp/26600".into(),
            bootstrap: Vec::new(),
            max_peers: 50,
        }
    }
}

/// HTTP API settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    pub listen: SocketAddr,
    /// Most HTTP connections open at once; more are closed on arrival.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and the longest a
    /// kept-alive connection stays open without a request.
    pub header_timeout_ms: u64,
    /// Time a request has, from its headers, to send its body and be
    /// answered.
    pub request_timeout_ms: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 26601)),
            max_connections: 256,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

/// Mempool limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolConfig {
    pub max_transactions: usize,
    pub max_per_sender: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        Self {
            max_transactions: 100_000,
            max_per_sender: 1_000,
        }
    }
}

/// Proof-of-work mining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiningConfig {
    pub enabled: bool,
    pub threads: usize,
    /// Where rewards go; defaults to the address of the validator key.
    pub reward_address: Option<Address>,
}

impl Default for MiningConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            threads: 1,
            reward_address: None,
        }
    }
}

fn default_genesis() -> PathBuf {
    "../genesis.json".into()
}
fn default_data_dir() -> PathBuf {
    "data".into()
}
fn default_p2p_key() -> PathBuf {
    "p2p.key".into()
}

/// `node.toml` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl NodeConfig {
    /// The file name inside a node's home.
    pub const FILE: &'static str = "node.toml";

    /// Reads `home/node.toml`.
    pub fn load(home: &Path) -> Result<Self, NodeConfigError> {
        let path = home.join(Self::FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| NodeConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| NodeConfigError::Invalid { path, message })
    }

    /// Parses and checks the text of a `node.toml`.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// Limits a parsed file may still break.
    pub fn check(&self) -> Result<(), String> {
        let n = self.block.max_transactions;
        if n == 0 || n > MAX_BLOCK_TRANSACTIONS {
            return Err(format!(
                "block.max_transactions is {n}; it must be from 1 to {MAX_BLOCK_TRANSACTIONS} (the chain's limit)"
            ));
        }
        let within = |key: &str, v: u64, max: u64| {
            if v == 0 || v > max {
                Err(format!("{key} is {v}; it must be from 1 to {max}"))
            } else {
                Ok(())
            }
        };
        within(
            "rpc.max_connections",
            self.rpc.max_connections as u64,
            65_536,
        )?;
        within(
            "rpc.header_timeout_ms",
            self.rpc.header_timeout_ms,
            3_600_000,
        )?;
        within(
            "rpc.request_timeout_ms",
            self.rpc.request_timeout_ms,
            3_600_000,
        )?;
        within("p2p.max_peers", self.p2p.max_peers as u64, 10_000)?;
        Ok(())
    }

    /// TOML text with a header comment.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("node config serialises to TOML");
        format!(
            "# Cairn node configuration (see README). Paths are relative to this folder.\n{body}"
        )
    }

    /// `path` resolved against the node's home.
    pub fn resolve(home: &Path, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            home.join(path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_file_gets_defaults() {
        let c: NodeConfig = toml::from_str("name = \"n\"").expect("parse");
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.rpc.listen.port(), 26601);
        assert!(!c.mining.enabled);
    }

    #[test]
    fn round_trips_and_refuses_unknown_keys() {
        let c: NodeConfig =
            toml::from_str("name = \"n\"\n[p2p]\nbootstrap = [\"/ip4/1.2.3.4/tcp/1\"]")
                .expect("parse");
        let back: NodeConfig = toml::from_str(&c.to_toml()).expect("back");
        assert_eq!(back, c);
        assert!(toml::from_str::<NodeConfig>("name = \"n\"\nbogus = 1").is_err());
    }

    #[test]
    fn block_size_outside_the_chain_limit_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (n, ok) in [(0, false), (1, true), (50_000, true), (50_001, false)] {
            let text = format!("name = \"n\"\n[block]\nmax_transactions = {n}\n");
            std::fs::write(dir.path().join(NodeConfig::FILE), text).expect("write");
            let got = NodeConfig::load(dir.path());
            assert_eq!(got.is_ok(), ok, "{n}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("block.max_transactions"), "{e}");
            }
        }
        assert_eq!(
            BlockConfig::default().max_transactions,
            MAX_BLOCK_TRANSACTIONS
        );
    }

    #[test]
    fn http_and_peer_limits_are_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (section, key, value, ok) in [
            ("rpc", "max_connections", 0, false),
            ("rpc", "max_connections", 8, true),
            ("rpc", "header_timeout_ms", 0, false),
            ("rpc", "request_timeout_ms", 3_600_001, false),
            ("rpc", "request_timeout_ms", 1_000, true),
            ("p2p", "max_peers", 0, false),
        ] {
            let text = format!("name = \"n\"\n[{section}]\n{key} = {value}\n");
            std::fs::write(dir.path().join(NodeConfig::FILE), text).expect("write");
            let got = NodeConfig::load(dir.path());
            assert_eq!(got.is_ok(), ok, "{key} = {value}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains(&format!("{section}.{key}")), "{e}");
            }
        }
    }
}
