//! Block sync, the receiving side: blocks a peer sends in answer to a sync
//! request go through the driver's import (finality proof, then execution
//! and commit) on a PBFT validator. Whatever they are, what the store ends
//! up holding is a chain of blocks that each carry a valid commit
//! certificate.

use std::sync::{Arc, Mutex};

use cairn_chain::store::MemStore;
use cairn_chain::{codec, Block, ChainStore};
use cairn_consensus::pbft::{self, Certificate, Phase, Vote};
use cairn_driver::{Config, Driver, Mempool};

use crate::fixtures::{self, VALIDATORS};

/// The peer the blocks come from (validator 0).
const PEER: u32 = 0;

/// Imports the blocks encoded in `data` (a list, as sync answers carry
/// them after decoding) into a fresh store.
pub fn sync_import(data: &[u8]) {
    sync_import_head(data);
}

/// [`sync_import`], and the height the store ends at.
pub fn sync_import_head(data: &[u8]) -> u64 {
    let Ok(blocks) = codec::decode::<Vec<Block>>(data, 8 << 20) else {
        return 0;
    };
    let chain = fixtures::chain();
    let store = Arc::new(MemStore::new(false));
    if store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .is_err()
    {
        return 0;
    }
    let cfg = Config {
        genesis_hash: chain.params.genesis_hash,
        params: chain.params.clone(),
        me: Some(1),
        reward: chain.keys[1].address(),
        block_max: 100,
        sync_batch: 64,
        sync_timeout_ms: 1_000,
        max_locator: 64,
        push_max: 100,
    };
    let pool = Arc::new(Mutex::new(Mempool::new(
        chain.params.chain_id.clone(),
        1_000,
        16,
    )));
    let engine = crate::engines::pbft_engine(1);
    let mut driver: Driver<MemStore, u32> = Driver::new(
        cfg,
        store.clone(),
        pool,
        Some(Box::new(engine)),
        (0..VALIDATORS).map(Some).collect(),
    );
    // A peer far ahead: the driver asks it for blocks, then gets these.
    let _ = driver.announced(0, PEER, 1_000);
    let _ = driver.blocks(1, PEER, blocks);
    let v = fixtures::validators();
    let head = store.head().map(|h| h.height).unwrap_or(0);
    for h in 1..=head {
        let Ok(Some(b)) = store.block_at(h) else {
            panic!("no block at height {h} below the head {head}");
        };
        assert!(
            pbft::verify_final_block(&v.network, &v.publics, &b).is_ok(),
            "block {h} was committed without a valid certificate"
        );
    }
    head
}

/// Two final blocks of the fixture chain's genesis, each sealed with the
/// commit votes of three of the four validators: a valid sync answer.
pub(crate) fn pbft_chain() -> Vec<u8> {
    let chain = fixtures::chain();
    let store = MemStore::new(false);
    if store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .is_err()
    {
        return Vec::new();
    }
    let v = fixtures::validators();
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
    let mut blocks = Vec::new();
    for i in 0..2 {
        let Ok(head) = store.head() else {
            return Vec::new();
        };
        let Ok(txs) = chain.random_transfers(&mut rng, &store, 4) else {
            return Vec::new();
        };
        let Ok(mut p) = chain.block_on(&store, &head, i, txs) else {
            return Vec::new();
        };
        p.block.header.engine_data = pbft::view_data(0);
        // Roots do not depend on the engine data: the block stays valid.
        let digest = p.block.hash();
        let commits = (0..3)
            .map(|voter| {
                Vote::sign(
                    &v.network,
                    &v.keys[voter],
                    Phase::Commit,
                    0,
                    p.block.header.height,
                    digest,
                    voter as u32,
                )
            })
            .collect();
        p.block.seal = Certificate { view: 0, commits }.encode();
        if store.commit_block(&p.block, &p.executed.changes).is_err() {
            return Vec::new();
        }
        blocks.push(p.block);
    }
    codec::encode(&blocks)
}
