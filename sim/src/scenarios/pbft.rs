//! PBFT under crashes, partitions and lossy networks, on 4 (f = 1) and 7
//! (f = 2) validators. Timings: block interval 50 ms, view timeout 300 ms.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{fail, nodes_of, random_faults, without, Options, Outcome, Scenario};
use crate::byzantine::{Behaviour, Byzantine, Collusion};
use crate::{network_hash, validator_key, EngineFactory, LinkConfig, Sim, SimConfig, Violation};
use cairn_consensus::pbft::{Certificate, Pbft, PbftConfig};
use cairn_consensus::ValidatorId;

/// Bound on progress once faults are healed.
const LIVENESS_MS: u64 = 20_000;
const VIEW_TIMEOUT_MS: u64 = 300;

pub(super) fn factory() -> EngineFactory {
    byzantine_factory(BTreeSet::new(), Behaviour::Silent, 50)
}

/// Validators in `byzantine` misbehave as `behaviour`; the rest are honest.
fn byzantine_factory(
    byzantine: BTreeSet<ValidatorId>,
    behaviour: Behaviour,
    block_interval_ms: u64,
) -> EngineFactory {
    let collusion = Arc::new(Mutex::new(Collusion::default()));
    Arc::new(move |s| {
        let cfg = PbftConfig {
            first_height: s.first_height,
            any_first_parent: s.after_pow,
            me: s.me,
            validators: s
                .set
                .iter()
                .map(|&n| validator_key(n).public_key())
                .collect(),
            key: validator_key(s.set[s.me as usize]),
            network: segment_network(s.segment),
            block_interval_ms,
            view_timeout_ms: VIEW_TIMEOUT_MS,
            empty_blocks: false,
            full_block: 1_000,
        };
        let honest = Box::new(Pbft::new(cfg, &s.head.header, s.persisted));
        if !byzantine.contains(&s.me) {
            return honest;
        }
        Box::new(Byzantine::new(
            honest,
            behaviour,
            s.me,
            s.validators,
            validator_key(s.me),
            network_hash(),
            s.seed,
            collusion.clone(),
            byzantine.clone(),
        ))
    })
}

/// What PBFT signatures of a segment cover: the network for the genesis
/// engine, the network and the segment for later ones.
fn segment_network(segment: u64) -> cairn_chain::Hash {
    if segment == 0 {
        network_hash()
    } else {
        cairn_chain::Hash::digest_parts(&[network_hash().as_ref(), &segment.to_le_bytes()])
    }
}

fn sim(seed: u64, nodes: u32, opts: Options, link: LinkConfig) -> Sim {
    let mut cfg = SimConfig::with_options(seed, nodes, opts);
    cfg.link = link;
    Sim::new(cfg, factory())
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x9bf7_0001)
}

fn f_of(n: u32) -> usize {
    (n as usize - 1) / 3
}

fn view(sim: &Sim, node: ValidatorId) -> u64 {
    sim.status(node).map_or(0, |s| s.term)
}

fn primary(sim: &Sim, node: ValidatorId) -> ValidatorId {
    sim.status(node).and_then(|s| s.leader).unwrap_or(0)
}

/// Every final block on every node carries a valid commit certificate.
fn check_certificates(sim: &Sim) -> Result<(), Violation> {
    let keys: Vec<_> = nodes_of(sim)
        .iter()
        .map(|&i| validator_key(i).public_key())
        .collect();
    let quorum = 2 * f_of(sim.validators()) + 1;
    let mut checked = BTreeSet::new();
    for node in nodes_of(sim) {
        for b in sim.chain(node).iter().skip(1) {
            if !checked.insert((b.hash(), b.seal.clone())) {
                continue;
            }
            let ok = Certificate::decode(&b.seal)
                .and_then(|c| c.verify(&network_hash(), &keys, quorum, b));
            if let Err(e) = ok {
                return Err(Violation::Validity {
                    node,
                    height: b.header.height,
                    error: format!("commit certificate: {e}"),
                });
            }
        }
    }
    Ok(())
}

/// No faults: blocks become final with certificates, in view 0.
fn normal(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::reliable());
    let r = (|| {
        let everyone = nodes_of(&sim);
        for _ in 0..5 {
            sim.expect_progress(&everyone, LIVENESS_MS)?;
        }
        if everyone.iter().any(|&v| view(&sim, v) != 0) {
            return fail(format!("a view change without a fault: {}", sim.describe()));
        }
        check_certificates(&sim)?;
        sim.finish()
    })();
    (sim, r)
}

/// The primary crashes: a view change, progress; it restarts, catches up
/// and votes again (the others need it when a second one crashes).
/// The primary's block builds fail (its driver cannot build on the parent
/// it is asked for): it proposes nothing, the others change view and go
/// on; no node stops; once builds work again everyone makes progress.
fn build_fails(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        let p = primary(&sim, 0);
        sim.fail_builds(p, true);
        // The next primary proposes instead.
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.run_for(rng.gen_range(0..500))?;
        sim.fail_builds(p, false);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        check_certificates(&sim)?;
        sim.finish()
    })();
    (sim, r)
}

fn primary_crash(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        sim.run_for(rng.gen_range(0..200))?;
        let old = primary(&sim, 0);
        sim.crash(old);
        let rest = without(&everyone, &[old]);
        // A block the primary proposed before it crashed may still become
        // final; the one after needs a new primary.
        sim.expect_progress(&rest, LIVENESS_MS)?;
        sim.expect_progress(&rest, LIVENESS_MS)?;
        let v = view(&sim, rest[0]);
        if v == 0 {
            return fail("progress without a view change after the primary crashed".into());
        }
        sim.restart(old);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        // With f others down, progress needs the restarted one's votes.
        let f = f_of(n);
        let mut others = rest.clone();
        others.shuffle(&mut rng);
        let down: Vec<ValidatorId> = others.into_iter().take(f).collect();
        for &d in &down {
            sim.crash(d);
        }
        let up = without(&everyone, &down);
        sim.expect_progress(&up, LIVENESS_MS)?;
        for &d in &down {
            sim.restart(d);
        }
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        check_certificates(&sim)?;
        sim.finish()
    })();
    (sim, r)
}

/// f+1 validators down: nothing becomes final and nothing diverges; back
/// up, progress resumes.
fn too_many_down(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let mut everyone = nodes_of(&sim);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        everyone.shuffle(&mut rng);
        let down: Vec<ValidatorId> = everyone.iter().copied().take(f_of(n) + 1).collect();
        for &d in &down {
            sim.crash(d);
        }
        sim.run_for(500)?;
        let height = sim.final_height();
        sim.run_for(3_000)?;
        if sim.final_height() != height {
            return fail(format!(
                "height {} became final with {} of {n} validators down",
                sim.final_height(),
                down.len()
            ));
        }
        for &d in &down {
            sim.restart(d);
            sim.run_for(rng.gen_range(0..300))?;
        }
        let everyone = nodes_of(&sim);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        check_certificates(&sim)?;
        sim.finish()
    })();
    (sim, r)
}

/// The primary is cut off, then a random f validators are, both ways and
/// one way; the rest go on; healed, everyone does.
fn partitions(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        let p = primary(&sim, 0);
        sim.isolate(p);
        sim.expect_progress(&without(&everyone, &[p]), LIVENESS_MS)?;
        sim.heal();
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        let mut shuffled = everyone.clone();
        shuffled.shuffle(&mut rng);
        let cut: Vec<ValidatorId> = shuffled.into_iter().take(f_of(n)).collect();
        for &c in &cut {
            if rng.gen_bool(0.5) {
                sim.isolate(c);
            } else {
                for o in without(&everyone, &[c]) {
                    sim.cut(o, c);
                }
            }
        }
        sim.expect_progress(&without(&everyone, &cut), LIVENESS_MS)?;
        sim.heal();
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        check_certificates(&sim)?;
        sim.finish()
    })();
    (sim, r)
}

/// A lossy, duplicating, reordering network with crashes and cuts at
/// random (any number of nodes); then everything heals and blocks become
/// final again; acknowledged transfers are in every chain.
fn chaos(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::lossy());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        random_faults(&mut sim, &mut rng, 20_000)?;
        sim.expect_progress(&everyone, LIVENESS_MS)?;
        check_certificates(&sim)?;
        sim.finish()
    })();
    (sim, r)
}

/// `count` Byzantine validators (the first primary among them) behave as
/// `behaviour` on a reliable network for 3 s while clients send
/// transfers: the honest ones keep agreeing and making progress.
fn byzantine(seed: u64, n: u32, opts: Options, behaviour: Behaviour, count: usize) -> Outcome {
    let mut rng = rng(seed);
    let mut others: Vec<ValidatorId> = (1..n).collect();
    others.shuffle(&mut rng);
    let bad: BTreeSet<ValidatorId> = std::iter::once(0).chain(others).take(count).collect();
    let cfg = SimConfig::with_options(seed, n, opts);
    // Fewer, fuller blocks: every vote's signature is checked for real.
    let mut sim = Sim::new(cfg, byzantine_factory(bad.clone(), behaviour, 150));
    for &b in &bad {
        sim.mark_faulty(b);
    }
    let r = (|| {
        let honest: Vec<ValidatorId> = (0..n).filter(|v| !bad.contains(v)).collect();
        let end = sim.now() + 3_000;
        while sim.now() < end {
            sim.expect_progress(&honest, LIVENESS_MS)?;
        }
        let provable = matches!(
            behaviour,
            Behaviour::ConflictingVotes | Behaviour::ForgedSignatures
        );
        if provable && sim.stats().penalties == 0 {
            return fail(format!(
                "no honest validator penalised the {behaviour:?} ones"
            ));
        }
        // Replays are dropped as stale (or, when they relay someone else's
        // vote as the sender's own, refused and penalised).
        let discarded: u64 = honest
            .iter()
            .filter_map(|&v| sim.status(v))
            .map(|s| s.dropped_messages + s.rejected_messages)
            .sum();
        if behaviour == Behaviour::Replay && discarded == 0 {
            return fail("no honest validator discarded a replayed message".into());
        }
        check_certificates(&sim)?;
        sim.finish()
    })();
    (sim, r)
}

/// f+1 Byzantine validators (an equivocating primary and its helpers):
/// more than PBFT tolerates. The checker must be able to see the damage.
pub fn too_many_byzantine(seed: u64, n: u32) -> Outcome {
    byzantine(
        seed,
        n,
        Options::default(),
        Behaviour::Equivocate,
        f_of(n) + 1,
    )
}

pub(super) fn scenarios() -> Vec<Scenario> {
    const SIZES: &[u32] = &[4, 7];
    vec![
        Scenario {
            name: "pbft/normal",
            sizes: SIZES,
            run: normal,
        },
        Scenario {
            name: "pbft/primary-crash",
            sizes: SIZES,
            run: primary_crash,
        },
        Scenario {
            name: "pbft/build-fails",
            sizes: SIZES,
            run: build_fails,
        },
        Scenario {
            name: "pbft/too-many-down",
            sizes: SIZES,
            run: too_many_down,
        },
        Scenario {
            name: "pbft/partitions",
            sizes: SIZES,
            run: partitions,
        },
        Scenario {
            name: "pbft/chaos",
            sizes: SIZES,
            run: chaos,
        },
        Scenario {
            name: "pbft/byzantine-silent",
            sizes: SIZES,
            run: |s, n, o| byzantine(s, n, o, Behaviour::Silent, f_of(n)),
        },
        Scenario {
            name: "pbft/byzantine-equivocating-primary",
            sizes: SIZES,
            run: |s, n, o| byzantine(s, n, o, Behaviour::Equivocate, f_of(n)),
        },
        Scenario {
            name: "pbft/byzantine-conflicting-votes",
            sizes: SIZES,
            run: |s, n, o| byzantine(s, n, o, Behaviour::ConflictingVotes, f_of(n)),
        },
        Scenario {
            name: "pbft/byzantine-forged-signatures",
            sizes: SIZES,
            run: |s, n, o| byzantine(s, n, o, Behaviour::ForgedSignatures, f_of(n)),
        },
        Scenario {
            name: "pbft/byzantine-replay",
            sizes: SIZES,
            run: |s, n, o| byzantine(s, n, o, Behaviour::Replay, f_of(n)),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker can fail: with f+1 Byzantine validators an equivocating
    /// primary gets two blocks final at one height, and the run reports it.
    #[test]
    fn f_plus_one_byzantine_validators_break_agreement_and_the_checker_says_so() {
        for n in [4, 7] {
            let found = (0..20u64).find_map(|seed| match too_many_byzantine(seed, n).1 {
                Err(v @ Violation::Agreement { .. }) => Some(v),
                _ => None,
            });
            assert!(
                found.is_some(),
                "no agreement violation on {n} nodes in 20 seeds"
            );
        }
    }
}
