//! Blocks and headers.

use serde::{Deserialize, Serialize};

use crate::{codec, Address, Hash, Transaction};

/// The largest encoded block accepted from a peer.
pub const MAX_BLOCK_BYTES: usize = 16 * 1024 * 1024;
/// The most transactions one block may hold.
pub const MAX_BLOCK_TRANSACTIONS: usize = 50_000;
/// The largest engine data a header may carry.
pub const MAX_ENGINE_DATA_BYTES: usize = 1024;
/// The largest engine seal a block may carry (e.g. a commit certificate).
pub const MAX_SEAL_BYTES: usize = 256 * 1024;

/// A block header. Its hash identifies the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Hash of the parent block. For the genesis block: the hash of the
    /// genesis configuration.
    pub parent: Hash,
    /// Distance from genesis (genesis is 0).
    pub height: u64,
    /// Proposal time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Merkle root of the transaction hashes ([`transactions_root`]).
    pub tx_root: Hash,
    /// Root of the account state after executing this block.
    pub state_root: Hash,
    /// Who proposed (or mined) the block and receives its reward and fees.
    pub proposer: Address,
    /// Engine-specific data covered by the hash (proof-of-work nonce and
    /// target, Raft term, PBFT view).
    pub engine_data: Vec<u8>,
}

impl Header {
    /// The block hash: SHA-256 of the header's canonical encoding.
    pub fn hash(&self) -> Hash {
        Hash::digest(&codec::encode(self))
    }
}

/// A block: header, transactions, and an engine seal that is *not* covered by
/// the hash (a commit certificate signs the hash, so it cannot be inside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: Header,
    pub transactions: Vec<Transaction>,
    pub seal: Vec<u8>,
}

/// A block is malformed independently of any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockFormatError {
    #[error("block holds {count} transactions, the limit is {MAX_BLOCK_TRANSACTIONS}")]
    TooManyTransactions { count: usize },
    #[error("engine data is {len} bytes, the limit is {MAX_ENGINE_DATA_BYTES}")]
    EngineDataTooLarge { len: usize },
    #[error("seal is {len} bytes, the limit is {MAX_SEAL_BYTES}")]
    SealTooLarge { len: usize },
    #[error("transaction root {actual} does not match the header's {expected}")]
    TxRootMismatch { expected: Hash, actual: Hash },
}

impl Block {
    /// The block's hash (its header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// The length of [`Self::encode`]'s output, without building it.
    pub fn encoded_len(&self) -> usize {
        codec::encoded_len(self)
    }

    /// Decodes one block, refusing oversized or trailing input.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, MAX_BLOCK_BYTES)
    }

    /// State-independent checks: limits and the transaction root.
    pub fn check_format(&self) -> Result<(), BlockFormatError> {
        if self.transactions.len() > MAX_BLOCK_TRANSACTIONS {
            return Err(BlockFormatError::TooManyTransactions {
                count: self.transactions.len(),
            });
        }
        if self.header.engine_data.len() > MAX_ENGINE_DATA_BYTES {
            return Err(BlockFormatError::EngineDataTooLarge {
                len: self.header.engine_data.len(),
            });
        }
        if self.seal.len() > MAX_SEAL_BYTES {
            return Err(BlockFormatError::SealTooLarge {
                len: self.seal.len(),
            });
        }
        let actual = transactions_root(&self.transactions);
        if actual != self.header.tx_root {
            return Err(BlockFormatError::TxRootMismatch {
                expected: self.header.tx_root,
                actual,
            });
        }
        Ok(())
    }
}

/// Binary Merkle root of the transactions' hashes.
///
/// Leaves are `H(0x00 || tx hash)`, inner nodes `H(0x01 || left || right)`;
/// an odd node at the end of a level is carried up unchanged (never
/// duplicated, so two different lists cannot share a root). The empty list's
/// root is [`Hash::ZERO`].
pub fn transactions_root(txs: &[Transaction]) -> Hash {
    let leaves: Vec<Hash> = txs
        .iter()
        .map(|tx| Hash::digest_parts(&[&[0u8], tx.hash().as_ref()]))
        .collect();
    merkle_root(leaves)
}

fn merkle_root(mut level: Vec<Hash>) -> Hash {
    if level.is_empty() {
        return Hash::ZERO;
    }
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => Hash::digest_parts(&[&[1u8], l.as_ref(), r.as_ref()]),
                [single] => *single,
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;
    use proptest::prelude::*;

    fn block_with(n: u64) -> Block {
        let key = SecretKey::from_label("s");
        let txs: Vec<Transaction> = (0..n)
            .map(|i| Transaction::new_signed(&key, "c", Address::ZERO, i, 1, i))
            .collect();
        Block {
            header: Header {
                parent: Hash::digest(b"p"),
                height: 7,
                timestamp_ms: 1_700_000_000_000,
                tx_root: transactions_root(&txs),
                state_root: Hash::digest(b"s"),
                proposer: key.address(),
                engine_data: vec![1, 2, 3],
            },
            transactions: txs,
            seal: vec![9; 10],
        }
    }

    proptest! {
        #[test]
        fn block_round_trips(n in 0u64..20, height: u64, ts: u64, data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = block_with(n);
            b.header.height = height;
            b.header.timestamp_ms = ts;
            b.header.engine_data = data;
            prop_assert_eq!(Block::decode(&b.encode()), Ok(b.clone()));
            let json = serde_json::to_string(&b).expect("json");
            let back: Block = serde_json::from_str(&json).expect("back");
            prop_assert_eq!(back, b);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = Block::decode(&bytes);
        }
    }

    #[test]
    fn seal_is_outside_the_hash_but_engine_data_inside() {
        let b = block_with(3);
        let mut sealed = b.clone();
        sealed.seal = vec![1];
        assert_eq!(b.hash(), sealed.hash());
        let mut other = b.clone();
        other.header.engine_data.push(0);
        assert_ne!(b.hash(), other.hash());
    }

    #[test]
    fn tx_root_is_checked_and_order_matters() {
        let mut b = block_with(4);
        assert_eq!(b.check_format(), Ok(()));
        b.transactions.swap(0, 1);
        assert!(matches!(
            b.check_format(),
            Err(BlockFormatError::TxRootMismatch { .. })
        ));
    }

    #[test]
    fn merkle_root_shapes() {
        assert_eq!(merkle_root(vec![]), Hash::ZERO);
        let a = Hash::digest(b"a");
        assert_eq!(merkle_root(vec![a]), a);
        let b = Hash::digest(b"b");
        let c = Hash::digest(b"c");
        let ab = Hash::digest_parts(&[&[1u8], a.as_ref(), b.as_ref()]);
        assert_eq!(
            merkle_root(vec![a, b, c]),
            Hash::digest_parts(&[&[1u8], ab.as_ref(), c.as_ref()])
        );
        // [a, b, c] and [a, b, c, c] differ (no duplication of odd nodes).
        assert_ne!(merkle_root(vec![a, b, c]), merkle_root(vec![a, b, c, c]));
    }
}
