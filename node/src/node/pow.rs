//! The driver's proof-of-work side: blocks from gossip, from fetches and
//! from the local miners; moving the head across branches.

use super::*;
use cairn_chain::CompactBlock;

impl Driver {
    pub(super) fn remember_origin(&mut self, hash: Hash, peer: PeerId) {
        if self.origins.len() >= MAX_ORIGINS {
            self.origins.clear();
        }
        self.origins.insert(hash, peer);
    }

    /// Asks `peer` for the blocks of its chain after `locator`.
    pub(super) async fn fetch_after(&mut self, peer: PeerId, locator: Vec<Hash>) {
        self.syncing = Some((peer, Instant::now()));
        self.sync_locator = locator.clone();
        self.command(Command::GetBlocksAfter { peer, locator })
            .await;
    }

    /// A fetch's answer: every block goes to the engine like a gossiped
    /// one; a full answer means more follow.
    pub(super) async fn on_pow_blocks(&mut self, from: PeerId, data: Vec<Vec<u8>>) -> Result<()> {
        self.syncing = None;
        let full = data.len() as u32 >= cairn_p2p::MAX_BLOCKS_PER_REQUEST;
        let mut blocks = Vec::with_capacity(data.len());
        for d in &data {
            match Block::decode(d) {
                Ok(b) => blocks.push(b),
                Err(e) => {
                    self.penalize(from, format!("undecodable fetched block: {e}"))
                        .await;
                    return Ok(());
                }
            }
        }
        let headers: Vec<&cairn_chain::Header> = blocks.iter().map(|b| &b.header).collect();
        // (An answer to an earlier request of ours starts at a block this
        // node has, though not in the latest locator: that is no lie.)
        let starts_known = match blocks.first() {
            Some(b) => self.shared.store.has_block(&b.header.parent)?,
            None => true,
        };
        let connects = cairn_consensus::pow::answer_connects(&self.sync_locator, &headers)
            || (starts_known && cairn_consensus::pow::answer_connects(&[], &headers));
        if !connects {
            // Blocks that do not follow what was asked: a peer trying to
            // hold this node's sync. Blame it and ask someone else.
            self.penalize(from, "fetched blocks that do not follow the locator".into())
                .await;
            self.syncing = None;
            if let Some(other) = self.other_peer(from) {
                let locator = store_locator(&self.shared.store)?;
                self.fetch_after(other, locator).await;
            }
            return Ok(());
        }
        let last = blocks.last().map(Block::hash);
        if full {
            // Keep the fetch marked in flight while this batch goes in.
            self.syncing = Some((from, Instant::now()));
        }
        let count = blocks.len();
        for block in blocks {
            self.remember_origin(block.hash(), from);
            self.feed(Input::Block { block }).await?;
        }
        if count > 0 {
            tracing::info!(%from, count, height = self.shared.store.head()?.height, "fetched blocks");
        }
        if let (true, Some(last)) = (full, last) {
            let mut locator = vec![last];
            locator.extend(self.sync_locator.iter().copied());
            locator.truncate(cairn_p2p::MAX_LOCATOR_HASHES);
            self.syncing = Some((from, Instant::now()));
            // What the next answer must follow.
            self.sync_locator = locator.clone();
            self.command(Command::GetBlocksAfter {
                peer: from,
                locator,
            })
            .await;
        }
        Ok(())
    }

    /// A connected peer other than `not`, the next one after it in the
    /// peer list (sync sources rotate).
    fn other_peer(&self, not: PeerId) -> Option<PeerId> {
        let peers: Vec<PeerId> = self
            .shared
            .peers
            .lock()
            .ok()?
            .iter()
            .filter_map(|p| p.peer_id.parse().ok())
            .collect();
        let at = peers.iter().position(|p| *p == not).map_or(0, |i| i + 1);
        peers
            .iter()
            .cycle()
            .skip(at)
            .take(peers.len())
            .find(|p| **p != not)
            .copied()
    }

    /// A local miner found a block: announce it (by its transactions'
    /// hashes) and hand it to the engine.
    pub(super) async fn on_mined(&mut self, block: Block) -> Result<()> {
        tracing::info!(height = block.header.height, hash = %block.hash(), "mined a block");
        self.shared.metrics.mined_blocks.inc();
        self.command(Command::Publish {
            topic: Topic::Blocks,
            data: CompactBlock::of(&block).encode(),
        })
        .await;
        self.feed(Input::Block { block }).await
    }

    /// A block announced by gossip, as a [`CompactBlock`]: checked for its
    /// proof of work and its transaction root over the hashes (what the
    /// sender can be blamed for), assembled from the mempool and handed to
    /// the engine; when transactions are missing (this node never saw them,
    /// or committed them on another branch), the whole block is fetched
    /// from the sender.
    /// The verdict is the gossip's: a block with valid work and form is
    /// forwarded whether or not this node can assemble it yet.
    pub(super) async fn on_compact_block(&mut self, from: PeerId, data: &[u8]) -> Result<Verdict> {
        let compact = match CompactBlock::decode(data) {
            Ok(c) => c,
            Err(e) => return Ok(Verdict::Reject(format!("undecodable block: {e}"))),
        };
        let seal = match cairn_consensus::pow::check_pow(&compact.header) {
            Ok(seal) => seal,
            Err(e) => {
                return Ok(Verdict::Reject(format!(
                    "block without a valid proof of work: {e}"
                )))
            }
        };
        // Cheap seals are refused before any other work: below the chain's
        // minimum they are invalid; far below the head's difficulty, not
        // worth assembling or forwarding (the engine holds neither).
        let min = match &self.shared.genesis.consensus {
            ConsensusConfig::Pow(p) => p.min_difficulty,
            _ => 1,
        };
        if seal.difficulty < min {
            return Ok(Verdict::Reject(format!(
                "difficulty {} is below the chain's minimum {min}",
                seal.difficulty
            )));
        }
        let head = self
            .shared
            .engine
            .lock()
            .map_err(|_| anyhow::anyhow!("engine status lock"))?
            .pow
            .as_ref()
            .map_or(0, |p| p.difficulty);
        if seal.difficulty < head / cairn_consensus::pow::FAR_BELOW {
            return Ok(Verdict::Ignore);
        }
        if let Err(e) = compact.check_format() {
            return Ok(Verdict::Reject(format!("malformed block: {e}")));
        }
        let hash = compact.hash();
        let parent = compact.header.parent;
        self.remember_origin(hash, from);
        let assembled = {
            let pool = self
                .shared
                .mempool
                .lock()
                .map_err(|_| anyhow::anyhow!("mempool lock"))?;
            compact.assemble(|h| pool.get(h))
        };
        match assembled {
            Ok(block) => {
                self.shared.metrics.compact_block(true);
                self.feed(Input::Block { block }).await?;
                Ok(Verdict::Accept)
            }
            // Its transactions left the mempool when this node stored it
            // (a fetch or a sync got there first): nothing to do.
            Err(_) if self.shared.store.has_block(&hash)? => Ok(Verdict::Ignore),
            Err(missing) => {
                self.shared.metrics.compact_block(false);
                tracing::debug!(%hash, %from, missing, "block with transactions this node lacks: fetching it");
                // One fetch at a time; if one is under way, the next block
                // (an orphan without this one) starts another.
                if self.syncing.is_none() {
                    self.fetch_after(from, vec![parent]).await;
                }
                Ok(Verdict::Accept)
            }
        }
    }

    /// `Action::SetHead`: revert to the fork point, apply the new branch,
    /// stop at a block that does not execute (the store stays at its
    /// parent), and put the abandoned branch's transactions back in the
    /// mempool (and on the wire: the other side never saw them).
    pub(super) async fn set_head(&mut self, revert: u64, apply: Vec<Block>) -> Result<Vec<Input>> {
        let store = self.shared.store.clone();
        let reverted = if revert > 0 {
            store.revert(revert).context("reverting the old branch")?
        } else {
            Vec::new()
        };
        if !reverted.is_empty() {
            let m = &self.shared.metrics;
            m.reorgs.inc();
            m.reverted_blocks.inc_by(revert);
            tracing::warn!(
                reverted = revert,
                applied = apply.len(),
                from_height = store.head()?.height,
                "reorganisation onto a branch with more work"
            );
        }
        let mut rejected = None;
        for block in apply {
            let head = store.head()?;
            if let Err(e) = self.commit(&head, &block) {
                rejected = Some((block.hash(), format!("{e:#}")));
                break;
            }
        }
        let mut back = Vec::new();
        for b in reverted.iter().rev() {
            for tx in &b.transactions {
                let account = read_account(&*store, &tx.sender())?;
                let mut pool = self
                    .shared
                    .mempool
                    .lock()
                    .map_err(|_| anyhow::anyhow!("mempool lock"))?;
                if pool.insert(tx.clone(), account).is_ok() {
                    back.push(tx.clone());
                }
            }
        }
        // The reverted blocks moved their senders' nonces back: the
        // mempool's view of them (what blocks are built from) follows.
        for b in &reverted {
            self.prune_senders(&b.transactions)?;
        }
        if !back.is_empty() {
            tracing::info!(
                count = back.len(),
                "transactions of abandoned blocks back in the mempool"
            );
        }
        self.gossip_transactions(&back).await;
        let mut out = Vec::new();
        if !reverted.is_empty() {
            out.push(Input::Reverted { blocks: reverted });
        }
        if let Some((hash, reason)) = rejected {
            tracing::warn!(%hash, "block does not execute: {reason}");
            self.shared.metrics.rejected_blocks.inc();
            if let Some(peer) = self.origins.get(&hash).copied() {
                self.penalize(peer, format!("block {hash} does not execute: {reason}"))
                    .await;
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
