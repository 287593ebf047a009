//! What scenarios and tests can see of a simulation.

use cairn_chain::{Block, Hash};
use cairn_consensus::{EngineStatus, ValidatorId};

use crate::node::SimNode;
use crate::{Ack, ActionCheck, Observer, Sim, SimConfig, Stats};

impl Sim {
    pub fn validators(&self) -> u32 {
        self.cfg.validators
    }

    pub fn is_up(&self, node: ValidatorId) -> bool {
        self.nodes[node as usize].up()
    }

    pub fn up_nodes(&self) -> Vec<ValidatorId> {
        self.nodes.iter().filter(|n| n.up()).map(|n| n.id).collect()
    }

    /// The engine's status, if the node is up.
    pub fn status(&self, node: ValidatorId) -> Option<EngineStatus> {
        self.nodes[node as usize].status().cloned()
    }

    /// Height of the node's final chain.
    pub fn height(&self, node: ValidatorId) -> u64 {
        self.nodes[node as usize].height()
    }

    /// The node's final chain, genesis first.
    pub fn chain(&self, node: ValidatorId) -> Vec<Block> {
        self.nodes[node as usize].store.chain()
    }

    /// The simulation's settings.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The highest height final on any node.
    pub fn final_height(&self) -> u64 {
        if self.cfg.pow_at(self.checker.final_height() + 1) {
            // Nothing is final (any more): the highest head.
            return self.nodes.iter().map(SimNode::height).max().unwrap_or(0);
        }
        self.checker.final_height()
    }

    /// The block final at `height` anywhere, if any.
    pub fn final_at(&self, height: u64) -> Option<Hash> {
        self.checker.final_at(height)
    }

    /// Up nodes that consider themselves leader (or primary).
    pub fn leaders(&self) -> Vec<ValidatorId> {
        self.nodes
            .iter()
            .filter(|n| {
                n.status()
                    .is_some_and(|s| matches!(s.role, "leader" | "primary"))
            })
            .map(|n| n.id)
            .collect()
    }

    /// The leader that every up node in `nodes` follows in the same term.
    pub fn agreed_leader(&self, nodes: &[ValidatorId]) -> Option<ValidatorId> {
        let statuses: Vec<EngineStatus> = nodes.iter().filter_map(|&n| self.status(n)).collect();
        let first = statuses.first()?;
        let leader = first.leader?;
        let agreed = statuses.len() == nodes.len()
            && statuses
                .iter()
                .all(|s| s.leader == Some(leader) && s.term == first.term);
        agreed.then_some(leader)
    }

    /// Blocks built by `node` at or after `since` ms: (height, hash).
    pub fn built_by(&self, node: ValidatorId, since: u64) -> Vec<(u64, Hash)> {
        self.built
            .iter()
            .filter(|b| b.0 == node && b.1 >= since)
            .map(|b| (b.2, b.3))
            .collect()
    }

    /// Transfers the clients saw committed.
    pub fn acks(&self) -> &[Ack] {
        &self.client.acks
    }

    /// The run's counters, the drivers' included.
    pub fn stats(&self) -> Stats {
        let mut drivers = self.retired.clone();
        for n in &self.nodes {
            if let Some(d) = &n.driver {
                drivers.add(d.stats());
            }
        }
        let d = drivers.0;
        Stats {
            blocks_built: d.blocks_built,
            penalties: d.penalties,
            unproven_blocks: d.unproven_blocks,
            rejected_blocks: d.rejected_blocks,
            reorgs: d.reorgs,
            ..self.stats.clone()
        }
    }

    /// Calls `observer` with every consensus message delivered.
    pub fn observe(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// Checks every action of every engine with `check`.
    pub fn check_actions(&mut self, check: ActionCheck) {
        if let Ok(mut c) = self.action_check.lock() {
            *c = Some(check);
        }
    }

    /// The trace so far (empty unless `SimConfig::trace`).
    pub fn trace(&self) -> &[u8] {
        self.trace.as_deref().unwrap_or(&[])
    }
}

/// One line for a consensus message: its kind, view or term, height and
/// the block it is about (for `--log-messages`).
pub(crate) fn describe_message(msg: &cairn_consensus::ConsensusMessage) -> String {
    use cairn_consensus::{ConsensusMessage, PbftMessage, RaftMessage};
    let short = |h: &Hash| h.to_string()[..8].to_owned();
    match msg {
        ConsensusMessage::Pbft(PbftMessage::PrePrepare {
            view,
            height,
            block,
            justification,
        }) => format!(
            "PrePrepare v{view} h{height} {} ({} view changes)",
            short(&block.hash()),
            justification.len()
        ),
        ConsensusMessage::Pbft(PbftMessage::Prepare(v) | PbftMessage::Commit(v)) => {
            format!(
                "{:?} v{} h{} {}",
                v.phase,
                v.view,
                v.height,
                short(&v.digest)
            )
        }
        ConsensusMessage::Pbft(PbftMessage::ViewChange(vc)) => format!(
            "ViewChange to v{} h{} prepared {}",
            vc.view,
            vc.height,
            vc.prepared.as_ref().map_or("nothing".into(), |p| format!(
                "{} in v{}",
                short(&p.digest),
                p.view
            ))
        ),
        ConsensusMessage::Pbft(PbftMessage::BlockRequest { height, digest }) => {
            format!("BlockRequest h{height} {}", short(digest))
        }
        ConsensusMessage::Pbft(PbftMessage::BlockReply(b)) => {
            format!("BlockReply h{} {}", b.header.height, short(&b.hash()))
        }
        ConsensusMessage::Raft(RaftMessage::AppendEntries {
            term,
            prev_index,
            prev_term,
            entries,
            leader_commit,
        }) => format!(
            "AppendEntries t{term} prev {prev_index}/{prev_term} +{} commit {leader_commit}",
            entries.len()
        ),
        ConsensusMessage::Raft(other) => format!("{other:?}"),
    }
}
