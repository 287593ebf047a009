//! Writes the seed inputs of every fuzz target into a corpus folder (one
//! sub-folder per target, files named by their content's hash), including
//! the `genesis.json` and `node.toml` files `cairn-genesis` generates for
//! each engine.
//!
//! Usage: `cairn-fuzz-seeds [DIR]` (default `fuzz/corpus`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cairn_chain::Hash;
use cairn_genesis::{EngineKind, NetworkSpec};

fn write(dir: &Path, target: &str, data: &[u8]) -> Result<()> {
    let folder = dir.join(target);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let name = format!("seed-{}", &Hash::digest(data).to_string()[..16]);
    std::fs::write(folder.join(name), data).context("writing a seed")?;
    Ok(())
}

fn main() -> Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    let mut count = 0;
    for (target, data) in cairn_fuzz::seeds::seeds() {
        write(&dir, target, &data)?;
        count += 1;
    }
    for engine in [EngineKind::Raft, EngineKind::Pbft, EngineKind::Pow] {
        let tmp = tempfile::tempdir()?;
        let spec = NetworkSpec {
            engine,
            validators: 4,
            seed: Some(1),
            ..NetworkSpec::default()
        };
        let net = cairn_genesis::generate(&spec, tmp.path())?;
        write(&dir, "genesis_json", net.genesis.to_json().as_bytes())?;
        let node = net.nodes.first().context("a generated node")?;
        let toml = std::fs::read(node.home.join(cairn_genesis::NodeConfig::FILE))?;
        write(&dir, "node_toml", &toml)?;
        count += 2;
    }
    println!("{count} seeds written under {}", dir.display());
    Ok(())
}
