//! Consensus messages, their compact wire form and their signed envelope.

use cairn_chain::{
    codec, transactions_root_of, Block, Hash, PublicKey, SecretKey, Signature, Transaction,
    MAX_BLOCK_TRANSACTIONS,
};
use serde::{Deserialize, Serialize};

use crate::{PbftMessage, RaftMessage, ValidatorId};

/// The largest encoded signed message accepted. Blocks travel by their
/// transactions' hashes (32 bytes each, [`CompactMessage`]); this leaves
/// room for a full block of hashes twice over and the envelope.
pub const MAX_MESSAGE_BYTES: usize =
    2 * (MAX_BLOCK_TRANSACTIONS * 32 + cairn_chain::MAX_SEAL_BYTES) + 1024 * 1024;

/// Domain tag of consensus signatures (distinct from transactions').
const DOMAIN: &[u8] = b"cairn-consensus-v4";

/// A message of any engine. One enum, so that the trait stays object-safe
/// and the wire format is shared.
// PBFT's pre-prepare carries a block inline; messages are built once and
// moved, so the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsensusMessage {
    Raft(RaftMessage),
    Pbft(PbftMessage),
}

impl ConsensusMessage {
    /// The blocks the message carries, in order.
    pub fn blocks(&self) -> Vec<&Block> {
        match self {
            ConsensusMessage::Raft(RaftMessage::AppendEntries { entries, .. }) => {
                entries.iter().collect()
            }
            ConsensusMessage::Pbft(PbftMessage::PrePrepare { block, .. })
            | ConsensusMessage::Pbft(PbftMessage::BlockReply(block)) => vec![block],
            _ => Vec::new(),
        }
    }

    fn blocks_mut(&mut self) -> Vec<&mut Block> {
        match self {
            ConsensusMessage::Raft(RaftMessage::AppendEntries { entries, .. }) => {
                entries.iter_mut().collect()
            }
            ConsensusMessage::Pbft(PbftMessage::PrePrepare { block, .. })
            | ConsensusMessage::Pbft(PbftMessage::BlockReply(block)) => vec![block],
            _ => Vec::new(),
        }
    }
}

/// A consensus message as it travels and is signed: every block by its
/// transactions' hashes (after Bitcoin's compact blocks, BIP 152). The
/// receivers of a Raft append or a PBFT pre-prepare already hold nearly
/// every transaction of its blocks, from gossip; a hash is 32 bytes where a
/// transfer is about 150, the sender encodes and signs a few kilobytes per
/// follower instead of the block, and a receiver neither decodes nor hashes
/// the transactions again. The signature covers the hashes, which name the
/// transactions exactly, so it is checked before any work on the blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactMessage {
    /// The message, each of its blocks without transactions.
    msg: ConsensusMessage,
    /// Per block of `msg`, in order, its transactions' hashes.
    tx_hashes: Vec<Vec<Hash>>,
}

/// A compact message whose blocks are not all assembled: the transactions
/// found so far, and which are still wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    msg: ConsensusMessage,
    tx_hashes: Vec<Vec<Hash>>,
    found: Vec<Vec<Option<Transaction>>>,
}

/// The transactions a partial message still lacks in one of its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The block's hash.
    pub block: Hash,
    /// Positions of the missing transactions in the block.
    pub indexes: Vec<u32>,
}

impl CompactMessage {
    /// The compact form of `msg`; `hashes` gives a block's transaction
    /// hashes (a sender that sends one block to several peers hashes its
    /// transactions once).
    pub fn of(msg: &ConsensusMessage, mut hashes: impl FnMut(&Block) -> Vec<Hash>) -> Self {
        let tx_hashes = msg.blocks().into_iter().map(&mut hashes).collect();
        Self {
            msg: msg.clone_without_transactions(),
            tx_hashes,
        }
    }

    /// What a receiver can check before any lookup: one list of hashes per
    /// block, no transactions inline, each block's transaction root over
    /// its hashes.
    pub fn check_format(&self) -> Result<(), MessageError> {
        let blocks = self.msg.blocks();
        if blocks.len() != self.tx_hashes.len() {
            return Err(MessageError::Malformed(format!(
                "{} blocks with {} lists of transaction hashes",
                blocks.len(),
                self.tx_hashes.len()
            )));
        }
        for (b, hashes) in blocks.into_iter().zip(&self.tx_hashes) {
            if !b.transactions.is_empty() {
                return Err(MessageError::Malformed(
                    "a compact message with transactions inline".into(),
                ));
            }
            if hashes.len() > MAX_BLOCK_TRANSACTIONS {
                return Err(MessageError::Malformed(format!(
                    "a block of {} transactions, the limit is {MAX_BLOCK_TRANSACTIONS}",
                    hashes.len()
                )));
            }
            let root = transactions_root_of(hashes);
            if root != b.header.tx_root {
                return Err(MessageError::Malformed(format!(
                    "block {}: transaction root {root} does not match the header's {}",
                    b.header.height, b.header.tx_root
                )));
            }
        }
        Ok(())
    }

    /// Whether the message carries blocks (checked by
    /// [`Self::check_format`]: one list of hashes per block).
    pub fn carries_blocks(&self) -> bool {
        !self.tx_hashes.is_empty()
    }

    /// The message with every block assembled: `lookup` gives a
    /// transaction by its hash (from the mempool), and for a block with
    /// transactions `lookup` lacks, `whole` the block if this node holds it
    /// whole (it sent or committed it). What neither finds is left
    /// [`Partial`].
    pub fn assemble(
        self,
        mut whole: impl FnMut(&Hash) -> Option<Block>,
        mut lookup: impl FnMut(&Hash) -> Option<Transaction>,
    ) -> Result<ConsensusMessage, Box<Partial>> {
        let mut found = Vec::with_capacity(self.tx_hashes.len());
        let mut complete = true;
        for (b, hashes) in self.msg.blocks().into_iter().zip(&self.tx_hashes) {
            let mut slots: Vec<Option<Transaction>> = hashes.iter().map(&mut lookup).collect();
            if slots.iter().any(Option::is_none) {
                // The hash names the header, whose root names the hashes.
                if let Some(held) = whole(&b.hash()) {
                    if held.transactions.len() == hashes.len() {
                        slots = held.transactions.into_iter().map(Some).collect();
                    }
                }
            }
            complete &= slots.iter().all(Option::is_some);
            found.push(slots);
        }
        let partial = Partial {
            msg: self.msg,
            tx_hashes: self.tx_hashes,
            found,
        };
        if complete {
            Ok(partial.finish())
        } else {
            Err(Box::new(partial))
        }
    }
}

impl ConsensusMessage {
    /// A copy that leaves the blocks' transactions behind (cloning them
    /// only to drop them would cost a block's worth of allocations).
    fn clone_without_transactions(&self) -> ConsensusMessage {
        let strip = |b: &Block| Block {
            header: b.header.clone(),
            transactions: Vec::new(),
            seal: b.seal.clone(),
        };
        match self {
            ConsensusMessage::Raft(RaftMessage::AppendEntries {
                term,
                prev_index,
                prev_term,
                entries,
                leader_commit,
            }) => ConsensusMessage::Raft(RaftMessage::AppendEntries {
                term: *term,
                prev_index: *prev_index,
                prev_term: *prev_term,
                entries: entries.iter().map(strip).collect(),
                leader_commit: *leader_commit,
            }),
            ConsensusMessage::Pbft(PbftMessage::PrePrepare {
                view,
                height,
                block,
                justification,
            }) => ConsensusMessage::Pbft(PbftMessage::PrePrepare {
                view: *view,
                height: *height,
                block: strip(block),
                justification: justification.clone(),
            }),
            ConsensusMessage::Pbft(PbftMessage::BlockReply(block)) => {
                ConsensusMessage::Pbft(PbftMessage::BlockReply(strip(block)))
            }
            other => other.clone(),
        }
    }
}

impl Partial {
    /// Per block with transactions still missing, which.
    pub fn wanted(&self) -> Vec<Wanted> {
        self.msg
            .blocks()
            .into_iter()
            .zip(&self.found)
            .filter_map(|(b, slots)| {
                let indexes: Vec<u32> = slots
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.is_none())
                    .map(|(i, _)| i as u32)
                    .collect();
                (!indexes.is_empty()).then(|| Wanted {
                    block: b.hash(),
                    indexes,
                })
            })
            .collect()
    }

    /// Fills the transactions at `indexes` of block `block` with `txs`
    /// (a peer's answer to [`Wanted`]). Each must have the hash the
    /// signed message names at its position; an answer that does not fit
    /// is refused whole.
    pub fn fill(
        &mut self,
        block: &Hash,
        indexes: &[u32],
        txs: Vec<Transaction>,
    ) -> Result<(), String> {
        let Some(at) = self.msg.blocks().iter().position(|b| b.hash() == *block) else {
            return Err(format!(
                "transactions of block {block}, which the message does not carry"
            ));
        };
        if indexes.len() != txs.len() {
            return Err(format!(
                "{} transactions for {} positions",
                txs.len(),
                indexes.len()
            ));
        }
        let (hashes, slots) = (&self.tx_hashes[at], &mut self.found[at]);
        for (&i, tx) in indexes.iter().zip(&txs) {
            match hashes.get(i as usize) {
                Some(h) if *h == tx.hash() => {}
                Some(_) => {
                    return Err(format!("transaction {i} of block {block} has another hash"))
                }
                None => return Err(format!("block {block} has no transaction {i}")),
            }
        }
        for (&i, tx) in indexes.iter().zip(txs) {
            slots[i as usize] = Some(tx);
        }
        Ok(())
    }

    /// The message, once nothing is missing.
    pub fn complete(self) -> Result<ConsensusMessage, Box<Partial>> {
        if self.found.iter().all(|s| s.iter().all(Option::is_some)) {
            Ok(self.finish())
        } else {
            Err(Box::new(self))
        }
    }

    fn finish(mut self) -> ConsensusMessage {
        for (b, slots) in self.msg.blocks_mut().into_iter().zip(self.found) {
            b.transactions = slots.into_iter().flatten().collect();
        }
        self.msg
    }
}

/// A consensus message signed by a validator. The signature covers the
/// network's genesis hash, so a message cannot be replayed on another network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    /// The sender's index in the validator set.
    pub from: ValidatorId,
    /// The segment of the consensus schedule the sender's engine runs
    /// (0 for the genesis engine): validator indices and keys are that
    /// segment's.
    pub segment: u64,
    /// The canonical encoding of the message's [`CompactMessage`].
    pub payload: Vec<u8>,
    pub signature: Signature,
}

/// A received message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("sender {0} is not a validator")]
    UnknownSender(ValidatorId),
    #[error("bad signature from validator {0}")]
    BadSignature(ValidatorId),
}

/// What a validator signs: the SHA-256 digest of the domain tag, the
/// network, the sender and the payload. Messages carry whole blocks; ed25519
/// hashes its message twice with SHA-512 to sign and once to verify, so
/// signing a 32-byte digest (SHA-256, hardware-accelerated on most CPUs) is
/// several times cheaper than signing the payload itself, and as strong.
fn signing_digest(network: &Hash, segment: u64, from: ValidatorId, payload: &[u8]) -> Hash {
    Hash::digest_parts(&[
        DOMAIN,
        network.as_ref(),
        &segment.to_le_bytes(),
        &from.to_le_bytes(),
        payload,
    ])
}

impl SignedMessage {
    /// Signs `msg` as validator `from` of the network `network`'s genesis
    /// engine.
    pub fn sign(
        network: &Hash,
        from: ValidatorId,
        key: &SecretKey,
        msg: &ConsensusMessage,
    ) -> Self {
        Self::sign_in(network, 0, from, key, msg)
    }

    /// Signs `msg` as [`Self::sign`] does, hashing every transaction of its
    /// blocks.
    pub fn sign_in(
        network: &Hash,
        segment: u64,
        from: ValidatorId,
        key: &SecretKey,
        msg: &ConsensusMessage,
    ) -> Self {
        let compact = CompactMessage::of(msg, |b| {
            b.transactions.iter().map(Transaction::hash).collect()
        });
        Self::sign_compact(network, segment, from, key, &compact)
    }

    /// Signs `msg` as validator `from` of segment `segment` of the
    /// network's consensus schedule.
    pub fn sign_compact(
        network: &Hash,
        segment: u64,
        from: ValidatorId,
        key: &SecretKey,
        msg: &CompactMessage,
    ) -> Self {
        let payload = codec::encode(msg);
        let signature = key.sign(signing_digest(network, segment, from, &payload).as_ref());
        Self {
            from,
            segment,
            payload,
            signature,
        }
    }

    /// Checks the signature against `validators` (those of the message's
    /// segment), decodes the message and checks its compact form
    /// ([`CompactMessage::check_format`]). Its blocks are still to be
    /// assembled ([`CompactMessage::assemble`]).
    pub fn open(
        &self,
        network: &Hash,
        validators: &[PublicKey],
    ) -> Result<(ValidatorId, CompactMessage), MessageError> {
        let key = validators
            .get(self.from as usize)
            .ok_or(MessageError::UnknownSender(self.from))?;
        key.verify(
            signing_digest(network, self.segment, self.from, &self.payload).as_ref(),
            &self.signature,
        )
        .map_err(|_| MessageError::BadSignature(self.from))?;
        let msg: CompactMessage = codec::decode(&self.payload, MAX_MESSAGE_BYTES)
            .map_err(|e| MessageError::Malformed(e.to_string()))?;
        msg.check_format()?;
        Ok((self.from, msg))
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Parses the wire form (no signature check: see [`Self::open`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        codec::decode(bytes, MAX_MESSAGE_BYTES).map_err(|e| MessageError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConsensusMessage {
        ConsensusMessage::Raft(RaftMessage::VoteResponse {
            term: 7,
            granted: true,
            pre: false,
        })
    }

    #[test]
    fn signed_message_opens_only_with_the_right_key_and_network() {
        let keys: Vec<SecretKey> = (0..3)
            .map(|i| SecretKey::from_label(&format!("v{i}")))
            .collect();
        let pks: Vec<PublicKey> = keys.iter().map(SecretKey::public_key).collect();
        let net = Hash::digest(b"net");
        let m = SignedMessage::sign(&net, 1, &keys[1], &sample());
        let wire = SignedMessage::decode(&m.encode()).expect("decode");
        assert_eq!(opened(&wire, &net, &pks), (1, sample()));

        // Another network's genesis hash.
        assert_eq!(
            wire.open(&Hash::digest(b"other"), &pks),
            Err(MessageError::BadSignature(1))
        );
        // Claiming to be someone else.
        let mut forged = wire.clone();
        forged.from = 2;
        assert_eq!(forged.open(&net, &pks), Err(MessageError::BadSignature(2)));
        // Moved to another segment of the schedule.
        let mut moved = wire.clone();
        moved.segment = 1;
        assert_eq!(moved.open(&net, &pks), Err(MessageError::BadSignature(1)));
        let later = SignedMessage::sign_in(&net, 1, 1, &keys[1], &sample());
        assert_eq!(opened(&later, &net, &pks), (1, sample()));
        // Not a validator at all.
        forged.from = 9;
        assert_eq!(forged.open(&net, &pks), Err(MessageError::UnknownSender(9)));
        // Any flipped payload byte.
        for i in 0..wire.payload.len() {
            let mut t = wire.clone();
            t.payload[i] ^= 1;
            assert!(t.open(&net, &pks).is_err());
        }
    }

    /// Opens a message without blocks (nothing to assemble).
    fn opened(m: &SignedMessage, net: &Hash, pks: &[PublicKey]) -> (ValidatorId, ConsensusMessage) {
        let (from, compact) = m.open(net, pks).expect("open");
        (
            from,
            compact.assemble(|_| None, |_| None).expect("no blocks"),
        )
    }

    fn transfers(n: u64) -> Vec<Transaction> {
        let key = SecretKey::from_label("sender");
        (0..n)
            .map(|i| {
                Transaction::new_signed(&key, "c", &Hash::ZERO, cairn_chain::Address::ZERO, 1, 1, i)
            })
            .collect()
    }

    fn block_of(height: u64, txs: Vec<Transaction>) -> Block {
        Block {
            header: cairn_chain::Header {
                parent: Hash::digest(&height.to_le_bytes()),
                height,
                timestamp_ms: 1,
                tx_root: cairn_chain::transactions_root(&txs),
                state_root: Hash::ZERO,
                proposer: cairn_chain::Address::ZERO,
                config: Hash::ZERO,
                engine_data: vec![1, 2],
            },
            transactions: txs,
            seal: vec![7],
        }
    }

    fn append(entries: Vec<Block>) -> ConsensusMessage {
        ConsensusMessage::Raft(RaftMessage::AppendEntries {
            term: 3,
            prev_index: 1,
            prev_term: 2,
            entries,
            leader_commit: 1,
        })
    }

    #[test]
    fn blocks_travel_by_their_transactions_hashes_and_assemble_from_a_pool() {
        let key = SecretKey::from_label("v0");
        let net = Hash::digest(b"net");
        let txs = transfers(50);
        let msg = append(vec![
            block_of(2, txs[..30].to_vec()),
            block_of(3, txs[30..].to_vec()),
        ]);
        let wire = SignedMessage::sign(&net, 0, &key, &msg).encode();
        let full = codec::encoded_len(&msg);
        assert!(
            wire.len() * 3 < full,
            "{} bytes compact against {full}",
            wire.len()
        );

        let (_, compact) = SignedMessage::decode(&wire)
            .and_then(|m| m.open(&net, &[key.public_key()]))
            .expect("opens");
        let pool: std::collections::HashMap<Hash, Transaction> =
            txs.iter().map(|t| (t.hash(), t.clone())).collect();
        let lookup = |h: &Hash| pool.get(h).cloned();
        assert_eq!(compact.clone().assemble(|_| None, lookup), Ok(msg.clone()));

        // Transactions 5 and 40 are not in this node's pool.
        let lacking =
            |h: &Hash| (*h != txs[5].hash() && *h != txs[40].hash()).then(|| pool[h].clone());
        let mut partial = compact
            .clone()
            .assemble(|_| None, lacking)
            .expect_err("two missing");
        let blocks = msg.blocks();
        assert_eq!(
            partial.wanted(),
            vec![
                Wanted {
                    block: blocks[0].hash(),
                    indexes: vec![5]
                },
                Wanted {
                    block: blocks[1].hash(),
                    indexes: vec![10]
                },
            ]
        );
        // An answer with another transaction, or for another position, is refused.
        assert!(partial
            .fill(&blocks[0].hash(), &[5], vec![txs[6].clone()])
            .is_err());
        assert!(partial
            .fill(&blocks[0].hash(), &[6], vec![txs[5].clone()])
            .is_err());
        assert!(partial
            .fill(&blocks[0].hash(), &[99], vec![txs[5].clone()])
            .is_err());
        assert!(partial
            .fill(&Hash::ZERO, &[5], vec![txs[5].clone()])
            .is_err());
        partial
            .fill(&blocks[0].hash(), &[5], vec![txs[5].clone()])
            .expect("fits");
        let mut partial = partial.complete().expect_err("one still missing");
        partial
            .fill(&blocks[1].hash(), &[10], vec![txs[40].clone()])
            .expect("fits");
        assert_eq!(partial.complete(), Ok(msg.clone()));

        // A block held whole (already received or committed) needs no lookups.
        let held = blocks[1].clone();
        let whole = |h: &Hash| (*h == held.hash()).then(|| held.clone());
        let only_first = |h: &Hash| txs[..30].iter().find(|t| t.hash() == *h).cloned();
        assert_eq!(compact.assemble(whole, only_first), Ok(msg));
    }

    #[test]
    fn a_compact_message_whose_hashes_do_not_match_its_blocks_is_malformed() {
        let key = SecretKey::from_label("v0");
        let net = Hash::digest(b"net");
        let txs = transfers(4);
        let msg = append(vec![block_of(2, txs.clone())]);
        let good = CompactMessage::of(&msg, |b| {
            b.transactions.iter().map(Transaction::hash).collect()
        });
        let opens = |c: &CompactMessage| {
            SignedMessage::sign_compact(&net, 0, 0, &key, c).open(&net, &[key.public_key()])
        };
        assert!(opens(&good).is_ok());
        let mut swapped = good.clone();
        swapped.tx_hashes[0].swap(0, 1);
        assert!(matches!(opens(&swapped), Err(MessageError::Malformed(_))));
        let mut dropped = good.clone();
        dropped.tx_hashes[0].pop();
        assert!(matches!(opens(&dropped), Err(MessageError::Malformed(_))));
        let mut extra_list = good.clone();
        extra_list.tx_hashes.push(Vec::new());
        assert!(matches!(
            opens(&extra_list),
            Err(MessageError::Malformed(_))
        ));
        let mut inline = good;
        inline.msg = msg;
        assert!(matches!(opens(&inline), Err(MessageError::Malformed(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(SignedMessage::decode(&[1, 2, 3]).is_err());
        assert!(SignedMessage::decode(&[0xff; 200]).is_err());
    }
}
