//! Consensus messages in and out: signed in their compact form (blocks by
//! their transactions' hashes, [`CompactMessage`]), and on receipt, once
//! the signature checks out, assembled from the mempool; transactions the
//! mempool lacks are asked of the peer that delivered the message, and the
//! message waits for them.
//!
//! Who pays: only a message signed by a validator of the segment gets this
//! far, a fetch goes to the peer that delivered it (it answers from what it
//! holds, within its serving quota), and at most [`MAX_WAITING`] messages
//! wait at once.

use std::collections::VecDeque;

use cairn_chain::{codec, Block, ChainStore, Hash, Transaction, MAX_TRANSACTION_BYTES};
use cairn_consensus::{CompactMessage, ConsensusMessage, Partial, SignedMessage, ValidatorId};
use libp2p::PeerId;

use super::Shell;
use crate::shared::now_ms;
use anyhow::Result;

/// Messages waiting for transactions at once; past it the oldest is
/// dropped (its sender sends it again, or its view times out).
const MAX_WAITING: usize = 16;

/// A message whose blocks lack transactions, waiting for the answer to
/// the request tagged `tag`.
pub(super) struct Waiting {
    tag: u64,
    origin: PeerId,
    sender: ValidatorId,
    segment: u64,
    wanted: Vec<(Hash, Vec<u32>)>,
    partial: Box<Partial>,
}

/// The messages waiting, oldest first.
#[derive(Default)]
pub(super) struct WaitingMessages {
    queue: VecDeque<Waiting>,
    next_tag: u64,
}

impl Shell {
    /// Signs `msg` in its compact form as this node's validator of the
    /// running segment; a block's transactions are hashed once however
    /// many peers it goes to.
    pub(super) fn sign(&self, msg: &ConsensusMessage) -> Option<Vec<u8>> {
        let (me, key) = (self.me?, self.key.as_ref()?);
        let compact = match self.shared.recent.lock() {
            Ok(mut recent) => CompactMessage::of(msg, |b| recent.hashes_of(b).to_vec()),
            Err(_) => CompactMessage::of(msg, |b| {
                b.transactions.iter().map(Transaction::hash).collect()
            }),
        };
        let signed =
            SignedMessage::sign_compact(&self.shared.genesis_hash, self.segment, me, key, &compact);
        Some(signed.encode())
    }

    /// An opened message from validator `sender`, delivered by `origin`:
    /// to the driver once its blocks are assembled.
    pub(super) async fn deliver(
        &mut self,
        origin: PeerId,
        sender: ValidatorId,
        segment: u64,
        compact: CompactMessage,
    ) -> Result<()> {
        let carries_blocks = compact.carries_blocks();
        let assembled = {
            let pool = self
                .shared
                .mempool
                .lock()
                .map_err(|_| anyhow::anyhow!("mempool lock"))?;
            let (recent, store) = (&self.shared.recent, &self.shared.store);
            compact.assemble(|h| held_block(recent, store, h), |h| pool.get(h).cloned())
        };
        match assembled {
            Ok(msg) => {
                if carries_blocks {
                    self.shared.metrics.compact_message("assembled");
                }
                let effects = self.driver.message(now_ms(), origin, sender, segment, msg);
                self.after(effects).await
            }
            Err(partial) => {
                self.ask(origin, sender, segment, partial).await;
                Ok(())
            }
        }
    }

    /// Asks `origin` for the transactions `partial` lacks (in the blocks
    /// one request may name; the rest in a later request), and keeps the
    /// message waiting for the answer.
    async fn ask(
        &mut self,
        origin: PeerId,
        sender: ValidatorId,
        segment: u64,
        partial: Box<Partial>,
    ) {
        let mut wanted: Vec<(Hash, Vec<u32>)> = partial
            .wanted()
            .into_iter()
            .map(|w| (w.block, w.indexes))
            .collect();
        wanted.truncate(cairn_p2p::MAX_WANTED_BLOCKS);
        let missing: usize = wanted.iter().map(|(_, i)| i.len()).sum();
        tracing::debug!(%origin, sender, missing, "consensus message with transactions this node lacks: asking for them");
        let w = &mut self.waiting;
        let tag = w.next_tag;
        w.next_tag += 1;
        if w.queue.len() >= MAX_WAITING {
            w.queue.pop_front();
            self.shared.metrics.compact_message("dropped");
        }
        w.queue.push_back(Waiting {
            tag,
            origin,
            sender,
            segment,
            wanted: wanted.clone(),
            partial,
        });
        self.command(cairn_p2p::Command::GetBlockTransactions {
            peer: origin,
            wanted,
            tag,
        })
        .await;
    }

    /// The answer to the request `tag`: the waiting message goes to the
    /// driver if it completes it. A peer that answers with transactions
    /// other than those asked for is penalised; one that does not hold
    /// the block (an empty list) is not.
    pub(super) async fn on_block_transactions(
        &mut self,
        from: PeerId,
        tag: u64,
        txs: Option<Vec<Vec<u8>>>,
    ) -> Result<()> {
        let q = &mut self.waiting.queue;
        let Some(at) = q.iter().position(|w| w.tag == tag) else {
            return Ok(());
        };
        let Some(mut w) = q.remove(at) else {
            return Ok(());
        };
        let Some(answers) = txs else {
            tracing::debug!(%from, "no answer for a consensus message's transactions: dropped");
            self.shared.metrics.compact_message("dropped");
            return Ok(());
        };
        if answers.len() != w.wanted.len() {
            self.penalize(from, "an answer for other blocks than asked".into());
            self.shared.metrics.compact_message("dropped");
            return Ok(());
        }
        for ((block, indexes), data) in w.wanted.iter().zip(&answers) {
            let limit = indexes.len().saturating_mul(MAX_TRANSACTION_BYTES) + 16;
            let txs: Vec<Transaction> = match codec::decode(data, limit) {
                Ok(t) => t,
                Err(e) => {
                    self.penalize(from, format!("undecodable transactions: {e}"));
                    self.shared.metrics.compact_message("dropped");
                    return Ok(());
                }
            };
            if txs.is_empty() {
                tracing::debug!(%from, %block, "the peer does not hold the block: message dropped");
                self.shared.metrics.compact_message("dropped");
                return Ok(());
            }
            if let Err(e) = w.partial.fill(block, indexes, txs) {
                self.penalize(from, format!("wrong transactions for a block: {e}"));
                self.shared.metrics.compact_message("dropped");
                return Ok(());
            }
        }
        match w.partial.complete() {
            Ok(msg) => {
                self.shared.metrics.compact_message("fetched");
                let effects = self
                    .driver
                    .message(now_ms(), w.origin, w.sender, w.segment, msg);
                self.after(effects).await
            }
            // More blocks lacked transactions than one request names.
            Err(partial) => {
                self.ask(w.origin, w.sender, w.segment, partial).await;
                Ok(())
            }
        }
    }
}

/// A block this node holds whole: one it sent recently, or committed.
fn held_block(
    recent: &std::sync::Mutex<crate::node::recent::RecentBlocks>,
    store: &cairn_chain::Store,
    hash: &Hash,
) -> Option<Block> {
    if let Some(b) = recent.lock().ok().and_then(|r| r.block(hash)) {
        return Some(b);
    }
    store.block(hash).ok().flatten()
}
