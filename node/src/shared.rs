//! What the node's parts share: the store, the mempool, the engine's status,
//! metrics and the network's command queue, read by the HTTP API and the
//! admission thread and written by the shell.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use cairn_chain::{ExecutionParams, Hash, Store};
use cairn_consensus::{EngineStatus, ValidatorId};
use cairn_driver::Mempool;
use cairn_genesis::Genesis;
use cairn_p2p::{Command, PeerInfo};
use tokio::sync::{mpsc, Notify};

use crate::metrics::Metrics;

/// Everything the HTTP API reads, shared with the driver.
#[derive(Debug)]
pub struct Shared {
    pub name: String,
    pub store: Arc<Store>,
    pub genesis: Genesis,
    pub genesis_hash: Hash,
    pub params: ExecutionParams,
    pub node_id: String,
    /// This node's validator key, if it has one (its index differs per
    /// segment of the schedule: see [`Shared::validator_at`]).
    pub validator_key: Option<cairn_chain::PublicKey>,
    pub mempool: Arc<Mutex<Mempool>>,
    pub engine: Mutex<EngineStatus>,
    pub peers: Arc<Mutex<Vec<PeerInfo>>>,
    pub metrics: Metrics,
    /// New transactions entered the mempool (API or gossip): the shell
    /// tells the engine (at most every few milliseconds).
    pub offer: Notify,
    /// Peers blocked by the operator or for misbehaviour.
    pub banned: Arc<Mutex<Vec<String>>>,
    /// Admin commands for the network (block and unblock peers).
    pub net_commands: mpsc::Sender<Command>,
    /// The admin API's bearer token (also in [`ADMIN_COOKIE`]).
    pub admin_token: String,
    /// Events the network task dropped (its queue to the driver was full).
    pub network_dropped: Arc<std::sync::atomic::AtomicU64>,
    /// Sync requests this node answered "busy" (over a peer's quota).
    pub sync_busy: Arc<std::sync::atomic::AtomicU64>,
    /// What `GET /events` streams.
    pub events: crate::events::Events,
    /// Blocks recently sent in consensus messages (shared with the
    /// network, which serves their transactions to peers).
    pub recent: Arc<Mutex<crate::node::recent::RecentBlocks>>,
    /// The nodes whose gossiped transactions are admitted without checking
    /// their signatures again: the validators' while a Raft segment runs
    /// (Raft validators may crash but never lie, and each checked what it
    /// forwards). Empty under PBFT and proof-of-work.
    pub trusted_peers: std::sync::RwLock<std::collections::HashSet<libp2p::PeerId>>,
}

/// The file in a node's home that holds the admin API's token, written
/// afresh (mode 0600) at every start, like bitcoind's `.cookie`.
pub const ADMIN_COOKIE: &str = "admin.cookie";

/// Writes a fresh random admin token to `home/admin.cookie`, readable by
/// the node's user only, and returns it.
pub(crate) fn write_admin_cookie(home: &Path) -> Result<String> {
    use rand::RngCore;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let path = home.join(ADMIN_COOKIE);
    // A file left by another user or with wider rights is replaced, not
    // reused: the new one is created with mode 0600.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    file.write_all(token.as_bytes())
        .with_context(|| format!("writing the admin token to {}", path.display()))?;
    Ok(token)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What `/consensus` shows on a node that runs no engine (not a
/// validator of the schedule's current segment).
pub fn observer_status(engine: &'static str, committed_height: u64) -> EngineStatus {
    EngineStatus {
        engine,
        role: "observer",
        term: 0,
        leader: None,
        committed_height,
        uncommitted: 0,
        view_changes: 0,
        dropped_messages: 0,
        rejected_messages: 0,
        pow: None,
    }
}

impl Shared {
    /// This node's index among the validators of the schedule's segment
    /// that holds `height`, if it is one of them.
    pub fn validator_at(&self, height: u64) -> Option<ValidatorId> {
        let key = self.validator_key?;
        self.genesis
            .segment_at(height)
            .validators
            .iter()
            .position(|v| v.public_key == key)
            .map(|i| i as ValidatorId)
    }
}
