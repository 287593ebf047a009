//! Every committed corpus input and every input that once found a defect,
//! run through its target on stable: what the fuzzers found stays fixed.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_and_regression_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for &(name, target) in cairn_fuzz::TARGETS {
        let corpus = inputs(&root.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "no corpus for target {name} (run `make fuzz-seeds`)"
        );
        for file in corpus
            .iter()
            .chain(&inputs(&root.join("regressions").join(name)))
        {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", file.display());
        }
    }
}

#[test]
fn the_seeds_are_inputs_the_targets_accept() {
    use cairn_chain::{Block, Transaction};
    for (name, data) in cairn_fuzz::seeds::seeds() {
        match name {
            "transaction" => assert!(Transaction::decode(&data).is_ok()),
            "block" => assert!(Block::decode(&data).is_ok_and(|b| b.check_format().is_ok())),
            // The recorded runs take the fuzzed validator through commits
            // (and the chain through a reorganisation), so that mutations
            // start from deep states.
            "raft_messages" => assert!(cairn_fuzz::raft_status(&data).committed_height >= 2),
            "pbft_messages" => assert!(cairn_fuzz::pbft_status(&data).committed_height >= 2),
            "sync_import" => assert_eq!(cairn_fuzz::sync_import_head(&data), 2),
            "pow_blocks" => assert_eq!(cairn_fuzz::pow_status(&data).committed_height, 2),
            _ => assert!(!data.is_empty()),
        }
    }
}
