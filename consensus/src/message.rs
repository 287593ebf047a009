//! Consensus messages and their signed envelope.

use cairn_chain::{codec, Hash, PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::{PbftMessage, RaftMessage, ValidatorId};

/// The largest encoded signed message accepted: one full block plus room
/// for the envelope.
pub const MAX_MESSAGE_BYTES: usize = cairn_chain::MAX_BLOCK_BYTES + 1024 * 1024;

/// Domain tag of consensus signatures (distinct from transactions').
const DOMAIN: &[u8] = b"cairn-consensus-v3";

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
    /// The canonical encoding of the [`ConsensusMessage`].
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

    /// Signs `msg` as validator `from` of segment `segment` of the
    /// network's consensus schedule.
    pub fn sign_in(
        network: &Hash,
        segment: u64,
        from: ValidatorId,
        key: &SecretKey,
        msg: &ConsensusMessage,
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
    /// segment) and decodes the message.
    pub fn open(
        &self,
        network: &Hash,
        validators: &[PublicKey],
    ) -> Result<(ValidatorId, ConsensusMessage), MessageError> {
        let key = validators
            .get(self.from as usize)
            .ok_or(MessageError::UnknownSender(self.from))?;
        key.verify(
            signing_digest(network, self.segment, self.from, &self.payload).as_ref(),
            &self.signature,
        )
        .map_err(|_| MessageError::BadSignature(self.from))?;
        let msg = codec::decode(&self.payload, MAX_MESSAGE_BYTES)
            .map_err(|e| MessageError::Malformed(e.to_string()))?;
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
        assert_eq!(wire.open(&net, &pks).expect("open"), (1, sample()));

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
        assert_eq!(later.open(&net, &pks).expect("open"), (1, sample()));
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

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(SignedMessage::decode(&[1, 2, 3]).is_err());
        assert!(SignedMessage::decode(&[0xff; 200]).is_err());
    }
}
