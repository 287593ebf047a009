//! What the targets run against, built once per process: a funded test
//! chain in an in-memory store with a few blocks, and a validator set.

use std::sync::OnceLock;

use cairn_chain::store::MemStore;
use cairn_chain::testkit::TestChain;
use cairn_chain::{ChainStore, Hash, PublicKey, SecretKey};

/// Validators of the engine targets.
pub const VALIDATORS: u32 = 4;

pub struct Validators {
    pub network: Hash,
    pub keys: Vec<SecretKey>,
    pub publics: Vec<PublicKey>,
}

pub fn chain() -> &'static TestChain {
    static CHAIN: OnceLock<TestChain> = OnceLock::new();
    CHAIN.get_or_init(|| TestChain::new("cairn-fuzz", 16, 1_000_000))
}

/// The test chain's genesis and three blocks of transfers.
pub fn store() -> &'static MemStore {
    static STORE: OnceLock<MemStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let chain = chain();
        let store = MemStore::new(false);
        store
            .init_genesis(&chain.genesis, &chain.genesis_state)
            .unwrap_or_else(|e| panic!("fixture genesis: {e}"));
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(7);
        for i in 0..3 {
            let head = store.head().unwrap_or_else(|e| panic!("fixture head: {e}"));
            let txs = chain
                .random_transfers(&mut rng, &store, 8)
                .unwrap_or_else(|e| panic!("fixture transfers: {e}"));
            let p = chain
                .block_on(&store, &head, i, txs)
                .unwrap_or_else(|e| panic!("fixture block: {e}"));
            store
                .commit_block(&p.block, &p.executed.changes)
                .unwrap_or_else(|e| panic!("fixture commit: {e}"));
        }
        store
    })
}

pub fn validators() -> &'static Validators {
    static VALIDATORS_: OnceLock<Validators> = OnceLock::new();
    VALIDATORS_.get_or_init(|| {
        let keys: Vec<SecretKey> = (0..VALIDATORS)
            .map(|i| SecretKey::from_label(&format!("cairn-fuzz/validator/{i}")))
            .collect();
        Validators {
            network: chain().params.genesis_hash,
            publics: keys.iter().map(SecretKey::public_key).collect(),
            keys,
        }
    })
}
