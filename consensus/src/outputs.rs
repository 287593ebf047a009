//! Whole outputs of each engine's key transitions: every action of a step,
//! rendered one per line, compared with the expected text. A change in what
//! an engine emits — an action more or less, another order, another
//! message — shows here as a diff.

use std::collections::BTreeMap;
use std::fmt::Write;

use cairn_chain::{Address, Block, Hash, Header, PublicKey, SecretKey};

use crate::pbft::{view_data, Pbft, PbftConfig, PbftMessage, Phase, Vote};
use crate::pow::{search_nonce, with_nonce, PowSeal, RetargetRule};
use crate::raft::{term_data, CommittedHead, Raft, RaftConfig, RaftMessage};
use crate::{Action, ConsensusEngine, ConsensusMessage, Input, Pow, PowConfig};

/// The first 8 hex digits of a hash.
fn short(h: &Hash) -> String {
    h.to_string().chars().take(8).collect()
}

fn blocks(bs: &[Block]) -> String {
    let parts: Vec<String> = bs
        .iter()
        .map(|b| format!("{}:{}", b.header.height, short(&b.hash())))
        .collect();
    format!("[{}]", parts.join(" "))
}

fn message(m: &ConsensusMessage) -> String {
    match m {
        ConsensusMessage::Raft(RaftMessage::AppendEntries {
            term,
            prev_index,
            prev_term,
            entries,
            leader_commit,
        }) => format!(
            "AppendEntries term {term} prev {prev_index}/{prev_term} entries {} commit {leader_commit}",
            blocks(entries)
        ),
        ConsensusMessage::Raft(r) => format!("{r:?}"),
        ConsensusMessage::Pbft(p) => pbft_message(p),
    }
}

fn vote(v: &Vote) -> String {
    format!(
        "{:?} v{} h{} {} by {}",
        v.phase,
        v.view,
        v.height,
        short(&v.digest),
        v.voter
    )
}

fn pbft_message(p: &PbftMessage) -> String {
    match p {
        PbftMessage::PrePrepare {
            view,
            height,
            block,
            justification,
        } => format!(
            "PrePrepare v{view} h{height} {} justified by {}",
            blocks(std::slice::from_ref(block)),
            justification.len()
        ),
        PbftMessage::Prepare(v) => format!("Prepare {}", vote(v)),
        PbftMessage::Commit(v) => format!("Commit {}", vote(v)),
        PbftMessage::ViewChange(vc) => format!(
            "ViewChange v{} h{} prepared {} by {}",
            vc.view,
            vc.height,
            vc.prepared.as_ref().map_or("nothing".into(), |p| format!(
                "{} in v{}",
                short(&p.digest),
                p.view
            )),
            vc.voter
        ),
        PbftMessage::BlockRequest { height, digest } => {
            format!("BlockRequest h{height} {}", short(digest))
        }
        PbftMessage::BlockReply(b) => format!("BlockReply {}", blocks(std::slice::from_ref(b))),
    }
}

/// A persisted key: its text prefix, then its binary rest in hex.
fn key(k: &[u8]) -> String {
    let text = k
        .iter()
        .position(|b| !b.is_ascii_graphic())
        .unwrap_or(k.len());
    format!(
        "{}{}",
        String::from_utf8_lossy(&k[..text]),
        hex::encode(&k[text..])
    )
}

/// One line per action.
fn render(actions: &[Action]) -> String {
    let mut out = String::new();
    for a in actions {
        let line = match a {
            Action::Send { to, msg } => format!("send {to} {}", message(msg)),
            Action::Broadcast { msg } => format!("broadcast {}", message(msg)),
            Action::Persist(writes) => {
                let keys: Vec<String> = writes
                    .iter()
                    .map(|(k, v)| {
                        let k = key(k);
                        match v {
                            Some(v) if v.len() > 16 => format!("{k}=<{} bytes>", v.len()),
                            Some(v) => format!("{k}={}", hex::encode(v)),
                            None => format!("{k} deleted"),
                        }
                    })
                    .collect();
                format!("persist {}", keys.join(", "))
            }
            Action::BuildBlock {
                parent,
                height,
                uncommitted,
                ..
            } => format!(
                "build {height} on {} over {}",
                short(parent),
                blocks(uncommitted)
            ),
            Action::Commit { blocks: b } => format!("commit {}", blocks(b)),
            Action::Sync { peer, height } => format!("sync from {peer} up to {height}"),
            Action::SetTimer { at_ms } => format!("timer {at_ms}"),
            Action::ValidateBlock { block } => {
                format!("validate {}", blocks(std::slice::from_ref(block)))
            }
            Action::Penalize { peer, reason } => format!("penalize {peer}: {reason}"),
            Action::SetHead { revert, apply } => {
                format!("set head: revert {revert}, apply {}", blocks(apply))
            }
            Action::Mine { block } => format!("mine {}", block.header.height),
            Action::StopMining => "stop mining".into(),
            Action::FetchBlocks { hash, locator } => {
                format!(
                    "fetch before {} ({} locator hashes)",
                    short(hash),
                    locator.len()
                )
            }
            Action::RejectBlock { hash, reason } => format!("reject {}: {reason}", short(hash)),
            Action::IgnoreBlock { hash, reason } => format!("ignore {}: {reason}", short(hash)),
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

#[track_caller]
fn expect(actions: &[Action], expected: &str) {
    let got = render(actions);
    if std::env::var_os("CAIRN_PRINT_OUTPUTS").is_some() {
        println!("== {expected}\n{got}");
        return;
    }
    let want: String = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(got == want, "expected:\n{want}\ngot:\n{got}");
}

mod raft {
    use super::*;

    fn cfg(me: u32) -> RaftConfig {
        RaftConfig {
            me,
            validators: 3,
            election_timeout_ms: 100,
            heartbeat_ms: 20,
            block_interval_ms: 10,
            empty_blocks: false,
            full_block: 1000,
            max_uncommitted: 1,
            seed: 42,
            any_parent_at: None,
        }
    }

    fn genesis() -> CommittedHead {
        CommittedHead {
            index: 0,
            term: 0,
            hash: Hash::digest(b"genesis"),
        }
    }

    fn msg(from: u32, m: RaftMessage) -> Input {
        Input::Message {
            from,
            msg: ConsensusMessage::Raft(m),
        }
    }

    fn block(term: u64) -> Block {
        Block {
            header: Header {
                parent: genesis().hash,
                height: 1,
                timestamp_ms: 1,
                tx_root: Hash::ZERO,
                state_root: Hash::ZERO,
                proposer: Address::ZERO,
                config: Hash::ZERO,
                engine_data: term_data(term),
            },
            transactions: Vec::new(),
            seal: Vec::new(),
        }
    }

    /// Node 0 wins an election: pre-votes, votes, leadership.
    fn leader() -> Raft {
        let mut r = Raft::new(cfg(0), genesis(), &BTreeMap::new());
        r.handle(0, Input::Tick);
        r.handle(1_000, Input::Tick);
        let pre = RaftMessage::VoteResponse {
            term: 1,
            granted: true,
            pre: true,
        };
        r.handle(1_001, msg(1, pre));
        let vote = RaftMessage::VoteResponse {
            term: 1,
            granted: true,
            pre: false,
        };
        r.handle(1_002, msg(1, vote));
        r
    }

    #[test]
    fn election() {
        let mut r = Raft::new(cfg(0), genesis(), &BTreeMap::new());
        expect(
            &r.handle(0, Input::Tick),
            "
            timer 195
        ",
        );
        expect(
            &r.handle(1_000, Input::Tick),
            "
            send 1 RequestVote { term: 1, last_index: 0, last_term: 0, pre: true }
            send 2 RequestVote { term: 1, last_index: 0, last_term: 0, pre: true }
            timer 1142
        ",
        );
        let pre = RaftMessage::VoteResponse {
            term: 1,
            granted: true,
            pre: true,
        };
        expect(
            &r.handle(1_001, msg(1, pre)),
            "
            persist raft/hard=01000000000000000100000000
            send 1 RequestVote { term: 1, last_index: 0, last_term: 0, pre: false }
            send 2 RequestVote { term: 1, last_index: 0, last_term: 0, pre: false }
            timer 1163
        ",
        );
        let vote = RaftMessage::VoteResponse {
            term: 1,
            granted: true,
            pre: false,
        };
        expect(
            &r.handle(1_002, msg(1, vote)),
            "
            send 1 AppendEntries term 1 prev 0/0 entries [] commit 0
            send 2 AppendEntries term 1 prev 0/0 entries [] commit 0
            timer 1012
        ",
        );
    }

    #[test]
    fn vote() {
        let mut r = Raft::new(cfg(1), genesis(), &BTreeMap::new());
        let request = RaftMessage::RequestVote {
            term: 1,
            last_index: 0,
            last_term: 0,
            pre: false,
        };
        expect(
            &r.handle(0, msg(0, request)),
            "
            persist raft/hard=010000000000000000
            persist raft/hard=01000000000000000100000000
            send 0 VoteResponse { term: 1, granted: true, pre: false }
            timer 164
        ",
        );
    }

    #[test]
    fn append_and_commit() {
        let mut r = leader();
        expect(
            &r.handle(1_003, Input::TransactionsAvailable { count: 1 }),
            "",
        );
        expect(
            &r.handle(1_020, Input::Tick),
            "
            build 1 on aeebad4a over []
            timer 1022
        ",
        );
        expect(
            &r.handle(1_020, Input::BlockBuilt { block: block(1) }),
            "
            persist raft/log/0000000000000001=<196 bytes>
            send 1 AppendEntries term 1 prev 0/0 entries [1:47e905c7] commit 0
            send 2 AppendEntries term 1 prev 0/0 entries [1:47e905c7] commit 0
            timer 1030
        ",
        );
        let ack = RaftMessage::AppendResponse {
            term: 1,
            success: true,
            index: 1,
            hint_term: 0,
        };
        expect(
            &r.handle(1_021, msg(1, ack)),
            "
            commit [1:47e905c7]
            persist raft/log/0000000000000001 deleted
            send 1 AppendEntries term 1 prev 1/1 entries [] commit 1
            send 2 AppendEntries term 1 prev 1/1 entries [] commit 1
        ",
        );
    }

    #[test]
    fn follower_appends_and_commits() {
        let mut r = Raft::new(cfg(1), genesis(), &BTreeMap::new());
        let append = RaftMessage::AppendEntries {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries: vec![block(1)],
            leader_commit: 0,
        };
        expect(
            &r.handle(0, msg(0, append)),
            "
            persist raft/hard=010000000000000000
            persist raft/log/0000000000000001=<196 bytes>
            send 0 AppendResponse { term: 1, success: true, index: 1, hint_term: 0 }
            timer 164
        ",
        );
        let commit = RaftMessage::AppendEntries {
            term: 1,
            prev_index: 1,
            prev_term: 1,
            entries: Vec::new(),
            leader_commit: 1,
        };
        expect(
            &r.handle(1, msg(0, commit)),
            "
            commit [1:47e905c7]
            persist raft/log/0000000000000001 deleted
            send 0 AppendResponse { term: 1, success: true, index: 1, hint_term: 0 }
            timer 198
        ",
        );
    }
}

mod pbft {
    use super::*;

    fn keys() -> Vec<SecretKey> {
        (0..4)
            .map(|i| SecretKey::from_label(&format!("pbft-outputs/{i}")))
            .collect()
    }

    fn net() -> Hash {
        Hash::digest(b"pbft-outputs")
    }

    fn genesis() -> Header {
        Header {
            parent: Hash::ZERO,
            height: 0,
            timestamp_ms: 0,
            tx_root: Hash::ZERO,
            state_root: Hash::ZERO,
            proposer: Address::ZERO,
            config: Hash::ZERO,
            engine_data: Vec::new(),
        }
    }

    fn engine(me: u32) -> Pbft {
        let k = keys();
        let cfg = PbftConfig {
            first_height: 0,
            any_first_parent: false,
            me,
            validators: k
                .iter()
                .map(SecretKey::public_key)
                .collect::<Vec<PublicKey>>(),
            key: k[me as usize].clone(),
            network: net(),
            block_interval_ms: 10,
            view_timeout_ms: 100,
            empty_blocks: false,
            full_block: 100,
        };
        Pbft::new(cfg, &genesis(), &BTreeMap::new())
    }

    fn block(view: u64) -> Block {
        Block {
            header: Header {
                parent: genesis().hash(),
                height: 1,
                timestamp_ms: 1,
                tx_root: Hash::ZERO,
                state_root: Hash::ZERO,
                proposer: Address::ZERO,
                config: Hash::ZERO,
                engine_data: view_data(view),
            },
            transactions: Vec::new(),
            seal: Vec::new(),
        }
    }

    fn vote_from(i: u32, phase: Phase, digest: Hash) -> Input {
        let k = keys();
        let v = Vote::sign(&net(), &k[i as usize], phase, 0, 1, digest, i);
        let m = match phase {
            Phase::Prepare => PbftMessage::Prepare(v),
            Phase::Commit => PbftMessage::Commit(v),
        };
        Input::Message {
            from: i,
            msg: ConsensusMessage::Pbft(m),
        }
    }

    #[test]
    fn pre_prepare_prepare_commit_on_the_primary() {
        let mut p = engine(0);
        expect(
            &p.handle(0, Input::Tick),
            "
            timer 10
        ",
        );
        expect(
            &p.handle(20, Input::TransactionsAvailable { count: 1 }),
            "
            build 1 on 58f218ae over []
            timer 120
        ",
        );
        let b = block(0);
        let d = b.hash();
        expect(
            &p.handle(21, Input::BlockBuilt { block: b }),
            "
            broadcast PrePrepare v0 h1 [1:7688a3c0] justified by 0
            persist pbft/votes=<60 bytes>, pbft/view=0000000000000000
            broadcast Prepare Prepare v0 h1 7688a3c0 by 0
        ",
        );
        expect(&p.handle(22, vote_from(1, Phase::Prepare, d)), "");
        expect(
            &p.handle(23, vote_from(2, Phase::Prepare, d)),
            "
            persist pbft/votes=<704 bytes>, pbft/view=0000000000000000
            broadcast Commit Commit v0 h1 7688a3c0 by 0
        ",
        );
        expect(&p.handle(24, vote_from(1, Phase::Commit, d)), "");
        expect(
            &p.handle(25, vote_from(2, Phase::Commit, d)),
            "
            commit [1:7688a3c0]
            persist pbft/votes=<20 bytes>, pbft/view=0000000000000000
            timer 35
        ",
        );
    }

    #[test]
    fn a_backup_validates_then_prepares() {
        let mut primary = engine(0);
        primary.handle(0, Input::Tick);
        primary.handle(20, Input::TransactionsAvailable { count: 1 });
        let proposed = primary.handle(21, Input::BlockBuilt { block: block(0) });
        let Some(pre_prepare) = proposed.iter().find_map(|a| match a {
            Action::Broadcast { msg } => Some(msg.clone()),
            _ => None,
        }) else {
            panic!("no pre-prepare: {proposed:?}")
        };
        let mut backup = engine(1);
        backup.handle(0, Input::Tick);
        expect(
            &backup.handle(
                22,
                Input::Message {
                    from: 0,
                    msg: pre_prepare,
                },
            ),
            "
            validate [1:7688a3c0]
            timer 122
        ",
        );
        expect(
            &backup.handle(
                23,
                Input::BlockValidated {
                    hash: block(0).hash(),
                    valid: true,
                },
            ),
            "
            persist pbft/votes=<60 bytes>, pbft/view=0000000000000000
            broadcast Prepare Prepare v0 h1 7688a3c0 by 1
        ",
        );
    }

    #[test]
    fn view_change_and_new_view() {
        // Validator 1 is the primary of view 1.
        let mut p = engine(1);
        p.handle(0, Input::Tick);
        p.handle(5, Input::TransactionsAvailable { count: 1 });
        let timeout = p.handle(1_000, Input::Tick);
        expect(
            &timeout,
            "
            persist pbft/votes=<20 bytes>, pbft/view=0000000000000000
            broadcast ViewChange v1 h1 prepared nothing by 1
            timer 1200
        ",
        );
        let mut others = Vec::new();
        for i in [2, 3] {
            let mut e = engine(i);
            e.handle(0, Input::Tick);
            e.handle(5, Input::TransactionsAvailable { count: 1 });
            let out = e.handle(1_000, Input::Tick);
            others.extend(out.into_iter().filter_map(|a| match a {
                Action::Broadcast { msg } => Some((i, msg)),
                _ => None,
            }));
        }
        let mut last = Vec::new();
        for (from, msg) in others {
            last = p.handle(1_001, Input::Message { from, msg });
        }
        expect(
            &last,
            "
            persist pbft/view=0100000000000000, pbft/justification=<263 bytes>
            persist pbft/votes=<20 bytes>, pbft/view=0100000000000000
            build 1 on 58f218ae over []
        ",
        );
    }

    /// View changes of validators 2 and 3 (and 0 when `with_zero`) to view
    /// 1, from engines that timed out with a transfer ready.
    fn view_changes_to_1(with_zero: bool) -> Vec<(u32, ConsensusMessage)> {
        let ids: &[u32] = if with_zero { &[0, 2, 3] } else { &[2, 3] };
        let mut msgs = Vec::new();
        for &i in ids {
            let mut e = engine(i);
            e.handle(0, Input::Tick);
            e.handle(5, Input::TransactionsAvailable { count: 1 });
            msgs.extend(
                e.handle(1_000, Input::Tick)
                    .into_iter()
                    .filter_map(|a| match a {
                        Action::Broadcast { msg } => Some((i, msg)),
                        _ => None,
                    }),
            );
        }
        msgs
    }

    /// A validator's view change to view w promises that it prepared
    /// nothing else below w: once it asked for view 2, a justified
    /// pre-prepare of view 1 does not draw it back.
    #[test]
    fn a_validator_that_asked_for_a_view_never_votes_in_a_lower_one() {
        let mut p = engine(1);
        p.handle(0, Input::Tick);
        for (from, msg) in view_changes_to_1(true) {
            p.handle(1_001, Input::Message { from, msg });
        }
        let pre_prepare = p
            .handle(1_002, Input::BlockBuilt { block: block(1) })
            .into_iter()
            .find_map(|a| match a {
                Action::Broadcast { msg } => Some(msg),
                _ => None,
            })
            .expect("the view-1 pre-prepare");
        let mut v = engine(2);
        v.handle(0, Input::Tick);
        v.handle(5, Input::TransactionsAvailable { count: 1 });
        let first = render(&v.handle(1_000, Input::Tick));
        assert!(first.contains("ViewChange v1"), "{first}");
        // 2f+1 asked for view 1 (it moves on from a view only then).
        for (from, msg) in view_changes_to_1(true).into_iter().filter(|(i, _)| *i != 2) {
            v.handle(1_001, Input::Message { from, msg });
        }
        let second = render(&v.handle(1_300, Input::Tick));
        assert!(second.contains("ViewChange v2"), "{second}");
        let out = v.handle(
            1_301,
            Input::Message {
                from: 1,
                msg: pre_prepare,
            },
        );
        let text = render(&out);
        assert!(
            !text.contains("validate") && !text.contains("Prepare"),
            "it stays out of view 1:\n{text}"
        );
        assert_eq!(v.status().role, "view-change");
    }

    #[test]
    fn a_new_primary_with_nothing_ready_announces_its_view_with_a_block() {
        // Validator 1 has no transfers: it would not propose in view 0, but
        // the validators waiting in the view change learn of view 1 only
        // from its first pre-prepare.
        let mut p = engine(1);
        p.handle(0, Input::Tick);
        let mut out = Vec::new();
        for (from, msg) in view_changes_to_1(true) {
            out.extend(p.handle(1_001, Input::Message { from, msg }));
        }
        let built = render(&out);
        assert!(
            built.contains("build 1 on 58f218ae over []"),
            "the new primary builds at once:\n{built}"
        );
    }

    #[test]
    fn a_primary_restarted_in_its_view_sends_the_views_justification_again() {
        let mut p = engine(1);
        p.handle(0, Input::Tick);
        p.handle(5, Input::TransactionsAvailable { count: 1 });
        let mut persisted = BTreeMap::new();
        let mut record = |actions: &[Action]| {
            for a in actions {
                if let Action::Persist(writes) = a {
                    for (k, v) in writes {
                        match v {
                            Some(v) => persisted.insert(k.clone(), v.clone()),
                            None => persisted.remove(k),
                        };
                    }
                }
            }
        };
        record(&p.handle(1_000, Input::Tick));
        for (from, msg) in view_changes_to_1(false) {
            record(&p.handle(1_001, Input::Message { from, msg }));
        }
        // It crashes before the block it builds is proposed, and restarts.
        let k = keys();
        let cfg = PbftConfig {
            first_height: 0,
            any_first_parent: false,
            me: 1,
            validators: k.iter().map(SecretKey::public_key).collect(),
            key: k[1].clone(),
            network: net(),
            block_interval_ms: 10,
            view_timeout_ms: 100,
            empty_blocks: false,
            full_block: 100,
        };
        let mut p = Pbft::new(cfg, &genesis(), &persisted);
        p.handle(2_000, Input::Tick);
        p.handle(2_001, Input::TransactionsAvailable { count: 1 });
        let out = p.handle(2_010, Input::Tick);
        expect(
            &out,
            "
            build 1 on 58f218ae over []
            timer 2101
        ",
        );
        let out = p.handle(2_002, Input::BlockBuilt { block: block(1) });
        let pre_prepare = out
            .iter()
            .find_map(|a| match a {
                Action::Broadcast { msg } => Some(msg.clone()),
                _ => None,
            })
            .expect("a pre-prepare");
        let ConsensusMessage::Pbft(PbftMessage::PrePrepare { justification, .. }) = &pre_prepare
        else {
            panic!("not a pre-prepare: {pre_prepare:?}");
        };
        assert_eq!(justification.len(), 3, "the view's three view changes");
        // A validator that never saw the view change joins view 1 on it,
        // and votes: the restarted primary is not taken for a faulty one.
        let mut backup = engine(0);
        backup.handle(0, Input::Tick);
        let out = backup.handle(
            2_003,
            Input::Message {
                from: 1,
                msg: pre_prepare,
            },
        );
        let got = render(&out);
        assert!(!got.contains("penalize"), "{got}");
        assert!(got.contains("validate"), "{got}");
        assert_eq!(backup.status().term, 1);
    }
}

mod pow {
    use super::*;

    const T0: u64 = 1_750_000_000_000;

    fn config(mining: bool) -> PowConfig {
        PowConfig {
            rule: RetargetRule {
                target_block_time_ms: 1000,
                initial_difficulty: 16,
                min_difficulty: 16,
                window: 1000,
            },
            first_height: 1,
            later: Vec::new(),
            last_height: None,
            max_future_drift_ms: 15_000,
            mining,
            template_refresh_ms: 500,
            max_orphans: 100,
            max_side_bytes: crate::pow::MAX_SIDE_BYTES,
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

    fn child(parent: &Header, tag: u8) -> Block {
        let header = Header {
            parent: parent.hash(),
            height: parent.height + 1,
            timestamp_ms: parent.timestamp_ms + 1000,
            tx_root: Hash::ZERO,
            state_root: Hash::digest(&[tag]),
            proposer: Address::ZERO,
            config: Hash::ZERO,
            engine_data: PowSeal {
                difficulty: 16,
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

    fn now() -> u64 {
        T0 + 100_000
    }

    #[test]
    fn a_miner_starts_and_finds_a_block() {
        let mut pow = Pow::new(config(true), &[genesis()], 0);
        expect(
            &pow.handle(now(), Input::Tick),
            "
            build 1 on 02e9b82f over []
            timer 1750000100500
        ",
        );
        let found = child(&genesis(), 1);
        expect(
            &pow.handle(now(), Input::Block { block: found }),
            "
            set head: revert 0, apply [1:413af58a]
            build 2 on 413af58a over []
            timer 1750000100500
        ",
        );
    }

    #[test]
    fn a_heavier_branch_reorganises() {
        let mut pow = Pow::new(config(false), &[genesis()], 0);
        let a = child(&genesis(), 1);
        pow.handle(now(), Input::Block { block: a.clone() });
        let b1 = child(&genesis(), 2);
        let b2 = child(&b1.header, 2);
        expect(
            &pow.handle(now(), Input::Block { block: b1 }),
            "
            timer 1750000160000
        ",
        );
        expect(
            &pow.handle(now(), Input::Block { block: b2 }),
            "
            set head: revert 1, apply [1:b2168df2 2:c644884e]
            timer 1750000160000
        ",
        );
        expect(
            &pow.handle(now(), Input::Reverted { blocks: vec![a] }),
            "
            timer 1750000160000
        ",
        );
    }
}
