//! The chaos runner: a real devnet of any engine (`cairn-node` processes,
//! RocksDB, libp2p on loopback) under a steady open-loop load of signed
//! transfers and a seeded schedule of faults — kill -9 and restart,
//! SIGSTOP and SIGCONT, a node cut off, the network split in halves — then
//! a Jepsen-style check of the history once the faults heal.
//!
//! `cairn-chaos --engine pbft --seed 7 --duration 120` runs one; the same
//! arguments replay the same fault schedule (the processes' own timing
//! differs from run to run, as it does for users).

mod check;
mod cluster;
mod history;
mod plan;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_genesis::EngineKind;
use cairn_wallet::bench::Submitted;

pub use check::Findings;
pub use plan::{plan, Fault, FaultKind};

use cluster::Cluster;
use history::{Load, Target};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub engine: EngineKind,
    pub seed: u64,
    /// How long the load runs and faults happen.
    pub duration: Duration,
    pub validators: usize,
    /// Offered transfers per second.
    pub rate: u64,
    /// Node `i` listens on `base_port + 2i` (p2p) and `+ 1` (HTTP).
    pub base_port: u16,
    pub faults: Vec<FaultKind>,
    /// Where the network lives (node homes and logs); a temporary
    /// directory, removed after a passing run, when `None`.
    pub dir: Option<PathBuf>,
    /// PBFT: validator 0 runs as `cairn-byzantine` with this behaviour
    /// (its restarts too).
    pub byzantine: Option<String>,
}

impl Options {
    /// The command that replays this run's fault schedule.
    pub fn replay(&self) -> String {
        let mut kinds: Vec<&str> = self.faults.iter().map(|k| k.name()).collect();
        kinds.sort_unstable();
        let byzantine = self
            .byzantine
            .as_ref()
            .map(|b| format!(" BYZANTINE={b}"))
            .unwrap_or_default();
        format!(
            "make chaos ENGINE={} SEED={} DURATION={} VALIDATORS={} RATE={} FAULTS={}{byzantine}",
            self.engine,
            self.seed,
            self.duration.as_secs(),
            self.validators,
            self.rate,
            kinds.join(",")
        )
    }
}

/// How long, after a fault ended, until every node had passed the highest
/// height any node held when it ended.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub fault: Fault,
    /// `None`: not before the next fault (or the end of the run).
    pub after: Option<Duration>,
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct Report {
    pub options: Options,
    pub faults: Vec<Fault>,
    pub recoveries: Vec<Recovery>,
    pub offered: usize,
    pub accepted: usize,
    /// Refusals on first submission, by code, and submissions no node
    /// answered.
    pub refused: BTreeMap<String, usize>,
    pub acknowledged: usize,
    /// From the end of the load until every node held the same head.
    pub settled_after: Duration,
    pub findings: Findings,
    /// What the runner saw that is no violation (how a node met a full
    /// disk).
    pub notes: Vec<String>,
    pub dir: PathBuf,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.findings.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for x in &self.faults {
            *kinds.entry(x.kind.name()).or_default() += 1;
        }
        writeln!(
            f,
            "{} on {} nodes, seed {}, {} s of load at {}/s: {} faults {kinds:?}",
            o.engine,
            o.validators,
            o.seed,
            o.duration.as_secs(),
            o.rate,
            self.faults.len()
        )?;
        writeln!(
            f,
            "transfers: {} offered, {} accepted, {} acknowledged, {} lost; refused or unanswered on first submission: {:?}",
            self.offered, self.accepted, self.acknowledged, self.findings.lost, self.refused
        )?;
        if self.findings.moved > 0 {
            writeln!(
                f,
                "{} acknowledged transfers were moved to another block by a reorganisation deeper than the {POW_CONFIRMATIONS} confirmations the client waited for (still in the chain)",
                self.findings.moved
            )?;
        }
        writeln!(
            f,
            "chain: settled at height {} {:.1} s after the load; {} divergent heights, {} duplicate transfers, {} panics",
            self.findings.height,
            self.settled_after.as_secs_f64(),
            self.findings.divergences,
            self.findings.duplicates,
            self.findings.panics
        )?;
        for kind in FaultKind::ALL {
            let times: Vec<f64> = self
                .recoveries
                .iter()
                .filter(|r| r.fault.kind == kind)
                .filter_map(|r| r.after.map(|d| d.as_secs_f64()))
                .collect();
            let all = self
                .recoveries
                .iter()
                .filter(|r| r.fault.kind == kind)
                .count();
            if times.is_empty() && all > 0 {
                writeln!(
                    f,
                    "recovery after {}: none of {all} before the next fault",
                    kind.name()
                )?;
            } else if all > 0 {
                let max = times.iter().copied().fold(0.0, f64::max);
                let mean = times.iter().sum::<f64>() / times.len() as f64;
                writeln!(
                    f,
                    "recovery after {}: {} of {all} before the next fault, mean {mean:.1} s, max {max:.1} s",
                    kind.name(),
                    times.len()
                )?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for v in &self.findings.violations {
            writeln!(f, "VIOLATION: {v}")?;
        }
        Ok(())
    }
}

/// Blocks a proof-of-work client waits on top of a transfer's block.
pub const POW_CONFIRMATIONS: u64 = 6;

/// Runs the chaos: starts the network, offers the load, applies the
/// schedule, heals, settles and checks. `Err` only when the run itself
/// could not be carried out (a node that never started, no port); what
/// the network did wrong is in the report's findings.
pub fn run(opts: &Options) -> Result<Report> {
    let temp;
    let dir = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("cairn-chaos-").tempdir()?;
            temp.path().to_owned()
        }
    };
    if opts.faults.contains(&FaultKind::Skew) && !cluster::can_skew() {
        anyhow::bail!(
            "the skew fault needs libfaketime (Debian's faketime package; scripts/install-deps.sh installs it)"
        );
    }
    let faults = plan(
        opts.seed,
        opts.engine,
        opts.validators,
        opts.duration,
        &opts.faults,
    );
    eprintln!("chaos: the schedule (replay: {})", opts.replay());
    for f in &faults {
        eprintln!("  {f}");
    }
    let mut cluster = Cluster::start(opts, &dir)?;
    let status = cluster.status(0).context("n0 stopped answering")?;
    let target = Target {
        urls: &cluster.urls,
        chain_id: status["chain_id"].as_str().unwrap_or_default(),
        genesis: cairn_wallet::genesis_hash(&status)?,
        fee: status["min_fee"].as_u64().unwrap_or(1).max(1),
        confirmations: if opts.engine == EngineKind::Pow {
            POW_CONFIRMATIONS
        } else {
            1
        },
    };
    let mut load = Load::start(&target, opts.seed, opts.rate, opts.duration)?;
    let start = Instant::now();
    let mut recoveries = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        sleep_until(start + f.at);
        let (offered, acked) = load.progress();
        eprintln!("chaos: {f}   ({offered} offered, {acked} acknowledged so far)");
        cluster.apply(f);
        sleep_until(start + f.at + f.lasts);
        let peak = cluster.heights().into_iter().flatten().max().unwrap_or(0);
        cluster.heal(f);
        let healed = Instant::now();
        let until = faults
            .get(i + 1)
            .map_or(start + opts.duration, |next| start + next.at);
        let after = recover(&cluster, peak, healed, until);
        recoveries.push(Recovery {
            fault: f.clone(),
            after,
        });
    }
    load.finish_offering();
    sleep_until(start + opts.duration);
    cluster.heal_all();
    let load_ended = Instant::now();
    // Let the resender bring in what is still pending.
    let drain_until = load_ended + Duration::from_secs(60);
    let mut last = load.progress();
    let mut still = Instant::now();
    while Instant::now() < drain_until {
        std::thread::sleep(Duration::from_secs(1));
        let now = load.progress();
        if now.1 >= now.0 {
            break;
        }
        if now != last {
            (last, still) = (now, Instant::now());
        } else if still.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let settled = check::settle(&cluster, Duration::from_secs(120));
    let settled_after = load_ended.elapsed();
    let history = load.stop()?;
    let findings = match settled {
        Ok(height) => check::check(&cluster, &history, height, opts.engine != EngineKind::Pow),
        Err(heads) => Findings {
            violations: vec![format!(
                "the nodes did not settle on one head within 120 s of the end: {heads}"
            )],
            ..Findings::default()
        },
    };
    write_history(&dir, &history);
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for e in history.values() {
        if let Submitted::Refused(code) | Submitted::NoAnswer(code) = &e.outcome {
            *refused.entry(code.clone()).or_default() += 1;
        }
    }
    let report = Report {
        options: opts.clone(),
        faults,
        recoveries,
        offered: history.len(),
        accepted: history
            .values()
            .filter(|e| e.outcome == Submitted::Accepted)
            .count(),
        refused,
        acknowledged: history.values().filter(|e| e.acked.is_some()).count(),
        settled_after,
        findings,
        notes: cluster.notes.clone(),
        dir: dir.clone(),
    };
    drop(cluster);
    if !report.passed() && opts.dir.is_none() {
        // Keep the logs of a failing run.
        let kept =
            std::env::temp_dir().join(format!("cairn-chaos-{}-{}-failed", opts.engine, opts.seed));
        let _ = std::fs::remove_dir_all(&kept);
        if std::fs::rename(&dir, &kept).is_ok() {
            return Ok(Report {
                dir: kept,
                ..report
            });
        }
    }
    Ok(report)
}

/// The history as JSON lines in `dir/history.jsonl`, one transfer each:
/// where it went first, the answer, and where it was seen committed.
fn write_history(dir: &std::path::Path, history: &history::History) {
    let mut lines: Vec<String> = history
        .iter()
        .map(|(hash, e)| {
            let outcome = match &e.outcome {
                Submitted::Accepted => "accepted".to_owned(),
                Submitted::Refused(c) => format!("refused:{c}"),
                Submitted::NoAnswer(c) => format!("no-answer:{c}"),
            };
            serde_json::json!({
                "hash": hash,
                "node": e.node,
                "outcome": outcome,
                "acked_height": e.acked.as_ref().map(|a| a.0),
                "acked_block": e.acked.as_ref().map(|a| a.1.clone()),
            })
            .to_string()
        })
        .collect();
    lines.sort_unstable();
    let _ = std::fs::write(dir.join("history.jsonl"), lines.join("\n") + "\n");
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// Time from `healed` until every node is past `peak`, polled until
/// `until`.
fn recover(cluster: &Cluster, peak: u64, healed: Instant, until: Instant) -> Option<Duration> {
    while Instant::now() < until {
        let heights = cluster.heights();
        if heights.iter().all(|h| h.is_some_and(|h| h > peak)) {
            return Some(healed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}
