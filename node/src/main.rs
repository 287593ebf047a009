//! `cairn-node`: run one node, or a whole local devnet.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_genesis::EngineKind;
use clap::{Parser, Subcommand};

/// mimalloc rather than the system allocator: under load a node allocates
/// and frees many short-lived buffers (transaction batches, blocks, state
/// entries); glibc's allocator kept a node at its peak size long after the
/// load stopped (measured: ~210 MB against ~40 MB idle), mimalloc returns
/// freed pages to the system (an idle node asks it to at once: see
/// `cairn_allocator`) and allocates faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cairn-node",
    version,
    about = "A blockchain node with pluggable consensus"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the home of a node that joins an existing network as a
    /// follower: a copy of its genesis, a p2p key and a node.toml that
    /// dials the given peers. It syncs from genesis, follows the head,
    /// serves the API and gossips transactions.
    Init {
        #[arg(long)]
        home: PathBuf,
        /// The network's genesis.json.
        #[arg(long)]
        genesis: PathBuf,
        /// Peers to dial at start: p2p addresses ending in /p2p/<peer id>
        /// (comma-separated, or the option repeated).
        #[arg(long, value_delimiter = ',', required = true)]
        bootstrap: Vec<String>,
        /// Where to listen for peers.
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/26700")]
        p2p_listen: String,
        /// Where to serve the HTTP API.
        #[arg(long, default_value = "127.0.0.1:26701")]
        rpc_listen: std::net::SocketAddr,
        /// A name for logs and status (default: the home folder's).
        #[arg(long)]
        name: Option<String>,
    },
    /// Run one node from DIR/node.toml.
    Run {
        #[arg(long)]
        home: PathBuf,
    },
    /// Generate (or reuse) a local network and run every node of it.
    Devnet {
        /// Engine of a new network (default: raft); a network already in
        /// DIR keeps its own, and asking for another is refused.
        #[arg(long)]
        engine: Option<EngineKind>,
        /// Validators of a new network (default: 3 for Raft, 4 for PBFT
        /// and proof-of-work, the fewest that tolerate one fault).
        #[arg(long)]
        validators: Option<usize>,
        #[arg(long, default_value = "devnet")]
        dir: PathBuf,
        /// Delete the network in DIR first and generate a new one.
        #[arg(long)]
        fresh: bool,
        /// Node i listens on BASE+2i (p2p) and BASE+2i+1 (HTTP).
        #[arg(long, default_value_t = 26600)]
        base_port: u16,
        /// Fund this many benchmark accounts (seed 0) in a new network, for
        /// `cairn-wallet bench`.
        #[arg(long, default_value_t = 0)]
        bench_accounts: u32,
        /// Engines of a new network by height, e.g. raft,pbft@200,raft@400:
        /// the first from genesis, each next from its height on.
        #[arg(long, conflicts_with = "engine")]
        schedule: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libp2p=warn,libp2p_gossipsub=error".into()),
        )
        .with_target(false)
        .init();
    let result = match cli.command {
        Cmd::Init {
            home,
            genesis,
            bootstrap,
            p2p_listen,
            rpc_listen,
            name,
        } => cairn_node::init::init(&cairn_node::init::InitSpec {
            home: home.clone(),
            genesis,
            bootstrap,
            p2p_listen,
            rpc_listen,
            name,
        })
        .map(|address| {
            println!("Wrote a follower node in {}.", home.display());
            println!("  its p2p address: {address}");
            println!(
                "  start it with:   cairn-node run --home {}",
                home.display()
            );
        }),
        Cmd::Run { home } => {
            cairn_node::devnet::die_with_supervisor();
            match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                // An idle node asks every thread to give its free pages
                // back: workers do as they go idle.
                .on_thread_park(cairn_allocator::collect_if_requested)
                .build()
            {
                Ok(rt) => rt.block_on(cairn_node::node::run(&home)),
                Err(e) => Err(e.into()),
            }
        }
        Cmd::Devnet {
            engine,
            validators,
            dir,
            fresh,
            base_port,
            bench_accounts,
            schedule,
        } => (|| {
            let (engine, schedule) = match schedule {
                Some(text) => {
                    let (first, rest) = cairn_node::devnet::parse_schedule(&text)?;
                    (Some(first), rest)
                }
                None => (engine, Vec::new()),
            };
            cairn_node::devnet::run(
                &dir,
                cairn_node::devnet::Options {
                    engine,
                    validators,
                    fresh,
                    base_port,
                    bench_accounts,
                    schedule,
                },
            )
        })(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("error: {text}");
            if text.contains("No space left on device") {
                eprintln!(
                    "hint: the disk holding the node's data directory is full; free space and \
                     start the node again (what it committed is kept)"
                );
            }
            ExitCode::FAILURE
        }
    }
}
