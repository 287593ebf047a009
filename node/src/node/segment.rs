//! Starting the consensus engine of a segment of the network's schedule:
//! at start, for the height after the head, and again at every scheduled
//! switch (the driver asks when its head reaches a segment's end).

use std::sync::Arc;

use anyhow::{bail, Result};
use cairn_chain::{ChainStore, Hash, PublicKey, SecretKey, Store};
use cairn_consensus::raft::{block_term, CommittedHead};
use cairn_consensus::{ConsensusEngine, Pbft, PbftConfig, PowConfig, Raft, RaftConfig};
use cairn_driver::{segment_state, SegmentEngine};
use cairn_genesis::{ConsensusConfig, Genesis, Segment};
use libp2p::PeerId;

use super::{peer_of, RAFT_PIPELINE};
use crate::shared::now_ms;

/// What every segment's engine is started from.
pub(super) struct Segments {
    pub genesis: Arc<Genesis>,
    pub genesis_hash: Hash,
    pub store: Arc<Store>,
    pub key: Option<SecretKey>,
    pub block_max: usize,
    pub mining: bool,
}

/// What a segment's consensus signatures cover: the genesis hash for the
/// genesis engine, the segment's configuration hash after a switch (so no
/// vote of one segment counts in another).
pub(crate) fn network_of(genesis_hash: Hash, segment: &Segment<'_>) -> Hash {
    if segment.index == 0 {
        genesis_hash
    } else {
        segment.config_hash()
    }
}

fn is_pow(segment: &Segment<'_>) -> bool {
    matches!(segment.consensus, ConsensusConfig::Pow(_))
}

fn retarget_rule(p: &cairn_genesis::PowParams) -> cairn_consensus::pow::RetargetRule {
    cairn_consensus::pow::RetargetRule {
        target_block_time_ms: p.target_block_time_ms,
        initial_difficulty: p.initial_difficulty,
        min_difficulty: p.min_difficulty,
        window: p.retarget_window,
    }
}

/// Whether the chain in `store` was made under `genesis`'s schedule: the
/// first block of every segment the chain has reached, and the head,
/// carry their segment's configuration hash. An upgrade appended at a
/// height the chain has already passed fails here, before anything runs.
pub(super) fn check_history(genesis: &Genesis, store: &Store) -> Result<()> {
    let head = store.head()?;
    let mut heights: Vec<u64> = genesis
        .segments()
        .iter()
        .map(|s| s.start.max(1))
        .filter(|h| *h <= head.height)
        .collect();
    heights.push(head.height);
    for height in heights {
        let Some(hash) = store.hash_at(height)? else {
            continue;
        };
        let Some(header) = store.header(&hash)? else {
            continue;
        };
        let segment = genesis.segment_at(height);
        let expected = segment.config_hash();
        if header.config != expected {
            bail!(
                "this node's chain is at height {} and its block {height} was made under \
                 consensus configuration {}, but genesis.json schedules {} from height {} there \
                 (configuration {expected}): an upgrade must name a height the chain has not \
                 reached yet",
                head.height,
                header.config,
                segment.consensus.kind(),
                segment.start
            );
        }
    }
    Ok(())
}

impl Segments {
    /// The validator keys of each segment, by index.
    pub fn keys(&self) -> Vec<Vec<PublicKey>> {
        self.genesis
            .segments()
            .iter()
            .map(|s| s.validators.iter().map(|v| v.public_key).collect())
            .collect()
    }

    /// Starts the engine of the segment that holds `height`, on the
    /// store's head.
    pub fn start(&self, height: u64) -> Result<SegmentEngine<PeerId>> {
        let segments = self.genesis.segments();
        let mut segment = self.genesis.segment_at(height);
        // Consecutive proof-of-work segments are one engine going on (fork
        // choice spans a change of parameters): it starts at the first of
        // them and runs to the end of the last.
        let mut pow_run = Vec::new();
        if is_pow(&segment) {
            let mut first = segment.index;
            while first > 0 && is_pow(&segments[first - 1]) {
                first -= 1;
            }
            pow_run = segments[first..]
                .iter()
                .take_while(|s| is_pow(s))
                .copied()
                .collect();
            segment = pow_run[0];
        }
        let end = pow_run.last().map_or(segment.end, |s| s.end);
        let keys: Vec<PublicKey> = segment.validators.iter().map(|v| v.public_key).collect();
        let me = self
            .key
            .as_ref()
            .and_then(|k| keys.iter().position(|p| *p == k.public_key()))
            .map(|i| i as u32);
        let network = network_of(self.genesis_hash, &segment);
        // Proof-of-work persists nothing; its engine is also started to
        // check a branch at the end of its segment while the next
        // segment's engine runs, whose state stays.
        let persisted = if is_pow(&segment) {
            Default::default()
        } else {
            segment_state(&*self.store, segment.index as u64)?
        };
        // The first block after proof-of-work may name any of the
        // branches that compete at the height before.
        let after_pow = segment.index > 0 && is_pow(&segments[segment.index - 1]);
        let head = self.store.head()?;
        let engine: Option<Box<dyn ConsensusEngine>> = match (segment.consensus, me) {
            // Every proof-of-work node follows the most-work chain,
            // validator key or not.
            (ConsensusConfig::Pow(p), _) => {
                let later = pow_run[1..]
                    .iter()
                    .filter_map(|s| match s.consensus {
                        ConsensusConfig::Pow(p) => Some((s.start, retarget_rule(p))),
                        _ => None,
                    })
                    .collect();
                let cfg = PowConfig {
                    rule: retarget_rule(p),
                    first_height: segment.start.max(1),
                    later,
                    last_height: end.map(|e| e - 1),
                    max_future_drift_ms: p.max_future_drift_ms,
                    mining: self.mining,
                    template_refresh_ms: 1_000,
                    max_orphans: 1_024,
                    max_side_bytes: cairn_consensus::pow::MAX_SIDE_BYTES,
                };
                Some(Box::new(cairn_driver::start::pow(&*self.store, cfg)?))
            }
            (_, None) => None,
            (ConsensusConfig::Raft(p), Some(me)) => {
                let mut seed = [0u8; 8];
                seed.copy_from_slice(&self.genesis_hash.0[..8]);
                let cfg = RaftConfig {
                    me,
                    validators: keys.len() as u32,
                    election_timeout_ms: p.election_timeout_ms,
                    heartbeat_ms: p.heartbeat_ms,
                    block_interval_ms: p.block_interval_ms,
                    empty_blocks: p.empty_blocks,
                    full_block: self.block_max,
                    // The driver reports what remains ready after each
                    // block built and each commit, net of the blocks in
                    // flight.
                    max_uncommitted: RAFT_PIPELINE,
                    // Differs per node and per start: a restarted node must
                    // not replay the same timeouts as before its crash.
                    seed: u64::from_le_bytes(seed) ^ now_ms(),
                    any_parent_at: after_pow.then_some(segment.start),
                };
                // The last block of the previous segment is the base of
                // term 0.
                let term = if head.height >= segment.start {
                    block_term(&head.engine_data)
                } else {
                    0
                };
                let committed = CommittedHead {
                    index: head.height,
                    term,
                    hash: head.hash(),
                };
                Some(Box::new(Raft::new(cfg, committed, &persisted)))
            }
            (ConsensusConfig::Pbft(p), Some(me)) => {
                let Some(key) = self.key.clone() else {
                    bail!("a PBFT validator needs its validator key");
                };
                let cfg = PbftConfig {
                    first_height: segment.start,
                    any_first_parent: after_pow,
                    me,
                    validators: keys.clone(),
                    key,
                    network,
                    block_interval_ms: p.block_interval_ms,
                    view_timeout_ms: p.view_timeout_ms,
                    empty_blocks: p.empty_blocks,
                    full_block: self.block_max,
                };
                Some(Box::new(Pbft::new(cfg, &head, &persisted)))
            }
        };
        // An observer takes a synced PBFT block only with its commit
        // certificate, checked against the segment's validators.
        let observer_check: Option<cairn_driver::FinalityCheck> = match segment.consensus {
            ConsensusConfig::Pbft(_) => {
                let keys = keys.clone();
                Some(Box::new(move |block| {
                    cairn_consensus::pbft::verify_final_block(&network, &keys, block)
                }))
            }
            _ => None,
        };
        Ok(SegmentEngine {
            index: segment.index as u64,
            engine,
            me,
            validator_peers: segment
                .validators
                .iter()
                .map(|v| peer_of(&v.p2p_address))
                .collect(),
            observer_check,
            end,
            open_parent: after_pow.then_some(segment.start),
        })
    }
}
