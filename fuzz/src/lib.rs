//! Cairn's fuzz targets. Each `pub fn` here takes the bytes a peer or a
//! user can send and runs them through the code the node runs on them;
//! none may panic, whatever the bytes. Properties that must hold for every
//! input that decodes (re-encoding gives the same value) are asserted.
//!
//! `cargo fuzz` drives them through the harness in `fuzz/harness/` (one
//! libFuzzer target per function, see `TARGETS`); on stable, the test in
//! `fuzz/tests/corpora.rs` replays every committed corpus input and every
//! input that once found a defect (`fuzz/regressions/`).

mod engines;
mod fixtures;
mod import;
pub mod seeds;

use std::sync::Mutex;

use cairn_chain::{codec, Block, CompactBlock, Transaction, MAX_TRANSACTION_BYTES};
use cairn_consensus::SignedMessage;
use cairn_driver::admit::{admit, Signatures};
use cairn_driver::{bodies, serve};
use cairn_p2p::{Request, Response, MAX_TX_BATCH_BYTES};

pub use engines::{pbft_messages, pbft_status, pow_blocks, pow_status, raft_messages, raft_status};
pub use import::{sync_import, sync_import_head};

/// A fuzz target: takes any bytes, must not panic.
pub type Target = fn(&[u8]);

/// Every target, by name (the harness's file names and the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("transaction", transaction),
    ("block", block),
    ("compact_block", compact_block),
    ("signed_message", signed_message),
    ("raft_messages", raft_messages),
    ("pbft_messages", pbft_messages),
    ("pow_blocks", pow_blocks),
    ("sync", sync),
    ("sync_import", sync_import),
    ("gossip_batch", gossip_batch),
    ("json_bodies", json_bodies),
    ("genesis_json", genesis_json),
    ("node_toml", node_toml),
];

/// A transaction as gossip and blocks carry it: decoded, checked for form
/// and signature; what decodes encodes back to the same bytes' value.
pub fn transaction(data: &[u8]) {
    let Ok(tx) = Transaction::decode(data) else {
        return;
    };
    assert_eq!(Transaction::decode(&tx.encode()).ok().as_ref(), Some(&tx));
    let _ = tx.check_format();
    let _ = tx.verify_signature(&fixtures::chain().params.genesis_hash);
    let _ = tx.hash();
}

/// A full block (sync responses, block fetches): decoded and checked for
/// form.
pub fn block(data: &[u8]) {
    let Ok(b) = Block::decode(data) else {
        return;
    };
    assert_eq!(Block::decode(&b.encode()).ok().as_ref(), Some(&b));
    let _ = b.check_format();
    let _ = b.hash();
}

/// A block announced by gossip: decoded, its work and form checked.
pub fn compact_block(data: &[u8]) {
    let Ok(c) = CompactBlock::decode(data) else {
        return;
    };
    let _ = cairn_consensus::pow::check_pow(&c.header);
    let _ = c.check_format();
    let _ = c.hash();
}

/// A consensus message's envelope: decoded and opened against the
/// validator set (the signature rarely verifies: what is exercised is
/// everything before and around it).
pub fn signed_message(data: &[u8]) {
    let Ok(m) = SignedMessage::decode(data) else {
        return;
    };
    assert_eq!(SignedMessage::decode(&m.encode()).ok().as_ref(), Some(&m));
    let f = fixtures::validators();
    if let Ok((_, compact)) = m.open(&f.network, &f.publics) {
        if let Err(mut partial) = compact.assemble(|_| None, |_| None) {
            let _ = partial.wanted();
            let _ = partial.fill(&cairn_chain::Hash::ZERO, &[0], Vec::new());
        }
    }
}

/// A block-sync request and response as the request-response protocol
/// decodes them (CBOR), then served or decoded as the node does.
pub fn sync(data: &[u8]) {
    if let Ok(req) = cbor4ii::serde::from_slice::<Request>(data) {
        let store = fixtures::store();
        match req {
            Request::GetBlocks { from, max } => {
                let _ = serve::blocks(store, from, max.min(64), 1 << 20);
            }
            Request::GetBlocksAfter { locator, max } => {
                let _ = serve::blocks_after(store, &locator, max.min(64), 1 << 20);
            }
            Request::Transactions(txs) => {
                for t in txs {
                    let _ = Transaction::decode(&t);
                }
            }
            Request::Consensus(bytes) => signed_message(&bytes),
            Request::GetBlockTransactions { wanted } => {
                for (hash, indexes) in wanted.iter().take(64) {
                    if let Ok(Some(b)) = cairn_chain::ChainStore::block(store, hash) {
                        let picked: Option<Vec<&Transaction>> = indexes
                            .iter()
                            .map(|&i| b.transactions.get(i as usize))
                            .collect();
                        let _ = picked.map(|p| codec::encode(&p));
                    }
                }
            }
        }
    }
    match cbor4ii::serde::from_slice::<Response>(data) {
        Ok(Response::Blocks(blocks)) => {
            for b in blocks {
                block(&b);
            }
        }
        Ok(Response::Transactions(lists)) => {
            for l in lists {
                let _ = codec::decode::<Vec<Transaction>>(&l, 64 * MAX_TRANSACTION_BYTES);
            }
        }
        _ => {}
    }
}

/// A gossip message on the transactions topic: a batch, decoded within
/// its byte limit and admitted (pre-checks, batch verification, mempool).
pub fn gossip_batch(data: &[u8]) {
    let Ok(txs) = codec::decode::<Vec<Transaction>>(data, MAX_TX_BATCH_BYTES) else {
        return;
    };
    admit_all(txs);
}

/// The bodies of `POST /transactions` (first byte even) and
/// `POST /transactions/batch` (odd), parsed and admitted.
pub fn json_bodies(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(tx) = bodies::single(body) {
            assert!(codec::encoded_len(&tx) <= 2 * MAX_TRANSACTION_BYTES);
            admit_all(vec![tx]);
        }
    } else if let Ok(batch) = bodies::batch(body) {
        assert!(batch.slots.len() <= bodies::MAX_BATCH);
        admit_all(batch.txs);
    }
}

fn admit_all(txs: Vec<Transaction>) {
    let chain = fixtures::chain();
    let pool = Mutex::new(cairn_driver::Mempool::new(
        chain.params.chain_id.clone(),
        1_000,
        16,
    ));
    let admitted = admit(
        &pool,
        fixtures::store(),
        &chain.params.genesis_hash,
        txs,
        Signatures::Verify,
    );
    for (result, tx) in admitted.results.iter().zip(&admitted.accepted) {
        if result.is_ok() {
            assert!(tx.verify_signature(&chain.params.genesis_hash).is_ok());
        }
    }
}

/// A `genesis.json`: parsed and validated; a valid one builds its genesis
/// block, and written out and read back it is the same network.
pub fn genesis_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(g) = cairn_genesis::Genesis::from_json(text) else {
        return;
    };
    let _ = g.build();
    let again = cairn_genesis::Genesis::from_json(&g.to_json());
    assert_eq!(again.map(|a| a.hash()).ok(), Some(g.hash()));
}

/// A `node.toml`: parsed and checked; a valid one written out and read back
/// is the same.
pub fn node_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = cairn_genesis::NodeConfig::from_toml(text) else {
        return;
    };
    let again = cairn_genesis::NodeConfig::from_toml(&c.to_toml());
    assert_eq!(again.ok().map(|a| a.to_toml()), Some(c.to_toml()));
}
