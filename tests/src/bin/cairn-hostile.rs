//! A hostile peer for end-to-end tests: joins a Cairn network over real
//! libp2p connections and sends what an attacker would. Each attack prints
//! its own peer id (`me <peer>`) and one line per thing it saw
//! (`connected <peer>`, `disconnected <peer>`), and exits when done.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cairn_chain::Hash;
use cairn_p2p::{BlockSource, Command, Event, Keypair, Network, Topic};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(about = "A hostile Cairn peer, for tests")]
struct Args {
    /// The network's genesis hash (hex), as `GET /status` shows it.
    #[arg(long)]
    genesis_hash: String,
    /// Peers to connect to (multiaddrs); repeat for several. Without any,
    /// it waits for a peer to connect to it.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// Listen here (default: any free loopback port).
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: String,
    /// Take this libp2p identity (a key file such as a node's `p2p.key`):
    /// a peer id the victims trust, say a validator's.
    #[arg(long)]
    p2p_key: Option<std::path::PathBuf>,
    /// Seconds to stay connected after the attack, watching.
    #[arg(long, default_value_t = 10)]
    linger: u64,
    #[command(subcommand)]
    attack: Attack,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TopicArg {
    Tx,
    Blocks,
    Consensus,
}

#[derive(Debug, Subcommand)]
enum Attack {
    /// Publishes distinct payloads that decode to nothing on a gossip topic,
    /// one every 100 ms, until the peer disconnects it or `count` are out
    /// (a publish before gossip has learnt the peer's topics reaches no
    /// one, so an attacker keeps going).
    Junk {
        #[arg(long, value_enum, default_value = "tx")]
        topic: TopicArg,
        #[arg(long, default_value_t = 100)]
        count: u32,
    },
    /// Sends block sync requests as fast as it can, and prints how many
    /// were answered with blocks and how many refused (`answered N busy M`).
    SyncFlood {
        #[arg(long, default_value_t = 50)]
        requests: u32,
    },
    /// Holds `connections` more connections to the peers, each under an
    /// identity of its own, until the linger time is over (an eclipse
    /// attempt: fill the node's peer slots).
    Occupy {
        #[arg(long, default_value_t = 8)]
        connections: u32,
    },
    /// Posing as a PBFT validator: announces a later block, and serves a
    /// block 1 that executes but was never final (its commit certificate
    /// holds no vote) to whoever syncs from it. Prints `served N`.
    ForgeFinal {
        /// The network's genesis file.
        #[arg(long)]
        genesis: std::path::PathBuf,
    },
    /// Proof-of-work: answers every request for the blocks after a locator
    /// with one block of valid work whose parent nobody has (a detour that
    /// would keep the victim asking this peer). Prints `served N`.
    PowDetour {
        /// The network's genesis file.
        #[arg(long)]
        genesis: std::path::PathBuf,
    },
    /// For `seconds`, one fresh identity after another (each until it is
    /// banned): junk and large payloads on every gossip topic, consensus
    /// messages that claim a validator's index under another key, junk and
    /// oversized direct requests (consensus and pushed transactions), and
    /// genuine consensus messages heard earlier, replayed. Prints one
    /// `flood …` line of counts.
    Flood {
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Proof-of-work: mines blocks on the node's head, at the difficulty
    /// it asks, whose contents are wrong (a made-up state root), and
    /// gossips each as soon as it is found, until the linger time is over.
    /// Prints `published N`.
    PowBadBlocks {
        /// The node's HTTP API, to follow its head.
        #[arg(long)]
        node: String,
    },
}

/// Serves no blocks, or one forged block at height 1, or one detour block
/// after any locator (counting how often).
#[derive(Default)]
struct Blocks {
    forged: Option<Vec<u8>>,
    detour: Option<Vec<u8>>,
    served: std::sync::atomic::AtomicUsize,
}

impl BlockSource for Blocks {
    fn blocks(&self, from: u64, _: u32) -> Vec<Vec<u8>> {
        match (&self.forged, from) {
            (Some(b), 1) => {
                self.served
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                vec![b.clone()]
            }
            _ => Vec::new(),
        }
    }
    fn blocks_after(&self, _: &[Hash], _: u32) -> Vec<Vec<u8>> {
        match &self.detour {
            Some(b) => {
                self.served
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                vec![b.clone()]
            }
            None => Vec::new(),
        }
    }
    fn block_transactions(&self, wanted: &[(Hash, Vec<u32>)]) -> Vec<Vec<u8>> {
        wanted.iter().map(|_| vec![0]).collect()
    }
}

/// A proof-of-work block of the network of `genesis` with twice the work a
/// node holds at the start (a sixteenth of the initial difficulty, at least
/// the minimum) on a parent that does not exist.
fn detour_block(genesis: &std::path::Path) -> Result<cairn_chain::Block> {
    let g = cairn_genesis::Genesis::load(genesis)?;
    let cairn_genesis::ConsensusConfig::Pow(p) = &g.consensus else {
        bail!("pow-detour needs a proof-of-work network");
    };
    let difficulty =
        2 * (p.initial_difficulty / cairn_consensus::pow::FAR_BELOW).max(p.min_difficulty);
    let header = cairn_chain::Header {
        parent: Hash::digest(b"a block nobody has"),
        height: 3,
        timestamp_ms: g.genesis_time_ms + 3_000,
        tx_root: cairn_chain::transactions_root(&[]),
        state_root: Hash::ZERO,
        proposer: cairn_chain::Address::ZERO,
        config: g.segment_at(3).config_hash(),
        engine_data: cairn_consensus::pow::PowSeal {
            difficulty,
            nonce: 0,
        }
        .encode(),
    };
    let (nonce, _) =
        cairn_consensus::pow::search_nonce(&header, 0, u64::MAX).context("no nonce found")?;
    Ok(cairn_chain::Block {
        header: cairn_consensus::pow::with_nonce(&header, nonce).context("sealing")?,
        transactions: Vec::new(),
        seal: Vec::new(),
    })
}

/// What a node reports of its head: hash, height, timestamp, consensus
/// configuration, and the next block's difficulty.
struct PowHead {
    hash: Hash,
    height: u64,
    timestamp_ms: u64,
    config: Hash,
    difficulty: u64,
}

fn pow_head(node: &str) -> Option<PowHead> {
    let get = |path: &str| -> Option<serde_json::Value> {
        ureq::get(&format!("{node}{path}"))
            .call()
            .ok()?
            .body_mut()
            .read_json()
            .ok()
    };
    let c = get("/consensus")?;
    let b = get("/blocks/latest")?;
    Some(PowHead {
        hash: Hash::from_hex(b["hash"].as_str()?).ok()?,
        height: b["height"].as_u64()?,
        timestamp_ms: b["timestamp_ms"].as_u64()?,
        config: Hash::from_hex(b["config"].as_str()?).ok()?,
        difficulty: c["difficulty"].as_u64()?,
    })
}

/// Mines invalid blocks on `node`'s head until `until`; returns how many
/// were published.
async fn mine_bad_blocks(node: &str, net: &Network, until: tokio::time::Instant) -> Result<u32> {
    let mut published = 0;
    let mut nonce_start = 0u64;
    while tokio::time::Instant::now() < until {
        let Some(head) = pow_head(node) else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let header = cairn_chain::Header {
            parent: head.hash,
            height: head.height + 1,
            timestamp_ms: now.max(head.timestamp_ms + 1),
            tx_root: cairn_chain::transactions_root(&[]),
            state_root: Hash::digest(b"not the state this block leads to"),
            proposer: cairn_chain::Address::ZERO,
            // The configuration of the head's segment: the block is wrong
            // only in its state root.
            config: head.config,
            engine_data: cairn_consensus::pow::PowSeal {
                difficulty: head.difficulty,
                nonce: 0,
            }
            .encode(),
        };
        // Search in slices; between them, start again if the head moved.
        let found = tokio::task::block_in_place(|| {
            cairn_consensus::pow::search_nonce(&header, nonce_start, 200_000)
        });
        nonce_start = nonce_start.wrapping_add(200_000);
        let Some((nonce, _)) = found else {
            continue;
        };
        let Some(sealed) = cairn_consensus::pow::with_nonce(&header, nonce) else {
            continue;
        };
        let block = cairn_chain::Block {
            header: sealed,
            transactions: Vec::new(),
            seal: Vec::new(),
        };
        net.commands
            .send(Command::Publish {
                topic: Topic::Blocks,
                data: cairn_chain::CompactBlock::of(&block).encode(),
            })
            .await
            .context("the network task stopped")?;
        published += 1;
        // Wait for the node to see it before mining the next one.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(published)
}

/// Block 1 of the network of `genesis`, valid in every respect but its
/// finality: its seal is a commit certificate without a single commit.
fn forged_block(genesis: &std::path::Path) -> Result<cairn_chain::Block> {
    let g = cairn_genesis::Genesis::load(genesis)?;
    let (block0, state) = g.build();
    let mut mem = cairn_chain::MemState::default();
    mem.apply(&state);
    let proposer = g
        .validators
        .first()
        .map(|v| v.public_key.address())
        .unwrap_or(cairn_chain::Address::ZERO);
    let mut block = cairn_chain::execution::propose_block(
        &mem,
        &g.execution_params(),
        &block0.header,
        proposer,
        block0.header.timestamp_ms + 1_000,
        Vec::new(),
        cairn_consensus::pbft::view_data(0),
    )?
    .block;
    block.seal = cairn_consensus::pbft::Certificate {
        view: 0,
        commits: Vec::new(),
    }
    .encode();
    Ok(block)
}

fn start(genesis_hash: Hash, bootstrap: Vec<cairn_p2p::Address>) -> Result<Network> {
    start_with(
        genesis_hash,
        bootstrap,
        Keypair::generate_ed25519(),
        "/ip4/127.0.0.1/tcp/0",
        Arc::new(Blocks::default()),
    )
}

fn start_with(
    genesis_hash: Hash,
    bootstrap: Vec<cairn_p2p::Address>,
    keypair: Keypair,
    listen: &str,
    source: Arc<Blocks>,
) -> Result<Network> {
    Ok(cairn_p2p::start(
        cairn_p2p::Config {
            keypair,
            listen: listen.parse().context("--listen")?,
            bootstrap,
            genesis_hash,
            max_peers: 50,
            reserved: Vec::new(),
            agent: "cairn-hostile".into(),
        },
        source,
    )?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    // Logs (of its libp2p stack) to stderr with RUST_LOG=…
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let genesis_hash = Hash::from_hex(&args.genesis_hash).context("--genesis-hash")?;
    let bootstrap = args
        .peers
        .iter()
        .map(|p| p.parse().with_context(|| format!("--peer {p}")))
        .collect::<Result<Vec<_>>>()?;
    let keypair = match &args.p2p_key {
        Some(path) => {
            let key = cairn_chain::keyfile::read_key_file(path)?;
            Keypair::ed25519_from_bytes(key.seed()).context("--p2p-key")?
        }
        None => Keypair::generate_ed25519(),
    };
    let source = Arc::new(Blocks {
        forged: match &args.attack {
            Attack::ForgeFinal { genesis } => Some(forged_block(genesis)?.encode()),
            _ => None,
        },
        detour: match &args.attack {
            Attack::PowDetour { genesis } => Some(detour_block(genesis)?.encode()),
            _ => None,
        },
        served: Default::default(),
    });
    let mut net = start_with(
        genesis_hash,
        bootstrap.clone(),
        keypair,
        &args.listen,
        source.clone(),
    )?;
    println!("me {}", net.local_peer_id);
    // Wait for a connection, then for gossipsub to learn the peer's
    // subscriptions (they follow the connection within a heartbeat).
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(ev) = net.events.recv().await {
            if let Event::PeerConnected(p) = ev {
                return Some(p);
            }
        }
        None
    })
    .await;
    let target = match first {
        Ok(Some(p)) => p,
        _ => bail!("no peer connected within 60 s"),
    };
    println!("connected {target}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    match args.attack {
        Attack::Junk { topic, count } => {
            let topic = match topic {
                TopicArg::Tx => Topic::Transactions,
                TopicArg::Blocks => Topic::Blocks,
                TopicArg::Consensus => Topic::Consensus,
            };
            let mut published = 0;
            'publish: while published < count {
                // Distinct payloads: gossip identifies messages by content.
                let data =
                    format!("junk {published} on {topic:?} from a hostile peer").into_bytes();
                net.commands
                    .send(Command::Publish { topic, data })
                    .await
                    .context("the network task stopped")?;
                published += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
                while let Ok(ev) = net.events.try_recv() {
                    if let Event::PeerDisconnected(p) = ev {
                        println!("disconnected {p}");
                        if p == target {
                            break 'publish;
                        }
                    }
                }
            }
            println!("published {published} junk messages on {topic:?}");
        }
        Attack::SyncFlood { requests } => {
            for _ in 0..requests {
                net.commands
                    .send(Command::GetBlocks {
                        peer: target,
                        from: 0,
                        max: cairn_p2p::MAX_BLOCKS_PER_REQUEST,
                    })
                    .await
                    .context("the network task stopped")?;
            }
            let (mut answered, mut busy) = (0, 0);
            let all = tokio::time::timeout(Duration::from_secs(60), async {
                while answered + busy < requests {
                    match net.events.recv().await {
                        Some(Event::Blocks { .. }) => answered += 1,
                        Some(Event::SyncFailed { .. }) => busy += 1,
                        Some(_) => {}
                        None => break,
                    }
                }
            })
            .await;
            if all.is_err() {
                println!("some requests were never answered");
            }
            println!("answered {answered} busy {busy}");
        }
        Attack::Occupy { connections } => {
            for _ in 0..connections {
                let extra = start(genesis_hash, bootstrap.clone())?;
                // Keep each identity's network running (its command sender
                // alive, its events drained) for the rest of the run.
                tokio::spawn(async move {
                    let mut extra = extra;
                    while extra.events.recv().await.is_some() {}
                });
            }
            println!("opened {connections} more connections");
        }
        Attack::ForgeFinal { .. } => {
            // Announce a later final block: a node behind syncs from the
            // announcer (a validator, as far as it can tell).
            let forged = cairn_chain::Block::decode(source.forged.as_deref().unwrap_or(&[]))
                .context("the forged block")?;
            let announced = cairn_chain::Header {
                height: 5,
                ..forged.header
            };
            net.commands
                .send(Command::Publish {
                    topic: Topic::Blocks,
                    data: cairn_chain::codec::encode(&announced),
                })
                .await
                .context("the network task stopped")?;
            println!("announced height 5");
        }
        // Served when the victim asks (it does as the peer connects).
        Attack::PowDetour { .. } => {}
        Attack::PowBadBlocks { node } => {
            let until = tokio::time::Instant::now() + Duration::from_secs(args.linger);
            let published = mine_bad_blocks(&node, &net, until).await?;
            println!("published {published}");
        }
        Attack::Flood { seconds } => {
            let heard = listen_for_consensus(&mut net, Duration::from_secs(5)).await;
            let until = tokio::time::Instant::now() + Duration::from_secs(seconds);
            let mut counts = FloodCounts::default();
            while tokio::time::Instant::now() < until {
                flood_once(genesis_hash, &bootstrap, &heard, until, &mut counts).await?;
            }
            println!(
                "flood identities {} banned {} messages {} bytes {} replayed {}",
                counts.identities, counts.banned, counts.messages, counts.bytes, counts.replayed
            );
        }
    }

    let watch = tokio::time::sleep(Duration::from_secs(args.linger));
    tokio::pin!(watch);
    loop {
        tokio::select! {
            _ = &mut watch => break,
            ev = net.events.recv() => match ev {
                Some(Event::PeerConnected(p)) => println!("connected {p}"),
                Some(Event::PeerDisconnected(p)) => println!("disconnected {p}"),
                Some(_) => {}
                None => break,
            },
        }
    }
    if source.forged.is_some() || source.detour.is_some() {
        println!(
            "served {}",
            source.served.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    Ok(())
}

/// Consensus messages (signed envelopes) this peer hears within `within`,
/// gossiped or sent to it: material for replays.
async fn listen_for_consensus(net: &mut Network, within: Duration) -> Vec<Vec<u8>> {
    let mut heard = Vec::new();
    let _ = tokio::time::timeout(within, async {
        while let Some(ev) = net.events.recv().await {
            match ev {
                Event::Gossip {
                    topic: Topic::Consensus,
                    data,
                    ..
                }
                | Event::Consensus { data, .. } => heard.push(data),
                _ => {}
            }
        }
    })
    .await;
    heard
}

#[derive(Debug, Default)]
struct FloodCounts {
    identities: u64,
    banned: u64,
    messages: u64,
    bytes: u64,
    replayed: u64,
}

/// One fresh identity floods until it is disconnected (banned) or `until`.
async fn flood_once(
    genesis_hash: Hash,
    bootstrap: &[cairn_p2p::Address],
    heard: &[Vec<u8>],
    until: tokio::time::Instant,
    counts: &mut FloodCounts,
) -> Result<()> {
    use cairn_consensus::pbft::{PbftMessage, Phase, Vote};
    use cairn_consensus::{ConsensusMessage, SignedMessage};

    let mut net = start(genesis_hash, bootstrap.to_vec())?;
    let connected = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = net.events.recv().await {
            if let Event::PeerConnected(p) = ev {
                return Some(p);
            }
        }
        None
    })
    .await;
    let Ok(Some(target)) = connected else {
        // Refused (a full node, say): try another identity.
        tokio::time::sleep(Duration::from_millis(200)).await;
        return Ok(());
    };
    counts.identities += 1;
    // Let gossipsub learn the target's subscriptions.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let impostor = cairn_chain::SecretKey::generate(&mut rand::rngs::OsRng);
    let mut round: u64 = 0;
    let send = |net: &Network, cmd: Command| net.commands.try_send(cmd).is_ok();
    loop {
        round += 1;
        let mut batch: Vec<Command> = Vec::new();
        for topic in [Topic::Transactions, Topic::Blocks, Topic::Consensus] {
            batch.push(Command::Publish {
                topic,
                data: format!("flood {round} {topic:?} {}", target).into_bytes(),
            });
        }
        if round % 16 == 1 {
            // Large: a megabyte of junk as a block, four as a consensus
            // request, and a request over the protocol's size limit.
            batch.push(Command::Publish {
                topic: Topic::Blocks,
                data: vec![round as u8; 1 << 20],
            });
            batch.push(Command::SendConsensus {
                peer: target,
                data: vec![0xff; 4 << 20],
            });
            batch.push(Command::SendConsensus {
                peer: target,
                data: vec![0xee; cairn_chain::MAX_BLOCK_BYTES + (5 << 20)],
            });
        }
        // A vote that claims validator 0's index, signed with another key.
        let vote = Vote::sign(
            &genesis_hash,
            &impostor,
            Phase::Prepare,
            0,
            round,
            Hash::digest(&round.to_le_bytes()),
            0,
        );
        let spoofed = SignedMessage::sign(
            &genesis_hash,
            0,
            &impostor,
            &ConsensusMessage::Pbft(PbftMessage::Prepare(vote)),
        );
        batch.push(Command::Publish {
            topic: Topic::Consensus,
            data: spoofed.encode(),
        });
        batch.push(Command::SendTransactions {
            peer: target,
            txs: vec![format!("junk transaction {round}").into_bytes(); 64],
        });
        if !heard.is_empty() {
            let old = heard[(round as usize) % heard.len()].clone();
            batch.push(Command::SendConsensus {
                peer: target,
                data: old,
            });
            counts.replayed += 1;
        }
        for cmd in batch {
            let size = match &cmd {
                Command::Publish { data, .. } | Command::SendConsensus { data, .. } => data.len(),
                Command::SendTransactions { txs, .. } => txs.iter().map(Vec::len).sum(),
                _ => 0,
            };
            if send(&net, cmd) {
                counts.messages += 1;
                counts.bytes += size as u64;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok(ev) = net.events.try_recv() {
            if let Event::PeerDisconnected(p) = ev {
                if p == target {
                    counts.banned += 1;
                    return Ok(());
                }
            }
        }
        if tokio::time::Instant::now() >= until {
            return Ok(());
        }
    }
}
