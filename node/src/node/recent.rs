//! The blocks this node recently put in its consensus messages (a Raft
//! leader's appends, a PBFT primary's pre-prepares, a prepared block handed
//! to a new primary), with their transactions' hashes.
//!
//! Messages carry blocks by their transactions' hashes
//! ([`cairn_consensus::CompactMessage`]). A leader sends the same block to
//! every follower, and again after a timeout: its transactions are hashed
//! once, here. A receiver that lacks some of a block's transactions asks
//! the sender for them by position, and the sender answers from here (or,
//! once the block is committed, from its store).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use cairn_chain::{codec, Block, ChainStore, Hash, Store, Transaction};

/// Most blocks kept.
const MAX_BLOCKS: usize = 64;
/// Most transactions kept over all blocks (about 40 MB of transfers in
/// memory); the newest block is kept whatever its size.
const MAX_TRANSACTIONS: usize = 200_000;

struct Entry {
    hash: Hash,
    block: Block,
    tx_hashes: Arc<Vec<Hash>>,
}

/// See the module documentation.
#[derive(Default)]
pub struct RecentBlocks {
    entries: VecDeque<Entry>,
    transactions: usize,
}

impl std::fmt::Debug for RecentBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentBlocks")
            .field("blocks", &self.entries.len())
            .field("transactions", &self.transactions)
            .finish()
    }
}

impl RecentBlocks {
    /// The hashes of `block`'s transactions, computed once per block: the
    /// block is kept to answer for them.
    pub fn hashes_of(&mut self, block: &Block) -> Arc<Vec<Hash>> {
        let hash = block.hash();
        if let Some(e) = self.entries.iter().rev().find(|e| e.hash == hash) {
            return e.tx_hashes.clone();
        }
        let tx_hashes = Arc::new(block.transactions.iter().map(Transaction::hash).collect());
        self.transactions += block.transactions.len();
        self.entries.push_back(Entry {
            hash,
            block: block.clone(),
            tx_hashes: Arc::clone(&tx_hashes),
        });
        while self.entries.len() > 1
            && (self.entries.len() > MAX_BLOCKS || self.transactions > MAX_TRANSACTIONS)
        {
            if let Some(old) = self.entries.pop_front() {
                self.transactions -= old.block.transactions.len();
            }
        }
        tx_hashes
    }

    /// A kept block, whole.
    pub fn block(&self, hash: &Hash) -> Option<Block> {
        self.find(hash).cloned()
    }

    fn find(&self, hash: &Hash) -> Option<&Block> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.hash == *hash)
            .map(|e| &e.block)
    }
}

/// The transactions at `indexes` of block `hash`, from the recent blocks
/// or the store; empty if neither holds the block or a position is out of
/// it (the asker then drops the message, and its sender sends it again).
pub fn transactions(
    recent: &Mutex<RecentBlocks>,
    store: &Store,
    hash: &Hash,
    indexes: &[u32],
) -> Vec<Transaction> {
    let pick = |b: &Block| -> Vec<Transaction> {
        indexes
            .iter()
            .map(|&i| b.transactions.get(i as usize).cloned())
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default()
    };
    if let Ok(r) = recent.lock() {
        if let Some(b) = r.find(hash) {
            return pick(b);
        }
    }
    match store.block(hash) {
        Ok(Some(b)) => pick(&b),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::error!("reading block {hash} to serve its transactions: {e}");
            Vec::new()
        }
    }
}

/// The encoded answer to a peer's request for transactions of blocks: per
/// block, its list; once [`cairn_p2p::SYNC_RESPONSE_BUDGET`] bytes are
/// reached, empty lists for the rest (the asker drops the message).
pub fn answer(
    recent: &Mutex<RecentBlocks>,
    store: &Store,
    wanted: &[(Hash, Vec<u32>)],
) -> Vec<Vec<u8>> {
    let mut bytes = 0;
    wanted
        .iter()
        .map(|(hash, indexes)| {
            if bytes >= cairn_p2p::SYNC_RESPONSE_BUDGET {
                return codec::encode(&Vec::<Transaction>::new());
            }
            let encoded = codec::encode(&transactions(recent, store, hash, indexes));
            bytes += encoded.len();
            encoded
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chain::{Address, Header, SecretKey};

    fn block(height: u64, txs: u64) -> Block {
        let key = SecretKey::from_label("sender");
        let transactions: Vec<Transaction> = (0..txs)
            .map(|n| Transaction::new_signed(&key, "c", &Hash::ZERO, Address::ZERO, 1, 1, n))
            .collect();
        Block {
            header: Header {
                parent: Hash::ZERO,
                height,
                timestamp_ms: 0,
                tx_root: cairn_chain::transactions_root(&transactions),
                state_root: Hash::ZERO,
                proposer: Address::ZERO,
                config: Hash::ZERO,
                engine_data: Vec::new(),
            },
            transactions,
            seal: Vec::new(),
        }
    }

    #[test]
    fn a_block_is_hashed_once_and_the_oldest_go_first() {
        let mut r = RecentBlocks::default();
        let b = block(1, 3);
        let first = r.hashes_of(&b);
        assert!(Arc::ptr_eq(&first, &r.hashes_of(&b)), "hashed once");
        assert_eq!(
            *first,
            b.transactions
                .iter()
                .map(Transaction::hash)
                .collect::<Vec<_>>()
        );
        assert_eq!(r.block(&b.hash()), Some(b.clone()));
        for h in 2..=MAX_BLOCKS as u64 + 1 {
            r.hashes_of(&block(h, 1));
        }
        assert_eq!(r.entries.len(), MAX_BLOCKS);
        assert_eq!(r.block(&b.hash()), None, "the oldest went first");
        assert!(r.block(&block(2, 1).hash()).is_some());
    }

    #[test]
    fn past_the_transaction_bound_only_the_newest_block_stays() {
        let mut r = RecentBlocks::default();
        r.hashes_of(&block(1, 2));
        r.transactions = MAX_TRANSACTIONS; // as if the first were huge
        r.hashes_of(&block(2, 2));
        assert_eq!(r.entries.len(), 1);
        assert!(r.block(&block(2, 2).hash()).is_some());
    }
}
