//! PBFT (Castro & Liskov, 1999) deciding one block per height.
//!
//! `n = 3f + 1` validators tolerate `f` Byzantine ones. The primary of view
//! `v` is validator `v mod n`; it stays primary from height to height until
//! a view change replaces it. At each height:
//!
//! 1. the primary proposes a block in a **pre-prepare**;
//! 2. a validator that finds the block valid (the driver executes it)
//!    broadcasts a signed **prepare**; 2f+1 matching prepares make the block
//!    *prepared* at this validator, which keeps them as a certificate;
//! 3. it then broadcasts a signed **commit**; 2f+1 matching commits make the
//!    block final. They are stored with it (the block's seal) as its
//!    **commit certificate**, which block sync checks instead of trusting
//!    the peer that sent the block.
//!
//! **View change.** A validator that waits too long for a height to finish
//! while there is work to do (transactions pending or a proposal in
//! flight), sees the primary propose two blocks for one height, or gets an
//! invalid proposal, asks for view `v + 1` with a signed view change that
//! carries its prepared certificate for the height, if any. Timeouts double
//! with each failed view. f+1 view changes for a higher view make a
//! validator join (so one slow timer does not hold back a view change).
//! The new primary, with 2f+1 view changes, proposes; its pre-prepares in
//! that view carry the 2f+1 view changes, and the first must re-propose the
//! block of the highest prepared certificate among them, if any — so a
//! block that may have become final in an older view is never replaced.
//!
//! **Crashes.** Before a validator sends a prepare or commit it persists
//! it, with its prepared certificate and view, so that after a restart it
//! neither votes twice in one view nor forgets what it saw prepared.
//!
//! **Catch-up.** A message for a later height means this validator is
//! behind: it syncs final blocks (certificates checked) from the sender.
//! Messages for the next few heights are kept and replayed when this
//! validator gets there.

pub mod message;

use std::collections::{BTreeMap, BTreeSet};

use cairn_chain::{codec, Block, Hash, Header, PublicKey, SecretKey};

pub use message::{Certificate, PbftMessage, Phase, Prepared, ProofError, ViewChange, Vote};

use crate::{
    Action, ConsensusEngine, ConsensusMessage, EngineStatus, FinalityError, Input, ValidatorId,
};

const VIEW_KEY: &[u8] = b"pbft/view";
const VOTES_KEY: &[u8] = b"pbft/votes";
/// The view changes that justify the current view: a validator that
/// restarts as primary sends them again, and one that restarts as a backup
/// keeps the view's constraint on what may be proposed.
const JUSTIFICATION_KEY: &[u8] = b"pbft/justification";
/// Messages kept for heights this far ahead.
const LOOKAHEAD: u64 = 4;
/// Messages kept per sender for future heights.
const MAX_FUTURE_PER_SENDER: usize = 16;
/// Bytes (encoded) of the messages kept per sender for future heights:
/// one full proposal and its votes, whatever the sender sends.
const MAX_FUTURE_BYTES_PER_SENDER: usize = cairn_chain::MAX_BLOCK_BYTES + 1024 * 1024;
/// Votes are kept for views this far beyond the current one.
const FUTURE_VIEWS: u64 = 2;
/// Highest timeout multiplier (2^3 = 8 × the base timeout): enough to
/// outgrow message delays, short enough that a run of views whose primary
/// has nothing to propose rotates on quickly.
const MAX_BACKOFF: u32 = 3;

/// PBFT's settings.
#[derive(Debug, Clone)]
pub struct PbftConfig {
    /// The first height of this engine's segment of the consensus
    /// schedule (0 for the genesis engine): a head below it is the last
    /// block of the previous segment, and the engine starts at view 0.
    pub first_height: u64,
    /// Whether the block at `first_height` may name any parent: the
    /// previous segment is proof-of-work, whose branches may still compete
    /// at the height before (the driver makes the one named the head).
    pub any_first_parent: bool,
    pub me: ValidatorId,
    /// The validator set, in genesis order.
    pub validators: Vec<PublicKey>,
    /// This validator's key: it signs votes and view changes.
    pub key: SecretKey,
    /// What signatures cover: the network's genesis hash for the genesis
    /// engine, the segment's configuration hash for a later one.
    pub network: Hash,
    pub block_interval_ms: u64,
    /// Base view-change timeout, doubled with each failed view.
    pub view_timeout_ms: u64,
    pub empty_blocks: bool,
    /// Transactions that make a full block: propose without waiting.
    pub full_block: usize,
}

/// What a validator persists about its own votes at the current height.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct VoteState {
    height: u64,
    /// (view, digest) of the last prepare and commit sent at `height`.
    prepared_vote: Option<(u64, Hash)>,
    commit_vote: Option<(u64, Hash)>,
    /// The highest prepared certificate at `height`, and its block (which
    /// this validator may have to re-propose or hand to a new primary).
    prepared: Option<Prepared>,
    prepared_block: Option<Block>,
    /// The highest view this validator asked to move to at `height`. Its
    /// view change promised not to prepare in any lower view: it never
    /// enters one, even when a lower view's primary shows a quorum.
    asked: u64,
}

/// The engine data of a block proposed in `view`.
pub fn view_data(view: u64) -> Vec<u8> {
    codec::encode(&view)
}

/// The view written in a block's engine data (0 if none).
pub fn block_view(engine_data: &[u8]) -> u64 {
    codec::decode::<u64>(engine_data, 8).unwrap_or(0)
}

/// The PBFT engine. See the module docs.
#[derive(Debug)]
pub struct Pbft {
    cfg: PbftConfig,
    f: usize,
    now: u64,
    view: u64,
    /// The store's head.
    head_height: u64,
    head_hash: Hash,
    votes: VoteState,
    /// The proposal accepted for (view, height) and whether it validated.
    proposal: Option<Block>,
    validated: Option<bool>,
    /// First pre-prepare digest seen per view at this height (equivocation).
    proposed: BTreeMap<u64, Hash>,
    prepares: BTreeMap<(u64, Hash), BTreeMap<ValidatorId, Vote>>,
    commits: BTreeMap<(u64, Hash), BTreeMap<ValidatorId, Vote>>,
    /// Blocks seen in pre-prepares at this height, by hash.
    blocks: BTreeMap<Hash, Block>,
    /// View changes received, by target view, at this height.
    view_changes: BTreeMap<u64, BTreeMap<ValidatorId, ViewChange>>,
    /// The view this validator asked to move to, while waiting for it.
    changing_to: Option<u64>,
    /// Views whose justification was checked: the view's first height and
    /// the block it must re-propose there.
    justified: BTreeMap<u64, (u64, Option<Hash>)>,
    /// The justification of the current view (sent with pre-prepares).
    justification: Vec<ViewChange>,
    /// A block the primary must re-propose at this height.
    must_propose: Option<Block>,
    /// This validator became primary through a view change: it proposes at
    /// once, an empty block if nothing is ready, so that the validators
    /// waiting in the view change learn the new view.
    announce: bool,
    /// Restored from the store and not yet resumed (see `resume`).
    restarted: bool,
    /// The block a new primary must re-propose but lacks: its digest, and
    /// the validators that prepared it (asked for it).
    fetching: Option<(Hash, Vec<ValidatorId>)>,
    /// Block requests answered at this height (one answer per validator
    /// and block).
    served: BTreeSet<(ValidatorId, Hash)>,
    building: bool,
    next_block_at: u64,
    txs_available: usize,
    /// When this height (or the current view change) times out.
    deadline: Option<u64>,
    failed_views: u32,
    timer: Option<u64>,
    started: bool,
    /// Messages for later heights, replayed when this validator gets there.
    /// With each message its encoded size, which bounds what one sender
    /// can make this validator hold.
    future: BTreeMap<u64, Vec<(ValidatorId, PbftMessage, usize)>>,
    /// Counters for the API and metrics.
    view_change_count: u64,
    dropped: u64,
    rejected: u64,
}

impl Pbft {
    /// Restores the engine from the store's head (height, hash, engine data)
    /// and its persisted keys.
    pub fn new(cfg: PbftConfig, head: &Header, persisted: &BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        let n = cfg.validators.len();
        let view = persisted
            .get(VIEW_KEY)
            .and_then(|v| codec::decode::<u64>(v, 8).ok())
            .unwrap_or(0)
            .max(if head.height >= cfg.first_height {
                block_view(&head.engine_data)
            } else {
                0
            });
        let head_height = head.height;
        let votes = persisted
            .get(VOTES_KEY)
            .and_then(|v| codec::decode::<VoteState>(v, cairn_chain::MAX_BLOCK_BYTES * 2).ok())
            .filter(|v| v.height == head_height + 1)
            .unwrap_or(VoteState {
                height: head_height + 1,
                ..VoteState::default()
            });
        let f = n.saturating_sub(1) / 3;
        let justification: Vec<ViewChange> = persisted
            .get(JUSTIFICATION_KEY)
            .and_then(|v| codec::decode(v, cairn_chain::MAX_BLOCK_BYTES).ok())
            .unwrap_or_default();
        let mut justified = BTreeMap::new();
        let justification = match message::new_view_constraint(
            &cfg.network,
            &cfg.validators,
            2 * f + 1,
            view,
            &justification,
        ) {
            Ok((height, prepared)) => {
                justified.insert(view, (height, prepared.map(|p| p.digest)));
                justification
            }
            Err(_) => Vec::new(),
        };
        Self {
            f,
            now: 0,
            view,
            head_height,
            head_hash: head.hash(),
            votes,
            proposal: None,
            validated: None,
            proposed: BTreeMap::new(),
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            blocks: BTreeMap::new(),
            view_changes: BTreeMap::new(),
            changing_to: None,
            justified,
            justification,
            must_propose: None,
            announce: false,
            restarted: true,
            fetching: None,
            served: BTreeSet::new(),
            building: false,
            next_block_at: 0,
            txs_available: 0,
            deadline: None,
            failed_views: 0,
            timer: None,
            started: false,
            future: BTreeMap::new(),
            view_change_count: 0,
            dropped: 0,
            rejected: 0,
            cfg,
        }
    }

    fn n(&self) -> usize {
        self.cfg.validators.len()
    }

    /// 2f+1.
    fn quorum(&self) -> usize {
        2 * self.f + 1
    }

    fn height(&self) -> u64 {
        self.head_height + 1
    }

    fn primary_of(&self, view: u64) -> ValidatorId {
        (view % self.n().max(1) as u64) as ValidatorId
    }

    fn is_primary(&self) -> bool {
        self.primary_of(self.view) == self.cfg.me && self.changing_to.is_none()
    }

    /// Messages refused since start (bad signatures, conflicting votes,
    /// invalid certificates, …).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// View changes this validator went through since start.
    pub fn view_changes(&self) -> u64 {
        self.view_change_count
    }

    fn persist_votes(&self, out: &mut Vec<Action>) {
        out.push(Action::Persist(vec![
            (VOTES_KEY.to_vec(), Some(codec::encode(&self.votes))),
            (VIEW_KEY.to_vec(), Some(codec::encode(&self.view))),
        ]));
    }

    fn broadcast(&self, out: &mut Vec<Action>, msg: PbftMessage) {
        out.push(Action::Broadcast {
            msg: ConsensusMessage::Pbft(msg),
        });
    }

    fn timeout(&self) -> u64 {
        self.cfg.view_timeout_ms << self.failed_views.min(MAX_BACKOFF)
    }

    /// Whether the next block is the first after proof-of-work: it settles
    /// which branch the chain keeps, and is made even without
    /// transactions (the mined blocks' transfers wait for it).
    fn settling(&self) -> bool {
        self.cfg.any_first_parent && self.height() == self.cfg.first_height
    }

    /// Starts the view-change timer if there is work and none runs.
    fn arm_timer(&mut self) {
        let work = self.proposal.is_some()
            || self.txs_available > 0
            || self.changing_to.is_some()
            || self.settling();
        if work && self.deadline.is_none() {
            self.deadline = Some(self.now + self.timeout());
        }
    }

    /// Verifies and counts a message; `Err` means the sender misbehaved.
    fn on_message(
        &mut self,
        from: ValidatorId,
        msg: PbftMessage,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let height = match &msg {
            PbftMessage::PrePrepare { height, .. } => *height,
            PbftMessage::Prepare(v) | PbftMessage::Commit(v) => v.height,
            PbftMessage::ViewChange(vc) => vc.height,
            PbftMessage::BlockRequest { height, .. } => *height,
            PbftMessage::BlockReply(block) => block.header.height,
        };
        if height <= self.head_height {
            self.dropped += 1; // stale: already final here
            return Ok(());
        }
        if height > self.height() {
            // Behind: fetch final blocks from the sender, keep the message.
            out.push(Action::Sync {
                peer: from,
                height: height - 1,
            });
            if height <= self.height() + LOOKAHEAD {
                self.queue_future(from, height, msg);
            }
            return Ok(());
        }
        match msg {
            PbftMessage::PrePrepare {
                view,
                height,
                block,
                justification,
            } => self.on_pre_prepare(from, view, height, block, justification, out),
            PbftMessage::Prepare(vote) => self.on_vote(from, vote, Phase::Prepare, out),
            PbftMessage::Commit(vote) => self.on_vote(from, vote, Phase::Commit, out),
            PbftMessage::ViewChange(vc) => self.on_view_change(from, vc, out),
            PbftMessage::BlockRequest { digest, .. } => {
                self.on_block_request(from, digest, out);
                Ok(())
            }
            PbftMessage::BlockReply(block) => {
                self.on_block_reply(block, out);
                Ok(())
            }
        }
    }

    /// Keeps a message for a later height, within the sender's count and
    /// byte budgets (over them, the message is dropped).
    fn queue_future(&mut self, from: ValidatorId, height: u64, msg: PbftMessage) {
        let size = codec::encoded_len(&msg);
        let (count, bytes) = self
            .future
            .values()
            .flatten()
            .filter(|(s, _, _)| *s == from)
            .fold((0usize, 0usize), |(c, b), (_, _, n)| (c + 1, b + n));
        if count >= MAX_FUTURE_PER_SENDER || bytes + size > MAX_FUTURE_BYTES_PER_SENDER {
            self.dropped += 1;
            return;
        }
        self.future
            .entry(height)
            .or_default()
            .push((from, msg, size));
    }

    /// Bytes of future-height messages held from `from`.
    #[cfg(test)]
    pub(crate) fn future_bytes(&self, from: ValidatorId) -> usize {
        self.future
            .values()
            .flatten()
            .filter(|(s, _, _)| *s == from)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// Checks a view's justification once and enters the view.
    fn justify(
        &mut self,
        view: u64,
        justification: &[ViewChange],
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        if view == 0 || self.justified.contains_key(&view) {
            return Ok(());
        }
        let (height, prepared) = message::new_view_constraint(
            &self.cfg.network,
            &self.cfg.validators,
            self.quorum(),
            view,
            justification,
        )
        .map_err(|e| format!("new view {view}: {e}"))?;
        self.justified
            .insert(view, (height, prepared.map(|p| p.digest)));
        if view > self.view && view >= self.votes.asked {
            self.enter_view(view, justification.to_vec(), out);
        }
        Ok(())
    }

    /// Moves to `view`, justified by `justification`, which is persisted with
    /// the view.
    fn enter_view(&mut self, view: u64, justification: Vec<ViewChange>, out: &mut Vec<Action>) {
        out.push(Action::Persist(vec![
            (VIEW_KEY.to_vec(), Some(codec::encode(&view))),
            (
                JUSTIFICATION_KEY.to_vec(),
                Some(codec::encode(&justification)),
            ),
        ]));
        self.view = view;
        self.changing_to = None;
        self.announce = self.primary_of(view) == self.cfg.me;
        self.restarted = false;
        self.justification = justification;
        self.proposal = None;
        self.validated = None;
        self.building = false;
        self.deadline = None;
        self.next_block_at = self.now;
        self.view_change_count += 1;
        self.view_changes.retain(|v, _| *v > view);
        self.must_propose = None;
        self.fetching = None;
    }

    #[allow(clippy::too_many_arguments)]
    fn on_pre_prepare(
        &mut self,
        from: ValidatorId,
        view: u64,
        height: u64,
        block: Block,
        justification: Vec<ViewChange>,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        if from != self.primary_of(view) {
            return Err(format!(
                "pre-prepare for view {view} from non-primary {from}"
            ));
        }
        if view < self.view {
            return Ok(());
        }
        self.justify(view, &justification, out)?;
        if view != self.view {
            return Ok(()); // a view this validator already moved past
        }
        let hash = block.hash();
        // A block names the view it was proposed in (an earlier one when it
        // is re-proposed); validators that sync it move to that view.
        if block_view(&block.header.engine_data) > view {
            return Err(format!(
                "pre-prepare in view {view} of a block that names view {}",
                block_view(&block.header.engine_data)
            ));
        }
        if block.header.height != height || !self.parent_ok(&block.header) {
            return Err(format!(
                "pre-prepare of a block that is not a child of {}",
                self.head_hash
            ));
        }
        if let Some(first) = self.proposed.get(&view) {
            if *first != hash {
                // Two proposals for one height: the primary is faulty.
                self.start_view_change(view + 1, out);
                return Err(format!(
                    "primary {from} equivocated at height {height} in view {view}"
                ));
            }
            return Ok(()); // duplicate
        }
        if let Some(&(first_height, required)) = self.justified.get(&view) {
            if first_height == height && required.is_some_and(|r| r != hash) {
                self.start_view_change(view + 1, out);
                return Err(format!(
                    "primary {from} replaced the block prepared before view {view}"
                ));
            }
        }
        self.proposed.insert(view, hash);
        self.blocks.insert(hash, block.clone());
        if self.changing_to.is_some() {
            return Ok(());
        }
        // A validator that prepared another block at this height in an
        // earlier view votes for nothing else until a view change at this
        // height shows that block was not committed: a view justified at
        // an earlier height says nothing about this one (its primary may
        // not know what was prepared here since).
        let justified_here = self
            .justified
            .get(&view)
            .is_some_and(|&(first_height, _)| first_height == height);
        if !justified_here
            && self
                .votes
                .prepared
                .as_ref()
                .is_some_and(|p| p.view < view && p.digest != hash)
        {
            return Ok(());
        }
        // A validator that prepared another block in this view (before a
        // restart) does not vote again.
        if self
            .votes
            .prepared_vote
            .is_some_and(|(v, d)| v == view && d != hash)
        {
            return Ok(());
        }
        self.proposal = Some(block.clone());
        self.validated = None;
        self.arm_timer();
        if from == self.cfg.me {
            self.on_validated(hash, true, out);
        } else {
            out.push(Action::ValidateBlock { block });
        }
        Ok(())
    }

    fn on_validated(&mut self, hash: Hash, valid: bool, out: &mut Vec<Action>) {
        if self.proposal.as_ref().map(Block::hash) != Some(hash) || self.validated.is_some() {
            return;
        }
        self.validated = Some(valid);
        if !valid {
            self.start_view_change(self.view + 1, out);
            return;
        }
        if self.votes.prepared_vote != Some((self.view, hash)) {
            self.votes.prepared_vote = Some((self.view, hash));
            self.persist_votes(out);
        }
        let vote = Vote::sign(
            &self.cfg.network,
            &self.cfg.key,
            Phase::Prepare,
            self.view,
            self.height(),
            hash,
            self.cfg.me,
        );
        self.broadcast(out, PbftMessage::Prepare(vote.clone()));
        // Our own vote: the persisted vote state keeps it unique.
        let _ = self.count_vote(vote, out);
    }

    fn on_vote(
        &mut self,
        from: ValidatorId,
        vote: Vote,
        phase: Phase,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        if vote.voter != from || vote.phase != phase {
            return Err(format!("vote by {} relayed by {from}", vote.voter));
        }
        vote.verify(&self.cfg.network, &self.cfg.validators)
            .map_err(|e| e.to_string())?;
        // Votes of old views are stale; votes of views far ahead cannot
        // count yet and would let a faulty voter fill memory.
        if vote.view < self.view || vote.view > self.view + FUTURE_VIEWS {
            self.dropped += 1;
            return Ok(());
        }
        self.count_vote(vote, out)
    }

    /// Records a vote; acts when a quorum forms.
    fn count_vote(&mut self, vote: Vote, out: &mut Vec<Action>) -> Result<(), String> {
        let book = match vote.phase {
            Phase::Prepare => &mut self.prepares,
            Phase::Commit => &mut self.commits,
        };
        // One vote per voter, phase and view at this height.
        let conflicting = book.iter().any(|((v, d), votes)| {
            *v == vote.view && *d != vote.digest && votes.contains_key(&vote.voter)
        });
        if conflicting {
            return Err(format!(
                "validator {} voted for two blocks in view {}",
                vote.voter, vote.view
            ));
        }
        let key = (vote.view, vote.digest);
        let (view, digest, phase) = (vote.view, vote.digest, vote.phase);
        let entry = book.entry(key).or_default();
        if entry.contains_key(&vote.voter) {
            self.dropped += 1; // duplicate
            return Ok(());
        }
        entry.insert(vote.voter, vote);
        let count = entry.len();
        if count < self.quorum() || view != self.view {
            return Ok(());
        }
        match phase {
            Phase::Prepare => self.on_prepared(view, digest, out),
            Phase::Commit => self.on_committed_quorum(view, digest, out),
        }
        Ok(())
    }

    /// 2f+1 prepares for `digest`: keep the certificate and commit.
    fn on_prepared(&mut self, view: u64, digest: Hash, out: &mut Vec<Action>) {
        if self.validated != Some(true) || self.proposal.as_ref().map(Block::hash) != Some(digest) {
            return;
        }
        if self.votes.commit_vote.is_some_and(|(v, _)| v == view) {
            return;
        }
        let Some(block) = self.proposal.clone() else {
            return;
        };
        let prepares: Vec<Vote> = self
            .prepares
            .get(&(view, digest))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        self.votes.prepared = Some(Prepared {
            view,
            digest,
            prepares,
        });
        self.votes.prepared_block = Some(block);
        self.votes.commit_vote = Some((view, digest));
        self.persist_votes(out);
        let vote = Vote::sign(
            &self.cfg.network,
            &self.cfg.key,
            Phase::Commit,
            view,
            self.height(),
            digest,
            self.cfg.me,
        );
        self.broadcast(out, PbftMessage::Commit(vote.clone()));
        // Our own commit cannot conflict with itself.
        let _ = self.count_vote(vote, out);
    }

    /// 2f+1 commits for `digest`: the block is final.
    fn on_committed_quorum(&mut self, view: u64, digest: Hash, out: &mut Vec<Action>) {
        let Some(block) = self.blocks.get(&digest).cloned() else {
            // Final elsewhere; this validator missed the proposal.
            if let Some(peer) = self
                .commits
                .get(&(view, digest))
                .and_then(|m| m.keys().copied().find(|&v| v != self.cfg.me))
            {
                out.push(Action::Sync {
                    peer,
                    height: self.height(),
                });
            }
            return;
        };
        let commits: Vec<Vote> = self
            .commits
            .get(&(view, digest))
            .map(|m| m.values().take(self.quorum()).cloned().collect())
            .unwrap_or_default();
        let mut block = block;
        block.seal = Certificate { view, commits }.encode();
        out.push(Action::Commit {
            blocks: vec![block.clone()],
        });
        self.advance(block.header.height, digest, out);
    }

    /// The head moved to `height`/`hash`: start the next height.
    fn advance(&mut self, height: u64, hash: Hash, out: &mut Vec<Action>) {
        self.head_height = height;
        self.head_hash = hash;
        self.votes = VoteState {
            height: height + 1,
            ..VoteState::default()
        };
        self.persist_votes(out);
        self.proposal = None;
        self.validated = None;
        self.proposed.clear();
        self.prepares.clear();
        self.commits.clear();
        self.blocks.clear();
        self.view_changes.clear();
        self.changing_to = None;
        self.must_propose = None;
        self.fetching = None;
        self.served.clear();
        self.building = false;
        self.deadline = None;
        self.failed_views = 0;
        self.announce = false;
        self.restarted = false;
        self.txs_available = 0;
        self.next_block_at = self.now + self.cfg.block_interval_ms;
        self.arm_timer();
        // Replay what arrived early for this height.
        self.future.retain(|h, _| *h > height);
        if let Some(queued) = self.future.remove(&(height + 1)) {
            for (from, msg, _) in queued {
                if self.on_message(from, msg, out).is_err() {
                    self.rejected += 1;
                }
            }
        }
    }

    /// This validator's signed request for `view` at the current height.
    fn own_view_change(&self, view: u64) -> ViewChange {
        ViewChange::sign(
            &self.cfg.network,
            &self.cfg.key,
            view,
            self.height(),
            self.votes.prepared.clone(),
            self.cfg.me,
        )
    }

    fn start_view_change(&mut self, view: u64, out: &mut Vec<Action>) {
        if self.changing_to.is_some_and(|v| v >= view) || view <= self.view {
            return;
        }
        self.changing_to = Some(view);
        self.failed_views = self.failed_views.saturating_add(1);
        self.proposal = None;
        self.validated = None;
        self.building = false;
        self.deadline = Some(self.now + self.timeout());
        self.votes.asked = self.votes.asked.max(view);
        self.persist_votes(out);
        let vc = self.own_view_change(view);
        self.broadcast(out, PbftMessage::ViewChange(vc.clone()));
        self.record_view_change(vc, out);
    }

    /// Whether 2f+1 validators (this one included) asked for `view` or a
    /// later one.
    fn view_change_quorum(&self, view: u64) -> bool {
        let voters: BTreeSet<ValidatorId> = self
            .view_changes
            .range(view..)
            .flat_map(|(_, vcs)| vcs.keys().copied())
            .collect();
        voters.len() >= self.quorum()
    }

    fn on_view_change(
        &mut self,
        from: ValidatorId,
        vc: ViewChange,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        if vc.voter != from {
            return Err(format!("view change by {} relayed by {from}", vc.voter));
        }
        if vc.view <= self.view {
            return Ok(());
        }
        vc.verify(&self.cfg.network, &self.cfg.validators, self.quorum())
            .map_err(|e| e.to_string())?;
        self.record_view_change(vc, out);
        Ok(())
    }

    fn record_view_change(&mut self, vc: ViewChange, out: &mut Vec<Action>) {
        let view = vc.view;
        // One view change per validator, its latest: memory stays bounded
        // however many views a faulty validator asks for.
        let newer = self
            .view_changes
            .range(view..)
            .any(|(_, vcs)| vcs.contains_key(&vc.voter));
        if newer {
            return;
        }
        for vcs in self.view_changes.values_mut() {
            vcs.remove(&vc.voter);
        }
        self.view_changes.retain(|_, vcs| !vcs.is_empty());
        self.view_changes
            .entry(view)
            .or_default()
            .insert(vc.voter, vc);
        // f+1 validators want a view above ours: at least one is honest, so
        // join the lowest such view.
        let mut voters: BTreeSet<ValidatorId> = BTreeSet::new();
        let mut lowest = None;
        for (&v, vcs) in self.view_changes.range(self.view + 1..).rev() {
            voters.extend(vcs.keys());
            if voters.len() > self.f {
                lowest = Some(v);
                break;
            }
        }
        if let Some(v) = lowest {
            if self.changing_to.is_none_or(|c| c < v) {
                self.start_view_change(v, out);
            }
        }
        // The new primary with 2f+1 view changes starts the view.
        let Some(target) = self.changing_to else {
            return;
        };
        if self.primary_of(target) != self.cfg.me {
            return;
        }
        let Some(vcs) = self.view_changes.get(&target) else {
            return;
        };
        if vcs.len() < self.quorum() {
            return;
        }
        let justification: Vec<ViewChange> = vcs.values().take(self.quorum()).cloned().collect();
        let required = message::new_view_constraint(
            &self.cfg.network,
            &self.cfg.validators,
            self.quorum(),
            target,
            &justification,
        );
        let Ok((height, prepared)) = required else {
            return;
        };
        let required = prepared.map(|p| {
            let holders: Vec<ValidatorId> = p.prepares.iter().map(|v| v.voter).collect();
            (p.digest, holders)
        });
        self.justified
            .insert(target, (height, required.as_ref().map(|(d, _)| *d)));
        self.enter_view(target, justification, out);
        self.persist_votes(out);
        if let Some((digest, holders)) = required {
            self.require(digest, holders, out);
        }
        self.maybe_propose(out);
    }

    /// The primary must re-propose `digest` at this height: from what it
    /// holds, or asked of `holders` (those that prepared it), proposing
    /// nothing else meanwhile.
    fn require(&mut self, digest: Hash, holders: Vec<ValidatorId>, out: &mut Vec<Action>) {
        if let Some(block) = self.block_by_digest(&digest) {
            self.must_propose = Some(block);
            return;
        }
        for &v in holders.iter().filter(|&&v| v != self.cfg.me) {
            out.push(Action::Send {
                to: v,
                msg: ConsensusMessage::Pbft(PbftMessage::BlockRequest {
                    height: self.height(),
                    digest,
                }),
            });
        }
        self.fetching = Some((digest, holders));
    }

    /// A primary that restarted in its view picks up where it was: it
    /// re-proposes what it proposed before (or stays silent in this view if
    /// it no longer has that block: proposing another would equivocate),
    /// and otherwise honours the view's constraint.
    fn resume(&mut self, out: &mut Vec<Action>) {
        if let Some((view, digest)) = self.votes.prepared_vote {
            if view == self.view {
                match self.block_by_digest(&digest) {
                    Some(block) => self.must_propose = Some(block),
                    None => {
                        self.proposed.insert(view, digest);
                    }
                }
                return;
            }
        }
        let Some(&(height, Some(_))) = self.justified.get(&self.view) else {
            return;
        };
        if height != self.height() {
            return;
        }
        let required = message::new_view_constraint(
            &self.cfg.network,
            &self.cfg.validators,
            self.quorum(),
            self.view,
            &self.justification,
        );
        if let Ok((_, Some(p))) = required {
            let holders = p.prepares.iter().map(|v| v.voter).collect();
            let digest = p.digest;
            self.require(digest, holders, out);
        }
    }

    /// A block of this height seen in a pre-prepare, or the one this
    /// validator prepared.
    fn block_by_digest(&self, digest: &Hash) -> Option<Block> {
        self.blocks.get(digest).cloned().or_else(|| {
            self.votes
                .prepared_block
                .as_ref()
                .filter(|b| b.hash() == *digest)
                .cloned()
        })
    }

    /// Another validator asks for a block of this height: answered once per
    /// validator and block, if this validator has it.
    fn on_block_request(&mut self, from: ValidatorId, digest: Hash, out: &mut Vec<Action>) {
        if self.served.contains(&(from, digest)) {
            self.dropped += 1;
            return;
        }
        let Some(block) = self.block_by_digest(&digest) else {
            return;
        };
        self.served.insert((from, digest));
        out.push(Action::Send {
            to: from,
            msg: ConsensusMessage::Pbft(PbftMessage::BlockReply(block)),
        });
    }

    /// A block asked for: if it is the one this primary must re-propose,
    /// propose it.
    fn on_block_reply(&mut self, block: Block, out: &mut Vec<Action>) {
        let wanted = self.fetching.as_ref().map(|(d, _)| *d);
        if wanted != Some(block.hash()) {
            self.dropped += 1; // unasked for, or answered already
            return;
        }
        self.fetching = None;
        self.must_propose = Some(block);
        self.maybe_propose(out);
    }

    fn maybe_propose(&mut self, out: &mut Vec<Action>) {
        if self.restarted && self.is_primary() {
            self.restarted = false;
            self.resume(out);
        }
        if !self.is_primary()
            || self.building
            || self.fetching.is_some()
            || self.proposed.contains_key(&self.view)
        {
            return;
        }
        if let Some(block) = self.must_propose.take() {
            self.send_pre_prepare(block, out);
            return;
        }
        if !self.announce {
            if self.now < self.next_block_at && self.txs_available < self.cfg.full_block.max(1) {
                return;
            }
            if self.txs_available == 0 && !self.cfg.empty_blocks && !self.settling() {
                return;
            }
        }
        // The ready count stands until the next height: the driver reports
        // it again after each commit.
        self.building = true;
        out.push(Action::BuildBlock {
            parent: self.head_hash,
            height: self.height(),
            engine_data: view_data(self.view),
            uncommitted: Vec::new(),
        });
    }

    /// Whether `header` names the right parent: the head, or any block at
    /// the height before a first block that may name any.
    fn parent_ok(&self, header: &cairn_chain::Header) -> bool {
        header.parent == self.head_hash
            || (self.cfg.any_first_parent
                && header.height == self.cfg.first_height
                && header.height == self.height())
    }

    fn send_pre_prepare(&mut self, block: Block, out: &mut Vec<Action>) {
        self.announce = false;
        let msg = PbftMessage::PrePrepare {
            view: self.view,
            height: self.height(),
            block: block.clone(),
            justification: self.justification.clone(),
        };
        self.broadcast(out, msg);
        let me = self.cfg.me;
        let (view, height, justification) = (self.view, self.height(), self.justification.clone());
        if self
            .on_pre_prepare(me, view, height, block, justification, out)
            .is_err()
        {
            self.rejected += 1;
        }
    }

    fn on_block_built(&mut self, block: Block, out: &mut Vec<Action>) {
        if !self.building {
            return;
        }
        self.building = false;
        if !self.is_primary()
            || !self.parent_ok(&block.header)
            || block.header.height != self.height()
        {
            return;
        }
        self.send_pre_prepare(block, out);
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        if self.settling() {
            self.arm_timer();
        }
        if let Some(d) = self.deadline {
            if self.now >= d {
                self.deadline = None;
                if let Some(view) = self.changing_to.filter(|v| !self.view_change_quorum(*v)) {
                    // Too few validators want this view yet (the paper's
                    // rule: a replica moves on from view v+1 only once 2f+1
                    // asked for it). A validator that timed out alone —
                    // cut off, or the only one with work — would otherwise
                    // run views ahead of the others for as long as it was
                    // alone, and after the cut heals each would time out
                    // into the next view in step, never meeting. It asks
                    // again (its last message may have been lost) and
                    // waits; the others' timeouts or the f+1 rule bring
                    // them to it. The message is the same as before, so it
                    // goes to each validator directly: gossip drops a
                    // message it has seen.
                    let vc = self.own_view_change(view);
                    for to in
                        (0..self.cfg.validators.len() as ValidatorId).filter(|v| *v != self.cfg.me)
                    {
                        out.push(Action::Send {
                            to,
                            msg: ConsensusMessage::Pbft(PbftMessage::ViewChange(vc.clone())),
                        });
                    }
                    self.deadline = Some(self.now + self.timeout());
                    self.maybe_propose(out);
                    return;
                }
                let next = self.changing_to.unwrap_or(self.view) + 1;
                // The height may be final elsewhere without this validator
                // hearing of it: it learns so from messages of the next
                // height, which come only with more work. Each timeout asks
                // a validator it heard from at this height (so one that is
                // up, not the primary that may have failed), another each
                // time, for final blocks; nothing comes back if there are
                // none.
                let heard: BTreeSet<ValidatorId> = self
                    .prepares
                    .values()
                    .chain(self.commits.values())
                    .flat_map(|votes| votes.keys().copied())
                    .chain(
                        self.view_changes
                            .values()
                            .flat_map(|vcs| vcs.keys().copied()),
                    )
                    .filter(|&v| v != self.cfg.me)
                    .collect();
                if !heard.is_empty() {
                    let pick = (next % heard.len() as u64) as usize;
                    if let Some(&peer) = heard.iter().nth(pick) {
                        out.push(Action::Sync {
                            peer,
                            height: self.height(),
                        });
                    }
                }
                self.start_view_change(next, out);
            }
        }
        self.maybe_propose(out);
    }

    fn on_sync_committed(
        &mut self,
        height: u64,
        hash: Hash,
        engine_data: &[u8],
        out: &mut Vec<Action>,
    ) {
        if height <= self.head_height {
            return;
        }
        let view = block_view(engine_data);
        if view > self.view {
            self.view = view;
            self.changing_to = None;
            self.justification = Vec::new();
        }
        self.advance(height, hash, out);
    }

    fn next_deadline(&self) -> u64 {
        let mut at = self.deadline.unwrap_or(u64::MAX);
        if self.is_primary()
            && !self.building
            && !self.proposed.contains_key(&self.view)
            && self.next_block_at > self.now
        {
            at = at.min(self.next_block_at);
        }
        at
    }

    /// Checks that `block` is final: its seal is a valid commit certificate.
    pub fn verify_final_block(&self, block: &Block) -> Result<(), FinalityError> {
        verify_final_block(&self.cfg.network, &self.cfg.validators, block)
    }
}

/// Checks that `block`'s seal is a commit certificate for it by 2f+1 of
/// `validators` (n = 3f+1) on `network`: what every node, validator or
/// observer, requires of a block it did not see become final.
pub fn verify_final_block(
    network: &Hash,
    validators: &[PublicKey],
    block: &Block,
) -> Result<(), FinalityError> {
    let quorum = 2 * (validators.len().saturating_sub(1) / 3) + 1;
    let cert = Certificate::decode(&block.seal).map_err(|e| FinalityError::Seal(e.to_string()))?;
    cert.verify(network, validators, quorum, block)
        .map_err(|e| FinalityError::Certificate(e.to_string()))
}

impl ConsensusEngine for Pbft {
    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.now = self.now.max(now_ms);
        if !self.started {
            self.started = true;
            self.next_block_at = self.now + self.cfg.block_interval_ms;
        }
        match input {
            Input::Tick => self.on_tick(&mut out),
            Input::Message { from, msg } => {
                if from == self.cfg.me || from as usize >= self.n() {
                    return out;
                }
                let ConsensusMessage::Pbft(msg) = msg else {
                    self.rejected += 1;
                    return out;
                };
                if let Err(reason) = self.on_message(from, msg, &mut out) {
                    self.rejected += 1;
                    out.push(Action::Penalize { peer: from, reason });
                }
            }
            Input::TransactionsAvailable { count } => {
                self.txs_available = count;
                self.arm_timer();
                self.maybe_propose(&mut out);
            }
            Input::BlockBuilt { block } => self.on_block_built(block, &mut out),
            // Proof-of-work inputs.
            Input::Block { .. }
            | Input::BlockRejected { .. }
            | Input::Reverted { .. }
            | Input::Adopt { .. } => {}
            Input::BlockValidated { hash, valid } => self.on_validated(hash, valid, &mut out),
            Input::Committed {
                height,
                hash,
                engine_data,
            } => self.on_sync_committed(height, hash, &engine_data, &mut out),
        }
        let at_ms = self.next_deadline();
        if at_ms != u64::MAX && self.timer != Some(at_ms) {
            self.timer = Some(at_ms);
            out.push(Action::SetTimer { at_ms });
        }
        out
    }

    fn status(&self) -> EngineStatus {
        EngineStatus {
            engine: "pbft",
            role: if self.changing_to.is_some() {
                "view-change"
            } else if self.primary_of(self.view) == self.cfg.me {
                "primary"
            } else {
                "backup"
            },
            term: self.view,
            leader: Some(self.primary_of(self.view)),
            committed_height: self.head_height,
            uncommitted: u64::from(self.proposal.is_some()),
            view_changes: self.view_change_count,
            dropped_messages: self.dropped,
            rejected_messages: self.rejected,
            pow: None,
        }
    }

    fn verify_final(&self, block: &Block) -> Result<(), FinalityError> {
        self.verify_final_block(block)
    }
}

#[cfg(test)]
mod tests;
