//! Proof-of-work: miners with seeded luck on slow links (forks happen),
//! partitions where both sides mine, and crashes on a lossy network. Every
//! node but the last mines, each at 100 simulated hashes per second; the
//! target block time is 1 s, retargeted every 10 blocks.
//!
//! What must hold: every block a node applies executes (checked as it is
//! applied); while the network is whole, no reorganisation reaches the
//! confirmation depth; once faults heal, every node converges on one head
//! (the most work: nodes only ever move to more work) and every transfer a
//! client saw confirmed — on any side of a partition — is in that chain.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

use super::{crashes, fail, nodes_of, Options, Outcome, Scenario};
use crate::{EngineFactory, LinkConfig, PowSim, Sim, SimConfig, Violation};
use cairn_consensus::pow::{PowConfig, RetargetRule};
use cairn_consensus::ValidatorId;

/// Confirmations after which a client counts a transfer as committed.
const CONFIRMATIONS: u64 = 6;
/// Bound on convergence once faults heal.
const CONVERGE_MS: u64 = 60_000;

fn rule() -> RetargetRule {
    RetargetRule {
        target_block_time_ms: 1_000,
        // About the miners' hash power (3 × 100 H/s) times the target.
        initial_difficulty: 300,
        min_difficulty: 20,
        window: 10,
    }
}

pub(super) fn factory() -> EngineFactory {
    factory_with(Vec::new())
}

/// Miners whose rule changes at later heights (upgrades to proof-of-work
/// with new parameters).
fn factory_with(later: Vec<(u64, RetargetRule)>) -> EngineFactory {
    Arc::new(move |s| {
        let cfg = PowConfig {
            rule: rule(),
            // After a switch, mining starts at its height.
            first_height: s.first_height.max(1),
            later: later.clone(),
            last_height: s.last_height,
            max_future_drift_ms: 15_000,
            // Every node but the last mines.
            mining: s.me + 1 < s.validators,
            template_refresh_ms: 500,
            max_orphans: 256,
            max_side_bytes: cairn_consensus::pow::MAX_SIDE_BYTES,
        };
        // As the node starts it: from its store.
        match cairn_driver::start::pow(s.store, cfg) {
            Ok(pow) => Box::new(pow),
            Err(e) => panic!("node {} cannot start from its store: {e}", s.me),
        }
    })
}

fn sim(seed: u64, nodes: u32, opts: Options, link: LinkConfig) -> Sim {
    sim_with(seed, nodes, opts, link, None, None)
}

/// The settings of proof-of-work from `from_height` on.
pub(super) fn pow_sim(from_height: u64) -> PowSim {
    PowSim {
        from_height,
        to_height: None,
        hash_ms: 10,
        confirmations: CONFIRMATIONS,
        clock_skew_ms: 2_000,
        invalid_miner: None,
        withholding_miner: None,
    }
}

/// Where [`new_params`] changes the rule.
const NEW_PARAMS_AT: u64 = 15;

/// The rule from [`NEW_PARAMS_AT`] on: blocks twice as fast, from a
/// quarter of the difficulty, retargeted every 5 blocks.
fn faster_rule() -> RetargetRule {
    RetargetRule {
        target_block_time_ms: 500,
        initial_difficulty: 75,
        min_difficulty: 10,
        window: 5,
    }
}

/// An upgrade to proof-of-work with new parameters at height 15, on slow
/// links where rival blocks happen: one engine goes on across the change
/// (fork choice spans it), the first block under the new rule has its
/// initial difficulty, and every node ends on one head with every
/// confirmed transfer.
fn new_params(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut cfg = SimConfig::with_options(seed, n, opts);
    cfg.link = slow_links();
    cfg.schedule = vec![NEW_PARAMS_AT];
    cfg.pow = Some(pow_sim(1));
    cfg.client.resubmit_ms = 20_000;
    cfg.client.interval_ms = 100;
    let mut sim = Sim::new(cfg, factory_with(vec![(NEW_PARAMS_AT, faster_rule())]));
    let r = (|| {
        sim.run_for(40_000)?;
        let top = max_height(&sim);
        converge(&mut sim, top)?;
        let chain = sim.chain(0);
        let seal = |h: u64| {
            chain
                .get(h as usize)
                .and_then(|b| cairn_consensus::pow::PowSeal::decode(&b.header.engine_data).ok())
                .map(|s| s.difficulty)
        };
        let first = seal(NEW_PARAMS_AT);
        if first != Some(faster_rule().initial_difficulty) {
            return fail(format!(
                "the first block under the new rule has difficulty {first:?}, not {}",
                faster_rule().initial_difficulty
            ));
        }
        if max_height(&sim) < NEW_PARAMS_AT + 10 {
            return fail(format!("height {} after 40 s", max_height(&sim)));
        }
        sim.finish()
    })();
    (sim, r)
}

fn sim_with(
    seed: u64,
    nodes: u32,
    opts: Options,
    link: LinkConfig,
    invalid_miner: Option<ValidatorId>,
    withholding_miner: Option<ValidatorId>,
) -> Sim {
    let mut cfg = SimConfig::with_options(seed, nodes, opts);
    cfg.link = link;
    cfg.pow = Some(PowSim {
        invalid_miner,
        withholding_miner,
        ..pow_sim(1)
    });
    // Resubmit only long after a block would have held it.
    cfg.client.resubmit_ms = 20_000;
    cfg.client.interval_ms = 100;
    Sim::new(cfg, factory())
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ 0x9bf7_0002)
}

/// Links slow enough, next to a 1 s block time, for miners to find rival
/// blocks now and then (one block in ten or so).
fn slow_links() -> LinkConfig {
    LinkConfig {
        min_delay_ms: 20,
        max_delay_ms: 300,
        ..LinkConfig::reliable()
    }
}

pub(super) fn max_height(sim: &Sim) -> u64 {
    nodes_of(sim)
        .iter()
        .map(|&n| sim.height(n))
        .max()
        .unwrap_or(0)
}

/// Waits until every node is on one head above `above`.
pub(super) fn converge(sim: &mut Sim, above: u64) -> Result<(), Violation> {
    let everyone = nodes_of(sim);
    sim.within(CONVERGE_MS, "one head on every node", |s| {
        s.converged(&everyone) && everyone.iter().all(|&n| s.height(n) > above)
    })
}

/// On slow links next to the block time, miners find rival blocks at one
/// height in ten or more, and two halves of the hash power can race for a
/// few heights: a reorganisation of `k` blocks needs about `k` rival pairs
/// in a row, and 10,000 runs reach 7 (when a retarget makes blocks come
/// faster than the target). Deeper than this is not luck.
const LUCK_LIMIT: u64 = 12;

fn no_deep_reorg(sim: &Sim, what: &str, limit: u64) -> Result<(), Violation> {
    let depth = sim.stats().max_reorg_depth;
    if depth >= limit {
        return fail(format!(
            "{what}: a reorganisation of {depth} blocks on a whole network"
        ));
    }
    Ok(())
}

/// A whole network on slow links: forks happen and resolve, shallowly;
/// the difficulty settles near the target block time.
fn steady(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, slow_links());
    let r = (|| {
        sim.run_for(60_000)?;
        no_deep_reorg(&sim, "steady", LUCK_LIMIT)?;
        let h = max_height(&sim);
        // 60 blocks expected; luck and the first retargets spread it.
        if !(20..=180).contains(&h) {
            return fail(format!("{h} blocks in 60 s at a 1 s target"));
        }
        if sim.acks().is_empty() {
            return fail("no transfer reached 6 confirmations".into());
        }
        let top = max_height(&sim);
        converge(&mut sim, top)
    })();
    (sim, r)
}

/// Split in two halves that both mine; heal: the lighter side reorganises
/// onto the heavier chain and nothing confirmed on the winning side is lost
/// (the losing side's transfers go back to mempools and are mined again).
fn partition(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::reliable());
    let mut rng = rng(seed);
    let r = (|| {
        let everyone = nodes_of(&sim);
        sim.run_for(rng.gen_range(5_000..10_000))?;
        let half = n / 2;
        let (a, b): (Vec<ValidatorId>, Vec<ValidatorId>) =
            everyone.iter().partition(|&&v| v < half);
        sim.partition(&[a.clone(), b.clone()]);
        let split_at = max_height(&sim);
        sim.run_for(rng.gen_range(30_000..45_000))?;
        // Both sides have a miner: both chains grow apart (a side with a
        // third of the hash power at the whole network's difficulty may
        // take a while: the bound is generous, luck is luck).
        let (a0, b0) = (a[0], b[0]);
        sim.within(120_000, "both sides mine past the split", |s| {
            s.height(a0) > split_at && s.height(b0) > split_at
        })?;
        if sim.head_hash(a0) == sim.head_hash(b0) {
            return fail(format!(
                "both sides on one head after a split: {}",
                sim.describe()
            ));
        }
        let work_a = sim.chain_work(a[0]);
        let work_b = sim.chain_work(b[0]);
        sim.heal();
        let top = max_height(&sim);
        converge(&mut sim, top)?;
        // The heavier side's blocks survived the merge, unless the two
        // sides weighed the same.
        if sim.stats().reorgs == 0 {
            return fail("no node reorganised after the heal".into());
        }
        // Nodes only move to more work: the merged chain outweighs both.
        let merged = sim.chain_work(a[0]);
        if merged < work_a.max(work_b) {
            return fail(format!(
                "merged chain has work {merged}, the sides had {work_a} and {work_b}"
            ));
        }
        sim.reset_reorg_depth();
        sim.run_for(20_000)?;
        // Fast links: rival blocks are rare, a race of a confirmation
        // depth is not luck.
        no_deep_reorg(&sim, "after the heal", CONFIRMATIONS)?;
        let top = max_height(&sim);
        converge(&mut sim, top)
    })();
    (sim, r)
}

/// Crashes and restarts on a lossy, reordering network; then every node
/// comes back and they converge. A restarted node rebuilds its fork tree
/// from its chain (its mempool is gone) and catches up by block locator.
/// (Partitions are the other scenario: with partitions *and* crashes, a
/// transfer confirmed only on the losing side can be lost with the
/// mempools that held it — proof-of-work promises nothing there.)
fn chaos(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim(seed, n, opts, LinkConfig::lossy());
    let mut rng = rng(seed);
    let r = (|| {
        sim.run_for(3_000)?;
        crashes(&mut sim, &mut rng, 30_000)?;
        for v in 0..n {
            sim.restart(v);
        }
        sim.set_all_links(LinkConfig::reliable());
        let top = max_height(&sim);
        converge(&mut sim, top)?;
        // Transfers a reorganisation sent back to mempools get mined again.
        sim.run_for(15_000)?;
        let top = max_height(&sim);
        converge(&mut sim, top)
    })();
    (sim, r)
}

/// Miner 0 seals blocks with valid work and a made-up state root: every
/// other node refuses each one when it fails to execute (and blames the
/// sender), never stops, and the honest miners' chain goes on.
fn invalid_blocks(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim_with(seed, n, opts, slow_links(), Some(0), None);
    let r = (|| {
        sim.run_for(40_000)?;
        if sim.stats().rejected_blocks == 0 {
            return fail("no invalid block was refused".into());
        }
        // Two honest miners at 200 H/s against difficulty 300 find about
        // 27 blocks in 40 s; luck alone leaves fewer than 5 about once in
        // 10^7 runs (fewer than 10, once in 10^4: too often for a soak).
        let h = max_height(&sim);
        if h < 5 {
            return fail(format!("{h} blocks in 40 s with one invalid miner"));
        }
        let top = max_height(&sim);
        converge(&mut sim, top)
    })();
    (sim, r)
}

/// Miner 0 keeps what it mines to itself for a while (a private branch),
/// then publishes it all at once and mines in the open until every node is
/// on one head: the others take its branch if it has more work (a deep
/// reorganisation) or keep their chain; either way no node stops. (Transfers confirmed meanwhile are not
/// checked: a private branch that outworks six confirmations undoes them,
/// as it would on any proof-of-work chain.)
fn withheld_branch(seed: u64, n: u32, opts: Options) -> Outcome {
    let mut sim = sim_with(seed, n, opts, LinkConfig::reliable(), None, Some(0));
    let mut rng = rng(seed);
    let r = (|| {
        for _ in 0..3 {
            sim.run_for(rng.gen_range(5_000..15_000))?;
            sim.withhold(false);
            let top = max_height(&sim);
            converge(&mut sim, top.saturating_sub(1))?;
            sim.withhold(true);
        }
        sim.withhold(false);
        if sim.stats().blocks_mined == 0 {
            return fail("nothing mined".into());
        }
        let top = max_height(&sim);
        converge(&mut sim, top)
    })();
    (sim, r)
}

pub(super) fn scenarios() -> Vec<Scenario> {
    const SIZES: &[u32] = &[4, 6];
    vec![
        Scenario {
            name: "pow/steady",
            sizes: SIZES,
            run: steady,
        },
        Scenario {
            name: "pow/partition",
            sizes: SIZES,
            run: partition,
        },
        Scenario {
            name: "pow/chaos",
            sizes: SIZES,
            run: chaos,
        },
        Scenario {
            name: "pow/invalid-blocks",
            sizes: SIZES,
            run: invalid_blocks,
        },
        Scenario {
            name: "pow/withheld-branch",
            sizes: SIZES,
            run: withheld_branch,
        },
        Scenario {
            name: "pow/new-params",
            sizes: SIZES,
            run: new_params,
        },
    ]
}
