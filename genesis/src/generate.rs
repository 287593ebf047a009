//! Writes a whole local network: `genesis.json`, a funded `faucet.key`, and
//! for each node `node<i>/` with `node.toml`, `validator.key` and `p2p.key`.
//!
//! With a seed, every byte written is a function of the spec, so the same
//! command writes the same directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_chain::keyfile::write_key_file;
use cairn_chain::{Address, Hash, SecretKey};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::config::{Allocation, ConsensusConfig, EngineKind, Genesis, Validator};
use crate::node_config::{MiningConfig, NodeConfig, P2pConfig, RpcConfig};

/// What to generate.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    pub engine: EngineKind,
    pub validators: usize,
    /// Nodes that follow the chain without being validators (each with a
    /// validator key, so that an upgrade can make it one), named after
    /// the validators: `node<validators>`, ….
    pub observers: usize,
    pub chain_id: String,
    /// Interface every node listens on.
    pub host: std::net::Ipv4Addr,
    /// One address per node (validators first, then observers): node `i`
    /// listens on and is dialled at `hosts[i]`, one node per machine.
    /// Empty: every node on [`NetworkSpec::host`].
    pub hosts: Vec<std::net::Ipv4Addr>,
    /// Listen on every interface (0.0.0.0) rather than the node's own
    /// address, which stays the one peers dial and the genesis names.
    pub listen_any: bool,
    /// Node `i` listens for peers on `base_port + 2i` and for HTTP on
    /// `base_port + 2i + 1`.
    pub base_port: u16,
    /// Balance of the faucet key.
    pub faucet_balance: u64,
    /// Extra allocations.
    pub fund: Vec<(Address, u64)>,
    pub block_reward: u64,
    /// The lowest fee a transaction may pay.
    pub min_fee: u64,
    /// Makes the output reproducible.
    pub seed: Option<u64>,
    /// Defaults to now, or to 0 when seeded.
    pub genesis_time_ms: Option<u64>,
    /// Overrides the engine's block interval (target block time for PoW).
    pub block_time_ms: Option<u64>,
    /// Proof-of-work: how many nodes mine (defaults to all but the last).
    pub miners: Option<usize>,
    /// Benchmark accounts funded at genesis ([`SecretKey::bench_account`]
    /// of `bench_seed`, indices `0..bench_accounts`), each with
    /// `bench_balance`.
    pub bench_accounts: u32,
    pub bench_seed: u64,
    pub bench_balance: u64,
}

/// Most benchmark accounts a genesis may fund (the file grows by about
/// 100 bytes per account).
pub const MAX_BENCH_ACCOUNTS: u32 = 200_000;

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            engine: EngineKind::Raft,
            validators: 3,
            observers: 0,
            chain_id: "cairn-devnet".into(),
            host: std::net::Ipv4Addr::LOCALHOST,
            hosts: Vec::new(),
            listen_any: false,
            base_port: 26600,
            faucet_balance: 1_000_000_000_000,
            fund: Vec::new(),
            block_reward: 50,
            min_fee: 1,
            seed: None,
            genesis_time_ms: None,
            block_time_ms: None,
            miners: None,
            bench_accounts: 0,
            bench_seed: 0,
            bench_balance: 1_000_000_000,
        }
    }
}

/// One generated node.
#[derive(Debug, Clone)]
pub struct GeneratedNode {
    pub name: String,
    pub home: PathBuf,
    pub p2p_address: String,
    pub rpc_url: String,
    pub mining: bool,
    /// In the genesis validator set (an observer otherwise).
    pub validator: bool,
}

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct GeneratedNetwork {
    pub dir: PathBuf,
    pub genesis: Genesis,
    pub genesis_hash: Hash,
    pub faucet: Address,
    pub nodes: Vec<GeneratedNode>,
}

impl GeneratedNetwork {
    /// Path of the faucet key.
    pub fn faucet_key(&self) -> PathBuf {
        self.dir.join("faucet.key")
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Generates the network described by `spec` into `dir`, which must not hold
/// a network already.
pub fn generate(spec: &NetworkSpec, dir: &Path) -> Result<GeneratedNetwork> {
    if spec.validators == 0 {
        bail!("--validators must be at least 1");
    }
    let total = spec.validators + spec.observers;
    if total > 100 {
        bail!("--validators and --observers must make at most 100 nodes for a local network");
    }
    let last_port = u32::from(spec.base_port) + 2 * total as u32 - 1;
    if last_port > u32::from(u16::MAX) || spec.base_port < 1024 {
        bail!(
            "--base-port {} leaves no room for {total} nodes (ports {}..={last_port})",
            spec.base_port,
            spec.base_port
        );
    }
    if dir.join("genesis.json").exists() {
        bail!(
            "{} already holds a network (genesis.json exists); choose another --out",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let mut rng = match spec.seed {
        Some(seed) => ChaCha20Rng::seed_from_u64(seed),
        None => ChaCha20Rng::from_entropy(),
    };
    let mut seed32 = || {
        let mut s = [0u8; 32];
        rng.fill_bytes(&mut s);
        s
    };

    struct Keys {
        validator: SecretKey,
        p2p_seed: [u8; 32],
        p2p_address: String,
        rpc: std::net::SocketAddr,
        rpc_bind: std::net::SocketAddr,
        listen: String,
    }
    if !spec.hosts.is_empty() && spec.hosts.len() != total {
        bail!(
            "--hosts names {} addresses for {total} nodes ({} validators, {} observers): one per node",
            spec.hosts.len(),
            spec.validators,
            spec.observers
        );
    }
    let mut keys = Vec::with_capacity(total);
    for i in 0..total {
        let validator = SecretKey::from_seed(seed32());
        let p2p_seed = seed32();
        let identity = libp2p_identity::Keypair::ed25519_from_bytes(p2p_seed)
            .context("deriving a libp2p identity")?;
        let peer_id = identity.public().to_peer_id();
        let p2p_port = spec.base_port + 2 * i as u16;
        let host = spec.hosts.get(i).copied().unwrap_or(spec.host);
        let bind = if spec.listen_any {
            std::net::Ipv4Addr::UNSPECIFIED
        } else {
            host
        };
        keys.push(Keys {
            validator,
            p2p_seed,
            p2p_address: format!("/ip4/{host}/tcp/{p2p_port}/p2p/{peer_id}"),
            rpc: std::net::SocketAddr::from((host, p2p_port + 1)),
            rpc_bind: std::net::SocketAddr::from((bind, p2p_port + 1)),
            listen: format!("/ip4/{bind}/tcp/{p2p_port}"),
        });
    }
    let faucet = SecretKey::from_seed(seed32());

    let consensus = ConsensusConfig::with_block_time(spec.engine, spec.block_time_ms);
    let mut allocations = vec![Allocation {
        address: faucet.address(),
        balance: spec.faucet_balance,
    }];
    allocations.extend(spec.fund.iter().map(|(address, balance)| Allocation {
        address: *address,
        balance: *balance,
    }));
    if spec.bench_accounts > MAX_BENCH_ACCOUNTS {
        bail!(
            "{} benchmark accounts asked for; the limit is {MAX_BENCH_ACCOUNTS}",
            spec.bench_accounts
        );
    }
    allocations.extend((0..spec.bench_accounts).map(|i| Allocation {
        address: SecretKey::bench_account(spec.bench_seed, i).address(),
        balance: spec.bench_balance,
    }));
    let genesis = Genesis {
        chain_id: spec.chain_id.clone(),
        genesis_time_ms: spec.genesis_time_ms.unwrap_or(if spec.seed.is_some() {
            0
        } else {
            now_ms()
        }),
        block_reward: spec.block_reward,
        min_fee: spec.min_fee,
        consensus,
        validators: keys[..spec.validators]
            .iter()
            .enumerate()
            .map(|(i, k)| Validator {
                name: format!("node{i}"),
                public_key: k.validator.public_key(),
                p2p_address: k.p2p_address.clone(),
            })
            .collect(),
        allocations,
        upgrades: Vec::new(),
    };
    genesis
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid network: {e}"))?;

    write_new(&dir.join("genesis.json"), &genesis.to_json())?;
    write_key_file(&dir.join("faucet.key"), &faucet)?;

    let miners = spec
        .miners
        .unwrap_or(spec.validators.saturating_sub(1).max(1));
    let mut nodes = Vec::with_capacity(total);
    for (i, k) in keys.iter().enumerate() {
        let name = format!("node{i}");
        let home = dir.join(&name);
        std::fs::create_dir_all(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        write_key_file(&home.join("validator.key"), &k.validator)?;
        write_key_file(&home.join("p2p.key"), &SecretKey::from_seed(k.p2p_seed))?;
        let mining = spec.engine == EngineKind::Pow && i < miners && i < spec.validators;
        let config = NodeConfig {
            name: name.clone(),
            genesis: "../genesis.json".into(),
            data_dir: "data".into(),
            validator_key: Some("validator.key".into()),
            p2p_key: "p2p.key".into(),
            p2p: P2pConfig {
                listen: k.listen.clone(),
                bootstrap: keys
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, o)| o.p2p_address.clone())
                    .collect(),
                ..P2pConfig::default()
            },
            rpc: RpcConfig {
                listen: k.rpc_bind,
                ..RpcConfig::default()
            },
            mempool: Default::default(),
            mining: MiningConfig {
                enabled: mining,
                ..MiningConfig::default()
            },
            block: Default::default(),
        };
        write_new(&home.join(NodeConfig::FILE), &config.to_toml())?;
        nodes.push(GeneratedNode {
            name,
            home,
            p2p_address: k.p2p_address.clone(),
            rpc_url: format!("http://{}", k.rpc),
            mining,
            validator: i < spec.validators,
        });
    }
    Ok(GeneratedNetwork {
        dir: dir.to_owned(),
        genesis_hash: genesis.hash(),
        genesis,
        faucet: faucet.address(),
        nodes,
    })
}

#[cfg(test)]
mod tests;
