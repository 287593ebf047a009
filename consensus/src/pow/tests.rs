use cairn_chain::{Address, Block, Hash, Header};

use super::*;

const T0: u64 = 1_750_000_000_000;

fn rule() -> RetargetRule {
    RetargetRule {
        target_block_time_ms: 1000,
        initial_difficulty: 16,
        min_difficulty: 16,
        window: 1000,
    }
}

fn config(mining: bool) -> PowConfig {
    PowConfig {
        rule: rule(),
        first_height: 1,
        later: Vec::new(),
        last_height: None,
        max_future_drift_ms: 15_000,
        mining,
        template_refresh_ms: 500,
        max_orphans: 100,
        max_side_bytes: MAX_SIDE_BYTES,
    }
}

fn genesis() -> Header {
    Header {
        parent: Hash::ZERO,
        height: 0,
        timestamp_ms: T0,
        tx_root: Hash::ZERO,
        state_root: Hash::digest(b"genesis state"),
        proposer: Address::ZERO,
        config: Hash::ZERO,
        engine_data: Vec::new(),
    }
}

/// A mined child of `parent` (`tag` makes siblings differ).
fn child(parent: &Header, tag: u8, difficulty: u64) -> Block {
    let header = Header {
        parent: parent.hash(),
        height: parent.height + 1,
        timestamp_ms: parent.timestamp_ms + 1000,
        tx_root: Hash::ZERO,
        state_root: Hash::digest(&[tag]),
        proposer: Address::ZERO,
        config: Hash::ZERO,
        engine_data: PowSeal {
            difficulty,
            nonce: 0,
        }
        .encode(),
    };
    let (nonce, _) = search_nonce(&header, u64::from(tag) << 32, 1 << 30).expect("nonce");
    Block {
        header: with_nonce(&header, nonce).expect("seal"),
        transactions: Vec::new(),
        seal: Vec::new(),
    }
}

fn chain_from(parent: &Header, len: usize, tag: u8) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for _ in 0..len {
        let p = out.last().map_or(parent.clone(), |b| b.header.clone());
        out.push(child(&p, tag, 16));
    }
    out
}

fn engine(mining: bool) -> Pow {
    Pow::new(config(mining), &[genesis()], 0)
}

fn now() -> u64 {
    T0 + 100_000
}

fn feed(pow: &mut Pow, block: &Block) -> Vec<Action> {
    pow.handle(
        now(),
        Input::Block {
            block: block.clone(),
        },
    )
}

fn set_heads(actions: &[Action]) -> Vec<(u64, Vec<Hash>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetHead { revert, apply } => {
                Some((*revert, apply.iter().map(Block::hash).collect()))
            }
            _ => None,
        })
        .collect()
}

fn rejected(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RejectBlock { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_heavier_branch_wins_and_equal_work_keeps_the_first_seen() {
    let mut pow = engine(false);
    let a = chain_from(&genesis(), 2, 1);
    for b in &a {
        let acts = feed(&mut pow, b);
        assert_eq!(set_heads(&acts), vec![(0, vec![b.hash()])]);
    }
    // A rival branch of equal work: the head stays.
    let b = chain_from(&genesis(), 3, 2);
    assert!(set_heads(&feed(&mut pow, &b[0])).is_empty());
    assert!(set_heads(&feed(&mut pow, &b[1])).is_empty());
    // One more block makes it heavier: revert 2, apply 3.
    let acts = feed(&mut pow, &b[2]);
    assert_eq!(
        set_heads(&acts),
        vec![(2, b.iter().map(Block::hash).collect())]
    );
    let st = pow.status().pow.expect("pow status");
    assert_eq!(st.head, b[2].hash().to_string());
    assert_eq!(st.tip_work, 48);
    assert_eq!((st.reorgs, st.max_reorg_depth), (1, 2));
}

#[test]
fn invalid_blocks_are_rejected_and_the_head_does_not_move() {
    let mut pow = engine(false);
    let good = child(&genesis(), 1, 16);
    feed(&mut pow, &good);

    // Wrong difficulty (the rule demands 16), with a valid proof for it.
    let easy = child(&good.header, 2, 17);
    let r = rejected(&feed(&mut pow, &easy));
    assert!(r[0].contains("retarget rule demands 16"), "{r:?}");

    // Proof of work that does not meet the target.
    let mut no_work = child(&good.header, 3, 16);
    while check_pow(&no_work.header).is_ok() {
        no_work.header.timestamp_ms += 1;
    }
    let r = rejected(&feed(&mut pow, &no_work));
    assert!(r[0].contains("above the target"), "{r:?}");

    // Timestamp not above the median of the last blocks.
    let mut old = child(&good.header, 4, 16);
    old.header.timestamp_ms = T0;
    let (nonce, _) = search_nonce(&old.header, 0, 1 << 30).expect("nonce");
    old.header = with_nonce(&old.header, nonce).expect("seal");
    let r = rejected(&feed(&mut pow, &old));
    assert!(r[0].contains("median"), "{r:?}");

    // Too far in the future for this clock.
    let mut future = child(&good.header, 5, 16);
    future.header.timestamp_ms = now() + 60_000;
    let (nonce, _) = search_nonce(&future.header, 0, 1 << 30).expect("nonce");
    future.header = with_nonce(&future.header, nonce).expect("seal");
    // No blame (an honest node's clock may run ahead), not remembered:
    // once this clock reaches it, the same block is taken.
    let acts = feed(&mut pow, &future);
    assert!(rejected(&acts).is_empty(), "{acts:?}");
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::IgnoreBlock { hash, reason }
            if *hash == future.hash() && reason.contains("ahead of this node's clock"))),
        "{acts:?}"
    );

    // A wrong transaction root.
    let mut bad_root = child(&good.header, 6, 16);
    bad_root.header.tx_root = Hash::digest(b"x");
    let (nonce, _) = search_nonce(&bad_root.header, 0, 1 << 30).expect("nonce");
    bad_root.header = with_nonce(&bad_root.header, nonce).expect("seal");
    let r = rejected(&feed(&mut pow, &bad_root));
    assert!(r[0].contains("transaction root"), "{r:?}");

    let st = pow.status().pow.expect("pow");
    assert_eq!(st.head, good.hash().to_string());
    assert_eq!(pow.status().rejected_messages, 5);

    // The block set aside for its timestamp is taken once this clock
    // reaches it.
    let later = pow.handle(
        now() + 60_000,
        Input::Block {
            block: future.clone(),
        },
    );
    assert!(
        later
            .iter()
            .all(|a| !matches!(a, Action::RejectBlock { .. } | Action::IgnoreBlock { .. })),
        "{later:?}"
    );
    assert_eq!(set_heads(&later), vec![(0, vec![future.hash()])]);
}

#[test]
fn an_orphan_asks_for_its_ancestors_and_connects_when_they_come() {
    let mut pow = engine(false);
    let a = chain_from(&genesis(), 3, 1);
    let acts = feed(&mut pow, &a[2]);
    let fetch: Vec<_> = acts
        .iter()
        .filter_map(|x| match x {
            Action::FetchBlocks { hash, locator } => Some((*hash, locator.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(fetch, vec![(a[2].hash(), vec![genesis().hash()])]);
    assert!(set_heads(&acts).is_empty());
    assert_eq!(pow.status().pow.expect("pow").orphans, 1);
    feed(&mut pow, &a[0]);
    // The missing link connects the held block: both applied at once.
    let acts = feed(&mut pow, &a[1]);
    assert_eq!(set_heads(&acts), vec![(0, vec![a[1].hash(), a[2].hash()])]);
    assert_eq!(pow.status().pow.expect("pow").orphans, 0);
}

#[test]
fn a_block_that_does_not_execute_is_dropped_with_its_descendants() {
    let mut pow = engine(false);
    let a = chain_from(&genesis(), 1, 1);
    feed(&mut pow, &a[0]);
    let b = chain_from(&genesis(), 3, 2);
    // Two blocks of b outweigh a: the engine moves there.
    assert!(set_heads(&feed(&mut pow, &b[0])).is_empty());
    let acts = feed(&mut pow, &b[1]);
    assert_eq!(set_heads(&acts), vec![(1, vec![b[0].hash(), b[1].hash()])]);
    // The driver answers with the block it reverted (the engine keeps no
    // bodies of canonical blocks).
    pow.handle(
        now(),
        Input::Reverted {
            blocks: vec![a[0].clone()],
        },
    );
    // The driver finds b[1] bad after applying b[0].
    let acts = feed(&mut pow, &b[2]);
    assert_eq!(set_heads(&acts).len(), 1);
    let acts = pow.handle(
        now(),
        Input::BlockRejected {
            hash: b[1].hash(),
            reason: "state root".into(),
            head: b[0].hash(),
        },
    );
    // b[0] and a[0] weigh the same; b[0] is where the driver stands.
    assert!(set_heads(&acts).is_empty());
    assert_eq!(pow.status().pow.expect("pow").head, b[0].hash().to_string());
    // b[1] and b[2] are invalid for good; a child of b[2] too.
    let r = rejected(&feed(&mut pow, &b[1]));
    assert_eq!(r, vec!["known invalid block".to_string()]);
    let c = child(&b[2].header, 3, 16);
    let r = rejected(&feed(&mut pow, &c));
    assert_eq!(r, vec!["its parent is invalid".to_string()]);
    // a grows heavier: back to a.
    let a1 = child(&a[0].header, 1, 16);
    let acts = feed(&mut pow, &a1);
    assert_eq!(set_heads(&acts), vec![(1, vec![a[0].hash(), a1.hash()])]);
}

#[test]
fn a_miner_mines_on_the_head_and_drops_its_job_when_the_head_moves() {
    let mut pow = engine(true);
    let acts = pow.handle(now(), Input::Tick);
    let build = acts.iter().find_map(|a| match a {
        Action::BuildBlock {
            parent,
            height,
            engine_data,
            ..
        } => Some((*parent, *height, engine_data.clone())),
        _ => None,
    });
    let (parent, height, data) = build.expect("asks for a template");
    assert_eq!((parent, height), (genesis().hash(), 1));
    assert_eq!(PowSeal::decode(&data).expect("seal").difficulty, 16);

    let mut template = child(&genesis(), 9, 16);
    template.header.timestamp_ms = T0; // not above the median: fixed
    let acts = pow.handle(now(), Input::BlockBuilt { block: template });
    let mined = acts.iter().find_map(|a| match a {
        Action::Mine { block } => Some(block.clone()),
        _ => None,
    });
    assert_eq!(mined.expect("mines").header.timestamp_ms, T0 + 1);

    // A better head arrives: stop, and a template on the new head.
    let other = child(&genesis(), 1, 16);
    let acts = feed(&mut pow, &other);
    let stop = acts.iter().position(|a| *a == Action::StopMining);
    let build = acts.iter().position(
        |a| matches!(a, Action::BuildBlock { parent, height: 2, .. } if *parent == other.hash()),
    );
    assert!(
        stop.is_some() && build.is_some() && stop < build,
        "{acts:?}"
    );
}

#[test]
fn a_restarted_engine_knows_its_chain_and_its_work() {
    let a = chain_from(&genesis(), 5, 1);
    let mut headers = vec![genesis()];
    headers.extend(a.iter().map(|b| b.header.clone()));
    // Only the last three headers, with the head's total work.
    let pow = Pow::new(config(false), &headers[3..], 80);
    let st = pow.status().pow.expect("pow");
    assert_eq!(st.head, a[4].hash().to_string());
    assert_eq!(st.tip_work, 80);
    assert_eq!(pow.status().committed_height, 5);
    // The locator names the loaded chain, head first.
    let loc = pow.locator();
    assert_eq!(loc.first(), Some(&a[4].hash()));
    assert_eq!(loc.last(), Some(&a[2].hash()));
}

#[test]
fn the_difficulty_follows_the_retarget_rule_on_the_chain() {
    let mut cfg = config(false);
    cfg.rule.window = 4;
    let mut pow = Pow::new(cfg, &[genesis()], 0);
    // Blocks 1..3 at difficulty 16, each 250 ms apart (4x too fast).
    let mut parent = genesis();
    for i in 1..=3u8 {
        let mut b = child(&parent, i, 16);
        b.header.timestamp_ms = parent.timestamp_ms + 250;
        let (n, _) = search_nonce(&b.header, 0, 1 << 30).expect("nonce");
        b.header = with_nonce(&b.header, n).expect("seal");
        assert!(rejected(&feed(&mut pow, &b)).is_empty());
        parent = b.header;
    }
    // Height 4 is a boundary: 3 intervals of 250 ms where 3 s were
    // expected; clamped to 4x.
    assert_eq!(pow.status().pow.expect("pow").difficulty, 64);
}

#[test]
fn after_a_switch_mining_starts_on_the_last_final_block_with_the_rules_counted_from_it() {
    // Heights 1..=5 are another engine's final blocks, whose engine data
    // would read as a huge seal: they count for no work and set no
    // difficulty.
    let mut finals = vec![genesis()];
    for _ in 1..=5 {
        let p = finals.last().cloned().expect("parent");
        finals.push(Header {
            parent: p.hash(),
            height: p.height + 1,
            timestamp_ms: p.timestamp_ms + 100,
            engine_data: vec![0xff; 16],
            ..p
        });
    }
    let mut cfg = config(false);
    cfg.first_height = 6;
    cfg.rule.window = 4;
    let start_work: u128 = finals
        .iter()
        .map(|h| u128::from(Pow::work_of(&cfg, h)))
        .sum();
    assert_eq!(start_work, 0);
    let mut pow = Pow::new(cfg, &finals, start_work);
    assert_eq!(pow.status().pow.expect("pow").difficulty, 16);
    // No proof-of-work block below the switch, even with valid work.
    let below = child(&finals[4], 9, 16);
    let reasons = rejected(&feed(&mut pow, &below));
    assert!(
        reasons.iter().any(|r| r.contains("starts at height 6")),
        "{reasons:?}"
    );
    // Blocks 6..8 at the initial difficulty, 250 ms apart (4x too fast):
    // height 9 is the first boundary, three intervals after the switch.
    let mut parent = finals[5].clone();
    for i in 1..=3u8 {
        let mut b = child(&parent, i, 16);
        b.header.timestamp_ms = parent.timestamp_ms + 250;
        let (n, _) = search_nonce(&b.header, 0, 1 << 30).expect("nonce");
        b.header = with_nonce(&b.header, n).expect("seal");
        let acts = feed(&mut pow, &b);
        assert!(rejected(&acts).is_empty(), "block {i}");
        assert_eq!(set_heads(&acts), vec![(0, vec![b.hash()])]);
        parent = b.header;
    }
    let st = pow.status().pow.expect("pow");
    assert_eq!((st.tip_work, st.difficulty), (48, 64));
}

#[test]
fn new_parameters_restart_the_difficulty_at_their_height_and_fork_choice_spans_them() {
    // From height 4 on: initial difficulty 64, windows of 2 counted from
    // block 3.
    let mut cfg = config(false);
    cfg.later = vec![(
        4,
        RetargetRule {
            initial_difficulty: 64,
            window: 2,
            ..rule()
        },
    )];
    let mut pow = Pow::new(cfg, &[genesis()], 0);
    let a = chain_from(&genesis(), 3, 1);
    for b in &a {
        assert!(rejected(&feed(&mut pow, b)).is_empty());
    }
    assert_eq!(pow.status().pow.expect("pow").difficulty, 64);
    // Block 4 at the old difficulty is refused; at the new one, taken.
    let old = child(&a[2].header, 1, 16);
    let reasons = rejected(&feed(&mut pow, &old));
    assert!(
        reasons.iter().any(|r| r.contains("demands 64")),
        "{reasons:?}"
    );
    let new = child(&a[2].header, 2, 64);
    assert_eq!(
        set_heads(&feed(&mut pow, &new)),
        vec![(0, vec![new.hash()])]
    );
    // A rival branch from block 2 with more work across the change wins:
    // 3' at 16, then 4' and 5' under the new rule (window boundary at 5:
    // one interval of 1 s where 1 s is expected, so still 64).
    let b3 = child(&a[1].header, 3, 16);
    let b4 = child(&b3.header, 3, 64);
    let b5 = child(&b4.header, 3, 64);
    for b in [&b3, &b4] {
        let acts = feed(&mut pow, b);
        assert!(rejected(&acts).is_empty(), "{acts:?}");
        assert!(set_heads(&acts).is_empty(), "equal work keeps the first");
    }
    let acts = feed(&mut pow, &b5);
    assert_eq!(
        set_heads(&acts),
        vec![(2, vec![b3.hash(), b4.hash(), b5.hash()])]
    );
}

#[test]
fn blocks_waiting_for_their_parent_are_bounded() {
    let mut cfg = config(false);
    cfg.max_orphans = 3;
    let mut pow = Pow::new(cfg, &[genesis()], 0);
    let chain = chain_from(&genesis(), 6, 1);
    // Every block but the first arrives without its parent.
    for b in &chain[1..] {
        feed(&mut pow, b);
    }
    assert_eq!(pow.status().pow.expect("pow").orphans, 3);
}

#[test]
fn cheap_seals_are_refused_before_they_are_held_as_orphans() {
    // The head's difficulty is 512: a seal under 512 / 16 = 32 is not worth
    // holding, one under the chain's minimum (16) is invalid.
    let mut cfg = config(false);
    cfg.rule.initial_difficulty = 512;
    let mut pow = Pow::new(cfg, &[genesis()], 0);
    let unknown_parent = Header {
        height: 7,
        ..genesis()
    };
    let below_min = child(&unknown_parent, 1, 1);
    let r = rejected(&feed(&mut pow, &below_min));
    assert!(r[0].contains("below the chain's minimum 16"), "{r:?}");
    let far_below = child(&unknown_parent, 2, 16);
    let r = rejected(&feed(&mut pow, &far_below));
    assert!(r[0].contains("far below the head's"), "{r:?}");
    assert_eq!(pow.status().pow.expect("pow").orphans, 0);
    // At the floor, an orphan is held (and its parent asked for).
    let worth_it = child(&unknown_parent, 3, 32);
    feed(&mut pow, &worth_it);
    assert_eq!(pow.status().pow.expect("pow").orphans, 1);
}

#[test]
fn a_fetch_answer_must_follow_the_locator() {
    let g = genesis();
    let chain = chain_from(&g, 3, 1);
    let headers: Vec<&Header> = chain.iter().map(|b| &b.header).collect();
    assert!(answer_connects(&[g.hash()], &headers));
    assert!(answer_connects(&[Hash::digest(b"x"), g.hash()], &headers));
    assert!(answer_connects(&[g.hash()], &[]));
    // Not after anything asked for.
    assert!(!answer_connects(&[Hash::digest(b"x")], &headers));
    // A gap, or blocks out of order.
    assert!(!answer_connects(&[g.hash()], &[headers[0], headers[2]]));
    assert!(!answer_connects(
        &[g.hash()],
        &[headers[0], headers[2], headers[1]]
    ));
    // Another branch's block in the middle.
    let other = child(&chain[0].header, 9, 16);
    assert!(!answer_connects(
        &[g.hash()],
        &[headers[0], &other.header, headers[2]]
    ));
}

#[test]
fn side_branches_are_bounded_by_bytes_least_work_first() {
    let a = chain_from(&genesis(), 3, 1);
    let c = chain_from(&genesis(), 3, 3);
    let b = chain_from(&genesis(), 1, 2);
    let size = codec::encoded_len(&c[0]);
    let mut cfg = config(false);
    cfg.max_side_bytes = 2 * size;
    let mut pow = Pow::new(cfg, &[genesis()], 0);
    for blk in a.iter().chain(&c[..2]) {
        feed(&mut pow, blk);
    }
    let known = |pow: &Pow| pow.status().pow.expect("pow").known_blocks;
    // Genesis, the canonical three, the side branch of two: at the bound.
    assert_eq!(known(&pow), 6);
    // One more side block: the branch tip with the least work goes (the
    // new one-block branch, not the two-block one).
    feed(&mut pow, &b[0]);
    assert_eq!(known(&pow), 6);
    // The two-block branch is still there: its next block connects (no
    // orphan), and is the tip dropped in turn.
    feed(&mut pow, &c[2]);
    let st = pow.status().pow.expect("pow");
    assert_eq!(st.orphans, 0);
    assert_eq!(st.known_blocks, 6);
    assert_eq!(st.head, a[2].hash().to_string());
}

#[test]
fn before_a_switch_to_a_final_engine_mining_stops_and_a_named_branch_is_adopted() {
    let cfg = PowConfig {
        last_height: Some(3),
        ..config(true)
    };
    let mut pow = Pow::new(cfg, &[genesis()], 0);
    let heavy = chain_from(&genesis(), 3, 1);
    let light = chain_from(&genesis(), 2, 2);
    for b in heavy.iter().chain(&light) {
        let acts = feed(&mut pow, b);
        assert!(rejected(&acts).is_empty(), "{acts:?}");
    }
    assert_eq!(
        pow.status().pow.expect("pow").head,
        heavy[2].hash().to_string()
    );
    // No template at the last height: nothing to mine past it.
    let acts = pow.handle(now() + 10_000, Input::Tick);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::BuildBlock { .. })),
        "{acts:?}"
    );
    // A block past it is invalid, whatever its work.
    let past = child(&heavy[2].header, 1, 16);
    let acts = feed(&mut pow, &past);
    assert!(
        rejected(&acts)
            .iter()
            .any(|r| r.contains("ends at height 3")),
        "{acts:?}"
    );
    // The final engine's first block names the lighter branch's block:
    // the head moves there, against the work.
    let acts = pow.handle(
        now(),
        Input::Adopt {
            hash: light[1].hash(),
        },
    );
    assert_eq!(
        set_heads(&acts),
        vec![(3, vec![light[0].hash(), light[1].hash()])],
        "{acts:?}"
    );
    // An unknown block is not adopted.
    let acts = pow.handle(now(), Input::Adopt { hash: Hash::ZERO });
    assert!(set_heads(&acts).is_empty(), "{acts:?}");
}
