//! Byzantine PBFT validators for the simulator: an honest engine inside,
//! its outgoing messages rewritten. They hold real validator keys, so what
//! they sign verifies; what they cannot do is sign as someone else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use cairn_chain::{Block, Hash, SecretKey, Signature};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use cairn_consensus::pbft::{PbftMessage, Vote};
use cairn_consensus::{
    Action, ConsensusEngine, ConsensusMessage, EngineStatus, Input, ValidatorId,
};

/// How a Byzantine validator misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing (but stays up, unlike a crash).
    Silent,
    /// As primary, proposes one block to some validators and another to
    /// the rest, and votes (with the other Byzantine validators) for each
    /// block only towards the validators that got it.
    Equivocate,
    /// Besides its votes, signs votes for made-up blocks and sends them to
    /// half the validators.
    ConflictingVotes,
    /// Sends votes claiming to be another validator's, and votes with
    /// garbage signatures.
    ForgedSignatures,
    /// Re-sends messages it received earlier (other validators' votes of
    /// earlier views and heights) as its own.
    Replay,
}

/// What colluding validators share: for each (view, height) where the
/// primary equivocated, the two blocks and who got which.
#[derive(Debug, Default)]
pub struct Collusion {
    split: BTreeMap<(u64, u64), Split>,
}

#[derive(Debug, Clone)]
struct Split {
    blocks: [Block; 2],
    groups: [BTreeSet<ValidatorId>; 2],
}

/// A Byzantine validator around an honest engine.
#[derive(Debug)]
pub struct Byzantine {
    inner: Box<dyn ConsensusEngine>,
    behaviour: Behaviour,
    me: ValidatorId,
    n: u32,
    key: SecretKey,
    network: Hash,
    rng: ChaCha8Rng,
    collusion: Arc<Mutex<Collusion>>,
    colluders: BTreeSet<ValidatorId>,
    heard: Vec<PbftMessage>,
}

impl Byzantine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: Box<dyn ConsensusEngine>,
        behaviour: Behaviour,
        me: ValidatorId,
        n: u32,
        key: SecretKey,
        network: Hash,
        seed: u64,
        collusion: Arc<Mutex<Collusion>>,
        colluders: BTreeSet<ValidatorId>,
    ) -> Self {
        Self {
            inner,
            behaviour,
            me,
            n,
            key,
            network,
            rng: ChaCha8Rng::seed_from_u64(seed),
            collusion,
            colluders,
            heard: Vec::new(),
        }
    }

    fn others(&self) -> impl Iterator<Item = ValidatorId> + '_ {
        (0..self.n).filter(move |&v| v != self.me)
    }

    fn send(to: ValidatorId, msg: PbftMessage) -> Action {
        Action::Send {
            to,
            msg: ConsensusMessage::Pbft(msg),
        }
    }

    fn vote(&self, like: &Vote, digest: Hash) -> Vote {
        Vote::sign(
            &self.network,
            &self.key,
            like.phase,
            like.view,
            like.height,
            digest,
            self.me,
        )
    }

    fn rewrite(&mut self, action: Action, out: &mut Vec<Action>) {
        let msg = match &action {
            Action::Broadcast {
                msg: ConsensusMessage::Pbft(m),
            } => m.clone(),
            Action::Send { .. } | Action::Broadcast { .. }
                if self.behaviour == Behaviour::Silent =>
            {
                return;
            }
            _ => {
                out.push(action);
                return;
            }
        };
        match self.behaviour {
            Behaviour::Silent => {}
            Behaviour::Equivocate => self.equivocate(msg, out),
            Behaviour::ConflictingVotes => {
                out.push(action);
                if let PbftMessage::Prepare(v) | PbftMessage::Commit(v) = &msg {
                    let made_up = Hash::digest(&self.rng.gen::<[u8; 8]>());
                    let fake = self.vote(v, made_up);
                    let wrap = |v: Vote| match msg {
                        PbftMessage::Prepare(_) => PbftMessage::Prepare(v),
                        _ => PbftMessage::Commit(v),
                    };
                    for to in self.others().filter(|t| t % 2 == 0).collect::<Vec<_>>() {
                        out.push(Self::send(to, wrap(fake.clone())));
                    }
                }
            }
            Behaviour::ForgedSignatures => {
                out.push(action);
                if let PbftMessage::Prepare(v) | PbftMessage::Commit(v) = &msg {
                    let mut as_other = v.clone();
                    as_other.voter = (self.me + 1) % self.n;
                    let mut garbage = v.clone();
                    garbage.signature = Signature([7; 64]);
                    let wrap = |v: Vote| match msg {
                        PbftMessage::Prepare(_) => PbftMessage::Prepare(v),
                        _ => PbftMessage::Commit(v),
                    };
                    for to in self.others().collect::<Vec<_>>() {
                        out.push(Self::send(to, wrap(as_other.clone())));
                        out.push(Self::send(to, wrap(garbage.clone())));
                    }
                }
            }
            Behaviour::Replay => {
                out.push(action);
                if !self.heard.is_empty() {
                    let old = self.heard[self.rng.gen_range(0..self.heard.len())].clone();
                    out.push(Action::Broadcast {
                        msg: ConsensusMessage::Pbft(old),
                    });
                }
            }
        }
    }

    fn equivocate(&mut self, msg: PbftMessage, out: &mut Vec<Action>) {
        match msg {
            PbftMessage::PrePrepare {
                view,
                height,
                block,
                justification,
            } => {
                // The same transactions, another timestamp: a second valid
                // block for the same height.
                let mut other = block.clone();
                other.header.timestamp_ms += 1;
                let honest: Vec<ValidatorId> = self
                    .others()
                    .filter(|v| !self.colluders.contains(v))
                    .collect();
                let half = honest.len().div_ceil(2);
                let groups = [
                    honest[..half].iter().copied().collect::<BTreeSet<_>>(),
                    honest[half..].iter().copied().collect::<BTreeSet<_>>(),
                ];
                for (i, b) in [&block, &other].into_iter().enumerate() {
                    for &to in &groups[i] {
                        out.push(Self::send(
                            to,
                            PbftMessage::PrePrepare {
                                view,
                                height,
                                block: b.clone(),
                                justification: justification.clone(),
                            },
                        ));
                    }
                }
                // Fellow colluders get the first block (they vote for both).
                for &c in self.colluders.iter().filter(|&&c| c != self.me) {
                    out.push(Self::send(
                        c,
                        PbftMessage::PrePrepare {
                            view,
                            height,
                            block: block.clone(),
                            justification: justification.clone(),
                        },
                    ));
                }
                if let Ok(mut c) = self.collusion.lock() {
                    c.split.insert(
                        (view, height),
                        Split {
                            blocks: [block, other],
                            groups,
                        },
                    );
                }
            }
            PbftMessage::Prepare(v) | PbftMessage::Commit(v) if self.split_for(&v).is_some() => {
                let Some(split) = self.split_for(&v) else {
                    return;
                };
                for i in 0..2 {
                    let vote = self.vote(&v, split.blocks[i].hash());
                    let m = if v.phase == cairn_consensus::pbft::Phase::Prepare {
                        PbftMessage::Prepare(vote)
                    } else {
                        PbftMessage::Commit(vote)
                    };
                    for &to in &split.groups[i] {
                        out.push(Self::send(to, m.clone()));
                    }
                    for &c in self.colluders.iter().filter(|&&c| c != self.me && i == 0) {
                        out.push(Self::send(c, m.clone()));
                    }
                }
            }
            other => out.push(Action::Broadcast {
                msg: ConsensusMessage::Pbft(other),
            }),
        }
    }

    fn split_for(&self, v: &Vote) -> Option<Split> {
        self.collusion
            .lock()
            .ok()?
            .split
            .get(&(v.view, v.height))
            .cloned()
    }
}

impl ConsensusEngine for Byzantine {
    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        if let Input::Message {
            msg: ConsensusMessage::Pbft(m),
            ..
        } = &input
        {
            if self.behaviour == Behaviour::Replay && self.heard.len() < 256 {
                self.heard.push(m.clone());
            }
        }
        let actions = self.inner.handle(now_ms, input);
        let mut out = Vec::with_capacity(actions.len());
        for a in actions {
            self.rewrite(a, &mut out);
        }
        out
    }

    fn status(&self) -> EngineStatus {
        self.inner.status()
    }

    fn verify_final(&self, block: &Block) -> Result<(), cairn_consensus::FinalityError> {
        self.inner.verify_final(block)
    }
}
