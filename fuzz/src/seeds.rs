//! Valid inputs for the targets, from which the fuzzer mutates: what
//! honest nodes and users send. `cairn-fuzz-seeds` writes them (and
//! generated `genesis.json` and `node.toml` files) into the corpus folders.

use cairn_chain::{codec, CompactBlock, Hash, Transaction};
use cairn_consensus::raft::RaftMessage;
use cairn_consensus::{ConsensusMessage, SignedMessage};
use cairn_p2p::{Request, Response};
use serde::Serialize;

use crate::{engines, fixtures};

fn cbor(value: &impl Serialize) -> Vec<u8> {
    cbor4ii::serde::to_vec(Vec::new(), value).unwrap_or_default()
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Seeds by target name.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let chain = fixtures::chain();
    let tx = |i: usize, nonce: u64| {
        Transaction::new_signed(
            &chain.keys[i],
            &chain.params.chain_id,
            &chain.params.genesis_hash,
            chain.keys[i + 1].address(),
            10,
            1,
            nonce,
        )
    };
    let block = cairn_chain::ChainStore::block_at(fixtures::store(), 1)
        .ok()
        .flatten()
        .unwrap_or_else(|| chain.genesis.clone());
    let v = fixtures::validators();
    let vote = ConsensusMessage::Raft(RaftMessage::RequestVote {
        term: 3,
        last_index: 1,
        last_term: 1,
        pre: true,
    });
    let mut single = vec![0u8];
    single.extend(json(&tx(2, 0)).into_bytes());
    let mut batch = vec![1u8];
    batch.extend(format!("[{},{}]", json(&tx(2, 0)), json(&tx(3, 0))).into_bytes());
    vec![
        ("transaction", tx(0, 0).encode()),
        ("block", block.encode()),
        ("compact_block", CompactBlock::of(&block).encode()),
        (
            "signed_message",
            SignedMessage::sign(&v.network, 0, &v.keys[0], &vote).encode(),
        ),
        ("sync", cbor(&Request::GetBlocks { from: 1, max: 8 })),
        (
            "sync",
            cbor(&Request::GetBlocksAfter {
                locator: vec![Hash::digest(b"elsewhere"), chain.genesis.hash()],
                max: 8,
            }),
        ),
        ("sync", cbor(&Response::Blocks(vec![block.encode().into()]))),
        (
            "gossip_batch",
            codec::encode(&vec![tx(0, 0), tx(1, 0), tx(0, 1)]),
        ),
        ("json_bodies", single),
        ("json_bodies", batch),
        ("raft_messages", engines::record_raft()),
        ("pbft_messages", engines::record_pbft()),
        ("pow_blocks", engines::pow_script()),
        ("sync_import", crate::import::pbft_chain()),
    ]
}
