//! Block sync of final blocks (Raft, PBFT and their observers): asking a
//! peer for the blocks after the head, and importing its answer — each
//! block must prove its finality, extend the head and execute.

use cairn_chain::{Block, ChainStore};
use cairn_consensus::Input;

use crate::blocks::BlockProblem;
use crate::{Driver, DriverError, Effect, Peer};

impl<S: ChainStore, P: Peer> Driver<S, P> {
    /// Asks `peer` for the final blocks after the head, unless a request
    /// is in flight. Raft tolerates crashes, not lies: blocks come from
    /// validator peers only.
    pub(crate) fn start_sync(&mut self, now_ms: u64, peer: P) -> Result<(), DriverError> {
        if self.syncing.is_some()
            || self.diverged.is_some()
            || !self.validator_peers.contains(&Some(peer))
            || !self.may_sync_from(now_ms, peer)
        {
            return Ok(());
        }
        let from = self.store.head()?.height + 1;
        tracing::info!(%peer, from, "syncing blocks");
        self.syncing = Some((peer, now_ms + self.cfg.sync_timeout_ms));
        self.effects.push(Effect::GetBlocks { peer, from });
        Ok(())
    }

    /// Imports the final blocks `from` sent; a full answer means more
    /// follow, asked for at once.
    pub(crate) fn import(
        &mut self,
        now_ms: u64,
        from: P,
        blocks: Vec<Block>,
    ) -> Result<(), DriverError> {
        self.syncing = None;
        let full = blocks.len() as u64 >= u64::from(self.cfg.sync_batch);
        let mut imported = 0;
        let mut blocks = blocks.into_iter();
        while let Some(block) = blocks.next() {
            let head = self.store.head()?;
            if block.header.height <= head.height {
                continue;
            }
            if !self.final_blocks() {
                // Switched to proof-of-work (by this import, or by a commit
                // it led to): the rest are candidates for its fork choice,
                // and more come by locator.
                if imported > 0 {
                    tracing::info!(imported, height = head.height, "synced");
                }
                let rest = std::iter::once(block).chain(blocks).collect();
                return self.mined_after_sync(now_ms, from, rest, full);
            }
            if let Err(e) = self.verify_final(&block) {
                self.stats.unproven_blocks += 1;
                self.effects.push(Effect::Penalize {
                    peer: from,
                    reason: format!("synced block without proof of finality: {e}"),
                });
                return Ok(());
            }
            if self.needs_settling(&block)? {
                // The first final block after proof-of-work, on another
                // branch than this node's: it and the blocks after it
                // (each proving its finality) wait for the head to move
                // to its parent.
                let mut waiting = vec![(block, true)];
                for b in blocks.by_ref() {
                    if self.verify_final(&b).is_err() {
                        break;
                    }
                    waiting.push((b, true));
                }
                let parent = waiting[0].0.header.parent;
                self.settle_on(now_ms, parent, Some(from))?
                    .commits
                    .extend(waiting);
                return Ok(());
            }
            let (height, hash, engine_data) = (
                block.header.height,
                block.hash(),
                block.header.engine_data.clone(),
            );
            match self.apply_final(block) {
                Ok(()) => {}
                Err(BlockProblem::Driver(e)) => return Err(e),
                // The peer follows another schedule: not its fault as far
                // as this node can tell, and nothing to follow.
                Err(BlockProblem::Block(e @ cairn_chain::BlockError::WrongConfig { .. })) => {
                    if self.diverged.is_none() {
                        tracing::error!("stopped following the network: {e}");
                    }
                    self.diverged = Some(height);
                    return Ok(());
                }
                Err(e) => {
                    self.effects.push(Effect::Penalize {
                        peer: from,
                        reason: format!("invalid synced block: {e}"),
                    });
                    return Ok(());
                }
            }
            imported += 1;
            if self.switch_if_due()? {
                // The next segment's engine starts on this block, and
                // checks the blocks after it by its own rule.
                self.feed(now_ms, Input::Tick)?;
                continue;
            }
            self.feed(
                now_ms,
                Input::Committed {
                    height,
                    hash,
                    engine_data,
                },
            )?;
        }
        if imported > 0 {
            tracing::info!(imported, height = self.store.head()?.height, "synced");
            // Transactions that waited behind the synced blocks' nonces
            // are ready now; a leader that caught up proposes them.
            let count = self.ready_count()?;
            self.feed(now_ms, Input::TransactionsAvailable { count })?;
        }
        if full && imported > 0 {
            self.start_sync(now_ms, from)?;
        }
        let head = self.store.head()?.height;
        match self.sync_goal {
            Some((goal, left)) if goal > head && left > 0 && self.syncing.is_none() => {
                self.sync_goal = Some((goal, left - 1));
                self.sync_from_any(now_ms, None, Some(from))?;
            }
            Some((goal, _)) if goal > head => {}
            _ => self.sync_goal = None,
        }
        Ok(())
    }

    /// Blocks synced past a switch to proof-of-work: each goes to the
    /// engine like a gossiped one, and a full answer asks `from` for what
    /// follows by locator.
    fn mined_after_sync(
        &mut self,
        now_ms: u64,
        from: P,
        blocks: Vec<Block>,
        full: bool,
    ) -> Result<(), DriverError> {
        self.feed_blocks(now_ms, from, blocks)?;
        if full {
            let locator = crate::serve::locator(&*self.store)?;
            self.fetch_after(now_ms, from, locator);
        }
        Ok(())
    }

    /// Whether a synced block proves its finality: by the engine's rule on
    /// a validator, by the observer's check on a node without an engine
    /// (PBFT: its commit certificate; Raft's blocks carry no proof).
    fn verify_final(&self, block: &Block) -> Result<(), cairn_consensus::FinalityError> {
        match (&self.engine, &self.observer_check) {
            (Some(engine), _) => engine.verify_final(block),
            (None, Some(check)) => check(block),
            (None, None) => Ok(()),
        }
    }

    /// A message of a later segment of the schedule: the sender went on
    /// without this node, which catches up — by block sync (from `origin`
    /// if it may), or by locator from `origin` on a proof-of-work node
    /// behind a switch to a final engine (the rest of the mined chain, and
    /// the final blocks after it).
    pub(crate) fn catch_up(&mut self, now_ms: u64, origin: P) -> Result<(), DriverError> {
        if self.final_blocks() {
            return self.sync_from_any(now_ms, Some(origin), None);
        }
        if self.syncing.is_none() {
            let locator = crate::serve::locator(&*self.store)?;
            self.fetch_after(now_ms, origin, locator);
        }
        Ok(())
    }

    /// Syncs from `preferred` if it may, from another connected peer it
    /// may otherwise (taken in turn, so that two nodes behind do not ask
    /// only each other), never from `except`.
    pub(crate) fn sync_from_any(
        &mut self,
        now_ms: u64,
        preferred: Option<P>,
        except: Option<P>,
    ) -> Result<(), DriverError> {
        if let Some(p) = preferred {
            self.start_sync(now_ms, p)?;
        }
        let n = self.peers.len();
        for i in 0..n {
            if self.syncing.is_some() {
                break;
            }
            let peer = self.peers[(self.sync_rotation + i) % n];
            if Some(peer) != except {
                self.start_sync(now_ms, peer)?;
            }
        }
        self.sync_rotation = self.sync_rotation.wrapping_add(1);
        Ok(())
    }

    /// Asks other peers for blocks first, for three sync timeouts.
    pub(crate) fn avoid_for_sync(&mut self, now_ms: u64, peer: P) {
        self.sync_avoid
            .retain(|(p, until)| *p != peer && *until > now_ms);
        self.sync_avoid
            .push((peer, now_ms + 3 * self.cfg.sync_timeout_ms));
    }

    /// Whether `peer` is one to ask for blocks now.
    pub(crate) fn may_sync_from(&self, now_ms: u64, peer: P) -> bool {
        !self
            .sync_avoid
            .iter()
            .any(|(p, until)| *p == peer && *until > now_ms)
    }
}
