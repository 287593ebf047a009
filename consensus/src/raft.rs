//! Raft (Ongaro & Ousterhout, 2014) with blocks as log entries.
//!
//! Log index *i* is block height *i*; the genesis block is entry 0 of term 0.
//! A block's term is written in its header's engine data, so the final part
//! of the log is simply the store's canonical chain and the engine keeps only
//! the head of it (index, term, hash) plus the *tail*: blocks appended but not
//! yet committed, persisted under the engine's keys until they are.
//!
//! Followers far behind the leader's commit index do not get old entries by
//! AppendEntries: they are told to [`Action::Sync`] final blocks from the
//! leader (like a snapshot install), and AppendEntries resumes from there.
//!
//! Block production: the leader asks for a block while fewer than
//! `max_uncommitted` of its entries await commitment and either the block
//! interval has passed with transactions waiting, or a full block's worth is
//! waiting, or (if configured) the interval passed at all. A new leader whose
//! log has uncommitted entries from earlier terms proposes a block at once,
//! since Raft only commits an earlier term's entries through one of the
//! current term (the paper's Figure 8).
//!
//! Beyond the paper: a rejected AppendEntries carries the follower's
//! conflicting term so that the leader skips a whole term per round trip
//! (fast backtracking, as in etcd's raft); a leader that has not heard from
//! a majority for an election timeout steps down (check-quorum), so that a
//! cut-off leader stops claiming to lead; a node whose election timer fires
//! first asks for pre-votes (§9.6 of Ongaro's thesis) and only starts a
//! real election, raising its term, when a majority would vote for it — and
//! nodes that heard from a leader within the election timeout refuse, so a
//! node that was cut off cannot depose a working leader when it returns;
//! and election timers start at the first call, so that a restarted node
//! does not campaign at once.

use std::collections::{BTreeMap, BTreeSet};

use cairn_chain::{codec, Block, Hash};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Action, ConsensusEngine, ConsensusMessage, EngineStatus, Input, ValidatorId};

const HARD_STATE_KEY: &[u8] = b"raft/hard";
const LOG_PREFIX: &[u8] = b"raft/log/";
/// Most bytes of blocks in one AppendEntries (at least one block is sent).
const APPEND_BYTES_BUDGET: usize = 4 * 1024 * 1024;

/// Raft's settings (from genesis and the node's position in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// This node's validator index.
    pub me: ValidatorId,
    /// Number of validators.
    pub validators: u32,
    /// Election timeouts are drawn uniformly from `[min, 2·min)`.
    pub election_timeout_ms: u64,
    pub heartbeat_ms: u64,
    pub block_interval_ms: u64,
    /// Propose blocks even with no transactions waiting.
    pub empty_blocks: bool,
    /// Transactions that make a full block: propose without waiting.
    pub full_block: usize,
    /// Most appended-but-uncommitted blocks of the leader's own term
    /// (1: propose the next block when the last one is final).
    pub max_uncommitted: usize,
    /// Seeds the election-timeout randomness.
    pub seed: u64,
    /// The height whose block may name any parent: the first of a segment
    /// after proof-of-work, whose branches may still compete at the height
    /// before (the driver makes the one named the head).
    pub any_parent_at: Option<u64>,
}

/// Raft's messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftMessage {
    /// A vote request; with `pre`, a pre-vote for `term` that changes no
    /// one's term or vote.
    RequestVote {
        term: u64,
        last_index: u64,
        last_term: u64,
        pre: bool,
    },
    VoteResponse {
        term: u64,
        granted: bool,
        pre: bool,
    },
    AppendEntries {
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Block>,
        leader_commit: u64,
    },
    AppendResponse {
        term: u64,
        success: bool,
        /// On success the follower's last matching index. On failure the
        /// highest index that may match: the follower's entry there has
        /// term `hint_term`, so the leader can skip every entry of a later
        /// term.
        index: u64,
        hint_term: u64,
    },
}

/// Highest term and log index a message may carry. No honest node gets
/// near (a term or a block every millisecond for 140 million years), and
/// the arithmetic on them (`term + 1`, `index + 1`) stays far from
/// overflowing.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

impl RaftMessage {
    /// Refuses terms and indexes no honest node sends.
    pub fn check(&self) -> Result<(), String> {
        let numbers: &[u64] = match self {
            RaftMessage::RequestVote {
                term,
                last_index,
                last_term,
                ..
            } => &[*term, *last_index, *last_term],
            RaftMessage::VoteResponse { term, .. } => &[*term],
            RaftMessage::AppendEntries {
                term,
                prev_index,
                prev_term,
                entries,
                leader_commit,
            } => {
                if entries.len() as u64 > MAX_TERM_OR_INDEX.saturating_sub(*prev_index) {
                    return Err("append beyond the highest index".into());
                }
                &[*term, *prev_index, *prev_term, *leader_commit]
            }
            RaftMessage::AppendResponse {
                term,
                index,
                hint_term,
                ..
            } => &[*term, *index, *hint_term],
        };
        if numbers.iter().any(|&n| n > MAX_TERM_OR_INDEX) {
            return Err(format!(
                "a term or index above {MAX_TERM_OR_INDEX} in {}",
                self.kind()
            ));
        }
        Ok(())
    }

    fn kind(&self) -> &'static str {
        match self {
            RaftMessage::RequestVote { .. } => "a vote request",
            RaftMessage::VoteResponse { .. } => "a vote response",
            RaftMessage::AppendEntries { .. } => "an append",
            RaftMessage::AppendResponse { .. } => "an append response",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// The last final block: the prefix of the log that lives in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedHead {
    pub index: u64,
    pub term: u64,
    pub hash: Hash,
}

/// The Raft engine. See the module docs.
#[derive(Debug)]
pub struct Raft {
    cfg: RaftConfig,
    rng: ChaCha8Rng,
    term: u64,
    voted_for: Option<ValidatorId>,
    committed: CommittedHead,
    /// Entries `committed.index + 1 ..`, each a child of the one before.
    tail: Vec<Block>,
    role: Role,
    leader: Option<ValidatorId>,
    now: u64,
    election_deadline: u64,
    votes: BTreeSet<ValidatorId>,
    next_index: Vec<u64>,
    match_index: Vec<u64>,
    /// Per follower: the last entry sent and not yet acknowledged (0: none)
    /// and when it was sent. Entries in flight are not sent again before
    /// [`Raft::resend_after`] (heartbeats and commit notices carry none);
    /// a rejection or the timeout sends them again.
    sent: Vec<u64>,
    sent_at: Vec<u64>,
    heartbeat_due: u64,
    /// The leader asked for a block and waits for it.
    building: bool,
    /// When the pending build was asked for, and how many transactions were
    /// offered then: a driver that cannot build answers nothing, and after
    /// an election timeout the leader asks again.
    build_asked: Option<(u64, usize)>,
    next_block_at: u64,
    txs_available: usize,
    /// The first tick has set the clock (timers start from it).
    started: bool,
    /// Messages refused as invalid since start.
    rejected: u64,
    /// The last deadline returned with [`Action::SetTimer`].
    timer: Option<u64>,
    /// Peers heard from since the last quorum check (leader).
    heard: BTreeSet<ValidatorId>,
    quorum_check_at: u64,
    /// When the current leader was last heard from.
    leader_seen_at: u64,
    /// Test-only fault injection: commit entries of earlier terms by
    /// counting replicas (the bug of the paper's Figure 8), so that tests
    /// can show the simulator catches it.
    #[cfg(feature = "fault-injection")]
    pub figure8_bug: bool,
}

/// The term written in a block's engine data (0 for genesis or garbage).
pub fn block_term(engine_data: &[u8]) -> u64 {
    codec::decode::<u64>(engine_data, 8).unwrap_or(0)
}

/// The engine data of a block proposed in `term`.
pub fn term_data(term: u64) -> Vec<u8> {
    codec::encode(&term)
}

fn log_key(index: u64) -> Vec<u8> {
    let mut k = LOG_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

impl Raft {
    /// Restores the engine from the store's head and the engine's persisted
    /// state (every key the engine ever wrote that is still there).
    pub fn new(
        cfg: RaftConfig,
        committed: CommittedHead,
        persisted: &BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> Self {
        let (term, voted_for) = persisted
            .get(HARD_STATE_KEY)
            .and_then(|v| codec::decode::<(u64, Option<ValidatorId>)>(v, 64).ok())
            .unwrap_or((0, None));
        let mut tail: Vec<Block> = Vec::new();
        let mut prev_hash = committed.hash;
        for (k, v) in persisted.range(log_key(committed.index + 1)..) {
            if !k.starts_with(LOG_PREFIX) {
                break;
            }
            let Ok(block) = Block::decode(v) else { break };
            let expected = committed.index + 1 + tail.len() as u64;
            if block.header.height != expected
                || (block.header.parent != prev_hash && cfg.any_parent_at != Some(expected))
            {
                break;
            }
            prev_hash = block.hash();
            tail.push(block);
        }
        let n = cfg.validators as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ u64::from(cfg.me).wrapping_mul(0x9e37));
        let first_timeout =
            cfg.election_timeout_ms + rng.gen_range(0..cfg.election_timeout_ms.max(1));
        Self {
            rng,
            term: term.max(committed.term),
            voted_for,
            committed,
            tail,
            role: Role::Follower,
            leader: None,
            now: 0,
            election_deadline: first_timeout,
            votes: BTreeSet::new(),
            next_index: vec![0; n],
            match_index: vec![0; n],
            sent: vec![0; n],
            sent_at: vec![0; n],
            heartbeat_due: 0,
            building: false,
            build_asked: None,
            next_block_at: 0,
            txs_available: 0,
            started: false,
            rejected: 0,
            timer: None,
            heard: BTreeSet::new(),
            quorum_check_at: 0,
            leader_seen_at: 0,
            #[cfg(feature = "fault-injection")]
            figure8_bug: false,
            cfg,
        }
    }

    fn last_index(&self) -> u64 {
        self.committed.index + self.tail.len() as u64
    }

    fn last_term(&self) -> u64 {
        self.tail
            .last()
            .map(|b| block_term(&b.header.engine_data))
            .unwrap_or(self.committed.term)
    }

    fn last_hash(&self) -> Hash {
        self.tail
            .last()
            .map(Block::hash)
            .unwrap_or(self.committed.hash)
    }

    /// The term of entry `index`, if the engine knows it.
    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.committed.index {
            return Some(self.committed.term);
        }
        if index < self.committed.index {
            return None;
        }
        self.tail
            .get((index - self.committed.index - 1) as usize)
            .map(|b| block_term(&b.header.engine_data))
    }

    /// The highest index at or below `index` whose entry's term is at most
    /// `term`, and that entry's term (the commit index if none above it).
    fn find_conflict(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        while i > self.committed.index {
            match self.term_at(i) {
                Some(t) if t <= term => return (i, t),
                _ => i -= 1,
            }
        }
        (self.committed.index, self.committed.term)
    }

    fn majority(&self) -> usize {
        self.cfg.validators as usize / 2 + 1
    }

    fn peers(&self) -> impl Iterator<Item = ValidatorId> + '_ {
        (0..self.cfg.validators).filter(move |&v| v != self.cfg.me)
    }

    fn reset_election_timer(&mut self) {
        let min = self.cfg.election_timeout_ms.max(1);
        self.election_deadline = self.now + min + self.rng.gen_range(0..min);
    }

    fn persist_hard_state(&self, out: &mut Vec<Action>) {
        out.push(Action::Persist(vec![(
            HARD_STATE_KEY.to_vec(),
            Some(codec::encode(&(self.term, self.voted_for))),
        )]));
    }

    fn send(&self, out: &mut Vec<Action>, to: ValidatorId, msg: RaftMessage) {
        out.push(Action::Send {
            to,
            msg: ConsensusMessage::Raft(msg),
        });
    }

    /// Moves to a newer term as a follower.
    fn observe_term(&mut self, term: u64, out: &mut Vec<Action>) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.become_follower(None);
            self.persist_hard_state(out);
        }
    }

    fn become_follower(&mut self, leader: Option<ValidatorId>) {
        self.role = Role::Follower;
        self.leader = leader;
        self.building = false;
        self.votes.clear();
    }

    /// Whether a leader is known to be alive: this node leads, or heard
    /// from the leader within the (minimum) election timeout.
    fn in_lease(&self) -> bool {
        self.role == Role::Leader
            || (self.leader.is_some()
                && self.now < self.leader_seen_at + self.cfg.election_timeout_ms)
    }

    /// Asks for pre-votes: would a majority vote for this node in the
    /// next term? Nothing changes on any node until they would.
    fn start_pre_vote(&mut self, out: &mut Vec<Action>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes = BTreeSet::from([self.cfg.me]);
        self.reset_election_timer();
        let msg = RaftMessage::RequestVote {
            term: self.term + 1,
            last_index: self.last_index(),
            last_term: self.last_term(),
            pre: true,
        };
        for p in self.peers().collect::<Vec<_>>() {
            self.send(out, p, msg.clone());
        }
        if self.votes.len() >= self.majority() {
            self.start_election(out);
        }
    }

    fn start_election(&mut self, out: &mut Vec<Action>) {
        self.term += 1;
        self.role = Role::Candidate;
        self.leader = None;
        self.voted_for = Some(self.cfg.me);
        self.votes = BTreeSet::from([self.cfg.me]);
        self.reset_election_timer();
        self.persist_hard_state(out);
        let msg = RaftMessage::RequestVote {
            term: self.term,
            last_index: self.last_index(),
            last_term: self.last_term(),
            pre: false,
        };
        for p in self.peers().collect::<Vec<_>>() {
            self.send(out, p, msg.clone());
        }
        self.maybe_win(out);
    }

    fn maybe_win(&mut self, out: &mut Vec<Action>) {
        if self.role != Role::Candidate || self.votes.len() < self.majority() {
            return;
        }
        self.role = Role::Leader;
        self.leader = Some(self.cfg.me);
        let next = self.last_index() + 1;
        self.next_index.iter_mut().for_each(|n| *n = next);
        self.match_index.iter_mut().for_each(|m| *m = 0);
        self.sent.iter_mut().for_each(|s| *s = 0);
        self.match_index[self.cfg.me as usize] = self.last_index();
        self.building = false;
        self.heard.clear();
        self.quorum_check_at = self.now + self.cfg.election_timeout_ms;
        // Entries of earlier terms commit only through one of this term.
        self.next_block_at = if self.tail.is_empty() {
            self.now + self.cfg.block_interval_ms
        } else {
            self.now
        };
        self.broadcast_append(out);
        self.maybe_build(out);
    }

    /// How long entries sent to a follower may go unacknowledged before
    /// they are sent again (a lost message, a reconnected peer).
    fn resend_after(&self) -> u64 {
        self.cfg.election_timeout_ms.max(2 * self.cfg.heartbeat_ms)
    }

    /// Whether entries sent to `p` are still awaiting its answer.
    fn in_flight(&self, p: usize) -> bool {
        let next = self.next_index[p].max(self.committed.index + 1);
        self.sent[p] >= next && self.now < self.sent_at[p].saturating_add(self.resend_after())
    }

    /// Whether `peer` lacks entries it has not been sent.
    fn has_unsent(&self, peer: ValidatorId) -> bool {
        let p = peer as usize;
        let sent_up_to = if self.in_flight(p) {
            self.sent[p]
        } else {
            self.next_index[p].max(self.committed.index + 1) - 1
        };
        self.last_index() > sent_up_to
    }

    /// The AppendEntries for `peer`: the entries from its next index, or —
    /// while entries are in flight to it — only those after them (sent
    /// optimistically), or an empty heartbeat at the last index it is known
    /// to hold.
    fn append_to(&mut self, peer: ValidatorId) -> RaftMessage {
        let p = peer as usize;
        let next = self.next_index[p].max(self.committed.index + 1);
        let (prev_index, first) = if !self.in_flight(p) {
            (next - 1, next)
        } else if self.sent[p] < self.last_index() {
            (self.sent[p], self.sent[p] + 1)
        } else {
            (next - 1, self.last_index() + 1)
        };
        let prev_term = self.term_at(prev_index).unwrap_or(0);
        let mut entries = Vec::new();
        let mut bytes = 0;
        let start = (first - self.committed.index - 1) as usize;
        for b in self.tail.iter().skip(start) {
            let size = b.encoded_len();
            if !entries.is_empty() && bytes + size > APPEND_BYTES_BUDGET {
                break;
            }
            bytes += size;
            entries.push(b.clone());
        }
        if let Some(last) = entries.last() {
            self.sent[p] = last.header.height;
            self.sent_at[p] = self.now;
        }
        RaftMessage::AppendEntries {
            term: self.term,
            prev_index,
            prev_term,
            entries,
            leader_commit: self.committed.index,
        }
    }

    fn broadcast_append(&mut self, out: &mut Vec<Action>) {
        for p in self.peers().collect::<Vec<_>>() {
            let m = self.append_to(p);
            self.send(out, p, m);
        }
        self.heartbeat_due = self.now + self.cfg.heartbeat_ms;
    }

    /// Makes tail entries up to `index` final.
    fn commit_to(&mut self, index: u64, out: &mut Vec<Action>) {
        if index <= self.committed.index {
            return;
        }
        let count = ((index - self.committed.index) as usize).min(self.tail.len());
        let blocks: Vec<Block> = self.tail.drain(..count).collect();
        let Some(last) = blocks.last() else { return };
        self.committed = CommittedHead {
            index: last.header.height,
            term: block_term(&last.header.engine_data),
            hash: last.hash(),
        };
        let deletes = blocks
            .iter()
            .map(|b| (log_key(b.header.height), None))
            .collect();
        out.push(Action::Commit { blocks });
        out.push(Action::Persist(deletes));
    }

    fn leader_advance_commit(&mut self, out: &mut Vec<Action>) {
        let mut n = self.last_index();
        #[cfg(feature = "fault-injection")]
        let any_term = self.figure8_bug;
        #[cfg(not(feature = "fault-injection"))]
        let any_term = false;
        while n > self.committed.index {
            if any_term || self.term_at(n) == Some(self.term) {
                let acks = self.match_index.iter().filter(|&&m| m >= n).count();
                if acks >= self.majority() {
                    self.commit_to(n, out);
                    // Tell followers promptly so they commit too.
                    self.broadcast_append(out);
                    break;
                }
            } else {
                break;
            }
            n -= 1;
        }
    }

    fn maybe_build(&mut self, out: &mut Vec<Action>) {
        if self.role != Role::Leader || self.building || self.now < self.next_block_at {
            return;
        }
        let earlier_terms_pending = self
            .tail
            .last()
            .is_some_and(|b| block_term(&b.header.engine_data) < self.term);
        let room = self.tail.len() < self.cfg.max_uncommitted.max(1);
        // The first block after proof-of-work settles which branch the
        // chain keeps: it is made even without transactions.
        let settling = self.cfg.any_parent_at == Some(self.last_index() + 1);
        let wanted = earlier_terms_pending
            || (room && (self.txs_available > 0 || self.cfg.empty_blocks || settling));
        if !wanted {
            return;
        }
        self.building = true;
        self.build_asked = Some((self.now, self.txs_available));
        // The block takes what is ready; the driver reports what remains
        // (Input::TransactionsAvailable) after the next commit.
        self.txs_available = 0;
        out.push(Action::BuildBlock {
            parent: self.last_hash(),
            height: self.last_index() + 1,
            engine_data: term_data(self.term),
            uncommitted: self.tail.clone(),
        });
    }

    /// Whether `header` names the last entry as its parent (any block at
    /// the height before, for the block at [`RaftConfig::any_parent_at`]).
    fn parent_ok(&self, header: &cairn_chain::Header) -> bool {
        header.parent == self.last_hash()
            || (self.cfg.any_parent_at == Some(header.height)
                && header.height == self.last_index() + 1)
    }

    fn on_block_built(&mut self, block: Block, out: &mut Vec<Action>) {
        if self.role != Role::Leader || !self.building {
            return;
        }
        self.building = false;
        self.build_asked = None;
        if !self.parent_ok(&block.header)
            || block.header.height != self.last_index() + 1
            || block_term(&block.header.engine_data) != self.term
        {
            return;
        }
        out.push(Action::Persist(vec![(
            log_key(block.header.height),
            Some(block.encode()),
        )]));
        self.tail.push(block);
        self.match_index[self.cfg.me as usize] = self.last_index();
        self.next_block_at = self.now + self.cfg.block_interval_ms;
        self.broadcast_append(out);
        self.leader_advance_commit(out);
    }

    fn on_request_vote(
        &mut self,
        from: ValidatorId,
        term: u64,
        last_index: u64,
        last_term: u64,
        pre: bool,
        out: &mut Vec<Action>,
    ) {
        let up_to_date = (last_term, last_index) >= (self.last_term(), self.last_index());
        if pre {
            let granted = term > self.term && up_to_date && !self.in_lease();
            let reply = RaftMessage::VoteResponse {
                term: if granted { term } else { self.term },
                granted,
                pre: true,
            };
            self.send(out, from, reply);
            return;
        }
        if term > self.term && self.in_lease() {
            // A live leader: a node that missed it must not depose it.
            return;
        }
        self.observe_term(term, out);
        let granted = term == self.term && self.voted_for.is_none_or(|v| v == from) && up_to_date;
        if granted {
            if self.voted_for != Some(from) {
                self.voted_for = Some(from);
                self.persist_hard_state(out);
            }
            self.reset_election_timer();
        }
        self.send(
            out,
            from,
            RaftMessage::VoteResponse {
                term: self.term,
                granted,
                pre: false,
            },
        );
    }

    fn on_vote_response(
        &mut self,
        from: ValidatorId,
        term: u64,
        granted: bool,
        pre: bool,
        out: &mut Vec<Action>,
    ) {
        if pre {
            if granted && self.role == Role::PreCandidate && term == self.term + 1 {
                self.votes.insert(from);
                if self.votes.len() >= self.majority() {
                    self.start_election(out);
                }
            } else if !granted {
                self.observe_term(term, out);
            }
            return;
        }
        self.observe_term(term, out);
        if self.role == Role::Candidate && term == self.term && granted {
            self.votes.insert(from);
            self.maybe_win(out);
        }
    }

    #[allow(clippy::too_many_arguments)] // the AppendEntries fields, unpacked
    fn on_append_entries(
        &mut self,
        from: ValidatorId,
        term: u64,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Block>,
        leader_commit: u64,
        out: &mut Vec<Action>,
    ) {
        self.observe_term(term, out);
        if term < self.term {
            let reply = RaftMessage::AppendResponse {
                term: self.term,
                success: false,
                index: self.last_index(),
                hint_term: self.last_term(),
            };
            self.send(out, from, reply);
            return;
        }
        // A current-term leader exists: it is `from`.
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(Some(from));
        }
        self.leader_seen_at = self.now;
        self.reset_election_timer();

        // Entries at or below our commit index are final and so equal to the
        // leader's (Leader Completeness): skip them.
        let mut prev_index = prev_index;
        let mut prev_term = prev_term;
        let mut entries = entries;
        if prev_index < self.committed.index {
            let skip = (self.committed.index - prev_index) as usize;
            if skip > entries.len() {
                entries.clear();
            } else {
                entries.drain(..skip);
            }
            prev_index = self.committed.index;
            prev_term = self.committed.term;
        }
        if prev_index > self.last_index() && leader_commit > self.committed.index {
            out.push(Action::Sync {
                peer: from,
                height: leader_commit,
            });
        }
        if self.term_at(prev_index) != Some(prev_term) {
            // Missing or conflicting: point the leader at the last entry
            // that can match, skipping every entry of a term above its.
            let (index, hint_term) = self.find_conflict(prev_index, prev_term);
            let reply = RaftMessage::AppendResponse {
                term: self.term,
                success: false,
                index,
                hint_term,
            };
            self.send(out, from, reply);
            return;
        }
        // Append, truncating the first conflict and everything after it.
        // `matched` is the last index known to equal the leader's log: the
        // last entry of this message, never our own entries beyond it
        // (they may be from another leader and conflict further on).
        let mut matched = prev_index;
        let mut writes = Vec::new();
        for (i, block) in entries.into_iter().enumerate() {
            let index = prev_index + 1 + i as u64;
            let t = block_term(&block.header.engine_data);
            match self.term_at(index) {
                Some(existing) if existing == t => {
                    matched = index;
                    continue;
                }
                Some(_) => {
                    let keep = (index - self.committed.index - 1) as usize;
                    for dropped in self.tail.drain(keep..) {
                        writes.push((log_key(dropped.header.height), None));
                    }
                }
                None => {}
            }
            if block.header.height != index || !self.parent_ok(&block.header) {
                // A leader never sends this; refuse rather than store it.
                break;
            }
            writes.push((log_key(index), Some(block.encode())));
            self.tail.push(block);
            matched = index;
        }
        if !writes.is_empty() {
            out.push(Action::Persist(writes));
        }
        let commit = leader_commit.min(matched);
        self.commit_to(commit, out);
        self.send(
            out,
            from,
            RaftMessage::AppendResponse {
                term: self.term,
                success: true,
                index: matched,
                hint_term: 0,
            },
        );
    }

    fn on_append_response(
        &mut self,
        from: ValidatorId,
        term: u64,
        success: bool,
        index: u64,
        hint_term: u64,
        out: &mut Vec<Action>,
    ) {
        self.observe_term(term, out);
        if self.role != Role::Leader || term != self.term {
            return;
        }
        self.heard.insert(from);
        let p = from as usize;
        if success {
            let index = index.min(self.last_index());
            if index > self.match_index[p] {
                self.match_index[p] = index;
            }
            self.next_index[p] = self.match_index[p] + 1;
            if self.sent[p] <= self.match_index[p] {
                self.sent[p] = 0;
            }
            self.leader_advance_commit(out);
            if self.has_unsent(from) {
                let m = self.append_to(from);
                self.send(out, from, m);
            }
        } else {
            // What was in flight will not be appended after this: send it
            // again (at once below if we move back, else with the next
            // heartbeat).
            self.sent[p] = 0;
            // The follower's entry at `index` has `hint_term`: the last
            // entry of ours that can match is the last one at or below it
            // with a term no later than that.
            let (probe, _) = self.find_conflict(index, hint_term);
            let next = (probe + 1)
                .min(self.next_index[p].saturating_sub(1))
                .max(self.committed.index + 1);
            // Probe again at once only when we moved back; a follower behind
            // our commit index must sync final blocks first, and hears from
            // us again on the next heartbeat (no message storm meanwhile).
            if next < self.next_index[p] {
                self.next_index[p] = next;
                let m = self.append_to(from);
                self.send(out, from, m);
            }
        }
    }

    fn on_committed(&mut self, height: u64, hash: Hash, engine_data: &[u8], out: &mut Vec<Action>) {
        if height <= self.committed.index {
            return;
        }
        let in_tail = self
            .tail
            .get((height - self.committed.index - 1) as usize)
            .map(Block::hash);
        let drop = if in_tail == Some(hash) {
            (height - self.committed.index) as usize
        } else {
            self.tail.len()
        };
        let deletes: Vec<_> = self
            .tail
            .drain(..drop)
            .map(|b| (log_key(b.header.height), None))
            .collect();
        if !deletes.is_empty() {
            out.push(Action::Persist(deletes));
        }
        self.committed = CommittedHead {
            index: height,
            term: block_term(engine_data),
            hash,
        };
        if self.term < self.committed.term {
            self.observe_term(self.committed.term, out);
        }
    }

    fn on_tick(&mut self, out: &mut Vec<Action>) {
        match self.role {
            Role::Leader => {
                // A build the driver could not answer: ask again.
                if let Some((at, offered)) = self.build_asked {
                    if self.building && self.now >= at + self.cfg.election_timeout_ms {
                        self.building = false;
                        self.build_asked = None;
                        self.txs_available = self.txs_available.max(offered);
                    }
                }
                if self.now >= self.quorum_check_at {
                    if self.heard.len() + 1 < self.majority() {
                        // Cut off from a majority: stop claiming to lead.
                        self.become_follower(None);
                        self.reset_election_timer();
                        return;
                    }
                    self.heard.clear();
                    self.quorum_check_at = self.now + self.cfg.election_timeout_ms;
                }
                if self.now >= self.heartbeat_due {
                    self.broadcast_append(out);
                }
                self.maybe_build(out);
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                if self.now >= self.election_deadline {
                    self.start_pre_vote(out);
                }
            }
        }
    }

    /// When the engine next needs a tick.
    fn next_deadline(&self) -> u64 {
        match self.role {
            Role::Leader => {
                let build = if self.next_block_at > self.now {
                    self.next_block_at
                } else {
                    u64::MAX
                };
                self.heartbeat_due.min(self.quorum_check_at).min(build)
            }
            _ => self.election_deadline,
        }
    }
}

impl ConsensusEngine for Raft {
    fn max_in_flight(&self) -> usize {
        self.cfg.max_uncommitted.max(1)
    }

    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.now = self.now.max(now_ms);
        if !self.started {
            // The clock's origin is the driver's: time out from the first
            // call, not from zero (a restarted node must not campaign at
            // once).
            self.started = true;
            self.reset_election_timer();
        }
        match input {
            Input::Tick => self.on_tick(&mut out),
            Input::Message { from, msg } => {
                if from == self.cfg.me || from >= self.cfg.validators {
                    return out;
                }
                let ConsensusMessage::Raft(msg) = msg else {
                    return out;
                };
                if let Err(reason) = msg.check() {
                    self.rejected += 1;
                    out.push(Action::Penalize { peer: from, reason });
                    return out;
                }
                match msg {
                    RaftMessage::RequestVote {
                        term,
                        last_index,
                        last_term,
                        pre,
                    } => self.on_request_vote(from, term, last_index, last_term, pre, &mut out),
                    RaftMessage::VoteResponse { term, granted, pre } => {
                        self.on_vote_response(from, term, granted, pre, &mut out)
                    }
                    RaftMessage::AppendEntries {
                        term,
                        prev_index,
                        prev_term,
                        entries,
                        leader_commit,
                    } => self.on_append_entries(
                        from,
                        term,
                        prev_index,
                        prev_term,
                        entries,
                        leader_commit,
                        &mut out,
                    ),
                    RaftMessage::AppendResponse {
                        term,
                        success,
                        index,
                        hint_term,
                    } => self.on_append_response(from, term, success, index, hint_term, &mut out),
                }
            }
            Input::TransactionsAvailable { count } => {
                self.txs_available = count;
                if count >= self.cfg.full_block.max(1) && self.role == Role::Leader {
                    self.next_block_at = self.next_block_at.min(self.now);
                }
                self.maybe_build(&mut out);
            }
            Input::BlockBuilt { block } => self.on_block_built(block, &mut out),
            // Proof-of-work inputs.
            Input::Block { .. }
            | Input::BlockRejected { .. }
            | Input::Reverted { .. }
            | Input::Adopt { .. } => {}
            // Under Raft's crash-fault model followers accept the leader's
            // blocks; they are executed and checked when committed.
            Input::BlockValidated { .. } => {}
            Input::Committed {
                height,
                hash,
                engine_data,
            } => self.on_committed(height, hash, &engine_data, &mut out),
        }
        let at_ms = self.next_deadline();
        if self.timer != Some(at_ms) {
            self.timer = Some(at_ms);
            out.push(Action::SetTimer { at_ms });
        }
        out
    }

    fn status(&self) -> EngineStatus {
        EngineStatus {
            engine: "raft",
            role: match self.role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre-candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            },
            term: self.term,
            leader: self.leader,
            committed_height: self.committed.index,
            uncommitted: self.tail.len() as u64,
            view_changes: 0,
            dropped_messages: 0,
            rejected_messages: self.rejected,
            pow: None,
        }
    }
}

#[cfg(test)]
mod tests;
