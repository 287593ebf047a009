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
/// that is another file of the same network. An upgrade to proof-of-work
/// also turns mining on in the `node.toml` of the nodes whose validator
/// key is in the new set. Returns the files written.
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
    for (home, cfg) in node_homes(dir)? {
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
        write_atomically(f, &text)?;
    }
    if matches!(spec.consensus, ConsensusConfig::Pow(_)) {
        let miners: Vec<_> = upgraded
            .segment_at(spec.height)
            .validators
            .iter()
            .map(|v| v.public_key)
            .collect();
        files.extend(enable_mining(dir, &miners)?);
    }
    Ok(files)
}

/// The node folders in `dir` (those with a `node.toml`) and their
/// configurations.
fn node_homes(dir: &Path) -> Result<Vec<(PathBuf, NodeConfig)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let home = entry?.path();
        if home.join(NodeConfig::FILE).exists() {
            let cfg = NodeConfig::load(&home)?;
            out.push((home, cfg));
        }
    }
    Ok(out)
}

fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("replacing {}", file.display()))
}

/// Turns mining on in the `node.toml` of every node folder in `dir` whose
/// validator key is one of `miners`; returns the files changed.
fn enable_mining(dir: &Path, miners: &[cairn_chain::PublicKey]) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for (home, mut cfg) in node_homes(dir)? {
        let Some(key_path) = &cfg.validator_key else {
            continue;
        };
        let key = read_key_file(&NodeConfig::resolve(&home, key_path))?;
        if cfg.mining.enabled || !miners.contains(&key.public_key()) {
            continue;
        }
        cfg.mining.enabled = true;
        let file = home.join(NodeConfig::FILE);
        write_atomically(&file, &cfg.to_toml())?;
        changed.push(file);
    }
    Ok(changed)
}

/// The nodes of the folders in `dir` that have a validator key, as
/// validators: name, key, and the p2p address they listen on.
fn node_folders(dir: &Path) -> Result<Vec<Validator>> {
    let mut out = Vec::new();
    for (home, cfg) in node_homes(dir)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate, EngineKind, NetworkSpec};

    fn network(observers: usize) -> (tempfile::TempDir, crate::GeneratedNetwork) {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = NetworkSpec {
            engine: EngineKind::Raft,
            validators: 3,
            observers,
            seed: Some(5),
            ..NetworkSpec::default()
        };
        let net = generate(&spec, dir.path()).expect("generate");
        (dir, net)
    }

    fn spec(height: u64, engine: EngineKind, validators: Option<&[&str]>) -> UpgradeSpec {
        UpgradeSpec {
            height,
            consensus: ConsensusConfig::default_for(engine),
            validators: validators.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn an_upgrade_is_appended_keeping_the_genesis_hash() {
        let (dir, net) = network(1);
        let files = add_upgrade(dir.path(), &spec(10, EngineKind::Pbft, None)).expect("upgrade");
        assert_eq!(
            files,
            vec![dir.path().join("genesis.json")],
            "nodes share the file"
        );
        let g = Genesis::load(&files[0]).expect("load");
        assert_eq!(g.hash(), net.genesis_hash);
        assert_eq!(g.segments().len(), 2);
        assert_eq!(g.segment_at(10).validators.len(), 3, "the set carries over");
    }

    #[test]
    fn validators_are_named_from_any_segment_or_node_folder() {
        let (dir, _) = network(2);
        add_upgrade(
            dir.path(),
            &spec(
                5,
                EngineKind::Pbft,
                Some(&["node1", "node2", "node3", "node4"]),
            ),
        )
        .expect("observers join");
        add_upgrade(
            dir.path(),
            &spec(9, EngineKind::Raft, Some(&["node0", "node3", "node4"])),
        )
        .expect("node0 comes back");
        let g = Genesis::load(&dir.path().join("genesis.json")).expect("load");
        let names: Vec<&str> = g
            .segment_at(9)
            .validators
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["node0", "node3", "node4"]);
        let err = add_upgrade(dir.path(), &spec(12, EngineKind::Raft, Some(&["node9"])))
            .expect_err("unknown");
        assert!(err.to_string().contains("node9"), "{err}");
    }

    #[test]
    fn an_upgrade_to_pow_turns_mining_on_for_its_validators_and_none_follows_it() {
        let (dir, _) = network(1);
        let files = add_upgrade(
            dir.path(),
            &spec(8, EngineKind::Pow, Some(&["node0", "node2"])),
        )
        .expect("to pow");
        let mining = |name: &str| {
            NodeConfig::load(&dir.path().join(name))
                .expect("node.toml")
                .mining
                .enabled
        };
        assert_eq!(
            ["node0", "node1", "node2", "node3"].map(mining),
            [true, false, true, false]
        );
        assert!(
            files.iter().any(|f| f.ends_with("node2/node.toml")),
            "{files:?}"
        );
        let g = Genesis::load(&dir.path().join("genesis.json")).expect("load");
        assert!(matches!(g.segment_at(8).consensus, ConsensusConfig::Pow(_)));
        add_upgrade(dir.path(), &spec(20, EngineKind::Pow, None)).expect("new pow parameters");
        add_upgrade(dir.path(), &spec(30, EngineKind::Raft, None)).expect("from pow to raft");
    }

    #[test]
    fn an_upgrade_at_or_below_the_last_switch_is_refused() {
        let (dir, _) = network(0);
        add_upgrade(dir.path(), &spec(8, EngineKind::Pbft, None)).expect("first");
        let err =
            add_upgrade(dir.path(), &spec(8, EngineKind::Raft, None)).expect_err("same height");
        assert!(
            err.to_string().contains("already switches at height 8"),
            "{err}"
        );
        let err =
            add_upgrade(dir.path(), &spec(20, EngineKind::Pbft, Some(&[]))).expect_err("empty");
        assert!(err.to_string().contains("invalid"), "{err}");
    }
}
