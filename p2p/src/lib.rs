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
//! - Peers that send data the node finds invalid are penalised
//!   ([`Command::Penalize`]); past a threshold they are disconnected and
//!   blocked for the life of the process.
//!
//! Payloads are opaque bytes here: the node decodes and verifies them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_chain::{Hash, MAX_BLOCK_BYTES, MAX_TRANSACTION_BYTES};
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
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Ack,
    /// Encoded blocks, consecutive from the requested height.
    Blocks(Vec<ByteBuf>),
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
}

/// What the network tells the node.
#[derive(Debug)]
pub enum Event {
    Gossip {
        topic: Topic,
        from: PeerId,
        data: Vec<u8>,
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
    pub max_peers: usize,
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
            // the SHA-256 of their content, so a payload is delivered once
            // whoever publishes or forwards it.
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(Hash::digest(&m.data).0.to_vec())
                })
                .idontwant_on_publish(true)
                .max_transmit_size(MAX_BLOCK_BYTES + 64 * 1024)
                .build()
                .map_err(|e| e.to_string())?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Anonymous,
                gossip_config,
            )?;
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
                request_response::Config::default().with_request_timeout(Duration::from_secs(20)),
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
        connected: HashMap::new(),
        penalties: HashMap::new(),
        banned: HashSet::new(),
        pending_sync: HashMap::new(),
        bootstrap: config.bootstrap,
        max_peers: config.max_peers,
    };
    tokio::spawn(task.run(cmd_rx));
    Ok(Network {
        commands: cmd_tx,
        events: ev_rx,
        local_peer_id,
        peers,
        banned: banned_list,
    })
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
    connected: HashMap<PeerId, (String, Option<String>)>,
    penalties: HashMap<PeerId, u32>,
    banned: HashSet<PeerId>,
    pending_sync: HashMap<request_response::OutboundRequestId, PeerId>,
    bootstrap: Vec<Multiaddr>,
    max_peers: usize,
}

impl SwarmTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut redial = tokio::time::interval(Duration::from_secs(3));
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break, // the node is shutting down
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event).await,
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
                if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(t, data) {
                    // No peers yet is normal on a lone or starting node.
                    tracing::debug!("gossip publish on {topic:?}: {e}");
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
        }
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
            .map(|(id, (addr, agent))| PeerInfo {
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

    async fn emit(&mut self, event: Event) {
        // The node stopping closes the channel; nothing to do then.
        let _ = self.events.send(event).await;
    }

    #[allow(clippy::collapsible_match)] // one arm per event reads better here
    async fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
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
                if self.connected.len() >= self.max_peers && !self.connected.contains_key(&peer_id)
                {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                let addr = endpoint.get_remote_address().to_string();
                let fresh = self.connected.insert(peer_id, (addr, None)).is_none();
                self.publish_peers();
                if fresh {
                    tracing::info!(%peer_id, "peer connected");
                    self.emit(Event::PeerConnected(peer_id)).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 && self.connected.remove(&peer_id).is_some() {
                    tracing::info!(%peer_id, "peer disconnected");
                    self.publish_peers();
                    self.emit(Event::PeerDisconnected(peer_id)).await;
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
                message,
                ..
            })) => {
                let Some(topic) = self.topics.get(&message.topic).copied() else {
                    return;
                };
                let limit = match topic {
                    Topic::Transactions => MAX_TX_BATCH_BYTES,
                    _ => MAX_BLOCK_BYTES + 64 * 1024,
                };
                if message.data.len() > limit {
                    self.penalize(
                        propagation_source,
                        INVALID_MESSAGE_PENALTY,
                        "oversized gossip",
                    );
                    return;
                }
                self.emit(Event::Gossip {
                    topic,
                    from: propagation_source,
                    data: message.data,
                })
                .await;
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
                        self.emit(Event::Consensus { from: peer, data }).await;
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
                                })
                                .await;
                            }
                        }
                    }
                    Request::GetBlocksAfter { locator, max } => {
                        if locator.len() > MAX_LOCATOR_HASHES {
                            self.penalize(peer, INVALID_MESSAGE_PENALTY, "oversized locator");
                            return;
                        }
                        let blocks = self
                            .source
                            .blocks_after(&locator, max.min(MAX_BLOCKS_PER_REQUEST))
                            .into_iter()
                            .map(ByteBuf::from)
                            .collect();
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .rr
                            .send_response(channel, Response::Blocks(blocks));
                    }
                    Request::GetBlocks { from, max } => {
                        let blocks = self
                            .source
                            .blocks(from, max.min(MAX_BLOCKS_PER_REQUEST))
                            .into_iter()
                            .map(ByteBuf::from)
                            .collect();
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .rr
                            .send_response(channel, Response::Blocks(blocks));
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
                                self.emit(Event::Blocks { from, blocks }).await
                            }
                            Response::Ack => {
                                self.penalize(from, INVALID_MESSAGE_PENALTY, "wrong response");
                                self.emit(Event::SyncFailed { peer: from }).await;
                            }
                        }
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
                    self.emit(Event::SyncFailed { peer }).await;
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
