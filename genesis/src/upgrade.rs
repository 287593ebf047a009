//! Appending an upgrade to a network's schedule (`cairn-genesis upgrade`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use cairn_chain::keyfile::read_key_file;

use crate::{ConsensusConfig, Genesis, NodeConfig, Upgrade, Validator};

/// What `cairn-genesis upgrade` was asked for.
#[derive(Debug, Clone)]
pub struct UpgradeSpec {
    pub height: u64,
    pub consensus: ConsensusConfig,
    /// Names of the new segment's validators, from any segment of the
    /// schedule; `None` keeps the current set.
    pub validators: Option<Vec<String>>,
}

/// Appends `spec` to the schedule of the network in `dir`: its
/// `genesis.json` and the genesis file of every node folder in it, when
/// that is another file of the same network. Returns the files written.
pub fn add_upgrade(dir: &Path, spec: &UpgradeSpec) -> Result<Vec<PathBuf>> {
    let main = dir.join("genesis.json");
    let genesis = Genesis::load(&main).map_err(|e| anyhow!("{}: {e}", main.display()))?;
    let segments = genesis.segments();
    let last = segments.last().map_or(0, |s| s.start);
    if spec.height <= last {
        bail!(
            "the schedule already switches at height {last}: an upgrade must come later (--at-height above {last})"
        );
    }
    let validators = match &spec.validators {
        None => None,
        Some(names) => {
            let mut known: Vec<Validator> = segments
                .iter()
                .flat_map(|s| s.validators)
                .cloned()
                .collect();
            known.extend(node_folders(dir)?);
            let mut set: Vec<Validator> = Vec::new();
            for name in names {
                let v = known.iter().find(|v| v.name == *name).ok_or_else(|| {
                    let mut all: Vec<&str> = known.iter().map(|v| v.name.as_str()).collect();
                    all.sort_unstable();
                    all.dedup();
                    anyhow!(
                        "no validator or node folder called {name:?} in this network (it has {})",
                        all.join(", ")
                    )
                })?;
                set.push(v.clone());
            }
            Some(set)
        }
    };
    let mut upgraded = genesis.clone();
    upgraded.upgrades.push(Upgrade {
        height: spec.height,
        consensus: spec.consensus.clone(),
        validators,
    });
    upgraded
        .validate()
        .map_err(|e| anyhow!("the upgraded genesis would be invalid: {e}"))?;
    let mut files = vec![main.clone()];
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let home = entry?.path();
        if !home.join(NodeConfig::FILE).exists() {
            continue;
        }
        let cfg = NodeConfig::load(&home)?;
        let path = NodeConfig::resolve(&home, &cfg.genesis);
        let same_file = match (path.canonicalize(), main.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same_file || files.contains(&path) {
            continue;
        }
        match Genesis::load(&path) {
            Ok(theirs) if theirs.hash() == genesis.hash() => files.push(path),
            Ok(_) => bail!(
                "{} belongs to another network than {}",
                path.display(),
                main.display()
            ),
            Err(e) => bail!("{}: {e}", path.display()),
        }
    }
    let text = upgraded.to_json();
    for f in &files {
        let tmp = f.with_extension("json.tmp");
        std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, f).with_context(|| format!("replacing {}", f.display()))?;
    }
    Ok(files)
}

/// The nodes of the folders in `dir` that have a validator key, as
/// validators: name, key, and the p2p address they listen on.
fn node_folders(dir: &Path) -> Result<Vec<Validator>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let home = entry?.path();
        if !home.join(NodeConfig::FILE).exists() {
            continue;
        }
        let cfg = NodeConfig::load(&home)?;
        let Some(key_path) = &cfg.validator_key else {
            continue;
        };
        let key = read_key_file(&NodeConfig::resolve(&home, key_path))?;
        let p2p = read_key_file(&NodeConfig::resolve(&home, &cfg.p2p_key))?;
        let peer = libp2p_identity::Keypair::ed25519_from_bytes(p2p.seed())
            .context("deriving a libp2p identity")?
            .public()
            .to_peer_id();
        out.push(Validator {
            name: cfg.name.clone(),
            public_key: key.public_key(),
            p2p_address: format!("{}/p2p/{peer}", cfg.p2p.listen),
        });
    }
    Ok(out)
}
