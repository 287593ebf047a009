//! Building, validating, executing and committing blocks, with the cache
//! of executions that spares a block built or validated here a second run.

use cairn_chain::{
    execute_block, propose_block, verify_transactions, Address, Block, ChainStore, Executed, Hash,
    Header, Overlay, SignatureCheck, Transaction,
};
use cairn_consensus::Input;
use foldhash::{HashMap, HashMapExt};

use crate::{Driver, DriverError, Effect, Peer};

/// Why a block could not be built or does not execute.
#[derive(Debug, thiserror::Error)]
pub enum BlockProblem {
    #[error("transaction {tx} has a bad signature: {reason}")]
    BadSignature { tx: Hash, reason: String },
    #[error(transparent)]
    Execution(#[from] cairn_chain::ExecutionError),
    #[error(transparent)]
    Block(#[from] cairn_chain::BlockError),
    #[error("the engine asked for a block on {parent} at {height}, the chain ends at {tip}")]
    WrongParent { parent: Hash, height: u64, tip: u64 },
    #[error("past the engine's segment of the consensus schedule")]
    PastSegment,
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl From<cairn_chain::StoreError> for BlockProblem {
    fn from(e: cairn_chain::StoreError) -> Self {
        BlockProblem::Driver(e.into())
    }
}

impl<S: ChainStore, P: Peer> Driver<S, P> {
    /// `Action::BuildBlock`: a block that cannot be built is logged and not
    /// answered (the engine contract); the engine asks again.
    pub(crate) fn on_build(
        &mut self,
        now_ms: u64,
        parent: Hash,
        height: u64,
        engine_data: Vec<u8>,
        uncommitted: Vec<Block>,
    ) -> Result<Vec<Input>, DriverError> {
        let mut parent = parent;
        if let Some(first) = uncommitted.first() {
            // A log whose first block names another branch's block than
            // the head: the head moves there first.
            if self.needs_settling(first)? {
                self.settle_on(now_ms, first.header.parent, None)?;
                return Ok(Vec::new());
            }
        } else if self.open_parent == Some(height) {
            // The first block after proof-of-work goes on this node's head,
            // whichever branch's block at the height before the engine
            // started on.
            parent = self.store.head_hash()?;
        }
        let block = match self.build(now_ms, parent, height, engine_data, &uncommitted) {
            Ok(block) => block,
            Err(BlockProblem::Driver(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(%parent, height, "cannot build a block: {e}");
                return Ok(Vec::new());
            }
        };
        self.stats.blocks_built += 1;
        self.effects.push(Effect::Built {
            height,
            hash: block.hash(),
        });
        let pipelined = self.engine.as_ref().is_some_and(|e| e.max_in_flight() > 1);
        if !pipelined {
            return Ok(vec![Input::BlockBuilt { block }]);
        }
        // The engine builds the next block while this one replicates: it
        // needs to know what is left for it.
        self.in_flight = uncommitted
            .iter()
            .chain(std::iter::once(&block))
            .map(|b| (b.hash(), b.transactions.len()))
            .collect();
        let count = self.ready_count()?;
        Ok(vec![
            Input::BlockBuilt { block },
            Input::TransactionsAvailable { count },
        ])
    }

    /// Builds a block on `parent` (the last of `uncommitted`, or the head)
    /// from the mempool.
    fn build(
        &mut self,
        now_ms: u64,
        parent: Hash,
        height: u64,
        engine_data: Vec<u8>,
        uncommitted: &[Block],
    ) -> Result<Block, BlockProblem> {
        let store = self.store.clone();
        let params = &self.cfg.params;
        let mut overlay = Overlay::new(&*store);
        let mut parent_header = store.head()?;
        for b in uncommitted {
            let hash = b.hash();
            match self.executed.iter().find(|(h, _)| *h == hash) {
                Some((_, ex)) => overlay.apply(&ex.changes),
                None => {
                    let ex = execute_block(
                        &overlay,
                        params,
                        &parent_header,
                        b,
                        SignatureCheck::AlreadyVerified,
                    )?;
                    overlay.apply(&ex.changes);
                }
            }
            parent_header = b.header.clone();
        }
        if parent_header.hash() != parent || parent_header.height + 1 != height {
            return Err(BlockProblem::WrongParent {
                parent,
                height,
                tip: parent_header.height,
            });
        }
        // Senders' nonces after the blocks this one goes on.
        let mut ahead: HashMap<Address, u64> = HashMap::new();
        for tx in uncommitted.iter().flat_map(|b| &b.transactions) {
            let next = ahead.entry(tx.sender()).or_default();
            *next = (*next).max(tx.nonce.saturating_add(1));
        }
        // Past the segment: an empty marker block, never committed, that
        // lets Raft commit the segment's last block in the current term
        // (see `segments`).
        let candidates = if self.past_segment(height) {
            Vec::new()
        } else {
            self.pool()?
                .ready(self.cfg.block_max, |a| ahead.get(a).copied())
        };
        let timestamp = now_ms.max(parent_header.timestamp_ms);
        let proposal = propose_block(
            &overlay,
            params,
            &parent_header,
            self.cfg.reward,
            timestamp,
            candidates,
            engine_data,
        )?;
        self.remember_execution(proposal.block.hash(), proposal.executed);
        if !proposal.rejected.is_empty() {
            // They no longer apply; kept, they would count as ready (and
            // keep the engine proposing) for ever.
            let mut pool = self.pool()?;
            for (tx, rule) in &proposal.rejected {
                tracing::info!(hash = %tx.hash(), "dropping a transaction that no longer applies: {rule}");
                pool.discard(tx);
            }
        }
        Ok(proposal.block)
    }

    /// Executes a proposed block on the head's state without storing it.
    pub(crate) fn validate(&mut self, block: &Block) -> Result<(), BlockProblem> {
        let head = self.store.head()?;
        let executed = self.execute(&head, block)?;
        self.remember_execution(block.hash(), executed);
        Ok(())
    }

    /// Executes `block` on `head`'s state. Mempool transactions were
    /// verified on entry; the others are checked in one batch, then the
    /// block executes without checking signatures again.
    fn execute(&self, head: &Header, block: &Block) -> Result<Executed, BlockProblem> {
        self.execute_checked(head, block, true)
    }

    /// [`Self::execute`], checking no signature when `check` is false (a
    /// block whose finality is proven: see [`Self::apply_final`]).
    fn execute_checked(
        &self,
        head: &Header,
        block: &Block,
        check: bool,
    ) -> Result<Executed, BlockProblem> {
        if !check {
            return Ok(execute_block(
                &*self.store,
                &self.cfg.params,
                head,
                block,
                SignatureCheck::AlreadyVerified,
            )?);
        }
        let unverified: Vec<Transaction> = {
            let pool = self.pool()?;
            block
                .transactions
                .iter()
                .filter(|tx| !pool.contains(&tx.hash()))
                .cloned()
                .collect()
        };
        if let Err((i, e)) = verify_transactions(&unverified, &self.cfg.genesis_hash) {
            return Err(BlockProblem::BadSignature {
                tx: unverified[i].hash(),
                reason: e.to_string(),
            });
        }
        Ok(execute_block(
            &*self.store,
            &self.cfg.params,
            head,
            block,
            SignatureCheck::AlreadyVerified,
        )?)
    }

    /// Executes `block` on the head (validating it fully, unless built or
    /// validated here on this very head) and makes it the head.
    pub(crate) fn apply(&mut self, block: Block) -> Result<(), BlockProblem> {
        self.apply_checked(block, true)
    }

    /// [`Self::apply`] for a block whose finality is proven (block sync
    /// under Raft or PBFT, after [`Self::verify_final`]): its
    /// transactions' signatures are not checked again. A PBFT commit
    /// certificate holds 2f+1 validators' commits, so at least f+1 honest
    /// validators executed the block, signatures included; Raft's
    /// validators never lie, and blocks sync from validators only. The
    /// block still executes in full (state root, nonces, balances).
    pub(crate) fn apply_final(&mut self, block: Block) -> Result<(), BlockProblem> {
        self.apply_checked(block, false)
    }

    fn apply_checked(&mut self, block: Block, check: bool) -> Result<(), BlockProblem> {
        let head = self.store.head()?;
        let hash = block.hash();
        let executed = match self.take_execution(&hash) {
            Some(ex) if block.header.parent == head.hash() => ex,
            _ => self.execute_checked(&head, &block, check)?,
        };
        self.store.commit_block(&block, &executed.changes)?;
        self.prune_senders(&block.transactions)?;
        self.in_flight.retain(|(h, _)| *h != hash);
        self.stats.applied_blocks += 1;
        self.stats.applied_transactions += block.transactions.len() as u64;
        tracing::info!(
            height = block.header.height,
            %hash,
            txs = block.transactions.len(),
            "committed block"
        );
        self.effects.push(Effect::Applied { block });
        Ok(())
    }

    /// `Action::Commit` of one block: one the chain holds already is
    /// skipped; one that conflicts with the chain, or does not apply,
    /// means this node's state is wrong: it stops rather than diverge.
    pub(crate) fn commit_final(&mut self, block: Block) -> Result<(), DriverError> {
        let height = block.header.height;
        let head = self.store.head()?;
        if height <= head.height {
            let held = self.store.hash_at(height)?.unwrap_or_default();
            let hash = block.hash();
            if held != hash {
                return Err(DriverError::ConflictingFinal { height, hash, held });
            }
            return Ok(());
        }
        let header = block.header.clone();
        match self.apply(block) {
            Ok(()) => {
                self.effects.push(Effect::Announce { header });
                Ok(())
            }
            Err(BlockProblem::Driver(e)) => Err(e),
            Err(e) => Err(DriverError::FinalBlock {
                height,
                reason: e.to_string(),
            }),
        }
    }

    /// Brings the mempool's view of the senders of `txs` up to the store's
    /// head (their nonces and balances moved: a commit, or a revert), and
    /// drops what can no longer be included.
    pub(crate) fn prune_senders(&self, txs: &[Transaction]) -> Result<(), DriverError> {
        let senders: std::collections::BTreeSet<_> = txs.iter().map(Transaction::sender).collect();
        let mut next_nonces = Vec::with_capacity(senders.len());
        for s in senders {
            let account = cairn_chain::state::read_account(&*self.store, &s)?.unwrap_or_default();
            next_nonces.push((s, account.nonce, account.balance));
        }
        self.pool()?.prune(next_nonces);
        Ok(())
    }

    /// Keeps an execution for [`Driver::apply`] and [`Driver::build`]: one
    /// per block in flight.
    fn remember_execution(&mut self, hash: Hash, executed: Executed) {
        let keep = self.engine.as_ref().map_or(1, |e| e.max_in_flight()) + 1;
        while self.executed.len() >= keep {
            self.executed.pop_front();
        }
        self.executed.push_back((hash, executed));
    }

    fn take_execution(&mut self, hash: &Hash) -> Option<Executed> {
        let i = self.executed.iter().position(|(h, _)| h == hash)?;
        self.executed.remove(i).map(|(_, ex)| ex)
    }
}
