//! The invariants every simulated run must keep, checked as the run goes
//! (so that a violation is reported at the moment it happens).

use std::collections::BTreeMap;

use cairn_chain::{Block, Hash};

use cairn_consensus::{EngineStatus, ValidatorId};

/// A broken invariant (or a scenario's own expectation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two different blocks final at one height.
    Agreement {
        height: u64,
        node: ValidatorId,
        first: Hash,
        second: Hash,
    },
    /// A node's final chain changed or shrank, or an engine's committed
    /// height went back.
    Stability { node: ValidatorId, detail: String },
    /// A final block fails validation or execution.
    Validity {
        node: ValidatorId,
        height: u64,
        error: String,
    },
    /// Two leaders in one term (or view).
    ElectionSafety {
        term: u64,
        first: ValidatorId,
        second: ValidatorId,
    },
    /// No progress within the bound after the faults healed.
    Liveness { detail: String },
    /// A transaction a client saw committed is missing from a final chain.
    LostTransaction {
        tx: Hash,
        height: u64,
        node: ValidatorId,
    },
    /// An honest node was penalised: honest nodes would ban each other.
    Blame { detail: String },
    /// A scenario's expectation about the engine's behaviour failed.
    Scenario(String),
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::Agreement {
                height,
                node,
                first,
                second,
            } => write!(
                f,
                "agreement: node {node} made {second} final at height {height}, \
                 another node had {first}"
            ),
            Violation::Stability { node, detail } => write!(f, "stability: node {node}: {detail}"),
            Violation::Validity {
                node,
                height,
                error,
            } => write!(
                f,
                "validity: node {node}'s final block {height} is invalid: {error}"
            ),
            Violation::ElectionSafety {
                term,
                first,
                second,
            } => write!(
                f,
                "election safety: nodes {first} and {second} both lead term {term}"
            ),
            Violation::Liveness { detail } => write!(f, "liveness: {detail}"),
            Violation::LostTransaction { tx, height, node } => write!(
                f,
                "lost transaction: {tx}, seen committed at height {height}, is not in node {node}'s final chain"
            ),
            Violation::Blame { detail } => write!(f, "blame: {detail}"),
            Violation::Scenario(s) => write!(f, "scenario: {s}"),
        }
    }
}

/// The checker's memory: the first block seen final at each height, the
/// leader of each term, each node's highest committed height.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    /// `finals[h - 1]` is the block final at height `h`.
    finals: Vec<Hash>,
    /// By segment of the consensus schedule and term (each segment's
    /// engine counts its terms or views from 0).
    leaders: BTreeMap<(u64, u64), ValidatorId>,
    committed: BTreeMap<ValidatorId, u64>,
}

impl Checker {
    /// Node `node` made `block` final.
    pub(crate) fn on_final(&mut self, node: ValidatorId, block: &Block) -> Result<(), Violation> {
        let height = block.header.height;
        let hash = block.hash();
        let Some(index) = height.checked_sub(1).map(|i| i as usize) else {
            return Err(Violation::Stability {
                node,
                detail: "made a block final at height 0".into(),
            });
        };
        match self.finals.get(index) {
            Some(first) if *first != hash => Err(Violation::Agreement {
                height,
                node,
                first: *first,
                second: hash,
            }),
            Some(_) => Ok(()),
            None if index == self.finals.len() => {
                self.finals.push(hash);
                Ok(())
            }
            // Heights below were final somewhere before this one: a node
            // commits in order, so the gap cannot happen.
            None => Err(Violation::Stability {
                node,
                detail: format!(
                    "height {height} final while height {} is final nowhere",
                    self.finals.len() + 1
                ),
            }),
        }
    }

    /// The engine of `node`, running segment `segment` of the schedule,
    /// reports `status`; its store holds `height`.
    pub(crate) fn on_status(
        &mut self,
        node: ValidatorId,
        segment: u64,
        status: &EngineStatus,
        height: u64,
    ) -> Result<(), Violation> {
        if matches!(status.role, "leader" | "primary") {
            let first = *self.leaders.entry((segment, status.term)).or_insert(node);
            if first != node {
                return Err(Violation::ElectionSafety {
                    term: status.term,
                    first,
                    second: node,
                });
            }
        }
        let last = self.committed.entry(node).or_insert(0);
        if status.committed_height < *last {
            return Err(Violation::Stability {
                node,
                detail: format!(
                    "engine's committed height went back from {last} to {}",
                    status.committed_height
                ),
            });
        }
        if status.committed_height > height {
            return Err(Violation::Stability {
                node,
                detail: format!(
                    "engine reports height {} committed, the store holds {height}",
                    status.committed_height
                ),
            });
        }
        *last = status.committed_height;
        Ok(())
    }

    /// The highest height final anywhere.
    pub(crate) fn final_height(&self) -> u64 {
        self.finals.len() as u64
    }

    /// The block final at `height`, if any.
    pub(crate) fn final_at(&self, height: u64) -> Option<Hash> {
        height
            .checked_sub(1)
            .and_then(|i| self.finals.get(i as usize).copied())
            .filter(|h| *h != Hash::ZERO)
    }

    /// The heights below `height` were mined (a proof-of-work segment
    /// before a final engine): none of them is final, and the first final
    /// block may come at `height`.
    pub(crate) fn mined_below(&mut self, height: u64) {
        while (self.finals.len() as u64) + 1 < height {
            self.finals.push(Hash::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_chain::{Address, Header};

    use super::*;

    fn block(height: u64, tag: u8) -> Block {
        Block {
            header: Header {
                parent: Hash::ZERO,
                height,
                timestamp_ms: 0,
                tx_root: Hash::digest(&[tag]),
                state_root: Hash::ZERO,
                proposer: Address::ZERO,
                config: Hash::ZERO,
                engine_data: Vec::new(),
            },
            transactions: Vec::new(),
            seal: Vec::new(),
        }
    }

    fn status(role: &'static str, term: u64, committed_height: u64) -> EngineStatus {
        EngineStatus {
            engine: "test",
            role,
            term,
            leader: None,
            committed_height,
            uncommitted: 0,
            view_changes: 0,
            dropped_messages: 0,
            rejected_messages: 0,
            pow: None,
        }
    }

    #[test]
    fn two_blocks_at_one_height_break_agreement() {
        let mut c = Checker::default();
        c.on_final(0, &block(1, 1)).expect("first");
        c.on_final(1, &block(1, 1)).expect("same block elsewhere");
        assert!(matches!(
            c.on_final(2, &block(1, 2)),
            Err(Violation::Agreement { height: 1, .. })
        ));
        assert!(matches!(
            c.on_final(0, &block(3, 1)),
            Err(Violation::Stability { .. })
        ));
    }

    #[test]
    fn two_leaders_of_one_term_and_a_shrinking_commit_are_caught() {
        let mut c = Checker::default();
        c.on_status(0, 0, &status("leader", 3, 0), 0)
            .expect("leader");
        c.on_status(1, 0, &status("follower", 3, 0), 0)
            .expect("follower");
        assert!(matches!(
            c.on_status(1, 0, &status("leader", 3, 0), 0),
            Err(Violation::ElectionSafety { term: 3, .. })
        ));
        c.on_status(2, 0, &status("follower", 3, 5), 5).expect("up");
        assert!(matches!(
            c.on_status(2, 0, &status("follower", 3, 4), 5),
            Err(Violation::Stability { .. })
        ));
        assert!(matches!(
            c.on_status(0, 0, &status("follower", 3, 6), 5),
            Err(Violation::Stability { .. })
        ));
    }
}
