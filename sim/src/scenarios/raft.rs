//! Raft under the faults the Raft paper covers.
//!
//! Timings are the node's defaults scaled down tenfold (election timeout
//! 150 ms, heartbeat 30 ms, block interval 50 ms), so that a simulated
//! second holds as many elections as ten real ones.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{fail, nodes_of, random_faults, without, Options, Outcome, Scenario};
use crate::{EngineFactory, LinkConfig, Sim, SimConfig, Violation};
use cairn_consensus::raft::{block_term, CommittedHead, Raft, RaftConfig, RaftMessage};
use cairn_consensus::{Action, ConsensusMessage, ValidatorId};

/// Rounds of leader crashes in one Figure 8 run.
pub const FIGURE8_ROUNDS: usize = 1_000;
/// Bound on progress once faults are healed.
const LIVENESS_MS: u64 = 10_000;

#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    election_timeout_ms: u64,
    heartbeat_ms: u64,
    block_interval_ms: u64,
    max_uncommitted: usize,
    /// Inject the Figure 8 bug (tests of the checker only).
    figure8_bug: bool,
}

/// The node's settings, scaled down.
pub(super) const NODE: Params = Params {
    election_timeout_ms: 150,
    heartbeat_ms: 30,
    block_interval_ms: 50,
    // As the node: replication of one block overlaps building the next.
    max_uncommitted: 3,
    figure8_bug: false,
};

pub(super) fn factory(p: Params) -> EngineFactory {
    Arc::new(move |s| {
        let cfg = RaftConfig {
            me: s.me,
            validators: s.validators,
            election_timeout_ms: p.election_timeout_ms,
            heartbeat_ms: p.heartbeat_ms,
            block_interval_ms: p.block_interval_ms,
            empty_blocks: false,
            full_block: 1_000,
            max_uncommitted: p.max_uncommitted,
            seed: s.seed,
            any_parent_at: s.after_pow.then_some(s.first_height),
        };
        // The last block of the previous segment is the base of term 0.
        let term = if s.head.header.height >= s.first_height {
            block_term(&s.head.header.engine_data)
        } else {
            0
        };
        let head = CommittedHead {
            index: s.head.header.height,
            term,
            hash: s.head.hash(),
        };
        let mut raft = Raft::new(cfg, head, s.persisted);
        raft.figure8_bug = p.figure8_bug;
        Box::new(raft)
    })
}

fn sim(seed: u64, nodes: u32, opts: Options, p: Params, link: LinkConfig) -> Sim {
    let mut cfg = SimConfig::with_options(seed, nodes, opts);
    cfg.link = link;
    Sim::new(cfg, factory(p))
}

/// The scenario's own choices, apart from the simulation's.
fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x5ce7_a410)
}

/// Waits for a leader that every node of `nodes` follows in one term.
fn leader_of(sim: &mut Sim, nodes: &[ValidatorId]) -> Result<ValidatorId, Violation> {
    let group = nodes.to_vec();
    sim.within(
        LIVENESS_MS,
        &format!("one leader followed by nodes {group:?}"),
        |s| s.agreed_leader(&group).is_some(),
    )?;
    match sim.agreed_leader(nodes) {
        Some(l) => Ok(l),
        None => fail("leader vanished".into()),
    }
}

/// Waits for `nodes` to follow one leader other than `old`.
fn new_leader_of(
    sim: &mut Sim,
    nodes: &[ValidatorId],
    old: ValidatorId,
) -> Result<ValidatorId, Violation> {
    let group = nodes.to_vec();
    sim.within(
        LIVENESS_MS,
        &format!("a new leader followed by nodes {group:?}"),
        |s| s.agreed_leader(&group).is_some_and(|l| l != old),
    )?;
    match sim.agreed_leader(nodes) {
        Some(l) => Ok(l),
        None => fail("leader vanished".into()),
    }
}

fn term(sim: &Sim, node: ValidatorId) -> u64 {
    sim.status(node).map_or(0, |s| s.term)
}

fn uncommitted(sim: &Sim, node: ValidatorId) -> u64 {
    sim.status(node).map_or(0, |s| s.uncommitted)
}

/// A leader elected, and the term stays put while nothing fails.
fn election(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let r = (|| {
        let everyone = nodes_of(&sim);
        let leader = leader_of(&mut sim, &everyone)?;
        let t = term(&sim, leader);
        sim.run_for(3_000)?;
        if sim.agreed_leader(&everyone) != Some(leader) || term(&sim, leader) != t {
            return fail(format!(
                "leader {leader} of term {t} lost its place without a fault ({})",
                sim.describe()
            ));
        }
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// The leader is cut off: the others elect another and go on; the old one
/// makes nothing final; once it rejoins there is one leader.
fn leader_cut_off(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let r = (|| {
        let everyone = nodes_of(&sim);
        let old = leader_of(&mut sim, &everyone)?;
        let old_term = term(&sim, old);
        let old_height = sim.height(old);
        sim.isolate(old);
        let others = without(&everyone, &[old]);
        let new = new_leader_of(&mut sim, &others, old)?;
        if term(&sim, new) <= old_term {
            return fail(format!("no new leader: {}", sim.describe()));
        }
        sim.expect_progress(&others, LIVENESS_MS)?;
        sim.run_for(500)?;
        if sim.height(old) != old_height {
            return fail(format!(
                "the cut-off leader made blocks final: {old_height} -> {}",
                sim.height(old)
            ));
        }
        sim.heal();
        leader_of(&mut sim, &everyone)?;
        if sim.leaders().len() != 1 {
            return fail(format!(
                "several leaders after rejoining: {}",
                sim.describe()
            ));
        }
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// A follower is cut off: the rest go on; it catches up when it returns.
fn follower_cut_off(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        let leader = leader_of(&mut sim, &everyone)?;
        let followers = without(&everyone, &[leader]);
        let cut = followers[rng.gen_range(0..followers.len())];
        sim.isolate(cut);
        let others = without(&everyone, &[cut]);
        for _ in 0..3 {
            sim.expect_progress(&others, LIVENESS_MS)?;
        }
        sim.heal();
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// No group holds a majority: nothing becomes final; once healed, blocks
/// do again.
fn majority_cut_off(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let mut everyone = nodes_of(&sim);
        leader_of(&mut sim, &everyone)?;
        sim.run_for(rng.gen_range(0..300))?;
        let f = ((n - 1) / 2) as usize;
        everyone.shuffle(&mut rng);
        let groups: Vec<Vec<ValidatorId>> = everyone.chunks(f.max(1)).map(<[_]>::to_vec).collect();
        sim.partition(&groups);
        let cut_at = sim.now();
        // Blocks already on a majority may still be learnt final; nothing
        // proposed after the cut may, and after that nothing at all.
        sim.run_for(500)?;
        let height = sim.final_height();
        let acks = sim.acks().len();
        sim.run_for(2_500)?;
        if sim.final_height() != height || sim.acks().len() != acks {
            return fail(format!(
                "height {} became final with no majority together ({groups:?})",
                sim.final_height()
            ));
        }
        for node in nodes_of(&sim) {
            for (h, hash) in sim.built_by(node, cut_at) {
                if sim.final_at(h) == Some(hash) {
                    return fail(format!(
                        "block {h}, proposed by node {node} after the cut, became final"
                    ));
                }
            }
        }
        sim.heal();
        let everyone = nodes_of(&sim);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// A cut-off leader's uncommitted block is overwritten once it rejoins.
fn old_leader_overwritten(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let r = (|| {
        let everyone = nodes_of(&sim);
        let old = leader_of(&mut sim, &everyone)?;
        sim.set_clients(false);
        sim.within(LIVENESS_MS, "the leader's log all final", |s| {
            uncommitted(s, old) == 0
        })?;
        sim.isolate(old);
        let since = sim.now();
        sim.burst(old, 3, 5)?;
        sim.within(
            NODE.election_timeout_ms,
            "the cut-off leader builds a block",
            |s| !s.built_by(old, since).is_empty(),
        )?;
        let doomed = sim.built_by(old, since);
        sim.set_clients(true);
        let others = without(&everyone, &[old]);
        new_leader_of(&mut sim, &others, old)?;
        sim.expect_progress(&others, LIVENESS_MS)?;
        sim.heal();
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        for (height, hash) in doomed {
            if sim.final_at(height) == Some(hash) {
                return fail(format!("the cut-off leader's block {height} became final"));
            }
        }
        sim.finish()
    })();
    (sim, r)
}

/// Two cut-off leaders of different terms each append 60 blocks at the
/// same heights; the later one wins and the other backtracks over its 60
/// conflicting entries in a few round trips, not 60.
fn backtracking(seed: u64, n: u32, opts: Options) -> Outcome {
    const ENTRIES: usize = 60;
    let p = Params {
        election_timeout_ms: 300,
        heartbeat_ms: 30,
        block_interval_ms: 2,
        max_uncommitted: 64,
        figure8_bug: false,
    };
    let mut sim = sim(seed, n, opts, p, LinkConfig::reliable());
    let r = (|| {
        let everyone = nodes_of(&sim);
        let a = leader_of(&mut sim, &everyone)?;
        sim.set_clients(false);
        sim.within(LIVENESS_MS, "the leader's log all final", |s| {
            uncommitted(s, a) == 0
        })?;
        sim.isolate(a);
        let since = sim.now();
        sim.burst(a, ENTRIES, 3)?;
        let a_built = sim.built_by(a, since).len();
        let others = without(&everyone, &[a]);
        let a_term = term(&sim, a);
        // The instant another node wins, cut everyone off from everyone.
        let won = sim.run_until(sim.now() + LIVENESS_MS, |s| {
            others
                .iter()
                .any(|&o| s.leaders().contains(&o) && term(s, o) > a_term)
        })?;
        let b = match others.iter().find(|&&o| sim.leaders().contains(&o)) {
            Some(&b) if won => b,
            _ => return fail(format!("no second leader: {}", sim.describe())),
        };
        sim.partition(&[]);
        let since = sim.now();
        sim.burst(b, ENTRIES, 3)?;
        let b_built = sim.built_by(b, since).len();
        if a_built < 50 || b_built < 50 {
            return fail(format!(
                "cut-off leaders appended {a_built} and {b_built} blocks, not 50+"
            ));
        }
        // Once both have stepped down (check-quorum), B alone can reach
        // everyone: it wins a new election, so its first probe of A is at
        // its own last entry, and A must drop 60 entries.
        sim.within(LIVENESS_MS, "the cut-off leaders step down", |s| {
            s.leaders().is_empty()
        })?;
        sim.heal();
        sim.partition(&[]);
        for o in without(&everyone, &[b]) {
            sim.connect(b, o);
        }
        let rejections = Rc::new(Cell::new(0u32));
        let counter = rejections.clone();
        sim.observe(Box::new(move |from, _, msg| {
            if from == a {
                if let ConsensusMessage::Raft(RaftMessage::AppendResponse {
                    success: false, ..
                }) = msg
                {
                    counter.set(counter.get() + 1);
                }
            }
        }));
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        if !(1..=8).contains(&rejections.get()) {
            return fail(format!(
                "backtracking over {ENTRIES} conflicting entries took {} rejected probes",
                rejections.get()
            ));
        }
        sim.heal();
        sim.set_clients(true);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// Which nodes crash together.
#[derive(Debug, Clone, Copy)]
enum Crash {
    All,
    Leader,
    LeaderAndFollower,
}

/// Final blocks and the clients' transfers survive crashes.
fn crash(seed: u64, n: u32, opts: Options, which: Crash) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        let leader = leader_of(&mut sim, &everyone)?;
        sim.run_for(rng.gen_range(300..1_500))?;
        let leader = sim.agreed_leader(&everyone).unwrap_or(leader);
        let followers = without(&everyone, &[leader]);
        let victims = match which {
            Crash::All => everyone.clone(),
            Crash::Leader => vec![leader],
            Crash::LeaderAndFollower => {
                vec![leader, followers[rng.gen_range(0..followers.len())]]
            }
        };
        for &v in &victims {
            sim.crash(v);
        }
        let survivors = without(&everyone, &victims);
        if survivors.len() * 2 > everyone.len() {
            sim.expect_progress(&survivors, LIVENESS_MS)?;
        } else {
            sim.run_for(rng.gen_range(0..1_000))?;
        }
        let mut back = victims.clone();
        back.shuffle(&mut rng);
        for v in back {
            sim.restart(v);
            sim.run_for(rng.gen_range(0..200))?;
        }
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// The leader's block builds fail for a while (its driver cannot build on
/// the parent it is asked for): no node stops, nothing invalid becomes
/// final; once builds work again the leader (or a successor) proposes and
/// every node makes progress.
fn build_fails(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        let leader = leader_of(&mut sim, &everyone)?;
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.fail_builds(leader, true);
        sim.run_for(rng.gen_range(500..3_000))?;
        sim.fail_builds(leader, false);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        // Every node's builds fail at some point, one after the other.
        for &v in &everyone {
            sim.fail_builds(v, true);
            sim.run_for(rng.gen_range(100..1_000))?;
            sim.fail_builds(v, false);
        }
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// The paper's Figure 8, at random: a leader is elected and crashes, over
/// and over, often right after replicating an entry of its term to some
/// followers, and crashed nodes come back (at most f down at a time).
/// Agreement is checked at every commit, so an entry of an earlier term
/// committed by counting replicas and later overwritten is caught when it
/// happens.
fn figure8(seed: u64, n: u32, opts: Options) -> Outcome {
    figure8_with(seed, n, opts, FIGURE8_ROUNDS, false)
}

/// [`figure8`] with `rounds` leader crashes, and the bug if asked.
fn figure8_with(seed: u64, n: u32, opts: Options, rounds: usize, figure8_bug: bool) -> Outcome {
    let p = Params {
        election_timeout_ms: 100,
        heartbeat_ms: 20,
        block_interval_ms: 5,
        max_uncommitted: 4,
        figure8_bug,
    };
    let link = LinkConfig {
        min_delay_ms: 1,
        max_delay_ms: 30,
        drop_rate: 0.05,
        duplicate_rate: 0.0,
        reorder: true,
    };
    let mut cfg = SimConfig::with_options(seed, n, opts);
    cfg.link = link;
    cfg.client.interval_ms = 50;
    let mut sim = Sim::new(cfg, factory(p));
    // The property itself: a leader's commit always ends with an entry of
    // its own term (earlier terms' entries commit only beneath one).
    sim.check_actions(Box::new(|_, status, action| match action {
        Action::Commit { blocks } if status.role == "leader" => {
            let last = blocks
                .last()
                .map_or(0, |b| block_term(&b.header.engine_data));
            if last == status.term {
                Ok(())
            } else {
                Err(format!(
                    "leader of term {} committed up to an entry of term {last}",
                    status.term
                ))
            }
        }
        _ => Ok(()),
    }));
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        let f = ((n - 1) / 2) as usize;
        for _ in 0..rounds {
            sim.within(LIVENESS_MS, "a leader with at most f nodes down", |s| {
                !s.leaders().is_empty()
            })?;
            // Crash it soon: often mid-replication of its first entries.
            sim.run_for(rng.gen_range(0..60))?;
            let leader = sim.leaders().into_iter().max_by_key(|&l| term(&sim, l));
            if let Some(l) = leader {
                sim.crash(l);
            }
            let mut down = without(&everyone, &sim.up_nodes());
            while down.len() > f || (!down.is_empty() && rng.gen_bool(0.5)) {
                let i = rng.gen_range(0..down.len());
                sim.restart(down.remove(i));
            }
        }
        for v in everyone.clone() {
            sim.restart(v);
        }
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// A leader that can send but not hear: it must not hold the cluster
/// hostage (check-quorum), and must not disrupt it once the others moved on.
fn one_way(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::reliable());
    let r = (|| {
        let everyone = nodes_of(&sim);
        let old = leader_of(&mut sim, &everyone)?;
        for o in without(&everyone, &[old]) {
            sim.cut(o, old);
        }
        let others = without(&everyone, &[old]);
        sim.expect_progress(&others, LIVENESS_MS)?;
        sim.expect_progress(&others, LIVENESS_MS)?;
        sim.heal();
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

/// A lossy, duplicating, reordering network; nodes crash and rejoin, links
/// are cut one way and both ways, at random. Then the faults heal: blocks
/// become final again and every transfer a client saw committed is in
/// every final chain.
fn chaos(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, NODE, LinkConfig::lossy());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        random_faults(&mut sim, &mut rng, 20_000)?;
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.finish()
    })();
    (sim, r)
}

pub(super) fn scenarios() -> Vec<Scenario> {
    const SIZES: &[u32] = &[3, 5];
    vec![
        Scenario {
            name: "raft/election",
            sizes: SIZES,
            run: election,
        },
        Scenario {
            name: "raft/leader-cut-off",
            sizes: SIZES,
            run: leader_cut_off,
        },
        Scenario {
            name: "raft/follower-cut-off",
            sizes: SIZES,
            run: follower_cut_off,
        },
        Scenario {
            name: "raft/majority-cut-off",
            sizes: SIZES,
            run: majority_cut_off,
        },
        Scenario {
            name: "raft/old-leader-overwritten",
            sizes: SIZES,
            run: old_leader_overwritten,
        },
        Scenario {
            name: "raft/backtracking",
            sizes: SIZES,
            run: backtracking,
        },
        Scenario {
            name: "raft/crash-all",
            sizes: SIZES,
            run: |s, n, o| crash(s, n, o, Crash::All),
        },
        Scenario {
            name: "raft/build-fails",
            sizes: SIZES,
            run: build_fails,
        },
        Scenario {
            name: "raft/crash-leader",
            sizes: SIZES,
            run: |s, n, o| crash(s, n, o, Crash::Leader),
        },
        Scenario {
            name: "raft/crash-leader-and-follower",
            sizes: SIZES,
            run: |s, n, o| crash(s, n, o, Crash::LeaderAndFollower),
        },
        Scenario {
            name: "raft/figure8",
            sizes: SIZES,
            run: figure8,
        },
        Scenario {
            name: "raft/one-way",
            sizes: SIZES,
            run: one_way,
        },
        Scenario {
            name: "raft/chaos",
            sizes: SIZES,
            run: chaos,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario can fail: with the Figure 8 bug injected (a leader
    /// commits entries of earlier terms by counting replicas), it reports
    /// a violation.
    #[test]
    fn figure8_catches_commits_of_earlier_terms_by_counting() {
        let found = (0..20u64).find_map(|seed| {
            let (_, r) = figure8_with(seed, 5, Options::default(), 300, true);
            r.err().map(|v| (seed, v))
        });
        let Some((seed, v)) = found else {
            panic!("no seed of 20 exposed the Figure 8 bug");
        };
        eprintln!("seed {seed}: {v}");
        // Without the bug the same seed passes.
        let (_, r) = figure8_with(seed, 5, Options::default(), 300, false);
        assert_eq!(r, Ok(()));
    }
}
