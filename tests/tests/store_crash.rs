//! A real child process writes blocks to RocksDB and is killed with SIGKILL
//! at random moments, many times. After every kill the store must reopen at a
//! head no older than the last block the writer reported committed, with
//! exactly the state that replaying the chain from genesis gives.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use cairn_chain::state::MemState;
use cairn_chain::{execute_block, state_tree, ChainStore, Hash, SignatureCheck, Store};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const ROUNDS: u64 = 25;

/// Starts the writer, lets it report `reports` commits, then kills it at a
/// random instant a little later. Returns the last commit it reported.
fn run_and_kill(dir: &std::path::Path, seed: u64, reports: usize, spin: u32) -> (u64, Hash) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-store-writer"))
        .arg(dir)
        .arg(seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut last = None;
    for _ in 0..reports {
        let line = lines
            .next()
            .expect("writer exited early")
            .expect("read writer output");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("committed"), "unexpected line {line:?}");
        let height: u64 = parts.next().expect("height").parse().expect("height");
        let hash: Hash = parts.next().expect("hash").parse().expect("hash");
        last = Some((height, hash));
    }
    // Kill somewhere inside a later write: a random amount of busy work
    // moves the instant around without any sleep.
    let mut x = 0u64;
    for i in 0..spin {
        x = std::hint::black_box(x.wrapping_add(u64::from(i)));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    last.expect("at least one commit reported")
}

/// Checks the store in `dir` against a replay from genesis; returns the head.
fn check_store(dir: &std::path::Path) -> (u64, Hash) {
    let chain = cairn_tests::crash_chain();
    let store = Store::open(dir).expect("reopen after SIGKILL");
    let head = store.head().expect("head");
    let head_hash = store.head_hash().expect("head hash");
    assert_eq!(store.hash_at(head.height).expect("index"), Some(head_hash));
    assert_eq!(store.hash_at(head.height + 1).expect("index"), None);

    // Replay every canonical block on a fresh in-memory state.
    let mut mem = MemState::default();
    mem.apply(&chain.genesis_state);
    let mut parent = store.block_at(0).expect("genesis").expect("genesis").header;
    for h in 1..=head.height {
        let block = store
            .block_at(h)
            .expect("read")
            .expect("canonical block present");
        let exec = execute_block(
            &mem,
            &chain.params,
            &parent,
            &block,
            SignatureCheck::AlreadyVerified,
        )
        .unwrap_or_else(|e| panic!("block {h} does not replay: {e}"));
        mem.apply(&exec.changes);
        parent = block.header;
    }
    let stored: Vec<(Vec<u8>, Vec<u8>)> = store.state_entries().expect("state");
    let replayed: Vec<(Vec<u8>, Vec<u8>)> = mem.entries.into_iter().collect();
    assert!(
        stored == replayed,
        "state at height {} differs from the replay",
        head.height
    );
    let accounts = store.accounts().expect("accounts");
    assert_eq!(
        state_tree::root_from_accounts(&accounts).expect("root"),
        head.state_root
    );
    (head.height, head_hash)
}

#[test]
fn sigkill_while_writing_never_loses_or_corrupts_a_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = ChaCha8Rng::seed_from_u64(0xC0FFEE);
    let mut previous_height = 0;
    for round in 0..ROUNDS {
        let reports = rng.gen_range(1..15);
        let spin = rng.gen_range(0..3_000_000);
        let (acked_height, acked_hash) = run_and_kill(dir.path(), round, reports, spin);
        let (height, _) = check_store(dir.path());
        assert!(
            height >= acked_height,
            "round {round}: head {height} is behind the acknowledged commit {acked_height}"
        );
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            store.hash_at(acked_height).expect("index"),
            Some(acked_hash),
            "round {round}: the acknowledged block was replaced"
        );
        assert!(height > previous_height, "round {round}: no progress");
        previous_height = height;
    }
}
