//! Cairn's consensus: the [`ConsensusEngine`] trait and its engines.
//!
//! An engine is a deterministic state machine with no IO. The node's driver
//! feeds it [`Input`]s — a verified peer message, a clock tick, news from the
//! mempool, a block it asked for — and carries out the [`Action`]s it returns,
//! in order. Engines never read a clock, open a socket or draw unseeded
//! randomness, so the same engine code runs in the node and, under seeded
//! faults, in a simulator.
//!
//! # The driver's contract
//!
//! 1. **Order.** Actions returned by one call are executed in the order given,
//!    before the next input is fed. In particular every [`Action::Persist`] is
//!    durable (synced to disk) before any later [`Action::Send`] or
//!    [`Action::Broadcast`] of the same batch leaves the node: an engine that
//!    persists its vote and then sends it relies on this.
//! 2. **Commits.** [`Action::Commit`] hands over blocks that are final, in
//!    height order, each a child of the last. The driver executes each one
//!    on its parent's state and writes it to the store atomically before the
//!    next action; failing to do so is fatal (the node stops rather than fork).
//!    Committed blocks that reach the node another way (block sync) are
//!    reported back with [`Input::Committed`].
//! 3. **Messages.** Every message an engine emits is signed with the node's
//!    validator key by the driver ([`SignedMessage::sign`]); every message fed
//!    in has had its signature checked against the validator set
//!    ([`SignedMessage::open`]), so [`Input::Message::from`] is authentic.
//! 4. **Time.** Every call carries the driver's clock in milliseconds (an
//!    engine keeps the highest it has seen). An engine says when it next
//!    needs to act with [`Action::SetTimer`], whenever that changes; the
//!    latest one stands, and the driver feeds [`Input::Tick`] no later than
//!    that time (it may tick earlier and more often).
//! 5. **Blocks.** On [`Action::BuildBlock`] the driver builds a block from its
//!    mempool on the given parent and answers with [`Input::BlockBuilt`] (or
//!    nothing if it cannot, after logging why). On [`Action::ValidateBlock`]
//!    it executes the block on its parent (the store's head) without storing
//!    it and answers with [`Input::BlockValidated`].
//! 6. **Sync.** A block that arrives by block sync is imported only if
//!    [`ConsensusEngine::verify_final`] accepts it (a PBFT block must carry
//!    a valid commit certificate in its seal).
//! 7. **Misbehaviour.** [`Action::Penalize`] names a validator that sent
//!    something provably wrong (a bad inner signature, conflicting votes, an
//!    invalid certificate); the driver counts it and penalises the peer.

pub mod message;
pub mod pbft;
pub mod pow;
pub mod raft;

#[cfg(test)]
mod outputs;

use cairn_chain::{Block, Hash};

pub use message::{
    CompactMessage, ConsensusMessage, MessageError, Partial, SignedMessage, Wanted,
    MAX_MESSAGE_BYTES,
};
pub use pbft::{Pbft, PbftConfig, PbftMessage};
pub use pow::{Pow, PowConfig};
pub use raft::{Raft, RaftConfig, RaftMessage};

/// A validator's position in the genesis validator list.
pub type ValidatorId = u32;

/// What an engine is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// Time passed (the time itself comes with every call).
    Tick,
    /// A message from validator `from`, its signature already verified.
    Message {
        from: ValidatorId,
        msg: ConsensusMessage,
    },
    /// The mempool holds `count` transactions ready for a block.
    TransactionsAvailable { count: usize },
    /// The block asked for with [`Action::BuildBlock`].
    BlockBuilt { block: Block },
    /// The driver checked a proposed block (engines that ask for it).
    BlockValidated { hash: Hash, valid: bool },
    /// A block became final through another path (block sync): the store's
    /// head is now `height`/`hash`, with the block's engine data.
    Committed {
        height: u64,
        hash: Hash,
        engine_data: Vec<u8>,
    },
    /// A block from a peer or from this node's miners (proof-of-work).
    Block { block: Block },
    /// [`Action::SetHead`] stopped at block `hash`, which does not execute
    /// (`reason`); the store's head is now `head`.
    BlockRejected {
        hash: Hash,
        reason: String,
        head: Hash,
    },
    /// The blocks [`Action::SetHead`] reverted (the old head first). The
    /// engine keeps no bodies of canonical blocks: it needs these to switch
    /// back to them.
    Reverted { blocks: Vec<Block> },
    /// Proof-of-work before a switch to a final engine: the first final
    /// block names `hash` as its parent; make it the head (a reorganisation
    /// whatever the work on either side). Other engines ignore it.
    Adopt { hash: Hash },
}

/// What an engine asks the driver to do. See the crate docs for the order
/// and durability guarantees.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a message to one validator.
    Send {
        to: ValidatorId,
        msg: ConsensusMessage,
    },
    /// Send a message to every other validator.
    Broadcast { msg: ConsensusMessage },
    /// Durably write (`Some`) or delete (`None`) engine state, atomically.
    Persist(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    /// Build a block at `height` on `parent`, carrying `engine_data`.
    /// `uncommitted` are the not-yet-final ancestors between the store's head
    /// and `parent` (oldest first) whose state the block builds on.
    BuildBlock {
        parent: Hash,
        height: u64,
        engine_data: Vec<u8>,
        uncommitted: Vec<Block>,
    },
    /// These blocks are final: execute and store them, in order.
    Commit { blocks: Vec<Block> },
    /// The node is behind `peer`, which has committed up to `height`:
    /// fetch the missing final blocks with block sync.
    Sync { peer: ValidatorId, height: u64 },
    /// Tick no later than this time (replaces the previous timer).
    SetTimer { at_ms: u64 },
    /// Execute this proposed block on the store's head, without storing
    /// it, and answer with [`Input::BlockValidated`].
    ValidateBlock { block: Block },
    /// Validator `peer` sent something provably invalid.
    Penalize { peer: ValidatorId, reason: String },
    /// Move the store's head: revert `revert` blocks, then execute and
    /// append `apply` in order (proof-of-work reorganisations). If a block
    /// does not execute, stop there and answer [`Input::BlockRejected`];
    /// answer [`Input::Reverted`] with the reverted blocks. Transactions of
    /// reverted blocks that are not in the new branch go back to the
    /// mempool if still valid.
    SetHead { revert: u64, apply: Vec<Block> },
    /// Search a nonce for this block template (replaces the current job);
    /// a block found comes back as [`Input::Block`].
    Mine { block: Block },
    /// Stop the miners (the head moved; a new template follows).
    StopMining,
    /// Ask the peer that sent block `hash` for the blocks of its chain that
    /// follow the first hash of `locator` it has on its chain.
    FetchBlocks { hash: Hash, locator: Vec<Hash> },
    /// Block `hash` is invalid: penalise the peer that sent it.
    RejectBlock { hash: Hash, reason: String },
    /// Block `hash` cannot be taken now, through no fault of whoever sent
    /// it (its timestamp is ahead of this node's clock): drop it and blame
    /// no one; it may be offered again later.
    IgnoreBlock { hash: Hash, reason: String },
}

/// Why a block received by sync does not prove it is final.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinalityError {
    /// The seal is not a commit certificate at all.
    #[error("the seal is not a commit certificate: {0}")]
    Seal(String),
    /// The certificate does not hold a quorum of valid votes for the block.
    #[error("commit certificate: {0}")]
    Certificate(String),
    /// The engine's blocks are never final (proof-of-work): they go to its
    /// fork choice, not to block sync.
    #[error("this engine's blocks are never final")]
    NeverFinal,
}

/// The engine's view of itself, for the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineStatus {
    /// `raft`, `pbft` or `pow`.
    pub engine: &'static str,
    /// `leader`, `follower`, `candidate`, `primary`, `backup`, `miner`, …
    pub role: &'static str,
    /// Raft term or PBFT view.
    pub term: u64,
    /// The validator this node believes leads, if any.
    pub leader: Option<ValidatorId>,
    /// Highest final block known to the engine.
    pub committed_height: u64,
    /// Blocks in the engine's log beyond the final ones.
    pub uncommitted: u64,
    /// View changes so far (PBFT; 0 for other engines).
    pub view_changes: u64,
    /// Messages dropped as stale or duplicate, and refused as invalid.
    pub dropped_messages: u64,
    pub rejected_messages: u64,
    /// Proof-of-work only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pow: Option<PowStatus>,
}

/// A proof-of-work engine's state, for `GET /consensus`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PowStatus {
    /// The difficulty the next block needs (expected hashes).
    pub difficulty: u64,
    /// Its target, big-endian hex.
    pub target: String,
    /// Cumulative work of the head (expected hashes since genesis).
    pub tip_work: u128,
    /// Estimated network hash rate over the last retarget window (hashes/s).
    pub hash_rate: u64,
    pub head: String,
    /// Reorganisations followed and the deepest one (blocks reverted).
    pub reorgs: u64,
    pub max_reorg_depth: u64,
    /// Blocks waiting for their parent; blocks in the fork tree; blocks
    /// accepted into it since start.
    pub orphans: u64,
    pub known_blocks: u64,
    pub accepted_blocks: u64,
}

/// A consensus engine; see the crate docs for the driver's contract.
pub trait ConsensusEngine: Send + std::fmt::Debug {
    /// Feeds one input at the driver's time `now_ms` and returns the
    /// actions it causes, in order.
    fn handle(&mut self, now_ms: u64, input: Input) -> Vec<Action>;
    /// The engine's current role and view.
    fn status(&self) -> EngineStatus;
    /// Whether `block`, received by block sync, proves its own finality
    /// (its seal). Engines that trust their peers' final blocks (Raft's
    /// crash-fault model) accept every block.
    fn verify_final(&self, block: &Block) -> Result<(), FinalityError> {
        let _ = block;
        Ok(())
    }
    /// Most blocks the engine builds on blocks not yet final (Raft
    /// pipelines; 1 for engines that propose one at a time). Above 1, the
    /// driver reports what is ready net of the blocks in flight after
    /// every block built.
    fn max_in_flight(&self) -> usize {
        1
    }
    /// Whether blocks are final once committed (Raft, PBFT: block sync
    /// imports final blocks after [`ConsensusEngine::verify_final`]) or
    /// the head follows the most work (proof-of-work: the driver fetches
    /// peers' branches and feeds their blocks in).
    fn final_blocks(&self) -> bool {
        true
    }
}
