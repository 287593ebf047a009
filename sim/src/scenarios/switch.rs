//! Switching engines at scheduled heights on a running chain: Raft, then
//! PBFT, Raft and PBFT again, each from a height of the schedule, on 4
//! and 7 validators (enough for both engines: Raft needs a majority, PBFT
//! 2f+1 of 3f+1); and Raft, then PBFT, then proof-of-work. Every node runs
//! one driver; at the last block of a segment it starts the next
//! segment's engine on that block.

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{crashes, nodes_of, random_faults, Options, Outcome, Scenario};
use super::{pbft, pow, raft};
use crate::{EngineFactory, LinkConfig, Sim, SimConfig, Violation};
use cairn_consensus::ValidatorId;

/// Raft in even segments, PBFT in odd ones.
fn factory() -> EngineFactory {
    let raft = raft::factory(raft::NODE);
    let pbft = pbft::factory();
    Arc::new(move |s| if s.segment % 2 == 0 { raft(s) } else { pbft(s) })
}

fn engine_of(segment: u64) -> &'static str {
    if segment % 2 == 0 {
        "raft"
    } else {
        "pbft"
    }
}

/// Raft, then PBFT, then proof-of-work.
fn to_pow_factory() -> EngineFactory {
    let raft = raft::factory(raft::NODE);
    let pbft = pbft::factory();
    let pow = pow::factory();
    Arc::new(move |s| match s.segment {
        0 => raft(s),
        1 => pbft(s),
        _ => pow(s),
    })
}

fn to_pow_engine_of(segment: u64) -> &'static str {
    ["raft", "pbft"]
        .get(segment as usize)
        .copied()
        .unwrap_or("pow")
}

/// Proof-of-work from genesis, then `bft` ("pbft" or "raft").
fn from_pow_factory(bft: &'static str) -> EngineFactory {
    let raft = raft::factory(raft::NODE);
    let pbft = pbft::factory();
    let pow = pow::factory();
    Arc::new(move |s| match (s.segment, bft) {
        (0, _) => pow(s),
        (_, "raft") => raft(s),
        _ => pbft(s),
    })
}

/// Proof-of-work up to `switch`, then `bft`.
fn from_pow_sim(seed: u64, nodes: u32, opts: Options, switch: u64, bft: &'static str) -> Sim {
    let mut cfg = SimConfig::with_options(seed, nodes, opts);
    cfg.link = LinkConfig::lossy();
    cfg.schedule = vec![switch];
    cfg.pow = Some(crate::PowSim {
        to_height: Some(switch),
        ..pow::pow_sim(1)
    });
    cfg.client.resubmit_ms = 20_000;
    Sim::new(cfg, from_pow_factory(bft))
}

fn pow_then_pbft(segment: u64) -> &'static str {
    if segment == 0 {
        "pow"
    } else {
        "pbft"
    }
}

fn pow_then_raft(segment: u64) -> &'static str {
    if segment == 0 {
        "pow"
    } else {
        "raft"
    }
}

/// Proof-of-work, then a final engine from a random height H, on a lossy
/// network: a few blocks before H one node crashes and the others split
/// in two halves, each mining its own branch up to H−1 (neither half can
/// make a final block); the halves meet again (on reliable links), the
/// first final block names one branch's block as its parent, every node
/// follows it; the crashed node restarts past H and syncs both segments. Every transfer a client
/// saw confirmed or final stays.
fn from_pow(seed: u64, n: u32, opts: Options, bft: &'static str) -> Outcome {
    let mut rng = rng(seed ^ 0xf209);
    let switch = rng.gen_range(8..16);
    let mut sim = from_pow_sim(seed, n, opts, switch, bft);
    let engine_of = if bft == "raft" {
        pow_then_raft
    } else {
        pow_then_pbft
    };
    let r = (|| {
        let near = switch - rng.gen_range(2..5);
        sim.within(120_000, &format!("a head at {near}"), |s| {
            pow::max_height(s) >= near
        })?;
        let crashed = rng.gen_range(0..n);
        sim.crash(crashed);
        let mut others: Vec<ValidatorId> = (0..n).filter(|v| *v != crashed).collect();
        others.shuffle(&mut rng);
        let half = others.len() / 2;
        sim.partition(&[others[..half].to_vec(), others[half..].to_vec()]);
        sim.run_for(rng.gen_range(5_000..20_000))?;
        sim.heal();
        // With one node down, PBFT needs every other one: on lossy links
        // a view fails at each lost message (no engine resends), which the
        // PBFT scenarios cover; here the switch is what is under test.
        sim.set_all_links(LinkConfig::reliable());
        let up: Vec<ValidatorId> = others.clone();
        sim.within(60_000, &format!("height {} on {up:?}", switch + 3), |s| {
            up.iter().all(|&v| s.height(v) >= switch + 3)
        })?;
        sim.restart(crashed);
        expect_engines(&mut sim, switch + 6, 60_000, engine_of)?;
        sim.expect_progress(&nodes_of(&sim), 20_000)?;
        sim.finish()
    })();
    (sim, r)
}

fn pow_to_pbft(seed: u64, n: u32, opts: Options) -> Outcome {
    from_pow(seed, n, opts, "pbft")
}

fn pow_to_raft(seed: u64, n: u32, opts: Options) -> Outcome {
    from_pow(seed, n, opts, "raft")
}

/// Raft from genesis, PBFT from `schedule[0]`, proof-of-work from
/// `schedule[1]`.
fn to_pow_sim(seed: u64, nodes: u32, opts: Options, link: LinkConfig, schedule: [u64; 2]) -> Sim {
    let mut cfg = SimConfig::with_options(seed, nodes, opts);
    cfg.link = link;
    cfg.schedule = schedule.to_vec();
    cfg.pow = Some(pow::pow_sim(schedule[1]));
    // Resubmit only long after a mined block would have held it.
    cfg.client.resubmit_ms = 20_000;
    Sim::new(cfg, to_pow_factory())
}

fn sim(
    seed: u64,
    nodes: u32,
    opts: Options,
    link: LinkConfig,
    schedule: Vec<u64>,
    sets: Vec<Vec<ValidatorId>>,
) -> Sim {
    let mut cfg = SimConfig::with_options(seed, nodes, opts);
    cfg.sets = sets;
    cfg.link = link;
    cfg.schedule = schedule;
    Sim::new(cfg, factory())
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x5e9_5a17c)
}

/// Three switch heights, 3 to 14 blocks apart.
fn random_schedule(rng: &mut ChaCha8Rng) -> Vec<u64> {
    let mut at = 0;
    (0..3)
        .map(|_| {
            at += rng.gen_range(3..15);
            at
        })
        .collect()
}

/// Every up node has passed `height` and runs the engine of its segment.
fn expect_on_segment(sim: &mut Sim, height: u64, bound_ms: u64) -> Result<(), Violation> {
    expect_engines(sim, height, bound_ms, engine_of)
}

/// Every up node has passed `height` and runs the engine `engine_of` its
/// segment.
fn expect_engines(
    sim: &mut Sim,
    height: u64,
    bound_ms: u64,
    engine_of: fn(u64) -> &'static str,
) -> Result<(), Violation> {
    let nodes = nodes_of(sim);
    sim.within(bound_ms, &format!("every node past height {height}"), |s| {
        nodes.iter().all(|&n| !s.is_up(n) || s.height(n) >= height)
    })?;
    for n in nodes {
        if !sim.is_up(n) {
            continue;
        }
        let (segment, _, _) = sim.config().segment_at(sim.height(n) + 1);
        let validator = sim.config().set_of(segment).contains(&n);
        let Some(status) = sim.status(n) else {
            if validator {
                return Err(Violation::Scenario(format!(
                    "node {n} at height {} runs no engine, but validates segment {segment}",
                    sim.height(n)
                )));
            }
            continue;
        };
        if !validator {
            return Err(Violation::Scenario(format!(
                "node {n} at height {} runs {}, but is no validator of segment {segment}",
                sim.height(n),
                status.engine
            )));
        }
        if status.engine != engine_of(segment) {
            return Err(Violation::Scenario(format!(
                "node {n} at height {} runs {}, the schedule says {}",
                sim.height(n),
                status.engine,
                engine_of(segment)
            )));
        }
    }
    Ok(())
}

/// Three switches on reliable links, no faults.
fn steady(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(
        seed,
        n,
        opts,
        LinkConfig::reliable(),
        vec![10, 20, 30],
        Vec::new(),
    );
    let r = (|| {
        expect_on_segment(&mut sim, 40, 60_000)?;
        sim.finish()
    })();
    (sim, r)
}

/// Switches at random heights under crashes, restarts, cuts and a lossy
/// network; then every fault heals and the chain goes on under the last
/// segment's engine.
fn chaos(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut rng = rng(seed);
    let schedule = random_schedule(&mut rng);
    let last = schedule[2];
    let mut sim = sim(seed, n, opts, LinkConfig::lossy(), schedule, Vec::new());
    let r = faults_then_heal(&mut sim, &mut rng, last);
    (sim, r)
}

/// Every switch changes the validator set too: Raft segments on 3 nodes,
/// PBFT segments on 4, each a random subset of the network in a random
/// order; the other nodes follow as observers. Switch heights are random,
/// under crashes, restarts, cuts and loss.
fn sets(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut rng = rng(seed ^ 0x5e75);
    let schedule = random_schedule(&mut rng);
    let last = schedule[2];
    let sets = (0..4)
        .map(|segment| {
            let mut all: Vec<ValidatorId> = (0..n).collect();
            all.shuffle(&mut rng);
            all.truncate(if segment % 2 == 0 { 3 } else { 4 });
            all
        })
        .collect();
    let mut sim = sim(seed, n, opts, LinkConfig::lossy(), schedule, sets);
    let r = faults_then_heal(&mut sim, &mut rng, last);
    (sim, r)
}

/// Raft, PBFT from height 10, proof-of-work from 20, on reliable links:
/// mining starts on PBFT's last block, and every node ends on one head
/// holding every transfer a client saw final or confirmed.
fn to_pow_steady(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = to_pow_sim(seed, n, opts, LinkConfig::reliable(), [10, 20]);
    let r = (|| {
        expect_engines(&mut sim, 30, 60_000, to_pow_engine_of)?;
        let top = pow::max_height(&sim);
        pow::converge(&mut sim, top)?;
        sim.finish()
    })();
    (sim, r)
}

/// The same schedule at random heights, with crashes and restarts on a
/// lossy network across both switches (no cuts: proof-of-work promises
/// nothing to a client that saw confirmations on the losing side of a
/// partition whose nodes then crash, see `pow/chaos`).
fn to_pow_chaos(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut rng = rng(seed ^ 0x9077);
    let first = rng.gen_range(3..12);
    let second = first + rng.gen_range(3..12);
    let mut sim = to_pow_sim(seed, n, opts, LinkConfig::lossy(), [first, second]);
    let r = (|| {
        crashes(&mut sim, &mut rng, 20_000)?;
        sim.set_all_links(LinkConfig::reliable());
        for v in 0..n {
            sim.restart(v);
        }
        expect_engines(&mut sim, second + 5, 60_000, to_pow_engine_of)?;
        // Transfers a reorganisation sent back to mempools get mined again.
        sim.run_for(15_000)?;
        let top = pow::max_height(&sim);
        pow::converge(&mut sim, top)?;
        sim.finish()
    })();
    (sim, r)
}

/// 20 s of random faults, then the heal: every node passes the last
/// switch (`last`) by 5 blocks on the right engine, and the chain goes on.
fn faults_then_heal(sim: &mut Sim, rng: &mut ChaCha8Rng, last: u64) -> Result<(), Violation> {
    random_faults(sim, rng, 20_000)?;
    expect_on_segment(sim, last + 5, 60_000)?;
    sim.expect_progress(&nodes_of(sim), 20_000)?;
    sim.finish()
}

pub(super) fn scenarios() -> Vec<Scenario> {
    const SIZES: &[u32] = &[4, 7];
    vec![
        Scenario {
            name: "switch/steady",
            sizes: SIZES,
            run: steady,
        },
        Scenario {
            name: "switch/chaos",
            sizes: SIZES,
            run: chaos,
        },
        Scenario {
            name: "switch/sets",
            sizes: &[5, 7],
            run: sets,
        },
        Scenario {
            name: "switch/to-pow",
            sizes: SIZES,
            run: to_pow_steady,
        },
        Scenario {
            name: "switch/to-pow-chaos",
            sizes: SIZES,
            run: to_pow_chaos,
        },
        Scenario {
            name: "switch/pow-to-pbft",
            sizes: SIZES,
            run: pow_to_pbft,
        },
        Scenario {
            name: "switch/pow-to-raft",
            sizes: SIZES,
            run: pow_to_raft,
        },
    ]
}
