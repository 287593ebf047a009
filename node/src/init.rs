//! `cairn-node init`: the home of a node that joins an existing network
//! as a follower (no validator key): it syncs from genesis, follows the
//! head, serves the API and gossips transactions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cairn_chain::keyfile::write_key_file;
use cairn_chain::SecretKey;
use cairn_genesis::node_config::{BlockConfig, MempoolConfig, MiningConfig, P2pConfig, RpcConfig};
use cairn_genesis::{Genesis, NodeConfig};

/// What `cairn-node init` was asked for.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub home: PathBuf,
    pub genesis: PathBuf,
    /// Peers to dial at start: multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<String>,
    pub p2p_listen: String,
    pub rpc_listen: SocketAddr,
    pub name: Option<String>,
}

/// Writes `home`: a copy of the network's genesis, a fresh p2p key and a
/// `node.toml`. Refuses a home that already holds a node. Returns the
/// node's p2p address (what other nodes can bootstrap from).
pub fn init(spec: &InitSpec) -> Result<String> {
    let home = &spec.home;
    if home.join(NodeConfig::FILE).exists() {
        bail!(
            "{} already holds a node ({}): choose another --home, or run that one with \
             cairn-node run --home {}",
            home.display(),
            NodeConfig::FILE,
            home.display()
        );
    }
    let genesis = Genesis::load(&spec.genesis)
        .with_context(|| format!("reading the network's genesis {}", spec.genesis.display()))?;
    if spec.bootstrap.is_empty() {
        bail!("--bootstrap: give at least one node of the network to dial (its p2p address, ending in /p2p/<peer id>)");
    }
    for b in &spec.bootstrap {
        let addr: libp2p::Multiaddr = b
            .parse()
            .with_context(|| format!("--bootstrap {b:?} is not a multiaddr"))?;
        if !matches!(
            addr.iter().last(),
            Some(libp2p::multiaddr::Protocol::P2p(_))
        ) {
            bail!("--bootstrap {b:?} does not end in /p2p/<peer id>: the node could not tell whom it reached");
        }
    }
    let listen: libp2p::Multiaddr = spec
        .p2p_listen
        .parse()
        .with_context(|| format!("--p2p-listen {:?} is not a multiaddr", spec.p2p_listen))?;
    std::fs::create_dir_all(home).with_context(|| format!("cannot create {}", home.display()))?;
    let genesis_file = home.join("genesis.json");
    std::fs::write(&genesis_file, genesis.to_json())
        .with_context(|| format!("writing {}", genesis_file.display()))?;
    let p2p = SecretKey::generate(&mut rand::rngs::OsRng);
    write_key_file(&home.join("p2p.key"), &p2p)?;
    let peer = libp2p::identity::Keypair::ed25519_from_bytes(p2p.seed())
        .context("deriving the libp2p identity")?
        .public()
        .to_peer_id();
    let name = spec.name.clone().unwrap_or_else(|| dir_name(home));
    let config = NodeConfig {
        name,
        genesis: "genesis.json".into(),
        data_dir: "data".into(),
        validator_key: None,
        p2p_key: "p2p.key".into(),
        p2p: P2pConfig {
            listen: spec.p2p_listen.clone(),
            bootstrap: spec.bootstrap.clone(),
            ..P2pConfig::default()
        },
        rpc: RpcConfig {
            listen: spec.rpc_listen,
            ..RpcConfig::default()
        },
        mempool: MempoolConfig::default(),
        mining: MiningConfig::default(),
        block: BlockConfig::default(),
    };
    config.check().map_err(anyhow::Error::msg)?;
    let file = home.join(NodeConfig::FILE);
    std::fs::write(&file, config.to_toml())
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(format!("{listen}/p2p/{peer}"))
}

fn dir_name(home: &Path) -> String {
    home.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "follower".into())
}
