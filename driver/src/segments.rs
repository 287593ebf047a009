//! Switching engines at the heights the consensus schedule names.
//!
//! Each segment of the schedule has its own engine, validators and
//! finality rule. The driver runs the engine of the segment of the height
//! after its head; when the head reaches the last height of that segment
//! (by a commit or by block sync), it asks the shell for the next
//! segment's engine ([`SegmentStart`]) and hands over: the old engine's
//! pending inputs are dropped, the new one starts on the final block at
//! the end of the old segment. No block past a segment's end is ever
//! validated or committed under its engine.
//!
//! Past a segment's end the driver still builds when asked, but only
//! empty *marker* blocks, which are never committed. Raft commits an
//! entry of an earlier term only by committing a later entry of its own
//! term (the Figure 8 rule); a leader elected after the segment's last
//! block was appended commits that block through a marker of its term,
//! and the driver commits up to the segment's end and no further.
//!
//! Into proof-of-work, the engine starts on the final block at the end of
//! the old segment. Out of it, the competing branches at the segment's
//! last height are settled by the new engine's first block (`settle`).

use std::collections::BTreeMap;

use cairn_chain::{ChainStore, StoreError};
use cairn_consensus::{ConsensusEngine, ValidatorId};

use crate::{Driver, DriverError, Effect, FinalityCheck, Peer};

/// The key under which the store's engine state names the segment it
/// belongs to.
const SEGMENT_KEY: &[u8] = b"segment";

/// What runs one segment on this node.
pub struct SegmentEngine<P> {
    /// The segment's index in the schedule (0: the genesis engine).
    pub index: u64,
    /// `None` where this node is not a validator of the segment.
    pub engine: Option<Box<dyn ConsensusEngine>>,
    pub me: Option<ValidatorId>,
    /// The peer of each validator of the segment, where known.
    pub validator_peers: Vec<Option<P>>,
    /// How a node without an engine checks synced blocks' finality.
    pub observer_check: Option<FinalityCheck>,
    /// The first height of the next segment, if one is scheduled.
    pub end: Option<u64>,
    /// The segment's first height if its first block may name any parent
    /// (the segment before is proof-of-work; see `settle`).
    pub open_parent: Option<u64>,
}

impl<P: std::fmt::Debug> std::fmt::Debug for SegmentEngine<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentEngine")
            .field("index", &self.index)
            .field("engine", &self.engine)
            .field("me", &self.me)
            .field("validator_peers", &self.validator_peers)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// Starts the engine of the segment that holds a height (the shell knows
/// keys, parameters and peers; the driver knows when).
pub type SegmentStart<P> = Box<dyn FnMut(u64) -> Result<SegmentEngine<P>, String> + Send>;

/// The engine state the store holds for segment `index`: what it holds if
/// it was written in that segment, nothing otherwise (the previous
/// segment's state is deleted, in one write that names the new segment).
pub fn segment_state(
    store: &impl ChainStore,
    index: u64,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
    let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = store.engine_entries()?.into_iter().collect();
    let held = match entries.remove(SEGMENT_KEY) {
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| StoreError::Corrupt {
                what: "engine state".into(),
                reason: format!("a segment entry of {} bytes", v.len()),
            })?,
        None => 0,
    };
    if held == index {
        return Ok(entries);
    }
    let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        entries.into_keys().map(|k| (k, None)).collect();
    writes.push((SEGMENT_KEY.to_vec(), Some(index.to_le_bytes().to_vec())));
    store.engine_write(&writes)?;
    Ok(BTreeMap::new())
}

impl<S: ChainStore, P: Peer> Driver<S, P> {
    /// The engine runs segment `index` of the schedule, which ends before
    /// `end`; `start` starts the next ones.
    pub fn with_segments(mut self, index: u64, end: Option<u64>, start: SegmentStart<P>) -> Self {
        self.segment = index;
        self.settle = None;
        self.segment_end = end;
        self.segment_start = Some(start);
        self
    }

    /// The first block of the engine's segment may name any parent at
    /// the height before (`height`: the segment before is proof-of-work).
    pub fn with_open_parent(mut self, height: Option<u64>) -> Self {
        self.open_parent = height;
        self
    }

    /// Whether `height` is past the current segment.
    pub(crate) fn past_segment(&self, height: u64) -> bool {
        self.segment_end.is_some_and(|end| height >= end)
    }

    /// If the head is the last block of the current segment (or past it,
    /// after a sync), starts the engine of the segment after the head.
    /// Returns whether it did.
    pub(crate) fn switch_if_due(&mut self) -> Result<bool, DriverError> {
        if self.segment_end.is_none() {
            return Ok(false);
        }
        let head = self.store.head()?.height;
        if !self.past_segment(head + 1) {
            return Ok(false);
        }
        let Some(start) = self.segment_start.as_mut() else {
            return Ok(false);
        };
        let next = start(head + 1).map_err(|reason| DriverError::Switch {
            height: head + 1,
            reason,
        })?;
        let from = self.status.as_ref().map_or("observer", |s| s.engine);
        self.segment = next.index;
        self.engine = next.engine;
        self.cfg.me = next.me;
        self.validator_peers = next.validator_peers;
        self.observer_check = next.observer_check;
        self.segment_end = next.end;
        self.open_parent = next.open_parent;
        self.settle = None;
        self.in_flight.clear();
        self.timer = None;
        self.leading = false;
        self.status = self.engine.as_ref().map(|e| e.status());
        self.stats.switches += 1;
        let to = self.status.as_ref().map_or("observer", |s| s.engine);
        tracing::info!(
            height = head + 1,
            validator = ?self.cfg.me,
            "consensus switches from {from} to {to} as scheduled"
        );
        self.effects.push(Effect::Switched { height: head + 1 });
        Ok(true)
    }
}
