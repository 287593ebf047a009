//! Signed transfer transactions.

use serde::{Deserialize, Serialize};

use crate::{codec, Address, Hash, PublicKey, SecretKey, Signature, SignatureError};

/// The longest chain id a transaction may carry.
pub const MAX_CHAIN_ID_LEN: usize = 64;
/// The largest encoded transaction accepted from a peer or a user.
pub const MAX_TRANSACTION_BYTES: usize = 1024;

/// Domain separator of the bytes a transaction's signature covers, so a
/// transaction signature can never be replayed as any other kind of message.
const SIGNING_DOMAIN: &str = "cairn-transaction-v2";

/// A transfer of `amount` from the account of `from` to `to`, paying `fee` to
/// the block's proposer, signed by `from`.
///
/// The signature covers the canonical encoding of every other field, prefixed
/// by a domain separator, and the network's genesis hash (not a field: the
/// verifier supplies its own), so a new network that reuses a chain id
/// cannot replay another's transfers. The hash covers every field including
/// the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The chain this transaction is valid on (replay protection).
    pub chain_id: String,
    /// The sender's public key; the sender's account is its address.
    pub from: PublicKey,
    /// The recipient.
    pub to: Address,
    /// Amount moved to `to`.
    pub amount: u64,
    /// Fee paid to the proposer of the including block.
    pub fee: u64,
    /// The sender's account nonce this transaction consumes (0 for the first).
    pub nonce: u64,
    /// ed25519 signature by `from` over [`Transaction::signing_bytes`].
    pub signature: Signature,
}

/// The transaction is not well formed, independently of any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionFormatError {
    #[error("chain id is {len} bytes, the limit is {MAX_CHAIN_ID_LEN}")]
    ChainIdTooLong { len: usize },
    #[error("amount + fee overflows")]
    TotalOverflow,
}

impl Transaction {
    /// Builds and signs a transfer.
    pub fn new_signed(
        key: &SecretKey,
        chain_id: &str,
        genesis: &Hash,
        to: Address,
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Self {
        let mut tx = Transaction {
            chain_id: chain_id.to_owned(),
            from: key.public_key(),
            to,
            amount,
            fee,
            nonce,
            signature: Signature([0u8; 64]),
        };
        tx.signature = key.sign(&tx.signing_bytes(genesis));
        tx
    }

    /// The bytes the signature covers on the network of genesis hash
    /// `genesis`: the canonical encoding of
    /// `(SIGNING_DOMAIN, chain_id, genesis, from, to, amount, fee, nonce)`.
    ///
    /// Written out by hand — every node takes it for every transaction it
    /// verifies — and checked against [`codec::encode`] by the tests.
    pub fn signing_bytes(&self, genesis: &Hash) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            8 + SIGNING_DOMAIN.len() + 8 + self.chain_id.len() + 32 + 32 + 20 + 24,
        );
        out.extend_from_slice(&(SIGNING_DOMAIN.len() as u64).to_le_bytes());
        out.extend_from_slice(SIGNING_DOMAIN.as_bytes());
        out.extend_from_slice(&(self.chain_id.len() as u64).to_le_bytes());
        out.extend_from_slice(self.chain_id.as_bytes());
        out.extend_from_slice(&genesis.0);
        out.extend_from_slice(&self.from.0);
        out.extend_from_slice(&self.to.0);
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.fee.to_le_bytes());
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out
    }

    /// The transaction's identifier: SHA-256 of its canonical encoding.
    ///
    /// The encoding is fed to the hasher field by field, without building
    /// it (a node hashes every transaction several times); the tests check
    /// it equals hashing [`Transaction::encode`].
    pub fn hash(&self) -> Hash {
        Hash::digest_parts(&[
            &(self.chain_id.len() as u64).to_le_bytes(),
            self.chain_id.as_bytes(),
            &self.from.0,
            &self.to.0,
            &self.amount.to_le_bytes(),
            &self.fee.to_le_bytes(),
            &self.nonce.to_le_bytes(),
            &self.signature.0,
        ])
    }

    /// The sender's account address.
    pub fn sender(&self) -> Address {
        self.from.address()
    }

    /// `amount + fee`, if it does not overflow.
    pub fn total_cost(&self) -> Option<u64> {
        self.amount.checked_add(self.fee)
    }

    /// Checks the signature alone, for the network of genesis hash
    /// `genesis`.
    pub fn verify_signature(&self, genesis: &Hash) -> Result<(), SignatureError> {
        self.from
            .verify(&self.signing_bytes(genesis), &self.signature)
    }

    /// State-independent checks (sizes, arithmetic).
    pub fn check_format(&self) -> Result<(), TransactionFormatError> {
        if self.chain_id.len() > MAX_CHAIN_ID_LEN {
            return Err(TransactionFormatError::ChainIdTooLong {
                len: self.chain_id.len(),
            });
        }
        if self.total_cost().is_none() {
            return Err(TransactionFormatError::TotalOverflow);
        }
        Ok(())
    }

    /// Canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes one transaction, refusing oversized or trailing input.
    pub fn decode(bytes: &[u8]) -> Result<Self, codec::CodecError> {
        codec::decode(bytes, MAX_TRANSACTION_BYTES)
    }
}

/// Verifies the signatures of `txs` in one batch; on failure returns the index
/// of a transaction whose signature does not verify.
pub fn verify_transactions<'a>(
    txs: impl IntoIterator<Item = &'a Transaction>,
    genesis: &Hash,
) -> Result<(), (usize, SignatureError)> {
    let txs: Vec<&Transaction> = txs.into_iter().collect();
    let messages: Vec<Vec<u8>> = txs.iter().map(|tx| tx.signing_bytes(genesis)).collect();
    let items: Vec<(&[u8], PublicKey, Signature)> = txs
        .iter()
        .zip(&messages)
        .map(|(tx, m)| (m.as_slice(), tx.from, tx.signature))
        .collect();
    crate::keys::verify_batch(&items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(amount: u64, fee: u64, nonce: u64, chain: &str) -> Transaction {
        let key = SecretKey::from_label("sender");
        let to = SecretKey::from_label("recipient").address();
        Transaction::new_signed(&key, chain, &genesis(), to, amount, fee, nonce)
    }

    fn genesis() -> Hash {
        Hash::digest(b"a genesis")
    }

    proptest! {
        #[test]
        fn hand_written_encodings_match_the_codec(amount: u64, fee: u64, nonce: u64, chain in "[a-z0-9-]{0,64}") {
            let tx = sample(amount, fee, nonce, &chain);
            prop_assert_eq!(tx.hash(), Hash::digest(&codec::encode(&tx)));
            let signed = codec::encode(&(
                SIGNING_DOMAIN,
                &tx.chain_id,
                &genesis(),
                &tx.from,
                &tx.to,
                tx.amount,
                tx.fee,
                tx.nonce,
            ));
            prop_assert_eq!(tx.signing_bytes(&genesis()), signed);
        }

        #[test]
        fn encode_decode_round_trips(amount: u64, fee: u64, nonce: u64, chain in "[a-z0-9-]{0,64}") {
            let tx = sample(amount, fee, nonce, &chain);
            let bytes = tx.encode();
            prop_assert_eq!(Transaction::decode(&bytes), Ok(tx.clone()));
            let json = serde_json::to_string(&tx).expect("json");
            let back: Transaction = serde_json::from_str(&json).expect("json back");
            prop_assert_eq!(back, tx);
        }

        #[test]
        fn any_changed_byte_fails_verification(amount: u64, nonce: u64, pos in 0usize..1000, flip in 1u8..=255) {
            let tx = sample(amount, 1, nonce, "cairn-test");
            prop_assert!(tx.verify_signature(&genesis()).is_ok());
            let mut bytes = tx.encode();
            let pos = pos % bytes.len();
            bytes[pos] ^= flip;
            // Either the bytes no longer decode, or what they decode to no
            // longer verifies.
            if let Ok(changed) = Transaction::decode(&bytes) {
                prop_assert!(changed.verify_signature(&genesis()).is_err());
            }
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Transaction::decode(&bytes);
        }
    }

    #[test]
    fn refuses_trailing_and_oversized_input() {
        let mut bytes = sample(1, 1, 0, "c").encode();
        bytes.push(0);
        assert!(matches!(
            Transaction::decode(&bytes),
            Err(codec::CodecError::TrailingBytes { extra: 1 })
        ));
        let big = vec![0u8; MAX_TRANSACTION_BYTES + 1];
        assert!(matches!(
            Transaction::decode(&big),
            Err(codec::CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn signature_does_not_cover_a_different_chain() {
        let mut tx = sample(5, 1, 0, "chain-a");
        tx.chain_id = "chain-b".into();
        assert!(tx.verify_signature(&genesis()).is_err());
    }

    #[test]
    fn signature_does_not_cover_another_network_of_the_same_chain_id() {
        let tx = sample(5, 1, 0, "chain-a");
        assert!(tx.verify_signature(&genesis()).is_ok());
        assert!(tx
            .verify_signature(&Hash::digest(b"another genesis"))
            .is_err());
        assert!(verify_transactions([&tx], &Hash::digest(b"another genesis")).is_err());
    }

    #[test]
    fn format_checks() {
        assert_eq!(
            sample(u64::MAX, 1, 0, "c").check_format(),
            Err(TransactionFormatError::TotalOverflow)
        );
        let long = "x".repeat(65);
        assert_eq!(
            sample(1, 1, 0, &long).check_format(),
            Err(TransactionFormatError::ChainIdTooLong { len: 65 })
        );
    }
}
