//! Settling the end of a proof-of-work segment: the first block of the
//! final engine after it names a parent among the branches that may still
//! compete at the height before, and that names the branch every node
//! follows for good.
//!
//! The final engine at height H accepts a block on any parent at H−1
//! (`any_parent_at`). Before the driver validates such a proposal,
//! commits such a block, or builds on a log that holds one, the store's
//! head must be its parent. When it is not, the driver *settles*: it
//! fetches the branch that leads to the parent by locator (from the leader
//! first, then from every other peer in turn), checks it with a
//! proof-of-work engine started for the old segment (work, difficulty,
//! timestamps, execution — as if it had been gossiped), and moves the head
//! onto the parent with [`Input::Adopt`], whatever the work on either side.
//! Meanwhile the proposal's answer and the final blocks wait; they go
//! through once the parent is the head.

use cairn_chain::{Block, ChainStore, Hash};
use cairn_consensus::{Action, ConsensusEngine, Input};

use crate::{serve, Driver, DriverError, Peer};

/// What waits for the head to be a parent at the height before a
/// segment's first block.
#[derive(Debug)]
pub(crate) struct Settle<P> {
    /// The parent the head must become.
    pub parent: Hash,
    /// A proposal to validate once it is (answered with
    /// [`Input::BlockValidated`]).
    pub validate: Option<Block>,
    /// Final blocks to commit once it is, in order; `true` where the
    /// engine must hear of the commit (a synced block).
    pub commits: Vec<(Block, bool)>,
    /// Peers asked for the branch so far.
    pub asked: Vec<P>,
}

impl<S: ChainStore, P: Peer> Driver<S, P> {
    /// Whether `block` is the first of a segment after proof-of-work and
    /// names a parent other than the head.
    pub(crate) fn needs_settling(&self, block: &Block) -> Result<bool, DriverError> {
        Ok(self.open_parent == Some(block.header.height)
            && block.header.parent != self.store.head_hash()?)
    }

    /// Whether the head is still below the first block after
    /// proof-of-work (so a branch may still be adopted).
    pub(crate) fn needs_settling_now(&self) -> Result<bool, DriverError> {
        let Some(open) = self.open_parent else {
            return Ok(false);
        };
        Ok(self.store.head()?.height < open)
    }

    /// `Action::Commit` of `block`: held back (`None`) while final blocks
    /// wait for their parent, or if it is the first one and names a parent
    /// other than the head.
    pub(crate) fn hold_commit(
        &mut self,
        now_ms: u64,
        block: Block,
    ) -> Result<Option<Block>, DriverError> {
        let waiting = self.settle.as_ref().filter(|s| !s.commits.is_empty());
        let parent = match waiting.map(|s| s.parent) {
            Some(parent) => parent,
            None if self.needs_settling(&block)? => block.header.parent,
            None => return Ok(Some(block)),
        };
        self.settle_on(now_ms, parent, None)?
            .commits
            .push((block, false));
        Ok(None)
    }

    /// `Action::ValidateBlock` of a first block on a parent other than the
    /// head: answered once the head is its parent (`Some` of nothing now),
    /// or at once as invalid if final blocks already name another parent.
    pub(crate) fn hold_validation(
        &mut self,
        now_ms: u64,
        block: &Block,
    ) -> Result<Option<Vec<Input>>, DriverError> {
        if !self.needs_settling(block)? {
            return Ok(None);
        }
        let hash = block.hash();
        let fixed = self.settle.as_ref().filter(|s| !s.commits.is_empty());
        if fixed.is_some_and(|s| s.parent != block.header.parent) {
            tracing::warn!(%hash, "a proposal on another parent than the final block's");
            return Ok(Some(vec![Input::BlockValidated { hash, valid: false }]));
        }
        self.settle_on(now_ms, block.header.parent, None)?.validate = Some(block.clone());
        Ok(Some(Vec::new()))
    }

    /// After a commit: once a first final block is in (on whichever
    /// branch), no other branch is to be fetched or adopted.
    pub(crate) fn end_settling_if_final(&mut self) -> Result<(), DriverError> {
        if self.settle.is_some() && !self.needs_settling_now()? {
            self.settle = None;
        }
        Ok(())
    }

    /// On every tick: settling ends once a first final block is in, and
    /// a fetch that went unanswered is asked of the next peer.
    pub(crate) fn settle_tick(&mut self, now_ms: u64) -> Result<(), DriverError> {
        self.end_settling_if_final()?;
        if self.settle.is_some() && self.syncing.is_none() {
            self.settle_fetch(now_ms, None)?;
        }
        Ok(())
    }

    /// Waits for the head to be `parent`, fetching the branch to it.
    pub(crate) fn settle_on(
        &mut self,
        now_ms: u64,
        parent: Hash,
        from: Option<P>,
    ) -> Result<&mut Settle<P>, DriverError> {
        let fresh = match &self.settle {
            Some(s) => s.parent != parent,
            None => true,
        };
        if fresh {
            tracing::info!(%parent, "the first final block names another proof-of-work branch's block: fetching it");
            let old = self.settle.take();
            self.settle = Some(Settle {
                parent,
                validate: None,
                // Final blocks name the parent for good; a proposal for
                // another one is moot.
                commits: old.map(|s| s.commits).unwrap_or_default(),
                asked: Vec::new(),
            });
        }
        if self.syncing.is_none() {
            self.settle_fetch(now_ms, from)?;
        }
        self.settle.as_mut().ok_or(DriverError::Poisoned)
    }

    /// Asks `first` (else the leader's peer, else the next peer not yet
    /// asked) for the branch that leads to the parent.
    pub(crate) fn settle_fetch(
        &mut self,
        now_ms: u64,
        first: Option<P>,
    ) -> Result<(), DriverError> {
        let Some(settle) = &self.settle else {
            return Ok(());
        };
        let leader = self
            .status
            .as_ref()
            .and_then(|s| s.leader)
            .filter(|l| Some(*l) != self.cfg.me)
            .and_then(|l| self.validator_peers.get(l as usize).copied().flatten());
        let mut candidates = first
            .into_iter()
            .chain(leader)
            .chain(self.peers.iter().copied());
        let peer = match candidates.find(|p| !settle.asked.contains(p) && self.peers.contains(p)) {
            Some(p) => Some(p),
            // Everyone was asked: round again (a peer may have adopted
            // the parent since).
            None => self.peers.first().copied(),
        };
        let Some(peer) = peer else {
            return Ok(());
        };
        if let Some(s) = self.settle.as_mut() {
            if s.asked.len() >= self.peers.len() {
                s.asked.clear();
            }
            s.asked.push(peer);
        }
        let locator = serve::locator(&*self.store)?;
        self.fetch_after(now_ms, peer, locator);
        Ok(())
    }

    /// An answer while settling: its blocks below the segment go to a
    /// proof-of-work engine for the old segment, which adopts the parent
    /// if they lead to it.
    pub(crate) fn settle_blocks(
        &mut self,
        now_ms: u64,
        from: P,
        blocks: Vec<Block>,
    ) -> Result<(), DriverError> {
        self.syncing = None;
        let (Some(open), Some(parent)) = (self.open_parent, self.settle.as_ref().map(|s| s.parent))
        else {
            return Ok(());
        };
        if !self.needs_settling_now()? {
            // A first block became final on this node's own branch
            // meanwhile (a later view's proposal): the mined chain is
            // settled, and nothing may move it.
            self.settle = None;
            return Ok(());
        }
        let last = blocks.last().map(Block::hash);
        let full = blocks.len() as u64 >= u64::from(self.cfg.sync_batch);
        let mut pow = match self.segment_start.as_mut() {
            Some(start) => {
                start(open - 1)
                    .map_err(|reason| DriverError::Switch {
                        height: open - 1,
                        reason,
                    })?
                    .engine
            }
            None => None,
        };
        if let Some(engine) = pow.as_mut() {
            for block in blocks.into_iter().filter(|b| b.header.height < open) {
                self.remember_origin(block.hash(), from);
                self.feed_other(now_ms, engine, Input::Block { block })?;
            }
            self.feed_other(now_ms, engine, Input::Adopt { hash: parent })?;
        }
        if self.store.head_hash()? == parent {
            return self.settled(now_ms);
        }
        match (full, last) {
            // More of the branch follows.
            (true, Some(last)) => {
                let mut locator = vec![last];
                locator.extend(serve::locator(&*self.store)?);
                locator.truncate(self.cfg.max_locator);
                self.fetch_after(now_ms, from, locator);
            }
            // This peer's chain does not hold the parent: the next one.
            _ => self.settle_fetch(now_ms, None)?,
        }
        Ok(())
    }

    /// The head is the parent: what waited goes through.
    fn settled(&mut self, now_ms: u64) -> Result<(), DriverError> {
        let Some(settle) = self.settle.take() else {
            return Ok(());
        };
        tracing::info!(parent = %settle.parent, "the head is the parent the first final block names");
        if let Some(block) = settle.validate {
            let hash = block.hash();
            let valid = match self.validate(&block) {
                Ok(()) => true,
                Err(crate::blocks::BlockProblem::Driver(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!(height = block.header.height, %hash, "invalid proposal: {e}");
                    false
                }
            };
            self.feed(now_ms, Input::BlockValidated { hash, valid })?;
        }
        let synced = settle.commits.iter().any(|(_, tell)| *tell);
        for (block, tell) in settle.commits {
            let (height, hash, engine_data) = (
                block.header.height,
                block.hash(),
                block.header.engine_data.clone(),
            );
            self.commit_final(block)?;
            if tell {
                self.feed(
                    now_ms,
                    Input::Committed {
                        height,
                        hash,
                        engine_data,
                    },
                )?;
            }
        }
        let count = self.ready_count()?;
        self.feed(now_ms, Input::TransactionsAvailable { count })?;
        if synced {
            // Block sync stopped at the first of them: it goes on.
            self.sync_from_any(now_ms, None, None)?;
        }
        Ok(())
    }

    /// Feeds an engine that is not the driver's own (the proof-of-work
    /// engine that checks a branch): it may move the head and blame
    /// senders; what else it asks for is not carried out.
    fn feed_other(
        &mut self,
        now_ms: u64,
        engine: &mut Box<dyn ConsensusEngine>,
        input: Input,
    ) -> Result<(), DriverError> {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            for action in engine.handle(now_ms, input) {
                match action {
                    Action::SetHead { revert, apply } => {
                        queue.extend(self.set_head(revert, apply)?);
                    }
                    Action::RejectBlock { .. } => {
                        self.act(now_ms, action)?;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
