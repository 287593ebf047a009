//! The store contract (see [`ChainStore`]), run against the RocksDB store
//! and the in-memory store alike.

use super::*;
use crate::execution::{execute_block, SignatureCheck};
use crate::state::MemState;
use crate::state::{StateChanges, StateReader};
use crate::testkit::TestChain;
use crate::Block;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A store under test: the contract, plus a look at its whole state.
trait UnderTest: ChainStore {
    fn entries(&self) -> Vec<RawEntry>;
}

#[cfg(feature = "rocksdb")]
impl UnderTest for Store {
    fn entries(&self) -> Vec<RawEntry> {
        self.state_entries().expect("state entries")
    }
}

impl UnderTest for MemStore {
    fn entries(&self) -> Vec<RawEntry> {
        self.state_entries().expect("state entries")
    }
}

/// A fresh store with `chain`'s genesis, and what keeps it alive.
type Open<S> = fn(&TestChain, bool) -> (Option<tempfile::TempDir>, S);

#[cfg(feature = "rocksdb")]
fn rocks(chain: &TestChain, undo: bool) -> (Option<tempfile::TempDir>, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path()).expect("open");
    store.set_undo(undo);
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    (Some(dir), store)
}

fn memory(chain: &TestChain, undo: bool) -> (Option<tempfile::TempDir>, MemStore) {
    let store = MemStore::new(undo);
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    (None, store)
}

/// Builds `n` blocks on the store's head and commits them; returns them.
pub(super) fn grow(
    store: &impl ChainStore,
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

fn commit_indexes_blocks_and_transactions<S: UnderTest>(open: Open<S>) {
    let chain = TestChain::new("store-test", 10, 10_000);
    let (_dir, store) = open(&chain, true);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let blocks = grow(&store, &chain, &mut rng, 3, 0);
    assert_eq!(store.head().expect("head").height, 3);
    assert_eq!(store.head_hash().expect("hash"), blocks[2].hash());
    assert_eq!(store.block_at(2).expect("b"), Some(blocks[1].clone()));
    assert_eq!(store.block_at(4).expect("b"), None);
    assert_eq!(
        store.header(&blocks[0].hash()).expect("h"),
        Some(blocks[0].header.clone())
    );
    assert_eq!(store.genesis_hash().expect("g"), Some(chain.genesis.hash()));
    let tx = &blocks[1].transactions[4];
    let loc = store
        .tx_location(&tx.hash())
        .expect("loc")
        .expect("indexed");
    assert_eq!((loc.block, loc.height, loc.index), (blocks[1].hash(), 2, 4));
}

fn refuses_a_block_that_does_not_extend_the_head<S: UnderTest>(open: Open<S>) {
    let chain = TestChain::new("store-test", 4, 10_000);
    let (_dir, store) = open(&chain, true);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let blocks = grow(&store, &chain, &mut rng, 2, 0);
    let state = store.entries();
    let err = store.commit_block(&blocks[0], &StateChanges::new());
    assert!(matches!(err, Err(StoreError::NotExtendingHead { .. })));
    assert_eq!(store.head_hash().expect("head"), blocks[1].hash());
    assert_eq!(store.entries(), state);
    let other = TestChain::new("other-chain", 4, 10_000);
    assert!(matches!(
        store.init_genesis(&other.genesis, &other.genesis_state),
        Err(StoreError::GenesisMismatch { .. })
    ));
}

fn revert_restores_exact_state_and_switches_branches<S: UnderTest>(open: Open<S>) {
    let chain = TestChain::new("store-test", 12, 10_000);
    let (_dir, store) = open(&chain, true);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    grow(&store, &chain, &mut rng, 3, 0);
    let fork_state = store.entries();
    let fork_head = store.head_hash().expect("head");
    let branch_a = grow(&store, &chain, &mut rng, 4, 1);
    let a_state = store.entries();
    let a_head = store.head_hash().expect("head");

    // Back 4 blocks: exactly the state at the fork point.
    let reverted = store.revert(4).expect("revert");
    assert_eq!(reverted.len(), 4);
    assert_eq!(reverted[0].hash(), a_head);
    assert_eq!(store.head_hash().expect("head"), fork_head);
    assert_eq!(store.entries(), fork_state);
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
    assert_eq!(store.entries(), a_state);
}

fn a_store_without_undo_records_refuses_to_revert<S: UnderTest>(open: Open<S>) {
    let chain = TestChain::new("store-final", 6, 10_000);
    let (_dir, store) = open(&chain, false);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let blocks = grow(&store, &chain, &mut rng, 2, 0);
    let state = store.entries();
    assert!(matches!(
        store.revert(1),
        Err(StoreError::NoUndo { block }) if block == blocks[1].hash()
    ));
    assert_eq!(store.head_hash().expect("head"), blocks[1].hash());
    assert_eq!(store.entries(), state);
}

fn revert_refuses_to_pass_genesis<S: UnderTest>(open: Open<S>) {
    let chain = TestChain::new("store-test", 4, 10_000);
    let (_dir, store) = open(&chain, true);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    grow(&store, &chain, &mut rng, 2, 0);
    let state = store.entries();
    assert!(matches!(
        store.revert(3),
        Err(StoreError::RevertPastGenesis {
            requested: 3,
            height: 2
        })
    ));
    assert_eq!(store.head().expect("head").height, 2);
    assert_eq!(store.entries(), state);
}

fn state_reads_agree_with_a_replay_in_memory<S: UnderTest>(open: Open<S>) {
    let chain = TestChain::new("store-test", 8, 10_000);
    let (_dir, store) = open(&chain, true);
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
    let in_memory: Vec<RawEntry> = mem.entries.into_iter().collect();
    assert_eq!(store.entries(), in_memory);
    for (k, v) in &in_memory {
        assert_eq!(StateReader::get(&store, k).expect("get").as_ref(), Some(v));
    }
    assert_eq!(StateReader::get(&store, b"no such key").expect("get"), None);
}

fn engine_keys_round_trip<S: UnderTest>(open: Open<S>) {
    let chain = TestChain::new("store-test", 2, 1);
    let (_dir, store) = open(&chain, true);
    let entry = |k: &[u8], v: &[u8]| (k.to_vec(), Some(v.to_vec()));
    store
        .engine_write(&[entry(b"vote", b"x"), entry(b"term", b"7")])
        .expect("write");
    store
        .engine_write(&[entry(b"term", b"8"), (b"vote".to_vec(), None)])
        .expect("write");
    assert_eq!(
        store.engine_entries().expect("entries"),
        vec![(b"term".to_vec(), b"8".to_vec())]
    );
    // Engine keys are not state.
    assert_eq!(StateReader::get(&store, b"term").expect("get"), None);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "rocksdb")]
        mod rocksdb_store {
            $(#[test] fn $name() { super::$name(super::rocks) })*
        }
        mod memory_store {
            $(#[test] fn $name() { super::$name(super::memory) })*
        }
    };
}

contract!(
    commit_indexes_blocks_and_transactions,
    refuses_a_block_that_does_not_extend_the_head,
    revert_restores_exact_state_and_switches_branches,
    a_store_without_undo_records_refuses_to_revert,
    revert_refuses_to_pass_genesis,
    state_reads_agree_with_a_replay_in_memory,
    engine_keys_round_trip,
);
