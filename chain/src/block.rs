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
    /// Hash of the consensus configuration the block was made under (the
    /// engine, its parameters and the validators of its segment of the
    /// schedule): nodes whose schedules differ refuse each other's blocks.
    pub config: Hash,
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
        check_limits(&self.header, self.transactions.len(), &self.seal)?;
        check_root(&self.header, transactions_root(&self.transactions))
    }
}

fn check_limits(header: &Header, count: usize, seal: &[u8]) -> Result<(), BlockFormatError> {
    if count > MAX_BLOCK_TRANSACTIONS {
        return Err(BlockFormatError::TooManyTransactions { count });
    }
    if header.engine_data.len() > MAX_ENGINE_DATA_BYTES {
        return Err(BlockFormatError::EngineDataTooLarge {
            len: header.engine_data.len(),
        });
    }
    if seal.len() > MAX_SEAL_BYTES {
        return Err(BlockFormatError::SealTooLarge { len: seal.len() });
    }
    Ok(())
}

fn check_root(header: &Header, actual: Hash) -> Result<(), BlockFormatError> {
    if actual != header.tx_root {
        return Err(BlockFormatError::TxRootMismatch {
            expected: header.tx_root,
            actual,
        });
    }
    Ok(())
}

/// The largest encoded [`CompactBlock`] accepted from a peer.
pub const MAX_COMPACT_BLOCK_BYTES: usize =
    MAX_BLOCK_TRANSACTIONS * 32 + MAX_ENGINE_DATA_BYTES + MAX_SEAL_BYTES + 64 * 1024;

/// A block told by its transactions' hashes instead of the transactions
/// (compact block relay, after Bitcoin's BIP 152). Peers already hold
/// nearly every transaction of a new block in their mempools, from gossip;
/// a hash is 32 bytes where a transfer is about 150, and a receiver
/// neither decodes nor hashes the transactions again. A receiver that
/// lacks some fetches the whole block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactBlock {
    pub header: Header,
    pub tx_hashes: Vec<Hash>,
    pub seal: Vec<u8>,
}

impl CompactBlock {
    /// The compact form of `block`.
    pub fn of(block: &Block) -> Self {
        Self {
            header: block.header.clone(),
            tx_hashes: block.transactions.iter().map(Transaction::hash).collect(),
            seal: block.seal.clone(),
        }
    }

    /// The block's hash (its header's).
    pub fn hash(&self) -> Hash {
        self.header.hash()
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes one compact block, refusing oversized or trailing input.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, MAX_COMPACT_BLOCK_BYTES)
    }

    /// [`Block::check_format`]'s checks, the root over the hashes: a block
    /// assembled from transactions with these hashes passes them too.
    pub fn check_format(&self) -> Result<(), BlockFormatError> {
        check_limits(&self.header, self.tx_hashes.len(), &self.seal)?;
        check_root(&self.header, transactions_root_of(&self.tx_hashes))
    }

    /// The block, with each transaction found by `lookup`, or the number of
    /// transactions `lookup` did not find. A transaction found must have the
    /// hash it was asked for.
    pub fn assemble<'a>(
        self,
        lookup: impl Fn(&Hash) -> Option<&'a Transaction>,
    ) -> Result<Block, usize> {
        let found: Vec<Option<&Transaction>> = self.tx_hashes.iter().map(lookup).collect();
        let missing = found.iter().filter(|t| t.is_none()).count();
        if missing > 0 {
            return Err(missing);
        }
        let transactions = found.into_iter().flatten().cloned().collect();
        Ok(Block {
            header: self.header,
            transactions,
            seal: self.seal,
        })
    }
}

/// Binary Merkle root of the transactions' hashes.
///
/// Leaves are `H(0x00 || tx hash)`, inner nodes `H(0x01 || left || right)`;
/// an odd node at the end of a level is carried up unchanged (never
/// duplicated, so two different lists cannot share a root). The empty list's
/// root is [`Hash::ZERO`].
pub fn transactions_root(txs: &[Transaction]) -> Hash {
    merkle_root(txs.iter().map(|tx| leaf(&tx.hash())).collect())
}

/// [`transactions_root`] of the transactions with these hashes.
pub fn transactions_root_of(hashes: &[Hash]) -> Hash {
    merkle_root(hashes.iter().map(leaf).collect())
}

fn leaf(tx_hash: &Hash) -> Hash {
    Hash::digest_parts(&[&[0u8], tx_hash.as_ref()])
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
            .map(|i| Transaction::new_signed(&key, "c", &Hash::ZERO, Address::ZERO, i, 1, i))
            .collect();
        Block {
            header: Header {
                parent: Hash::digest(b"p"),
                height: 7,
                timestamp_ms: 1_700_000_000_000,
                tx_root: transactions_root(&txs),
                state_root: Hash::digest(b"s"),
                proposer: key.address(),
                config: Hash::ZERO,
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
    fn a_block_of_the_largest_transfers_at_the_count_limit_fits_the_byte_limit() {
        // The builder stops at a count; bytes follow, since a transfer's
        // size is bounded (its chain id is at most 64 bytes).
        let chain_id = "c".repeat(crate::MAX_CHAIN_ID_LEN);
        let key = SecretKey::from_label("s");
        let tx = Transaction::new_signed(
            &key,
            &chain_id,
            &Hash::ZERO,
            Address::ZERO,
            u64::MAX,
            u64::MAX,
            u64::MAX,
        );
        let mut b = block_with(0);
        b.header.engine_data = vec![0xff; MAX_ENGINE_DATA_BYTES];
        b.seal = vec![0xff; MAX_SEAL_BYTES];
        b.transactions = vec![tx; MAX_BLOCK_TRANSACTIONS];
        assert!(b.encoded_len() <= MAX_BLOCK_BYTES, "{}", b.encoded_len());
        assert!(CompactBlock::of(&b).encode().len() <= MAX_COMPACT_BLOCK_BYTES);
    }

    #[test]
    fn a_compact_block_assembles_into_the_block() {
        let b = block_with(5);
        let compact = CompactBlock::of(&b);
        assert_eq!(compact.hash(), b.hash());
        assert_eq!(compact.check_format(), Ok(()));
        assert_eq!(CompactBlock::decode(&compact.encode()), Ok(compact.clone()));
        let pool: std::collections::HashMap<Hash, Transaction> = b
            .transactions
            .iter()
            .map(|tx| (tx.hash(), tx.clone()))
            .collect();
        let back = compact.clone().assemble(|h| pool.get(h));
        assert_eq!(back, Ok(b.clone()));
        assert_eq!(back.map(|b| b.check_format()), Ok(Ok(())));
        // Two transactions this node never saw.
        let (t1, t3) = (b.transactions[1].hash(), b.transactions[3].hash());
        let lacking = compact
            .clone()
            .assemble(|h| pool.get(h).filter(|_| *h != t1 && *h != t3));
        assert_eq!(lacking, Err(2));
    }

    #[test]
    fn a_compact_block_with_other_hashes_fails_the_root() {
        let b = block_with(4);
        let mut compact = CompactBlock::of(&b);
        compact.tx_hashes.swap(0, 1);
        assert!(matches!(
            compact.check_format(),
            Err(BlockFormatError::TxRootMismatch { .. })
        ));
        let mut dropped = CompactBlock::of(&b);
        dropped.tx_hashes.pop();
        assert!(dropped.check_format().is_err());
        assert!(CompactBlock::decode(&[0xff; 100]).is_err());
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
