//! Prometheus metrics (`GET /metrics`).

use std::sync::Mutex;

use cairn_consensus::EngineStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub height: Gauge,
    pub finalized: Gauge,
    pub peers: Gauge,
    pub mempool: Gauge,
    pub mempool_waiting: Gauge,
    pub event_subscribers: Gauge,
    pub blocks: Counter,
    pub transactions: Counter,
    pub term: Gauge,
    view_changes: Gauge,
    /// Consensus messages from non-validators or with a bad signature.
    pub unauthenticated: Counter,
    /// Scheduled switches of engine or validator set since the node
    /// started.
    pub switches: Counter,
    /// Transaction gossip dropped because admission was that far behind.
    pub gossip_dropped: Counter,
    /// Gossiped transactions that entered the mempool, by how their
    /// signatures were taken: `checked` here, or `trusted` (delivered by a
    /// Raft validator's node, which checked them).
    gossip_admitted: Family<Labels, Counter>,
    /// HTTP connections closed on arrival (the limit was reached).
    pub http_refused: Counter,
    /// Network events the swarm task dropped because the node was behind
    /// (read from the network's counter when metrics are rendered).
    pub network_events_dropped: Counter,
    /// Sync requests answered "busy" (read from the network's counter).
    pub sync_busy: Counter,
    pub rebroadcast: Counter,
    /// Transactions dropped after waiting too long behind a nonce gap.
    pub expired: Counter,
    messages_dropped: Gauge,
    messages_rejected: Gauge,
    role: Family<Labels, Gauge>,
    /// Proof-of-work: blocks this node mined, blocks refused as invalid,
    /// reorganisations, blocks reverted by them, next difficulty.
    pub mined_blocks: Counter,
    pub rejected_blocks: Counter,
    pub reorgs: Counter,
    pub reverted_blocks: Counter,
    /// Compact blocks from peers, by outcome: assembled from the mempool,
    /// or fetched whole because transactions were missing.
    compact_blocks: Family<Labels, Counter>,
    /// Consensus messages with blocks from peers, by outcome: assembled
    /// from the mempool, completed with transactions fetched from the
    /// sender, or dropped (the fetch failed).
    compact_messages: Family<Labels, Counter>,
    difficulty: Gauge,
    store_memory: Family<Labels, Gauge>,
    last_role: Mutex<String>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("cairn"),
            height: Gauge::default(),
            finalized: Gauge::default(),
            peers: Gauge::default(),
            mempool: Gauge::default(),
            mempool_waiting: Gauge::default(),
            event_subscribers: Gauge::default(),
            blocks: Counter::default(),
            transactions: Counter::default(),
            term: Gauge::default(),
            view_changes: Gauge::default(),
            unauthenticated: Counter::default(),
            switches: Counter::default(),
            gossip_dropped: Counter::default(),
            gossip_admitted: Family::default(),
            http_refused: Counter::default(),
            network_events_dropped: Counter::default(),
            sync_busy: Counter::default(),
            rebroadcast: Counter::default(),
            expired: Counter::default(),
            messages_dropped: Gauge::default(),
            messages_rejected: Gauge::default(),
            role: Family::default(),
            mined_blocks: Counter::default(),
            rejected_blocks: Counter::default(),
            reorgs: Counter::default(),
            reverted_blocks: Counter::default(),
            compact_blocks: Family::default(),
            compact_messages: Family::default(),
            difficulty: Gauge::default(),
            store_memory: Family::default(),
            last_role: Mutex::new(String::new()),
        };
        let registry = &mut m.registry;
        registry.register("height", "Height of the head block", m.height.clone());
        registry.register(
            "finalized_height",
            "Height of the last final block",
            m.finalized.clone(),
        );
        registry.register("peers", "Connected peers", m.peers.clone());
        registry.register(
            "mempool_transactions",
            "Transactions in the mempool",
            m.mempool.clone(),
        );
        registry.register(
            "mempool_waiting_transactions",
            "Transactions in the mempool waiting behind a nonce gap",
            m.mempool_waiting.clone(),
        );
        registry.register(
            "event_subscribers",
            "Clients subscribed to GET /events",
            m.event_subscribers.clone(),
        );
        registry.register(
            "blocks_committed",
            "Blocks committed since start",
            m.blocks.clone(),
        );
        registry.register(
            "transactions_committed",
            "Transactions committed since start",
            m.transactions.clone(),
        );
        registry.register(
            "consensus_term",
            "Consensus term (Raft) or view (PBFT)",
            m.term.clone(),
        );
        registry.register(
            "consensus_view_changes",
            "View changes since the node started (PBFT)",
            m.view_changes.clone(),
        );
        registry.register(
            "consensus_messages_unauthenticated",
            "Consensus messages from non-validators or with a bad signature",
            m.unauthenticated.clone(),
        );
        registry.register(
            "consensus_switches",
            "Scheduled switches of consensus engine or validator set since the node started",
            m.switches.clone(),
        );
        registry.register(
            "gossip_transactions_dropped",
            "Gossiped transaction batches dropped because admission was behind",
            m.gossip_dropped.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections closed on arrival because rpc.max_connections were open",
            m.http_refused.clone(),
        );
        registry.register(
            "network_events_dropped",
            "Network events (gossip, requests) dropped because the node's queue was full",
            m.network_events_dropped.clone(),
        );
        registry.register(
            "sync_requests_busy",
            "Block sync requests answered busy: a peer over its quota, or too many at once",
            m.sync_busy.clone(),
        );
        registry.register(
            "transactions_rebroadcast",
            "Pending transactions gossiped again because they stayed pending",
            m.rebroadcast.clone(),
        );
        registry.register(
            "mempool_expired_transactions",
            "Transactions dropped after waiting 10 minutes behind a nonce gap",
            m.expired.clone(),
        );
        registry.register(
            "consensus_messages_dropped",
            "Consensus messages dropped as stale or duplicate since start",
            m.messages_dropped.clone(),
        );
        registry.register(
            "consensus_messages_rejected",
            "Consensus messages refused as invalid (sender penalised) since start",
            m.messages_rejected.clone(),
        );
        registry.register(
            "consensus_role",
            "1 for this node's current consensus role",
            m.role.clone(),
        );
        registry.register(
            "pow_blocks_mined",
            "Blocks this node mined since start",
            m.mined_blocks.clone(),
        );
        registry.register(
            "pow_blocks_rejected",
            "Blocks refused as invalid since start (sender penalised)",
            m.rejected_blocks.clone(),
        );
        registry.register(
            "pow_reorgs",
            "Reorganisations since start",
            m.reorgs.clone(),
        );
        registry.register(
            "pow_reverted_blocks",
            "Blocks reverted by reorganisations since start",
            m.reverted_blocks.clone(),
        );
        registry.register(
            "pow_compact_blocks",
            "Blocks announced by transaction hashes, by outcome: assembled from the mempool, or fetched whole (transactions missing)",
            m.compact_blocks.clone(),
        );
        registry.register(
            "gossip_admitted_transactions",
            "Gossiped transactions that entered the mempool, by signatures: checked here, or trusted (delivered by a Raft validator's node)",
            m.gossip_admitted.clone(),
        );
        registry.register(
            "consensus_compact_messages",
            "Raft appends and PBFT proposals from peers (blocks by transaction hashes), by outcome: assembled from the mempool, completed with transactions fetched from the sender, or dropped",
            m.compact_messages.clone(),
        );
        registry.register(
            "pow_difficulty",
            "Difficulty the next block needs",
            m.difficulty.clone(),
        );
        registry.register(
            "store_memory_bytes",
            "Memory the block store holds, by part: RocksDB memtables and block cache, the state cache",
            m.store_memory.clone(),
        );
        m
    }

    /// Counts `n` gossiped transactions admitted, their signatures
    /// `checked` or `trusted`.
    pub fn gossip_admitted(&self, signatures: &'static str, n: u64) {
        self.gossip_admitted
            .get_or_create(&vec![("signatures".into(), signatures.into())])
            .inc_by(n);
    }

    /// Counts a consensus message with blocks from a peer, by outcome
    /// (`assembled`, `fetched` or `dropped`).
    pub fn compact_message(&self, outcome: &'static str) {
        self.compact_messages
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Counts a compact block from a peer: `assembled` from the mempool,
    /// or not (fetched whole).
    pub fn compact_block(&self, assembled: bool) {
        let outcome = if assembled { "assembled" } else { "fetched" };
        self.compact_blocks
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// Sets the store's memory gauges.
    pub fn set_store_memory(&self, mem: &cairn_chain::StoreMemory) {
        for (part, bytes) in [
            ("memtables", mem.memtables),
            ("block_cache", mem.block_cache),
            ("state_cache", mem.state_cache),
        ] {
            self.store_memory
                .get_or_create(&vec![("part".into(), part.into())])
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    pub fn set_engine(&self, status: &EngineStatus) {
        self.term.set(status.term as i64);
        self.view_changes.set(status.view_changes as i64);
        self.messages_dropped.set(status.dropped_messages as i64);
        self.messages_rejected.set(status.rejected_messages as i64);
        if let Some(p) = &status.pow {
            self.difficulty
                .set(i64::try_from(p.difficulty).unwrap_or(i64::MAX));
        }
        if let Ok(mut last) = self.last_role.lock() {
            if *last != status.role {
                if !last.is_empty() {
                    self.role
                        .get_or_create(&vec![("role".into(), last.clone())])
                        .set(0);
                }
                self.role
                    .get_or_create(&vec![("role".into(), status.role.to_string())])
                    .set(1);
                *last = status.role.to_string();
            }
        }
    }

    /// The Prometheus text exposition, with the process's CPU time and
    /// memory (Linux `/proc/self`) before the final `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        let process = process_metrics();
        match out.rfind("# EOF") {
            Some(i) => out.insert_str(i, &process),
            None => out.push_str(&process),
        }
        out
    }
}

/// `process_cpu_seconds_total`, `process_resident_memory_bytes` and
/// `process_peak_resident_memory_bytes`, as the Prometheus clients name
/// them; empty where `/proc` is not there.
fn process_metrics() -> String {
    let mut out = String::new();
    // utime and stime are fields 14 and 15 of /proc/self/stat, in clock
    // ticks (100 per second on Linux); the command name before them may
    // hold spaces, so count from its closing parenthesis.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        if let (Some(u), Some(s)) = (ticks(11), ticks(12)) {
            out.push_str(&format!(
                "# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total {}\n",
                (u + s) as f64 / 100.0
            ));
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kb = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        };
        if let Some(rss) = kb("VmRSS:") {
            out.push_str(&format!(
                "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
                rss * 1024
            ));
        }
        if let Some(peak) = kb("VmHWM:") {
            out.push_str(&format!(
                "# TYPE process_peak_resident_memory_bytes gauge\nprocess_peak_resident_memory_bytes {}\n",
                peak * 1024
            ));
        }
    }
    out
}
