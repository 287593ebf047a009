//! `cairn-node devnet`: generates (or reuses) a local network and supervises
//! one `cairn-node run` process per node. Ctrl-C or SIGTERM stops every
//! child (SIGTERM, then SIGKILL after 10 s); a child also dies with its
//! supervisor (Linux parent-death signal), so no node outlives the devnet.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_genesis::{EngineKind, Genesis, NetworkSpec, NodeConfig};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Prints a line, ignoring a closed stdout (a reader that went away must not
/// stop the supervisor from stopping its nodes).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod upgrade;

const SUPERVISOR_ENV: &str = "CAIRN_DEVNET_SUPERVISOR";

/// In a devnet child: die when the supervisor dies.
pub fn die_with_supervisor() {
    let Ok(pid) = std::env::var(SUPERVISOR_ENV) else {
        return;
    };
    if nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).is_err() {
        return;
    }
    // The supervisor may have died before the signal was armed.
    if pid.parse::<i32>().ok() != Some(nix::unistd::getppid().as_raw()) {
        std::process::exit(1);
    }
}

/// Refuses a request for another engine or validator count than the
/// network in `dir` runs, saying what it holds and how to go on.
fn check_request(
    held: &Genesis,
    dir: &Path,
    engine: Option<EngineKind>,
    validators: Option<usize>,
) -> Result<()> {
    let last = held.segment_at(u64::MAX);
    let held_engine = last.consensus.kind();
    let held_size = last.validators.len();
    let engine_differs = engine.is_some_and(|e| e != held_engine);
    let size_differs = validators.is_some_and(|v| v != held_size);
    if !engine_differs && !size_differs {
        return Ok(());
    }
    let asked = format!(
        "{} network{}",
        engine.unwrap_or(held_engine),
        validators.map_or(String::new(), |v| format!(" of {v} validators"))
    );
    let target = engine.unwrap_or(held_engine);
    let upgrade = format!(
        "To switch this chain to {target} at a coming height H instead, keeping its blocks and \
         balances (before starting it, or while it runs: the devnet applies it):\n  \
         cairn-genesis upgrade --dir {dir} --at-height H --engine {target} \
         [--validators node0,node1,...]\n",
        dir = dir.display()
    );
    anyhow::bail!(
        "{dir} holds a {held_engine} network of {held_size} validators (chain {chain}, genesis \
         {genesis}), not a {asked}.\n\
         To start a new chain instead (its blocks and balances are deleted):\n  \
         cairn-node devnet --dir {dir} --engine {target} --fresh   (make devnet ENGINE={target} FRESH=1)\n\
         {upgrade}\
         To run the network that is there: leave out --engine and --validators.",
        dir = dir.display(),
        chain = held.chain_id,
        genesis = held.hash(),
    )
}

/// Starts `node`'s process, its output to `node.log` (appended to after a
/// restart).
fn spawn(exe: &Path, node: &Node, append: bool) -> Result<Child> {
    let path = node.home.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Command::new(exe)
        .arg("run")
        .arg("--home")
        .arg(&node.home)
        .env(SUPERVISOR_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", node.name))
}

struct Node {
    name: String,
    home: std::path::PathBuf,
    rpc_addr: std::net::SocketAddr,
    rpc: String,
    p2p: String,
    child: Option<Child>,
}

/// The validators a new network of `engine` gets unless told: the fewest
/// that tolerate one fault.
pub fn default_validators(engine: EngineKind) -> usize {
    match engine {
        EngineKind::Raft => 3,
        EngineKind::Pbft | EngineKind::Pow => 4,
    }
}

/// What `cairn-node devnet` was asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Engine of a new network (Raft if not given).
    pub engine: Option<EngineKind>,
    pub validators: Option<usize>,
    pub fresh: bool,
    pub base_port: u16,
    pub bench_accounts: u32,
    /// Switches of a new network: `(height, engine)` after the first.
    pub schedule: Vec<(u64, EngineKind)>,
}

/// Parses `raft,pbft@200,raft@400`: the genesis engine, then each switch
/// as `engine@height`, in height order.
pub fn parse_schedule(text: &str) -> Result<(EngineKind, Vec<(u64, EngineKind)>)> {
    let mut parts = text.split(',').map(str::trim);
    let first = parts
        .next()
        .filter(|p| !p.is_empty())
        .context("--schedule: empty (expected e.g. raft,pbft@200,raft@400)")?;
    let genesis: EngineKind = first
        .parse()
        .map_err(|e| anyhow::anyhow!("--schedule: {e}"))?;
    let mut switches = Vec::new();
    let mut last = 0;
    for p in parts {
        let (engine, height) = p
            .split_once('@')
            .with_context(|| format!("--schedule: {p:?} is not engine@height"))?;
        let engine: EngineKind = engine
            .parse()
            .map_err(|e| anyhow::anyhow!("--schedule: {e}"))?;
        let height: u64 = height
            .parse()
            .with_context(|| format!("--schedule: {height:?} is not a height"))?;
        if height <= last {
            anyhow::bail!("--schedule: heights must increase, and start above 0 ({p})");
        }
        last = height;
        switches.push((height, engine));
    }
    Ok((genesis, switches))
}

/// Runs the devnet in `dir`: the network there, or a new one of
/// `opts.engine` (Raft if not given) with `opts.validators` validators and
/// the switches of `opts.schedule`. Asking for another engine or size than
/// the network in `dir` has is an error that says what is there, unless
/// `fresh` deletes it first. While it runs, an upgrade appended to
/// `dir/genesis.json` (`cairn-genesis upgrade`) is applied by restarting
/// the nodes one at a time.
pub fn run(dir: &Path, opts: Options) -> Result<()> {
    let Options {
        engine,
        validators,
        fresh,
        base_port,
        bench_accounts,
        schedule,
    } = opts;
    if fresh && dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot delete {}", dir.display()))?;
    }
    let genesis_path = dir.join("genesis.json");
    if genesis_path.exists() {
        let held = Genesis::load(&genesis_path)?;
        check_request(&held, dir, engine, validators)?;
        if !schedule.is_empty() {
            let asked: Vec<(u64, EngineKind)> =
                std::iter::once((0, engine.unwrap_or(EngineKind::Raft)))
                    .chain(schedule.iter().copied())
                    .collect();
            let has: Vec<(u64, EngineKind)> = held
                .segments()
                .iter()
                .map(|s| (s.start, s.consensus.kind()))
                .collect();
            if asked != has {
                anyhow::bail!(
                    "{} holds a network with another schedule ({}); --fresh starts a new one",
                    dir.display(),
                    has.iter()
                        .map(|(h, e)| if *h == 0 {
                            e.to_string()
                        } else {
                            format!("{e}@{h}")
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                );
            }
        }
        println!(
            "Reusing the {} network in {} (--fresh for a new one).",
            held.segment_at(u64::MAX).consensus.kind(),
            dir.display()
        );
    } else {
        let engine = engine.unwrap_or(EngineKind::Raft);
        let validators = validators.unwrap_or(
            std::iter::once(engine)
                .chain(schedule.iter().map(|(_, e)| *e))
                .map(default_validators)
                .max()
                .unwrap_or(3),
        );
        let spec = NetworkSpec {
            engine,
            validators,
            base_port,
            bench_accounts,
            ..NetworkSpec::default()
        };
        cairn_genesis::generate(&spec, dir)?;
        for (height, next) in &schedule {
            cairn_genesis::add_upgrade(
                dir,
                &cairn_genesis::UpgradeSpec {
                    height: *height,
                    consensus: cairn_genesis::ConsensusConfig::default_for(*next),
                    validators: None,
                },
            )?;
        }
        println!(
            "Generated a {engine} network of {validators} validators in {}.",
            dir.display()
        );
        for (height, next) in &schedule {
            println!("  switches to {next} at height {height}");
        }
    }
    let genesis = Genesis::load(&genesis_path)?;
    let mut nodes = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join(NodeConfig::FILE).exists())
        .collect();
    entries.sort();
    for home in entries {
        let cfg = NodeConfig::load(&home)?;
        let peer = genesis
            .validators
            .iter()
            .find(|v| v.name == cfg.name)
            .map(|v| v.p2p_address.clone())
            .unwrap_or_else(|| cfg.p2p.listen.clone());
        nodes.push(Node {
            name: cfg.name,
            home,
            rpc_addr: cfg.rpc.listen,
            rpc: format!("http://{}", cfg.rpc.listen),
            p2p: peer,
            child: None,
        });
    }
    let exe = std::env::current_exe().context("cannot find the cairn-node binary")?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook_flag(&stop)?;
    for n in &mut nodes {
        n.child = Some(spawn(&exe, n, false)?);
    }
    println!();
    println!("NODE     PID     RPC                      P2P");
    for n in &nodes {
        let pid = n.child.as_ref().map(|c| c.id()).unwrap_or(0);
        println!("{:<8} {:<7} {:<24} {}", n.name, pid, n.rpc, n.p2p);
    }
    println!();
    println!(
        "Chain {} ({}), genesis {}",
        genesis.chain_id,
        genesis.consensus.kind(),
        genesis.hash()
    );
    match serve_dashboard(base_port.saturating_sub(1), &genesis, &nodes) {
        Ok(url) => println!("Dashboard: {url}"),
        Err(e) => say!("no dashboard: {e:#}"),
    }
    println!("Logs: {}/node*/node.log", dir.display());
    println!("Send a transfer from the funded faucet key:");
    println!(
        "  cairn-wallet --node {} transfer --key {} --to $(cairn-wallet address --key {}) --amount 1000 --wait",
        nodes.first().map(|n| n.rpc.as_str()).unwrap_or("http://127.0.0.1:26601"),
        dir.join("faucet.key").display(),
        dir.join("faucet.key").display(),
    );
    println!("Ctrl-C stops every node.");

    let mut watch = upgrade::Watch::new(&genesis_path, genesis.clone());
    while !stop.load(Ordering::SeqCst) {
        watch.poll(&exe, &mut nodes, &stop);
        for n in &mut nodes {
            if let Some(c) = n.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    say!(
                        "{} exited ({status}); see {}/node.log",
                        n.name,
                        n.home.display()
                    );
                    n.child = None;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    say!(
        "Stopping {} nodes...",
        nodes.iter().filter(|n| n.child.is_some()).count()
    );
    for n in &nodes {
        if let Some(c) = &n.child {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for n in &mut nodes {
        if let Some(c) = n.child.as_mut() {
            wait_or_kill(c, deadline);
        }
    }
    say!("All nodes stopped.");
    Ok(())
}

/// Serves the network's dashboard on 127.0.0.1:`port` (a thread of its
/// own): the page, and `/network.json` with every node's name and API.
fn serve_dashboard(port: u16, genesis: &Genesis, nodes: &[Node]) -> Result<String> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    listener.set_nonblocking(true)?;
    let network = serde_json::json!({
        "chain_id": genesis.chain_id,
        "engine": genesis.consensus.kind().as_str(),
        "nodes": nodes
            .iter()
            .map(|n| serde_json::json!({"name": n.name, "rpc": n.rpc}))
            .collect::<Vec<_>>(),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let app = crate::dashboard::routes().route(
                "/network.json",
                axum::routing::get(move || {
                    let network = network.clone();
                    async move { axum::Json(network) }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok(format!("http://127.0.0.1:{port}/"))
}

/// Waits for `child` to exit until `deadline`, then kills it.
fn wait_or_kill(child: &mut Child, deadline: Instant) {
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Sets `flag` on SIGINT or SIGTERM (a small tokio runtime on its own thread).
fn signal_hook_flag(flag: &Arc<AtomicBool>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let flag = flag.clone();
    std::thread::spawn(move || {
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        });
    });
    Ok(())
}
