//! Criterion benchmarks of the chain core. Figures: docs/benchmarks.md.

use std::hint::black_box;

use cairn_chain::state::{MemState, Overlay};
use cairn_chain::testkit::TestChain;
use cairn_chain::{
    execute_transactions, genesis_state, state_tree, verify_batch, Address, ChainStore, Hash,
    PublicKey, SecretKey, Signature, SignatureCheck, Store,
};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn signatures(c: &mut Criterion) {
    let mut g = c.benchmark_group("ed25519");
    let keys: Vec<SecretKey> = (0..4096)
        .map(|i| SecretKey::from_label(&format!("k{i}")))
        .collect();
    let msgs: Vec<Vec<u8>> = (0..4096u32).map(|i| i.to_le_bytes().repeat(30)).collect();
    let sigs: Vec<(PublicKey, Signature)> = keys
        .iter()
        .zip(&msgs)
        .map(|(k, m)| (k.public_key(), k.sign(m)))
        .collect();
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_one", |b| {
        b.iter(|| sigs[0].0.verify(black_box(&msgs[0]), &sigs[0].1))
    });
    for n in [64usize, 256, 1024, 4096] {
        let items: Vec<(&[u8], PublicKey, Signature)> = msgs[..n]
            .iter()
            .zip(&sigs[..n])
            .map(|(m, (p, s))| (m.as_slice(), *p, *s))
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("verify_batch", n), &items, |b, items| {
            b.iter(|| verify_batch(black_box(items)))
        });
    }
    g.finish();
}

fn execution(c: &mut Criterion) {
    let mut g = c.benchmark_group("execute_block");
    g.sample_size(20);
    let chain = TestChain::new("bench", 2_000, 1_000_000);
    let mut state = MemState::default();
    state.apply(&chain.genesis_state);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let txs = chain.random_transfers(&mut rng, &state, 1000).expect("txs");
    let proposer = chain.keys[0].address();
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000_transfers_verified", |b| {
        b.iter(|| {
            execute_transactions(
                &state,
                &chain.params,
                &proposer,
                &txs,
                SignatureCheck::Verify,
            )
            .expect("valid")
        })
    });
    g.bench_function("1000_transfers_presigned", |b| {
        b.iter(|| {
            execute_transactions(
                &state,
                &chain.params,
                &proposer,
                &txs,
                SignatureCheck::AlreadyVerified,
            )
            .expect("valid")
        })
    });
    g.finish();
}

fn store_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("rocksdb");
    g.sample_size(20);
    let chain = TestChain::new("bench", 2_000, 1_000_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("commit_1000_tx_block", |b| {
        b.iter_batched(
            || {
                let head = store.head().expect("head");
                let txs = chain.random_transfers(&mut rng, &store, 1000).expect("txs");
                chain.block_on(&store, &head, 0, txs).expect("propose")
            },
            |p| {
                store
                    .commit_block(&p.block, &p.executed.changes)
                    .expect("commit")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// 1,000 account leaves changed at random positions, then the root: the work a
/// block of ~500 transfers causes in the state tree.
fn state_root(c: &mut Criterion) {
    let mut g = c.benchmark_group("state_root_update_1000_accounts");
    g.sample_size(20);
    for n in [10_000u64, 1_000_000] {
        let allocs: Vec<(Address, u64)> = (0..n)
            .map(|i| {
                let mut a = [0u8; 20];
                a[..8].copy_from_slice(&i.to_le_bytes());
                (Address(a), 1000)
            })
            .collect();
        let (changes, _) = genesis_state(&allocs);
        let mut mem = MemState::default();
        mem.apply(&changes);
        let mut rng = ChaCha8Rng::seed_from_u64(n);
        let leaves: Vec<(u64, Hash)> = (0..1000)
            .map(|_| (rng.gen_range(0..n), Hash::digest(&rng.gen::<[u8; 32]>())))
            .collect();
        g.bench_with_input(BenchmarkId::new("memory", n), &leaves, |b, leaves| {
            b.iter(|| {
                let mut o = Overlay::new(&mem);
                state_tree::update(&mut o, n, leaves.iter().copied()).expect("update")
            })
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let chain = TestChain::new("bench-root", 1, 1);
        let genesis =
            cairn_chain::genesis_block(Hash::ZERO, Hash::ZERO, 0, chain.genesis.header.state_root);
        store.init_genesis(&genesis, &changes).expect("genesis");
        drop(mem);
        g.bench_with_input(BenchmarkId::new("rocksdb", n), &leaves, |b, leaves| {
            b.iter(|| {
                let mut o = Overlay::new(&store);
                state_tree::update(&mut o, n, leaves.iter().copied()).expect("update")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, signatures, execution, store_commit, state_root);
criterion_main!(benches);
