use super::*;
use crate::store::contract_tests::grow;
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
