//! `cairn-chaos`: runs a real devnet under load and a seeded schedule of
//! faults, then checks what every node holds against what the clients saw
//! (see `cairn_tests::chaos`). Exits non-zero, with the replay command,
//! when the check finds a violation.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cairn_genesis::EngineKind;
use cairn_tests::chaos::{self, FaultKind, Options};
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cairn-chaos",
    about = "Chaos against a real Cairn devnet: kills, pauses and partitions under load, then a check of every node's chain"
)]
struct Cli {
    /// raft, pbft or pow.
    #[arg(long, default_value = "raft")]
    engine: EngineKind,
    /// Draws the fault schedule (printed at the start).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Offered transfers per second.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Node i listens on base-port + 2i (p2p) and + 2i + 1 (HTTP).
    #[arg(long, default_value_t = 29_400)]
    base_port: u16,
    /// The faults to draw from (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,pause,isolate,halves,skew,disk-full"
    )]
    faults: Vec<FaultKind>,
    /// Keep the network (homes, logs) here instead of a temporary
    /// directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// PBFT: run validator 0 as a Byzantine process (`cairn-byzantine
    /// --behaviour`: equivocate, forged-signatures, conflicting-votes,
    /// replay, silent).
    #[arg(long)]
    byzantine: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.byzantine.is_some() && cli.engine != EngineKind::Pbft {
        eprintln!("error: --byzantine runs a PBFT validator; use --engine pbft");
        return ExitCode::FAILURE;
    }
    let opts = Options {
        engine: cli.engine,
        seed: cli.seed,
        duration: Duration::from_secs(cli.duration),
        validators: cli.validators,
        rate: cli.rate,
        base_port: cli.base_port,
        faults: cli.faults,
        dir: cli.dir,
        byzantine: cli.byzantine,
    };
    match chaos::run(&opts) {
        Ok(report) => {
            print!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                println!(
                    "FAILED: seed {}; logs in {}\n  replay: {}",
                    opts.seed,
                    report.dir.display(),
                    opts.replay()
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
