//! The simulated network: what travels between nodes, and how each link
//! treats it.

use cairn_chain::{Block, Transaction};
use serde::Serialize;

use cairn_consensus::ConsensusMessage;

/// How one directed link treats messages. Rates are probabilities in
/// `[0, 1]`, drawn from the simulation's seeded RNG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// One-way delay, drawn uniformly from `[min_delay_ms, max_delay_ms]`.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Chance that a message is lost.
    pub drop_rate: f64,
    /// Chance that a message is delivered twice (the copy with its own
    /// delay).
    pub duplicate_rate: f64,
    /// Whether messages may overtake each other. `false` keeps the link
    /// FIFO, like one TCP connection.
    pub reorder: bool,
}

impl LinkConfig {
    /// A LAN-like link: 1–5 ms, in order, nothing lost.
    pub const fn reliable() -> Self {
        Self {
            min_delay_ms: 1,
            max_delay_ms: 5,
            drop_rate: 0.0,
            duplicate_rate: 0.0,
            reorder: false,
        }
    }

    /// A bad network: 1–40 ms, reordering, 10 % lost, 5 % duplicated.
    pub const fn lossy() -> Self {
        Self {
            min_delay_ms: 1,
            max_delay_ms: 40,
            drop_rate: 0.10,
            duplicate_rate: 0.05,
            reorder: true,
        }
    }
}

/// What travels between simulated nodes: the node's protocols, not only
/// consensus messages (a real node also gossips transactions and serves
/// block sync).
#[derive(Debug, Clone, Serialize)]
pub(crate) enum Wire {
    /// A consensus message of a segment of the schedule.
    Consensus(u64, ConsensusMessage),
    /// Gossip of a client's transaction.
    Tx(Transaction),
    /// Block sync: final blocks from this height on.
    SyncRequest {
        from_height: u64,
    },
    SyncResponse {
        blocks: Vec<Block>,
    },
    /// Proof-of-work: a mined block, gossiped.
    Block(Block),
    /// Proof-of-work block fetch: the blocks after the first of these
    /// hashes on the peer's chain.
    LocatorRequest {
        locator: Vec<cairn_chain::Hash>,
    },
    LocatorResponse {
        blocks: Vec<Block>,
    },
    /// Raft and PBFT: a block became final here (its height).
    Announce {
        height: u64,
    },
}

impl Wire {
    pub(crate) fn kind(&self) -> u8 {
        match self {
            Wire::Consensus(..) => 1,
            Wire::Tx(_) => 2,
            Wire::SyncRequest { .. } => 3,
            Wire::SyncResponse { .. } => 4,
            Wire::Block(_) => 5,
            Wire::LocatorRequest { .. } => 6,
            Wire::LocatorResponse { .. } => 7,
            Wire::Announce { .. } => 8,
        }
    }
}
