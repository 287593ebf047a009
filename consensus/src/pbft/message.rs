//! PBFT's messages, the votes and certificates they carry, and how those
//! are signed and checked.
//!
//! Votes and view changes carry their own signature by the validator's key
//! (on top of the driver's envelope), because they travel on inside other
//! messages: prepares inside a view change's prepared certificate, view
//! changes inside a new view's justification, commits inside the commit
//! certificate stored in a final block's seal.
//!
//! Certificates name blocks by hash. A block travels once, in its
//! pre-prepare (a new view's pre-prepare carries the block it re-proposes,
//! its justification only hashes); a new primary that lacks the block it
//! must re-propose asks the validators that prepared it
//! ([`PbftMessage::BlockRequest`]). So a message stays within one block's
//! size whatever the blocks are.

use std::collections::BTreeSet;

use cairn_chain::{codec, Block, Hash, PublicKey, SecretKey, Signature};
use serde::{Deserialize, Serialize};

use crate::ValidatorId;

/// Domain tag of PBFT's inner signatures.
const DOMAIN: &[u8] = b"cairn-pbft-v1";

/// Which phase a vote belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Phase {
    Prepare,
    Commit,
}

/// A validator's signed vote for block `digest` at `height` in `view`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub phase: Phase,
    pub view: u64,
    pub height: u64,
    pub digest: Hash,
    pub voter: ValidatorId,
    pub signature: Signature,
}

/// Proof that a block was prepared: 2f+1 prepares of one view for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    pub view: u64,
    pub digest: Hash,
    pub prepares: Vec<Vote>,
}

/// A validator's signed request to move to `view`, deciding `height`, with
/// the highest block it saw prepared at that height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewChange {
    pub view: u64,
    pub height: u64,
    pub prepared: Option<Prepared>,
    pub voter: ValidatorId,
    pub signature: Signature,
}

/// The commit certificate of a final block, stored in its seal: 2f+1
/// commits of one view for the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub view: u64,
    pub commits: Vec<Vote>,
}

/// PBFT's messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PbftMessage {
    /// The primary's proposal for `height` in `view`. In a view after the
    /// first, it carries the 2f+1 view changes that started the view, so
    /// that any validator — also one that missed the view change — can
    /// check the primary's right to propose and what it must re-propose.
    PrePrepare {
        view: u64,
        height: u64,
        block: Block,
        justification: Vec<ViewChange>,
    },
    Prepare(Vote),
    Commit(Vote),
    ViewChange(ViewChange),
    /// A new primary asks a validator that prepared block `digest` at
    /// `height` for it (it must re-propose it and never saw it).
    BlockRequest {
        height: u64,
        digest: Hash,
    },
    /// The answer: the block (checked against the digest asked for).
    BlockReply(Block),
}

/// A signed PBFT object does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("voter {0} is not a validator")]
    UnknownVoter(ValidatorId),
    #[error("bad signature by validator {0}")]
    BadSignature(ValidatorId),
    #[error("{0}")]
    Invalid(String),
}

fn vote_bytes(
    network: &Hash,
    phase: Phase,
    view: u64,
    height: u64,
    digest: &Hash,
    voter: ValidatorId,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 32 + 1 + 8 + 8 + 32 + 4);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(network.as_ref());
    out.push(match phase {
        Phase::Prepare => b'P',
        Phase::Commit => b'C',
    });
    out.extend_from_slice(&view.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(digest.as_ref());
    out.extend_from_slice(&voter.to_le_bytes());
    out
}

fn view_change_bytes(
    network: &Hash,
    view: u64,
    height: u64,
    prepared: Option<(u64, Hash)>,
    voter: ValidatorId,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 32 + 1 + 8 + 8 + 1 + 8 + 32 + 4);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(network.as_ref());
    out.push(b'V');
    out.extend_from_slice(&view.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    match prepared {
        Some((v, d)) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
            out.extend_from_slice(d.as_ref());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&voter.to_le_bytes());
    out
}

impl Vote {
    pub fn sign(
        network: &Hash,
        key: &SecretKey,
        phase: Phase,
        view: u64,
        height: u64,
        digest: Hash,
        voter: ValidatorId,
    ) -> Self {
        let signature = key.sign(&vote_bytes(network, phase, view, height, &digest, voter));
        Self {
            phase,
            view,
            height,
            digest,
            voter,
            signature,
        }
    }

    pub fn verify(&self, network: &Hash, validators: &[PublicKey]) -> Result<(), ProofError> {
        let key = validators
            .get(self.voter as usize)
            .ok_or(ProofError::UnknownVoter(self.voter))?;
        key.verify(
            &vote_bytes(
                network,
                self.phase,
                self.view,
                self.height,
                &self.digest,
                self.voter,
            ),
            &self.signature,
        )
        .map_err(|_| ProofError::BadSignature(self.voter))
    }
}

/// Checks that `votes` hold `quorum` valid votes by distinct validators,
/// all of `phase`, `view`, `height` and `digest`.
#[allow(clippy::too_many_arguments)] // what a vote is about, spelt out
pub fn verify_quorum(
    network: &Hash,
    validators: &[PublicKey],
    quorum: usize,
    votes: &[Vote],
    phase: Phase,
    view: u64,
    height: u64,
    digest: &Hash,
) -> Result<(), ProofError> {
    // The cheap checks first: no more entries than validators, each voter
    // once, each vote about the right thing; signatures last.
    if votes.len() > validators.len() {
        return Err(ProofError::Invalid(format!(
            "{} votes for {} validators",
            votes.len(),
            validators.len()
        )));
    }
    let mut voters = BTreeSet::new();
    for v in votes {
        if v.phase != phase || v.view != view || v.height != height || v.digest != *digest {
            return Err(ProofError::Invalid(format!(
                "vote by {} is not a {phase:?} of view {view} at height {height} for {digest}",
                v.voter
            )));
        }
        if !voters.insert(v.voter) {
            return Err(ProofError::Invalid(format!(
                "validator {} votes twice",
                v.voter
            )));
        }
    }
    for v in votes {
        v.verify(network, validators)?;
    }
    if voters.len() < quorum {
        return Err(ProofError::Invalid(format!(
            "{} distinct voters, {quorum} needed",
            voters.len()
        )));
    }
    Ok(())
}

impl Prepared {
    /// Checks the certificate for `height` (2f+1 valid prepares of its view
    /// at that height for its digest).
    pub fn verify(
        &self,
        network: &Hash,
        validators: &[PublicKey],
        quorum: usize,
        height: u64,
    ) -> Result<(), ProofError> {
        verify_quorum(
            network,
            validators,
            quorum,
            &self.prepares,
            Phase::Prepare,
            self.view,
            height,
            &self.digest,
        )
    }
}

impl ViewChange {
    pub fn sign(
        network: &Hash,
        key: &SecretKey,
        view: u64,
        height: u64,
        prepared: Option<Prepared>,
        voter: ValidatorId,
    ) -> Self {
        let summary = prepared.as_ref().map(|p| (p.view, p.digest));
        let signature = key.sign(&view_change_bytes(network, view, height, summary, voter));
        Self {
            view,
            height,
            prepared,
            voter,
            signature,
        }
    }

    /// Checks the signature and the prepared certificate it carries.
    pub fn verify(
        &self,
        network: &Hash,
        validators: &[PublicKey],
        quorum: usize,
    ) -> Result<(), ProofError> {
        let key = validators
            .get(self.voter as usize)
            .ok_or(ProofError::UnknownVoter(self.voter))?;
        let summary = self.prepared.as_ref().map(|p| (p.view, p.digest));
        key.verify(
            &view_change_bytes(network, self.view, self.height, summary, self.voter),
            &self.signature,
        )
        .map_err(|_| ProofError::BadSignature(self.voter))?;
        if let Some(p) = &self.prepared {
            if p.view >= self.view {
                return Err(ProofError::Invalid(format!(
                    "prepared in view {} for a change to view {}",
                    p.view, self.view
                )));
            }
            p.verify(network, validators, quorum, self.height)?;
        }
        Ok(())
    }
}

impl Certificate {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ProofError> {
        codec::decode(bytes, cairn_chain::MAX_SEAL_BYTES)
            .map_err(|e| ProofError::Invalid(format!("malformed certificate: {e}")))
    }

    /// Checks that the certificate makes `block` final.
    pub fn verify(
        &self,
        network: &Hash,
        validators: &[PublicKey],
        quorum: usize,
        block: &Block,
    ) -> Result<(), ProofError> {
        verify_quorum(
            network,
            validators,
            quorum,
            &self.commits,
            Phase::Commit,
            self.view,
            block.header.height,
            &block.hash(),
        )
    }
}

/// The block every valid new view must propose first, given its
/// justification: the block of the highest-view prepared certificate at
/// the view's first height, if any (its digest, and that certificate's
/// prepares: who has the block). Checks the justification: 2f+1 valid view
/// changes to `view`, by distinct validators, all at one height.
pub fn new_view_constraint<'a>(
    network: &Hash,
    validators: &[PublicKey],
    quorum: usize,
    view: u64,
    justification: &'a [ViewChange],
) -> Result<(u64, Option<&'a Prepared>), ProofError> {
    let Some(first) = justification.first() else {
        return Err(ProofError::Invalid("no view changes".into()));
    };
    let height = first.height;
    if justification.len() > validators.len() {
        return Err(ProofError::Invalid(format!(
            "{} view changes for {} validators",
            justification.len(),
            validators.len()
        )));
    }
    let mut voters = BTreeSet::new();
    for vc in justification {
        if vc.view != view || vc.height != height {
            return Err(ProofError::Invalid(format!(
                "view change by {} is for view {} at height {}, not view {view} at {height}",
                vc.voter, vc.view, vc.height
            )));
        }
        if !voters.insert(vc.voter) {
            return Err(ProofError::Invalid(format!(
                "validator {} sent two view changes",
                vc.voter
            )));
        }
    }
    let mut best: Option<&Prepared> = None;
    for vc in justification {
        vc.verify(network, validators, quorum)?;
        if let Some(p) = &vc.prepared {
            if best.is_none_or(|b| p.view > b.view) {
                best = Some(p);
            }
        }
    }
    if voters.len() < quorum {
        return Err(ProofError::Invalid(format!(
            "{} distinct view changes, {quorum} needed",
            voters.len()
        )));
    }
    Ok((height, best))
}
