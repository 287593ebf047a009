use super::*;
use crate::execution::{execute_block, SignatureCheck};
use crate::state::MemState;
use crate::testkit::TestChain;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn open(chain: &TestChain) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    (dir, store)
}

/// Builds `n` blocks on the store's head and commits them; returns them.
fn grow(
    store: &Store,
    chain: &TestChain,
    rng: &mut ChaCha8Rng,
    n: usize,
    proposer: usize,
) -> Vec<Block> {
    let mut out = Vec::new();
    for _ in 0..n {
        let head = store.head().expect("head");
        let txs = chain.random_transfers(rng, store, 20).expect("txs");
        let p = chain
            .block_on(store, &head, proposer, txs)
            .expect("propose");
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        store
            .commit_block(&p.block, &p.executed.changes)
            .expect("commit");
        out.push(p.block);
    }
    out
}

#[test]
fn commit_indexes_blocks_and_transactions() {
    let chain = TestChain::new("store-test", 10, 10_000);
    let (_dir, store) = open(&chain);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let blocks = grow(&store, &chain, &mut rng, 3, 0);
    assert_eq!(store.head().expect("head").height, 3);
    assert_eq!(store.head_hash().expect("hash"), blocks[2].hash());
    assert_eq!(store.block_at(2).expect("b"), Some(blocks[1].clone()));
    let tx = &blocks[1].transactions[4];
    let loc = store
        .tx_location(&tx.hash())
        .expect("loc")
        .expect("indexed");
    assert_eq!((loc.block, loc.height, loc.index), (blocks[1].hash(), 2, 4));
    // The state root in the head equals the root rebuilt from all accounts.
    let accounts = store.accounts().expect("accounts");
    assert_eq!(
        crate::state_tree::root_from_accounts(&accounts).expect("root"),
        blocks[2].header.state_root
    );
}

#[test]
fn refuses_a_block_that_does_not_extend_the_head() {
    let chain = TestChain::new("store-test", 4, 10_000);
    let (_dir, store) = open(&chain);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let blocks = grow(&store, &chain, &mut rng, 2, 0);
    let err = store.commit_block(&blocks[0], &StateChanges::new());
    assert!(matches!(err, Err(StoreError::NotExtendingHead { .. })));
}

#[test]
fn reopen_keeps_head_and_refuses_another_genesis() {
    let chain = TestChain::new("store-test", 4, 10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let head = {
        let store = Store::open(dir.path()).expect("open");
        store
            .init_genesis(&chain.genesis, &chain.genesis_state)
            .expect("genesis");
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        grow(&store, &chain, &mut rng, 2, 1);
        store.head_hash().expect("head")
    };
    let store = Store::open(dir.path()).expect("reopen");
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("same genesis");
    assert_eq!(store.head_hash().expect("head"), head);
    let other = TestChain::new("other-chain", 4, 10_000);
    assert!(matches!(
        store.init_genesis(&other.genesis, &other.genesis_state),
        Err(StoreError::GenesisMismatch { .. })
    ));
}

/// Every state key ever seen reads (through the cache) what RocksDB holds.
fn assert_reads_match_rocksdb(store: &Store, seen: &mut std::collections::BTreeSet<Vec<u8>>) {
    let entries: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
        store.state_entries().expect("state").into_iter().collect();
    seen.extend(entries.keys().cloned());
    for key in seen.iter() {
        assert_eq!(
            StateReader::get(store, key).expect("get"),
            entries.get(key).cloned(),
            "state key {key:?}"
        );
    }
}

#[test]
fn cached_state_reads_follow_commits_and_reverts() {
    let chain = TestChain::new("store-cache", 12, 10_000);
    let (_dir, store) = open(&chain);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut seen = std::collections::BTreeSet::new();
    assert_reads_match_rocksdb(&store, &mut seen);
    grow(&store, &chain, &mut rng, 3, 0);
    assert_reads_match_rocksdb(&store, &mut seen);
    grow(&store, &chain, &mut rng, 4, 1);
    assert_reads_match_rocksdb(&store, &mut seen);
    store.revert(4).expect("revert");
    assert_reads_match_rocksdb(&store, &mut seen);
    grow(&store, &chain, &mut rng, 2, 2);
    assert_reads_match_rocksdb(&store, &mut seen);
    store.revert(5).expect("revert");
    assert_reads_match_rocksdb(&store, &mut seen);
}

#[test]
fn revert_restores_exact_state_and_switches_branches() {
    let chain = TestChain::new("store-test", 12, 10_000);
    let (_dir, store) = open(&chain);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    grow(&store, &chain, &mut rng, 3, 0);
    let fork_state = store.state_entries().expect("state");
    let fork_head = store.head_hash().expect("head");
    let branch_a = grow(&store, &chain, &mut rng, 4, 1);
    let a_state = store.state_entries().expect("state");
    let a_head = store.head_hash().expect("head");

    // Back 4 blocks: exactly the state at the fork point.
    let reverted = store.revert(4).expect("revert");
    assert_eq!(reverted.len(), 4);
    assert_eq!(reverted[0].hash(), a_head);
    assert_eq!(store.head_hash().expect("head"), fork_head);
    assert_eq!(store.state_entries().expect("state"), fork_state);
    assert_eq!(store.hash_at(4).expect("h"), None);
    assert_eq!(
        store
            .tx_location(&branch_a[0].transactions[0].hash())
            .expect("loc"),
        None
    );
    // Branch A's blocks are kept, though no longer canonical.
    assert!(store.has_block(&a_head).expect("has"));

    // Forward onto branch B (different proposer and transactions).
    let branch_b = grow(&store, &chain, &mut rng, 5, 2);
    assert_eq!(store.head().expect("head").height, 8);
    assert_ne!(branch_b[0].hash(), branch_a[0].hash());

    // And back to A: its blocks re-execute on the fork state to the very
    // same state as before.
    store.revert(5).expect("revert B");
    for block in &branch_a {
        let parent = store.head().expect("head");
        let exec = execute_block(
            &store,
            &chain.params,
            &parent,
            block,
            SignatureCheck::Verify,
        )
        .expect("A still valid");
        store.commit_block(block, &exec.changes).expect("commit");
    }
    assert_eq!(store.head_hash().expect("head"), a_head);
    assert_eq!(store.state_entries().expect("state"), a_state);
}

#[test]
fn a_store_without_undo_records_refuses_to_revert() {
    let chain = TestChain::new("store-final", 6, 10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    store.set_undo(false);
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let blocks = grow(&store, &chain, &mut rng, 2, 0);
    let state = store.state_entries().expect("state");
    assert!(matches!(
        store.revert(1),
        Err(StoreError::NoUndo { block }) if block == blocks[1].hash()
    ));
    assert_eq!(store.head_hash().expect("head"), blocks[1].hash());
    assert_eq!(store.state_entries().expect("state"), state);
}

#[test]
fn revert_refuses_to_pass_genesis() {
    let chain = TestChain::new("store-test", 4, 10_000);
    let (_dir, store) = open(&chain);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    grow(&store, &chain, &mut rng, 2, 0);
    assert!(matches!(
        store.revert(3),
        Err(StoreError::RevertPastGenesis {
            requested: 3,
            height: 2
        })
    ));
    assert_eq!(store.head().expect("head").height, 2);
}

#[test]
fn store_and_memory_state_agree() {
    let chain = TestChain::new("store-test", 8, 10_000);
    let (_dir, store) = open(&chain);
    let mut mem = MemState::default();
    mem.apply(&chain.genesis_state);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for block in grow(&store, &chain, &mut rng, 4, 3) {
        let parent_hash = block.header.parent;
        let parent = store.header(&parent_hash).expect("h").expect("parent");
        let exec = execute_block(&mem, &chain.params, &parent, &block, SignatureCheck::Verify)
            .expect("valid");
        mem.apply(&exec.changes);
    }
    let stored: Vec<(Vec<u8>, Vec<u8>)> = store.state_entries().expect("state");
    let in_memory: Vec<(Vec<u8>, Vec<u8>)> = mem.entries.into_iter().collect();
    assert_eq!(stored, in_memory);
}

#[test]
fn engine_state_round_trips() {
    let chain = TestChain::new("store-test", 2, 1);
    let (_dir, store) = open(&chain);
    store
        .engine_put(&[(b"term", b"7"), (b"vote", b"x")])
        .expect("put");
    assert_eq!(store.engine_get(b"term").expect("get"), Some(b"7".to_vec()));
    assert_eq!(store.engine_get(b"none").expect("get"), None);
}

#[test]
fn the_state_cache_stays_within_its_byte_bound() {
    let mut c = StateCache::default();
    c.insert(b"k".to_vec(), Some(vec![0u8; 100]));
    c.insert(b"k".to_vec(), Some(vec![0u8; 10]));
    c.insert(b"absent".to_vec(), None);
    // Replacing a value counts only the new one.
    assert_eq!(
        c.bytes,
        (1 + 10 + CACHE_ENTRY_OVERHEAD) + (6 + CACHE_ENTRY_OVERHEAD)
    );
    for i in 0u32..40_000 {
        c.insert(i.to_be_bytes().to_vec(), Some(vec![0u8; 1_000]));
        assert!(c.bytes <= STATE_CACHE_BYTES);
    }
    let counted: usize = c.entries.iter().map(|(k, v)| cache_cost(k, v)).sum();
    assert_eq!(c.bytes, counted);
    assert!(c.entries.len() < 40_000, "the cache was emptied when full");
}

/// A database from before the paged state tree (no `format` entry) is
/// refused with an error that says what to do, not read as if empty.
#[test]
fn a_database_in_another_format_is_refused() {
    let chain = TestChain::new("format", 4, 10_000);
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        store
            .init_genesis(&chain.genesis, &chain.genesis_state)
            .expect("genesis");
        store
            .db
            .delete_cf(store.cf(CF_META), META_FORMAT)
            .expect("delete");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let err = store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect_err("old format");
    assert!(
        matches!(
            err,
            StoreError::Format {
                found: 1,
                expected: FORMAT,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("delete it"), "{err}");
}
