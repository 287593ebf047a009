//! The serving side of block sync: what a node answers a peer's block
//! request with, read from its store.

use cairn_chain::{ChainStore, Hash, StoreError};
use cairn_consensus::pow::locator_heights;

/// The encoded canonical blocks from height `from`: at most `max`, and no
/// more once `budget` bytes are reached.
pub fn blocks(
    store: &impl ChainStore,
    from: u64,
    max: u32,
    budget: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for h in from..from.saturating_add(u64::from(max)) {
        let Some(b) = store.block_at(h)? else {
            break;
        };
        let encoded = b.encode();
        bytes += encoded.len();
        out.push(encoded);
        if bytes >= budget {
            break;
        }
    }
    Ok(out)
}

/// The encoded canonical blocks after the first hash of `locator` that is
/// on the store's canonical chain (none if no hash is).
pub fn blocks_after(
    store: &impl ChainStore,
    locator: &[Hash],
    max: u32,
    budget: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    for hash in locator {
        let Some(header) = store.header(hash)? else {
            continue;
        };
        if store.hash_at(header.height)? == Some(*hash) {
            return blocks(store, header.height + 1, max, budget);
        }
    }
    Ok(Vec::new())
}

/// The block locator of the store's canonical chain: the head, then
/// hashes exponentially further back, genesis last.
pub fn locator(store: &impl ChainStore) -> Result<Vec<Hash>, StoreError> {
    let head = store.head()?.height;
    let mut out = Vec::new();
    for h in locator_heights(head, 0) {
        if let Some(hash) = store.hash_at(h)? {
            out.push(hash);
        }
    }
    Ok(out)
}
