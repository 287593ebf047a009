//! Named scenarios: a fault schedule and the expectations around it, run
//! for one seed and one network size. The test suite runs each over
//! hundreds of seeds; `cairn-sim soak` over thousands; a failure prints the
//! command that replays it.

pub mod pbft;
pub mod pow;
pub mod raft;
pub mod switch;

use cairn_chain::Hash;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{LinkConfig, Sim, Stats, Violation};
use cairn_consensus::ValidatorId;

/// One scenario.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// `engine/what`, e.g. `raft/figure8`.
    pub name: &'static str,
    /// Network sizes it runs on.
    pub sizes: &'static [u32],
    /// Builds the simulation and runs the scenario on it. The simulation
    /// is returned even when the run failed, for its report.
    pub run: ScenarioFn,
}

/// A scenario's body: `(seed, nodes, options)` to the simulation it ran
/// and how the run went.
pub type ScenarioFn = fn(u64, u32, Options) -> Outcome;

/// The simulation a scenario ran, and its verdict.
pub type Outcome = (Sim, Result<(), Violation>);

/// How to run a scenario (none changes what happens in it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Record the trace (see [`Report::trace_digest`]).
    pub trace: bool,
    /// Print what happens to stderr.
    pub log: bool,
    /// Print every consensus message delivered too.
    pub log_messages: bool,
    /// Every node on the node's RocksDB store (in a temporary directory)
    /// rather than in memory.
    pub rocksdb: bool,
}

/// What a passing run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub sim_ms: u64,
    pub final_height: u64,
    pub acked_transfers: usize,
    pub stats: Stats,
    /// Digest of the trace (zero when not traced).
    pub trace_digest: Hash,
}

/// A failing run, with the way to replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub scenario: &'static str,
    pub nodes: u32,
    pub seed: u64,
    pub at_ms: u64,
    pub violation: Violation,
    pub state: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} nodes, seed {}: {} (at {} ms; {})\n  replay: {}",
            self.scenario,
            self.nodes,
            self.seed,
            self.violation,
            self.at_ms,
            self.state,
            replay_command(self.scenario, self.nodes, self.seed)
        )
    }
}

/// The one-line command that replays a run.
pub fn replay_command(scenario: &str, nodes: u32, seed: u64) -> String {
    format!(
        "cargo run --release -p cairn-sim --bin cairn-sim -- run {scenario} --nodes {nodes} --seed {seed}"
    )
}

/// Every scenario.
pub fn all() -> Vec<Scenario> {
    let mut all = raft::scenarios();
    all.extend(pbft::scenarios());
    all.extend(pow::scenarios());
    all.extend(switch::scenarios());
    all
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name == name)
}

/// Runs `scenario` once.
pub fn run(
    scenario: &Scenario,
    nodes: u32,
    seed: u64,
    opts: Options,
) -> Result<Report, Box<Failure>> {
    let (mut sim, result) = (scenario.run)(seed, nodes, opts);
    // Every run ends with the final checks, whatever the scenario did.
    let result = result.and_then(|()| sim.finish());
    match result {
        Ok(()) => Ok(Report {
            sim_ms: sim.now(),
            final_height: sim.final_height(),
            acked_transfers: sim.acks().len(),
            stats: sim.stats().clone(),
            trace_digest: if opts.trace {
                Hash::digest(sim.trace())
            } else {
                Hash::ZERO
            },
        }),
        Err(violation) => Err(Box::new(Failure {
            scenario: scenario.name,
            nodes,
            seed,
            at_ms: sim.violation().map_or(sim.now(), |(t, _)| *t),
            violation,
            state: sim.describe(),
        })),
    }
}

fn fail<T>(msg: String) -> Result<T, Violation> {
    Err(Violation::Scenario(msg))
}

fn nodes_of(sim: &Sim) -> Vec<ValidatorId> {
    (0..sim.validators()).collect()
}

fn without(nodes: &[ValidatorId], gone: &[ValidatorId]) -> Vec<ValidatorId> {
    nodes
        .iter()
        .copied()
        .filter(|n| !gone.contains(n))
        .collect()
}

/// `ms` of crashes and restarts of random nodes, one every 0.1–2 s (no
/// cuts: see `pow/chaos`); nodes may be down at the end.
fn crashes(sim: &mut Sim, rng: &mut ChaCha8Rng, ms: u64) -> Result<(), Violation> {
    let n = sim.validators();
    let end = sim.now() + ms;
    while sim.now() < end {
        sim.run_for(rng.gen_range(100..2_000))?;
        let node = rng.gen_range(0..n);
        if rng.gen_bool(0.5) {
            sim.crash(node);
        } else {
            sim.restart(node);
        }
    }
    Ok(())
}

/// `ms` of random faults — crashes and restarts of any node, one-way and
/// two-way cuts, heals — every 20–500 ms; then every fault heals: links
/// reliable and whole, every node up.
fn random_faults(sim: &mut Sim, rng: &mut ChaCha8Rng, ms: u64) -> Result<(), Violation> {
    let n = sim.validators();
    let end = sim.now() + ms;
    while sim.now() < end {
        sim.run_for(rng.gen_range(20..500))?;
        let node = rng.gen_range(0..n);
        match rng.gen_range(0..10) {
            0..=2 => sim.crash(node),
            3..=5 => sim.restart(node),
            6 | 7 => {
                let other = (node + rng.gen_range(1..n)) % n;
                sim.cut(node, other);
            }
            8 => sim.isolate(node),
            _ => sim.heal(),
        }
    }
    sim.heal();
    sim.set_all_links(LinkConfig::reliable());
    for v in 0..n {
        sim.restart(v);
    }
    Ok(())
}
