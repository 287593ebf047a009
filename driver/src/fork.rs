//! Proof-of-work: moving the head across branches, and fetching the
//! blocks of a peer's branch by locator.

use cairn_chain::{Block, ChainStore, Hash, Header};
use cairn_consensus::Input;

use crate::blocks::BlockProblem;
use crate::{serve, Driver, DriverError, Effect, Peer};

impl<S: ChainStore, P: Peer> Driver<S, P> {
    /// Asks `peer` for the blocks of its chain after `locator`.
    pub(crate) fn fetch_after(&mut self, now_ms: u64, peer: P, locator: Vec<Hash>) {
        self.syncing = Some((peer, now_ms + self.cfg.sync_timeout_ms));
        self.sync_locator = locator.clone();
        self.effects.push(Effect::GetBlocksAfter { peer, locator });
    }

    /// A fetch's answer: it must follow what was asked; every block goes to
    /// the engine like a gossiped one; a full answer means more follow.
    pub(crate) fn fork_blocks(
        &mut self,
        now_ms: u64,
        from: P,
        blocks: Vec<Block>,
    ) -> Result<(), DriverError> {
        self.syncing = None;
        let full = blocks.len() as u64 >= u64::from(self.cfg.sync_batch);
        let headers: Vec<&Header> = blocks.iter().map(|b| &b.header).collect();
        // (An answer to an earlier request of ours starts at a block this
        // node has, though not in the latest locator: that is no lie.)
        let starts_known = match blocks.first() {
            Some(b) => self.store.has_block(&b.header.parent)?,
            None => true,
        };
        let connects = cairn_consensus::pow::answer_connects(&self.sync_locator, &headers)
            || (starts_known && cairn_consensus::pow::answer_connects(&[], &headers));
        if !connects {
            // Blocks that do not follow what was asked: a peer trying to
            // hold this node's sync. Blame it and ask someone else.
            self.effects.push(Effect::Penalize {
                peer: from,
                reason: "fetched blocks that do not follow the locator".into(),
            });
            if let Some(other) = self.other_peer(from) {
                let locator = serve::locator(&*self.store)?;
                self.fetch_after(now_ms, other, locator);
            }
            return Ok(());
        }
        let last = blocks.last().map(Block::hash);
        if full {
            // Keep the fetch marked in flight while this batch goes in.
            self.syncing = Some((from, now_ms + self.cfg.sync_timeout_ms));
        }
        let count = self.feed_blocks(now_ms, from, blocks)?;
        if count > 0 {
            tracing::info!(%from, count, height = self.store.head()?.height, "fetched blocks");
        }
        if let (true, Some(last)) = (full, last) {
            let mut locator = vec![last];
            locator.extend(self.sync_locator.iter().copied());
            locator.truncate(self.cfg.max_locator);
            self.fetch_after(now_ms, from, locator);
        }
        Ok(())
    }

    /// Hands `blocks` from `from` to the engine, each like a gossiped one
    /// (its sender remembered, to blame or ask); returns how many.
    pub(crate) fn feed_blocks(
        &mut self,
        now_ms: u64,
        from: P,
        blocks: Vec<Block>,
    ) -> Result<usize, DriverError> {
        let count = blocks.len();
        let mut blocks = blocks.into_iter();
        while let Some(block) = blocks.next() {
            if self.final_blocks() || self.past_segment(block.header.height) {
                // Past the end of proof-of-work: final blocks, for block
                // sync once the head is at the end (they prove their
                // finality there); for a later fetch otherwise.
                if self.switch_if_due()? {
                    self.feed(now_ms, Input::Tick)?;
                }
                if self.final_blocks() {
                    let rest = std::iter::once(block).chain(blocks).collect();
                    self.import(now_ms, from, rest)?;
                }
                break;
            }
            self.remember_origin(block.hash(), from);
            self.feed(now_ms, Input::Block { block })?;
        }
        Ok(count)
    }

    /// A proof-of-work fetch from `peer` went unanswered: ask another peer
    /// at once. Only a new block would otherwise start the next fetch, and
    /// meanwhile the node mines on a branch the network has left (its
    /// miner's work wasted, its clients shown confirmations that will not
    /// last). An answer with nothing new costs the asked peer one locator
    /// lookup; at most one such question per sync timeout.
    pub(crate) fn fetch_elsewhere(&mut self, now_ms: u64, peer: P) -> Result<(), DriverError> {
        if self.final_blocks() || self.syncing.is_some() {
            return Ok(());
        }
        if let Some(other) = self.other_peer(peer) {
            let locator = serve::locator(&*self.store)?;
            self.fetch_after(now_ms, other, locator);
        }
        Ok(())
    }

    /// A connected peer other than `not`, the next one after it in the
    /// peer list (sync sources rotate).
    fn other_peer(&self, not: P) -> Option<P> {
        let at = self
            .peers
            .iter()
            .position(|p| *p == not)
            .map_or(0, |i| i + 1);
        self.peers
            .iter()
            .cycle()
            .skip(at)
            .take(self.peers.len())
            .find(|p| **p != not)
            .copied()
    }

    /// `Action::SetHead`: revert to the fork point, apply the new branch,
    /// stop at a block that does not execute (the store stays at its
    /// parent), and put the abandoned branch's transactions back in the
    /// mempool (and on the wire: the other side never saw them).
    pub(crate) fn set_head(
        &mut self,
        revert: u64,
        apply: Vec<Block>,
    ) -> Result<Vec<Input>, DriverError> {
        let store = self.store.clone();
        let reverted = if revert > 0 {
            store.revert(revert)?
        } else {
            Vec::new()
        };
        if !reverted.is_empty() {
            self.stats.reorgs += 1;
            self.stats.reverted_blocks += revert;
            self.stats.max_reorg_depth = self.stats.max_reorg_depth.max(revert);
            tracing::warn!(
                reverted = revert,
                applied = apply.len(),
                from_height = store.head()?.height,
                "reorganisation onto another branch"
            );
        }
        let mut rejected = None;
        for block in apply {
            let hash = block.hash();
            match self.apply(block) {
                Ok(()) => {}
                Err(BlockProblem::Driver(e)) => return Err(e),
                Err(e) => {
                    rejected = Some((hash, e.to_string()));
                    break;
                }
            }
        }
        // The reverted blocks moved their senders' nonces back: the
        // mempool's view of them (what blocks are built from) follows.
        for b in &reverted {
            self.prune_senders(&b.transactions)?;
        }
        let mut back = Vec::new();
        for b in reverted.iter().rev() {
            for tx in &b.transactions {
                let account = cairn_chain::state::read_account(&*store, &tx.sender())?;
                if self.pool()?.insert(tx.clone(), account).is_ok() {
                    back.push(tx.clone());
                }
            }
        }
        if !back.is_empty() {
            tracing::info!(
                count = back.len(),
                "transactions of abandoned blocks back in the mempool"
            );
            self.effects.push(Effect::GossipTransactions { txs: back });
        }
        let mut out = Vec::new();
        if !reverted.is_empty() {
            out.push(Input::Reverted { blocks: reverted });
        }
        if let Some((hash, reason)) = rejected {
            tracing::warn!(%hash, "block does not execute: {reason}");
            self.stats.rejected_blocks += 1;
            self.rejected.push(hash);
            if let Some(peer) = self.origins.get(&hash).copied() {
                self.effects.push(Effect::Penalize {
                    peer,
                    reason: format!("block {hash} does not execute: {reason}"),
                });
            }
            out.push(Input::BlockRejected {
                hash,
                reason,
                head: store.head_hash()?,
            });
        }
        out.push(Input::TransactionsAvailable {
            count: self.ready_count()?,
        });
        Ok(out)
    }
}
