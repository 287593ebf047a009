//! `cairn-sim`: runs the consensus simulator's scenarios. `run` replays one
//! seed; `soak` runs thousands of seeds per scenario on every core.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use cairn_sim::scenarios::{self, Failure, Options, Scenario};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn-sim",
    about = "Cairn's deterministic consensus simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists the scenarios and the network sizes each runs on.
    List,
    /// Runs one scenario for one seed (replays a failure).
    Run {
        scenario: String,
        #[arg(long)]
        nodes: u32,
        #[arg(long)]
        seed: u64,
        /// Also record the trace and print its digest (same seed, same
        /// digest).
        #[arg(long)]
        trace: bool,
        /// Print what happens (roles, final blocks, faults) and what the
        /// drivers log (`RUST_LOG` filters it; default `info`) to stderr.
        #[arg(long)]
        log: bool,
        /// With --log, every consensus message delivered too (kind, view
        /// or term, height, block).
        #[arg(long)]
        log_messages: bool,
        /// Run every node on the node's RocksDB store (in a temporary
        /// directory) instead of in memory.
        #[arg(long)]
        rocksdb: bool,
    },
    /// Runs many seeds of every scenario (or the ones named).
    Soak {
        /// Scenarios to run (all if none); a prefix such as `raft/` works.
        scenarios: Vec<String>,
        #[arg(long, default_value_t = 10_000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        first: u64,
        /// Only this network size.
        #[arg(long)]
        nodes: Option<u32>,
        /// Worker threads (default: every core).
        #[arg(long)]
        jobs: Option<usize>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            for s in scenarios::all() {
                println!("{:<34} nodes {:?}", s.name, s.sizes);
            }
            ExitCode::SUCCESS
        }
        Command::Run {
            scenario,
            nodes,
            seed,
            trace,
            log,
            log_messages,
            rocksdb,
        } => {
            let log = log || log_messages;
            let Some(s) = scenarios::find(&scenario) else {
                eprintln!("error: no scenario {scenario:?} (see `cairn-sim list`)");
                return ExitCode::from(2);
            };
            if log {
                // The driver's own log lines, tagged with node and time.
                tracing_subscriber::fmt()
                    .with_env_filter(
                        tracing_subscriber::EnvFilter::try_from_default_env()
                            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                    )
                    .without_time()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    .init();
            }
            let started = Instant::now();
            match scenarios::run(
                &s,
                nodes,
                seed,
                Options {
                    trace,
                    log,
                    log_messages,
                    rocksdb,
                },
            ) {
                Ok(r) => {
                    println!(
                        "ok: {} on {nodes} nodes, seed {seed}: {} simulated ms, height {}, {} transfers acknowledged, {} events, {} messages delivered, {} dropped, {} crashes, {} penalties ({:.2} s)",
                        s.name,
                        r.sim_ms,
                        r.final_height,
                        r.acked_transfers,
                        r.stats.events,
                        r.stats.delivered,
                        r.stats.dropped,
                        r.stats.crashes,
                        r.stats.penalties,
                        started.elapsed().as_secs_f64()
                    );
                    if r.stats.blocks_mined > 0 {
                        println!(
                            "  proof-of-work: {} blocks mined, {} reorganisations (deepest {} blocks), {} blocks rejected",
                            r.stats.blocks_mined,
                            r.stats.reorgs,
                            r.stats.max_reorg_depth,
                            r.stats.rejected_blocks
                        );
                    }
                    if trace {
                        println!("trace digest {}", r.trace_digest);
                    }
                    ExitCode::SUCCESS
                }
                Err(f) => {
                    eprintln!("FAILED: {f}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Soak {
            scenarios: names,
            seeds,
            first,
            nodes,
            jobs,
        } => soak(&names, seeds, first, nodes, jobs),
    }
}

fn soak(
    names: &[String],
    seeds: u64,
    first: u64,
    nodes: Option<u32>,
    jobs: Option<usize>,
) -> ExitCode {
    let chosen: Vec<Scenario> = scenarios::all()
        .into_iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| s.name.starts_with(n.as_str())))
        .collect();
    if chosen.is_empty() {
        eprintln!("error: no scenario matches {names:?} (see `cairn-sim list`)");
        return ExitCode::from(2);
    }
    let jobs = jobs
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1);
    let mut failed = 0usize;
    for s in &chosen {
        for &n in s.sizes.iter().filter(|&&n| nodes.is_none_or(|m| m == n)) {
            let started = Instant::now();
            let next = AtomicU64::new(first);
            let failures: Mutex<Vec<Failure>> = Mutex::new(Vec::new());
            let heights = AtomicU64::new(0);
            std::thread::scope(|scope| {
                for _ in 0..jobs {
                    scope.spawn(|| loop {
                        let seed = next.fetch_add(1, Ordering::Relaxed);
                        if seed >= first + seeds {
                            break;
                        }
                        match scenarios::run(s, n, seed, Options::default()) {
                            Ok(r) => {
                                heights.fetch_add(r.final_height, Ordering::Relaxed);
                            }
                            Err(f) => {
                                eprintln!("FAILED: {f}");
                                if let Ok(mut v) = failures.lock() {
                                    v.push(*f);
                                }
                            }
                        }
                    });
                }
            });
            let failures = failures.into_inner().unwrap_or_default();
            failed += failures.len();
            println!(
                "{:<34} nodes {n}: {seeds} seeds ({first}..{}), {} failed, mean final height {:.1}, {:.1} s",
                s.name,
                first + seeds,
                failures.len(),
                heights.load(Ordering::Relaxed) as f64 / seeds.max(1) as f64,
                started.elapsed().as_secs_f64()
            );
        }
    }
    if failed > 0 {
        println!("{failed} runs failed; each line above starting FAILED has its replay command");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
