//! Cairn's peer-to-peer layer: one task owns the libp2p swarm (TCP + Noise +
//! Yamux; gossipsub, request-response, identify, a block list) and talks to
//! the node through channels.
//!
//! - Gossipsub topics, namespaced by the genesis hash: transactions, blocks,
//!   broadcast consensus messages.
//! - Request-response (`/cairn/<genesis>/req/1`): point-to-point consensus
//!   messages and block sync. Requests and responses have size limits.
//! - Identify carries `cairn/<genesis hash>` as protocol version: a peer of
//!   another network is disconnected and blocked.
//! - Gossip is validated before it is forwarded: the node judges each
//!   message ([`Command::Judge`]); only accepted ones travel on, so a peer
//!   that delivers an invalid message wrote it (or forwarded what it had not
//!   checked) and is the one penalised, in gossipsub's peer score and here.
//! - Peers that send data the node finds invalid are penalised
//!   ([`Command::Penalize`]); past a threshold they are disconnected and
//!   blocked for the life of the process.
//! - The swarm task never waits on the node: when the event queue is full,
//!   events are dropped (gossip is then ignored, not forwarded) and counted
//!   in [`Network::dropped_events`].
//!
//! Payloads are opaque bytes here: the node decodes and verifies them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_chain::{Hash, MAX_BLOCK_BYTES, MAX_BLOCK_TRANSACTIONS, MAX_TRANSACTION_BYTES};
use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    allow_block_list, gossipsub, identify, noise, request_response, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

pub use libp2p::identity::Keypair;
pub use libp2p::{Multiaddr as Address, PeerId as Peer};

/// Most blocks returned by one sync request.
pub const MAX_BLOCKS_PER_REQUEST: u32 = 64;
/// Most hashes in a block locator.
pub const MAX_LOCATOR_HASHES: usize = 128;
/// Most transactions pushed to a peer in one request (well within the
/// request size limit).
pub const MAX_PUSHED_TRANSACTIONS: usize = 1_000;
/// Most transactions in one gossip message (transactions travel in
/// batches: one gossip message, one libp2p signature, per batch).
pub const MAX_GOSSIP_BATCH: usize = 2_000;
/// The largest transaction-batch payload accepted.
pub const MAX_TX_BATCH_BYTES: usize = MAX_GOSSIP_BATCH * MAX_TRANSACTION_BYTES + 1024;
/// A [`BlockSource`] stops adding blocks to a sync response past this many
/// bytes (it always sends at least one block).
pub const SYNC_RESPONSE_BUDGET: usize = 2 * MAX_BLOCK_BYTES;
/// Sync requests served at once, all peers together (each reads and
/// encodes up to [`SYNC_RESPONSE_BUDGET`] bytes, off the swarm task).
pub const MAX_CONCURRENT_SERVES: usize = 4;
/// Transaction requests ([`Request::GetBlockTransactions`]) served at once,
/// all peers together. They are small and on consensus's critical path, so
/// they do not wait behind a peer's block sync (one sync request at a time
/// per peer), but count against its byte quota.
pub const MAX_CONCURRENT_TRANSACTION_SERVES: usize = 16;
/// Transaction requests served at once for one peer: one peer cannot take
/// every slot from the others.
pub const MAX_TRANSACTION_SERVES_PER_PEER: usize = 4;
/// Bytes of blocks served to one peer per [`SERVE_WINDOW`]; past it the
/// peer is answered [`Response::Busy`] until the window ends.
pub const SERVE_BYTES_PER_WINDOW: usize = 512 * 1024 * 1024;
/// The window of [`SERVE_BYTES_PER_WINDOW`].
pub const SERVE_WINDOW: Duration = Duration::from_secs(60);
/// Request-response streams per connection, both ways.
pub const MAX_STREAMS_PER_CONNECTION: usize = 32;
/// Penalty points after which a peer is disconnected and blocked.
pub const BAN_THRESHOLD: u32 = 100;
/// Points for one invalid message.
pub const INVALID_MESSAGE_PENALTY: u32 = 25;

/// The gossip topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Transactions,
    Blocks,
    Consensus,
}

impl Topic {
    const ALL: [Topic; 3] = [Topic::Transactions, Topic::Blocks, Topic::Consensus];
    fn name(self) -> &'static str {
        match self {
            Topic::Transactions => "tx",
            Topic::Blocks => "blocks",
            Topic::Consensus => "consensus",
        }
    }
}

/// A direct request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// A signed consensus message (encoded by the node).
    Consensus(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Final blocks from height `from`, at most `max`.
    GetBlocks { from: u64, max: u32 },
    /// Pending transactions (encoded), pushed to a peer that just
    /// connected: it may have missed their gossip while it was away.
    Transactions(Vec<ByteBuf>),
    /// Blocks of the peer's chain after the first hash of `locator` it has
    /// on that chain (proof-of-work: chains may differ), at most `max`.
    GetBlocksAfter { locator: Vec<Hash>, max: u32 },
    /// Transactions of blocks a consensus message from the peer named by
    /// their hashes, which this node lacks: per block (by hash), the
    /// positions wanted.
    GetBlockTransactions { wanted: Vec<(Hash, Vec<u32>)> },
}

/// Most blocks one [`Request::GetBlockTransactions`] may ask about.
pub const MAX_WANTED_BLOCKS: usize = 64;

/// A gossip message awaiting the node's verdict: forwarded to other peers
/// only once accepted.
#[derive(Debug, Clone)]
pub struct GossipId {
    id: gossipsub::MessageId,
    source: PeerId,
}

/// What the node found of a gossip message (or pushed transactions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it.
    Accept,
    /// Not wrong, not useful (a duplicate, stale, or not checkable now): do
    /// not forward, do not blame.
    Ignore,
    /// Invalid whatever the receiver's state: do not forward, and penalise
    /// the peer that delivered it.
    Reject(String),
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Ack,
    /// Encoded blocks, consecutive from the requested height.
    Blocks(Vec<ByteBuf>),
    /// Per block of a [`Request::GetBlockTransactions`], in order, the
    /// encoded list of the transactions asked for (empty if the peer does
    /// not hold the block).
    Transactions(Vec<ByteBuf>),
    /// The peer serves no more blocks to this node now (one request at a
    /// time per peer, a byte quota per minute, a few at once in all): ask
    /// again later, or another peer.
    Busy,
}

/// What the node asks of the network.
#[derive(Debug)]
pub enum Command {
    Publish {
        topic: Topic,
        data: Vec<u8>,
    },
    SendConsensus {
        peer: PeerId,
        data: Vec<u8>,
    },
    /// Push pending transactions to one peer (at most
    /// [`MAX_PUSHED_TRANSACTIONS`]).
    SendTransactions {
        peer: PeerId,
        txs: Vec<Vec<u8>>,
    },
    GetBlocks {
        peer: PeerId,
        from: u64,
        max: u32,
    },
    /// See [`Request::GetBlocksAfter`]; answered with [`Event::Blocks`].
    GetBlocksAfter {
        peer: PeerId,
        locator: Vec<Hash>,
    },
    /// See [`Request::GetBlockTransactions`]; answered with
    /// [`Event::BlockTransactions`] carrying the same `tag`.
    GetBlockTransactions {
        peer: PeerId,
        wanted: Vec<(Hash, Vec<u32>)>,
        tag: u64,
    },
    /// An operator blocks a peer (admin API): disconnected, and neither
    /// dialled nor accepted until unblocked.
    Ban {
        peer: PeerId,
    },
    Unban {
        peer: PeerId,
    },
    /// The peer sent something invalid.
    Penalize {
        peer: PeerId,
        reason: String,
    },
    /// The node's verdict on what [`Event::Gossip`] delivered from `peer`
    /// (with `id` when it came by gossip rather than a direct push).
    Judge {
        peer: PeerId,
        id: Option<GossipId>,
        verdict: Verdict,
    },
}

/// What the network tells the node.
#[derive(Debug)]
pub enum Event {
    /// A gossip message (or transactions pushed directly, `id` `None`): the
    /// node answers with [`Command::Judge`].
    Gossip {
        topic: Topic,
        from: PeerId,
        data: Vec<u8>,
        id: Option<GossipId>,
    },
    Consensus {
        from: PeerId,
        data: Vec<u8>,
    },
    Blocks {
        from: PeerId,
        blocks: Vec<Vec<u8>>,
    },
    /// A sync request failed (peer gone, timeout, bad response).
    SyncFailed {
        peer: PeerId,
    },
    /// The answer to [`Command::GetBlockTransactions`] `tag`: per block
    /// asked about, the encoded transactions; `None` if the request failed
    /// (peer gone, busy, timeout).
    BlockTransactions {
        from: PeerId,
        tag: u64,
        txs: Option<Vec<Vec<u8>>>,
    },
    PeerConnected(PeerId),
    PeerDisconnected(PeerId),
}

/// Serves block sync requests from the node's store.
pub trait BlockSource: Send + Sync + 'static {
    /// Encoded final blocks from height `from`: at most `max`, and no more
    /// once [`SYNC_RESPONSE_BUDGET`] bytes are reached.
    fn blocks(&self, from: u64, max: u32) -> Vec<Vec<u8>>;
    /// Encoded blocks of the canonical chain after the first hash of
    /// `locator` on it (none if no hash is), with the same limits.
    fn blocks_after(&self, locator: &[Hash], max: u32) -> Vec<Vec<u8>>;
    /// Per block of `wanted` (by hash), the encoded list of its
    /// transactions at the positions given; an empty list for a block the
    /// source does not hold or positions it does not have.
    fn block_transactions(&self, wanted: &[(Hash, Vec<u32>)]) -> Vec<Vec<u8>>;
}

/// A connected peer, as `/peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub address: String,
    pub agent: Option<String>,
    pub penalty: u32,
}

/// Network settings.
#[derive(Debug)]
pub struct Config {
    pub keypair: Keypair,
    pub listen: Multiaddr,
    pub bootstrap: Vec<Multiaddr>,
    pub genesis_hash: Hash,
    /// Most peers kept connected, not counting [`Config::reserved`] ones.
    pub max_peers: usize,
    /// Peers that always get a connection (validators, bootstrap peers):
    /// when the node is full, an inbound peer is evicted for them.
    pub reserved: Vec<PeerId>,
    pub agent: String,
}

/// The running network: send [`Command`]s, receive [`Event`]s.
#[derive(Debug)]
pub struct Network {
    pub commands: mpsc::Sender<Command>,
    pub events: mpsc::Receiver<Event>,
    pub local_peer_id: PeerId,
    /// Connected peers, kept current by the swarm task.
    pub peers: Arc<Mutex<Vec<PeerInfo>>>,
    /// Peers blocked (by an operator or for misbehaviour).
    pub banned: Arc<Mutex<Vec<String>>>,
    /// Events dropped because the node's queue was full.
    pub dropped_events: Arc<AtomicU64>,
    /// Sync requests answered [`Response::Busy`].
    pub busy_answers: Arc<AtomicU64>,
}

/// Starting the network failed.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    #[error("cannot set up libp2p: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    block_list: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    gossipsub: gossipsub::Behaviour,
    rr: request_response::cbor::Behaviour<Request, Response>,
    identify: identify::Behaviour,
}

fn protocol_version(genesis: &Hash) -> String {
    format!("cairn/{}", genesis.to_hex())
}

/// Starts the swarm task. Must run inside a tokio runtime.
pub fn start(config: Config, source: Arc<dyn BlockSource>) -> Result<Network, P2pError> {
    let genesis = config.genesis_hash;
    let short = &genesis.to_hex()[..16];
    let idents: Vec<(gossipsub::IdentTopic, Topic)> = Topic::ALL
        .iter()
        .map(|t| {
            (
                gossipsub::IdentTopic::new(format!("/cairn/{short}/{}", t.name())),
                *t,
            )
        })
        .collect();
    let topics: HashMap<gossipsub::TopicHash, Topic> =
        idents.iter().map(|(i, t)| (i.hash(), *t)).collect();
    let rr_protocol = StreamProtocol::try_from_owned(format!("/cairn/{short}/req/1"))
        .map_err(|e| P2pError::Setup(e.to_string()))?;
    let version = protocol_version(&genesis);
    let agent = config.agent.clone();

    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(config.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| P2pError::Setup(e.to_string()))?
        .with_behaviour(|key| {
            // Gossip messages are not signed by libp2p: every payload
            // carries its own signatures (transactions by their senders,
            // consensus messages by validators; proof-of-work blocks prove
            // their work), checked by the node. A libp2p signature per
            // message would hash every byte again with SHA-512 on the
            // publisher and on every receiver. Messages are identified by
            // the SHA-256 of their topic and content, so a payload is
            // delivered once whoever publishes or forwards it.
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                // Nothing is forwarded before the node has checked it.
                .validate_messages()
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(
                        Hash::digest_parts(&[m.topic.as_str().as_bytes(), &m.data])
                            .0
                            .to_vec(),
                    )
                })
                .idontwant_on_publish(true)
                .max_transmit_size(MAX_BLOCK_BYTES + 64 * 1024)
                .build()
                .map_err(|e| e.to_string())?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                gossip_config,
            )?;
            let (params, thresholds) = score_params(&topics);
            gossipsub.with_peer_score(params, thresholds)?;
            // Payloads travel as CBOR byte strings (serde_bytes): copied,
            // not written as arrays of small integers.
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(MAX_BLOCK_BYTES as u64 + 4 * 1024 * 1024)
                .set_response_size_maximum(
                    (SYNC_RESPONSE_BUDGET + MAX_BLOCK_BYTES) as u64 + 1024 * 1024,
                );
            let rr = request_response::Behaviour::with_codec(
                codec,
                [(rr_protocol, request_response::ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(20))
                    .with_max_concurrent_streams(MAX_STREAMS_PER_CONNECTION),
            );
            let identify = identify::Behaviour::new(
                identify::Config::new(version.clone(), key.public()).with_agent_version(agent),
            );
            Ok(Behaviour {
                block_list: Default::default(),
                gossipsub,
                rr,
                identify,
            })
        })
        .map_err(|e| P2pError::Setup(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();

    for (topic, _) in &idents {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(topic)
            .map_err(|e| P2pError::Setup(e.to_string()))?;
    }
    swarm
        .listen_on(config.listen.clone())
        .map_err(|e| P2pError::Listen {
            addr: config.listen.to_string(),
            reason: e.to_string(),
        })?;
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, "cannot dial bootstrap peer: {e}");
        }
    }

    let (cmd_tx, cmd_rx) = mpsc::channel(4096);
    let (ev_tx, ev_rx) = mpsc::channel(4096);
    let peers = Arc::new(Mutex::new(Vec::new()));
    let banned_list = Arc::new(Mutex::new(Vec::new()));
    let dropped = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let (served_tx, served_rx) = mpsc::unbounded_channel();
    let local_peer_id = *swarm.local_peer_id();
    let task = SwarmTask {
        swarm,
        topics,
        short: short.to_owned(),
        version,
        source,
        events: ev_tx,
        peers: peers.clone(),
        banned_list: banned_list.clone(),
        dropped: dropped.clone(),
        busy: busy.clone(),
        serving: HashMap::new(),
        serve_quota: HashMap::new(),
        next_serve: 0,
        served: served_tx,
        connected: HashMap::new(),
        penalties: HashMap::new(),
        banned: HashSet::new(),
        pending_sync: HashMap::new(),
        pending_txs: HashMap::new(),
        bootstrap: config.bootstrap,
        max_peers: config.max_peers,
        reserved: config.reserved.into_iter().collect(),
    };
    tokio::spawn(task.run(cmd_rx, served_rx));
    Ok(Network {
        commands: cmd_tx,
        events: ev_rx,
        local_peer_id,
        peers,
        banned: banned_list,
        dropped_events: dropped,
        busy_answers: busy,
    })
}

/// Gossipsub's peer score: what counts is invalid messages (P4, squared:
/// the third within about twenty seconds takes a peer below the graylist
/// threshold, and its messages are then ignored). Delivery-rate penalties
/// (P3) are off: on a quiet network honest peers deliver nothing. The IP
/// colocation penalty is off: a devnet runs every node on one address.
fn score_params(
    topics: &HashMap<gossipsub::TopicHash, Topic>,
) -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic_params = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        first_message_deliveries_weight: 0.1,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 100.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..Default::default()
    };
    let params = gossipsub::PeerScoreParams {
        topics: topics
            .keys()
            .map(|t| (t.clone(), topic_params.clone()))
            .collect(),
        // The positive topic scores stay small next to one invalid message.
        topic_score_cap: 10.0,
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    topics: HashMap<gossipsub::TopicHash, Topic>,
    short: String,
    version: String,
    source: Arc<dyn BlockSource>,
    events: mpsc::Sender<Event>,
    peers: Arc<Mutex<Vec<PeerInfo>>>,
    banned_list: Arc<Mutex<Vec<String>>>,
    dropped: Arc<AtomicU64>,
    busy: Arc<AtomicU64>,
    /// Sync requests being read from the store, by serve number.
    /// Requests being served: the peer, its channel, and whether the
    /// answer is transactions (or blocks).
    serving: HashMap<u64, (PeerId, request_response::ResponseChannel<Response>, bool)>,
    /// Per peer: whether a request is being served, and the bytes served in
    /// the current window (with its start).
    serve_quota: HashMap<PeerId, ServeQuota>,
    next_serve: u64,
    /// Where store reads hand their blocks back (at most
    /// [`MAX_CONCURRENT_SERVES`] at once).
    served: mpsc::UnboundedSender<(u64, Vec<Vec<u8>>)>,
    /// Connected peers: address, agent, and whether this node dialled.
    connected: HashMap<PeerId, (String, Option<String>, bool)>,
    penalties: HashMap<PeerId, u32>,
    banned: HashSet<PeerId>,
    pending_sync: HashMap<request_response::OutboundRequestId, PeerId>,
    /// Outstanding [`Command::GetBlockTransactions`]: the peer and the tag.
    pending_txs: HashMap<request_response::OutboundRequestId, (PeerId, u64)>,
    bootstrap: Vec<Multiaddr>,
    max_peers: usize,
    reserved: HashSet<PeerId>,
}

/// What one peer has had of this node's block serving.
#[derive(Debug)]
struct ServeQuota {
    in_flight: bool,
    window_start: std::time::Instant,
    bytes: usize,
}

/// A sync request to serve.
enum ServeRequest {
    From { from: u64, max: u32 },
    After { locator: Vec<Hash>, max: u32 },
    Transactions { wanted: Vec<(Hash, Vec<u32>)> },
}

impl SwarmTask {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut served: mpsc::UnboundedReceiver<(u64, Vec<Vec<u8>>)>,
    ) {
        let mut redial = tokio::time::interval(Duration::from_secs(3));
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break, // the node is shutting down
                },
                Some((id, blocks)) = served.recv() => self.on_served(id, blocks),
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                _ = redial.tick() => self.redial(),
            }
        }
    }

    /// Bootstrap peers that dropped (a restarted node) are dialled again.
    fn redial(&mut self) {
        for addr in self.bootstrap.clone() {
            let peer = addr.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(id) => Some(id),
                _ => None,
            });
            if let Some(peer) = peer {
                if self.banned.contains(&peer) || self.swarm.is_connected(&peer) {
                    continue;
                }
            }
            let _ = self.swarm.dial(addr);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish { topic, data } => {
                let t =
                    gossipsub::IdentTopic::new(format!("/cairn/{}/{}", self.short, topic.name()));
                match self.swarm.behaviour_mut().gossipsub.publish(t, data) {
                    Ok(_) => {}
                    // No peers yet is normal on a lone or starting node.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
                    | Err(gossipsub::PublishError::Duplicate) => {
                        tracing::debug!("gossip publish on {topic:?}: nothing to do")
                    }
                    Err(e) => tracing::warn!("gossip publish on {topic:?} failed: {e}"),
                }
            }
            Command::SendConsensus { peer, data } => {
                if self.swarm.is_connected(&peer) {
                    self.swarm
                        .behaviour_mut()
                        .rr
                        .send_request(&peer, Request::Consensus(data));
                }
            }
            Command::SendTransactions { peer, mut txs } => {
                if self.swarm.is_connected(&peer) && !txs.is_empty() {
                    txs.truncate(MAX_PUSHED_TRANSACTIONS);
                    self.swarm.behaviour_mut().rr.send_request(
                        &peer,
                        Request::Transactions(txs.into_iter().map(ByteBuf::from).collect()),
                    );
                }
            }
            Command::GetBlocks { peer, from, max } => {
                let id = self.swarm.behaviour_mut().rr.send_request(
                    &peer,
                    Request::GetBlocks {
                        from,
                        max: max.min(MAX_BLOCKS_PER_REQUEST),
                    },
                );
                self.pending_sync.insert(id, peer);
            }
            Command::GetBlocksAfter { peer, mut locator } => {
                locator.truncate(MAX_LOCATOR_HASHES);
                let id = self.swarm.behaviour_mut().rr.send_request(
                    &peer,
                    Request::GetBlocksAfter {
                        locator,
                        max: MAX_BLOCKS_PER_REQUEST,
                    },
                );
                self.pending_sync.insert(id, peer);
            }
            Command::GetBlockTransactions {
                peer,
                mut wanted,
                tag,
            } => {
                wanted.truncate(MAX_WANTED_BLOCKS);
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_request(&peer, Request::GetBlockTransactions { wanted });
                self.pending_txs.insert(id, (peer, tag));
            }
            Command::Ban { peer } => self.ban(peer, "blocked by the operator"),
            Command::Unban { peer } => {
                tracing::info!(%peer, "peer unblocked by the operator");
                self.banned.remove(&peer);
                self.penalties.remove(&peer);
                self.swarm.behaviour_mut().block_list.unblock_peer(peer);
                self.publish_banned();
            }
            Command::Penalize { peer, reason } => {
                self.penalize(peer, INVALID_MESSAGE_PENALTY, &reason)
            }
            Command::Judge { peer, id, verdict } => self.judge(peer, id, verdict),
        }
    }

    /// Serves a sync request off the swarm task, within the peer's quota:
    /// one request at a time per peer, [`SERVE_BYTES_PER_WINDOW`] per
    /// window, [`MAX_CONCURRENT_SERVES`] in all. Otherwise answers
    /// [`Response::Busy`] at once.
    fn serve(
        &mut self,
        peer: PeerId,
        channel: request_response::ResponseChannel<Response>,
        request: ServeRequest,
    ) {
        let now = std::time::Instant::now();
        let quota = self.serve_quota.entry(peer).or_insert(ServeQuota {
            in_flight: false,
            window_start: now,
            bytes: 0,
        });
        if now.duration_since(quota.window_start) >= SERVE_WINDOW {
            quota.window_start = now;
            quota.bytes = 0;
        }
        let transactions = matches!(request, ServeRequest::Transactions { .. });
        let serving_txs = self.serving.values().filter(|s| s.2).count();
        let busy = if transactions {
            let for_peer = self.serving.values().filter(|s| s.2 && s.0 == peer).count();
            serving_txs >= MAX_CONCURRENT_TRANSACTION_SERVES
                || for_peer >= MAX_TRANSACTION_SERVES_PER_PEER
        } else {
            quota.in_flight || self.serving.len() - serving_txs >= MAX_CONCURRENT_SERVES
        };
        if busy || quota.bytes >= SERVE_BYTES_PER_WINDOW {
            self.busy.fetch_add(1, Ordering::Relaxed);
            let _ = self
                .swarm
                .behaviour_mut()
                .rr
                .send_response(channel, Response::Busy);
            return;
        }
        if !transactions {
            quota.in_flight = true;
        }
        let id = self.next_serve;
        self.next_serve += 1;
        self.serving.insert(id, (peer, channel, transactions));
        let source = self.source.clone();
        let done = self.served.clone();
        tokio::task::spawn_blocking(move || {
            let blocks = match request {
                ServeRequest::From { from, max } => {
                    source.blocks(from, max.min(MAX_BLOCKS_PER_REQUEST))
                }
                ServeRequest::After { locator, max } => {
                    source.blocks_after(&locator, max.min(MAX_BLOCKS_PER_REQUEST))
                }
                ServeRequest::Transactions { wanted } => source.block_transactions(&wanted),
            };
            let _ = done.send((id, blocks));
        });
    }

    /// A store read finished: answer the peer and count its bytes.
    fn on_served(&mut self, id: u64, blocks: Vec<Vec<u8>>) {
        let Some((peer, channel, transactions)) = self.serving.remove(&id) else {
            return;
        };
        if let Some(q) = self.serve_quota.get_mut(&peer) {
            if !transactions {
                q.in_flight = false;
            }
            q.bytes = q
                .bytes
                .saturating_add(blocks.iter().map(Vec::len).sum::<usize>());
        }
        let blocks = blocks.into_iter().map(ByteBuf::from).collect();
        let response = if transactions {
            Response::Transactions(blocks)
        } else {
            Response::Blocks(blocks)
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rr
            .send_response(channel, response);
    }

    /// Reports a verdict to gossipsub (which forwards accepted messages and
    /// scores the deliverer of rejected ones) and penalises what was
    /// rejected.
    fn judge(&mut self, peer: PeerId, id: Option<GossipId>, verdict: Verdict) {
        if let Some(GossipId { id, source }) = id {
            let acceptance = match &verdict {
                Verdict::Accept => gossipsub::MessageAcceptance::Accept,
                Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
                Verdict::Reject(_) => gossipsub::MessageAcceptance::Reject,
            };
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&id, &source, acceptance);
        }
        if let Verdict::Reject(reason) = verdict {
            self.penalize(peer, INVALID_MESSAGE_PENALTY, &reason);
        }
    }

    /// Whether a new connection may stay. Reserved peers (validators,
    /// bootstrap) and peers this node dialled always may, and do not count
    /// against `max_peers`; another inbound peer may while fewer than
    /// `max_peers` others are connected. A reserved peer arriving when the
    /// node is full evicts the inbound peer with the most penalty points.
    fn admit(&mut self, peer: PeerId, dialled: bool) -> bool {
        let reserved = self.reserved.contains(&peer);
        let others: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|(p, (_, _, d))| !*d && !self.reserved.contains(p))
            .map(|(p, _)| *p)
            .collect();
        if reserved || dialled {
            if reserved && others.len() >= self.max_peers {
                if let Some(victim) = others
                    .iter()
                    .max_by_key(|p| self.penalties.get(p).copied().unwrap_or(0))
                {
                    tracing::info!(peer = %victim, "evicting an inbound peer for a reserved one");
                    let _ = self.swarm.disconnect_peer_id(*victim);
                }
            }
            return true;
        }
        others.len() < self.max_peers
    }

    fn penalize(&mut self, peer: PeerId, points: u32, reason: &str) {
        let score = self.penalties.entry(peer).or_default();
        *score = score.saturating_add(points);
        tracing::warn!(%peer, penalty = *score, "peer penalised: {reason}");
        if *score >= BAN_THRESHOLD {
            self.ban(peer, "too many invalid messages");
        }
        self.publish_peers();
    }

    fn ban(&mut self, peer: PeerId, reason: &str) {
        tracing::warn!(%peer, "disconnecting and blocking peer: {reason}");
        self.banned.insert(peer);
        self.swarm.behaviour_mut().block_list.block_peer(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        self.publish_banned();
    }

    fn publish_banned(&self) {
        let mut list: Vec<String> = self.banned.iter().map(PeerId::to_string).collect();
        list.sort();
        if let Ok(mut b) = self.banned_list.lock() {
            *b = list;
        }
    }

    fn publish_peers(&self) {
        let list = self
            .connected
            .iter()
            .map(|(id, (addr, agent, _))| PeerInfo {
                peer_id: id.to_string(),
                address: addr.clone(),
                agent: agent.clone(),
                penalty: self.penalties.get(id).copied().unwrap_or(0),
            })
            .collect();
        if let Ok(mut p) = self.peers.lock() {
            *p = list;
        }
    }

    /// Hands an event to the node without waiting: the swarm task must keep
    /// serving the network (and reading the node's commands) whatever the
    /// node is doing. A full queue drops the event; dropped gossip is
    /// ignored (not forwarded). A closed queue means the node is stopping.
    fn emit(&mut self, event: Event) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(dropped = n, "the node is behind: network events dropped");
                }
                if let Event::Gossip { from, id, .. } = event {
                    self.judge(from, id, Verdict::Ignore);
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    #[allow(clippy::collapsible_match)] // one arm per event reads better here
    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(
                    "p2p listening on {address}/p2p/{}",
                    self.swarm.local_peer_id()
                );
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                if !self.connected.contains_key(&peer_id)
                    && !self.admit(peer_id, endpoint.is_dialer())
                {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let addr = endpoint.get_remote_address().to_string();
                let fresh = self
                    .connected
                    .insert(peer_id, (addr, None, endpoint.is_dialer()))
                    .is_none();
                self.publish_peers();
                if fresh {
                    tracing::info!(%peer_id, "peer connected");
                    self.emit(Event::PeerConnected(peer_id));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    // Quotas of peers gone, whose window has passed.
                    let now = std::time::Instant::now();
                    self.serve_quota.retain(|_, q| {
                        q.in_flight || now.duration_since(q.window_start) < SERVE_WINDOW
                    });
                }
                if num_established == 0 && self.connected.remove(&peer_id).is_some() {
                    tracing::info!(%peer_id, "peer disconnected");
                    self.publish_peers();
                    self.emit(Event::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if info.protocol_version != self.version {
                    self.ban(
                        peer_id,
                        &format!(
                            "different network (protocol {:?}, ours {:?})",
                            info.protocol_version, self.version
                        ),
                    );
                    return;
                }
                if let Some(entry) = self.connected.get_mut(&peer_id) {
                    entry.1 = Some(info.agent_version);
                }
                self.publish_peers();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let Some(topic) = self.topics.get(&message.topic).copied() else {
                    self.judge(
                        propagation_source,
                        Some(GossipId {
                            id: message_id,
                            source: propagation_source,
                        }),
                        Verdict::Ignore,
                    );
                    return;
                };
                let limit = match topic {
                    Topic::Transactions => MAX_TX_BATCH_BYTES,
                    _ => MAX_BLOCK_BYTES + 64 * 1024,
                };
                if message.data.len() > limit {
                    self.judge(
                        propagation_source,
                        Some(GossipId {
                            id: message_id,
                            source: propagation_source,
                        }),
                        Verdict::Reject("oversized gossip".into()),
                    );
                    return;
                }
                self.emit(Event::Gossip {
                    topic,
                    from: propagation_source,
                    data: message.data,
                    id: Some(GossipId {
                        id: message_id,
                        source: propagation_source,
                    }),
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(request_response::Event::Message {
                peer,
                message,
                ..
            })) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => match request {
                    Request::Consensus(data) => {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .rr
                            .send_response(channel, Response::Ack);
                        self.emit(Event::Consensus { from: peer, data });
                    }
                    Request::Transactions(txs) => {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .rr
                            .send_response(channel, Response::Ack);
                        if txs.len() > MAX_PUSHED_TRANSACTIONS
                            || txs.iter().any(|t| t.len() > MAX_TX_BATCH_BYTES)
                        {
                            self.penalize(
                                peer,
                                INVALID_MESSAGE_PENALTY,
                                "oversized transaction push",
                            );
                        } else {
                            // Handled like gossip: checked, penalised if bad.
                            for data in txs {
                                self.emit(Event::Gossip {
                                    topic: Topic::Transactions,
                                    from: peer,
                                    data: data.into_vec(),
                                    id: None,
                                });
                            }
                        }
                    }
                    Request::GetBlocksAfter { locator, max } => {
                        if locator.len() > MAX_LOCATOR_HASHES {
                            self.penalize(peer, INVALID_MESSAGE_PENALTY, "oversized locator");
                            return;
                        }
                        self.serve(peer, channel, ServeRequest::After { locator, max });
                    }
                    Request::GetBlocks { from, max } => {
                        self.serve(peer, channel, ServeRequest::From { from, max });
                    }
                    Request::GetBlockTransactions { wanted } => {
                        if wanted.len() > MAX_WANTED_BLOCKS
                            || wanted.iter().any(|(_, i)| i.len() > MAX_BLOCK_TRANSACTIONS)
                        {
                            self.penalize(
                                peer,
                                INVALID_MESSAGE_PENALTY,
                                "oversized transactions request",
                            );
                            return;
                        }
                        self.serve(peer, channel, ServeRequest::Transactions { wanted });
                    }
                },
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(from) = self.pending_sync.remove(&request_id) {
                        match response {
                            Response::Blocks(blocks) => {
                                let blocks = blocks.into_iter().map(ByteBuf::into_vec).collect();
                                self.emit(Event::Blocks { from, blocks })
                            }
                            Response::Ack | Response::Transactions(_) => {
                                self.penalize(from, INVALID_MESSAGE_PENALTY, "wrong response");
                                self.emit(Event::SyncFailed { peer: from });
                            }
                            Response::Busy => self.emit(Event::SyncFailed { peer: from }),
                        }
                    } else if let Some((from, tag)) = self.pending_txs.remove(&request_id) {
                        let txs = match response {
                            Response::Transactions(txs) => {
                                Some(txs.into_iter().map(ByteBuf::into_vec).collect())
                            }
                            Response::Busy => None,
                            Response::Ack | Response::Blocks(_) => {
                                self.penalize(from, INVALID_MESSAGE_PENALTY, "wrong response");
                                None
                            }
                        };
                        self.emit(Event::BlockTransactions { from, tag, txs });
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Rr(
                request_response::Event::OutboundFailure {
                    peer,
                    request_id,
                    error,
                    ..
                },
            )) => {
                if self.pending_sync.remove(&request_id).is_some() {
                    tracing::debug!(%peer, "sync request failed: {error}");
                    self.emit(Event::SyncFailed { peer });
                } else if let Some((from, tag)) = self.pending_txs.remove(&request_id) {
                    tracing::debug!(%peer, "transactions request failed: {error}");
                    self.emit(Event::BlockTransactions {
                        from,
                        tag,
                        txs: None,
                    });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(
                request_response::Event::InboundFailure { peer, error, .. },
            )) => {
                // Undecodable or oversized requests land here.
                if let request_response::InboundFailure::Io(e) = &error {
                    self.penalize(peer, INVALID_MESSAGE_PENALTY, &format!("bad request: {e}"));
                }
            }
            _ => {}
        }
    }
}
