//! Raft unit tests: exact actions for single steps. Runs of whole networks
//! under faults are the simulator's (`crate::sim::scenarios::raft`).

use std::collections::BTreeMap;

use cairn_chain::{Address, Block, Hash, Header};

use super::*;

fn cfg(me: u32, n: u32) -> RaftConfig {
    RaftConfig {
        me,
        validators: n,
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

fn block_on(parent: Hash, height: u64, term: u64, tag: u8) -> Block {
    Block {
        header: Header {
            parent,
            height,
            timestamp_ms: height,
            tx_root: Hash::digest(&[tag]),
            state_root: Hash::ZERO,
            proposer: Address::ZERO,
            config: Hash::ZERO,
            engine_data: term_data(term),
        },
        transactions: Vec::new(),
        seal: Vec::new(),
    }
}

fn persist_into(disk: &mut BTreeMap<Vec<u8>, Vec<u8>>, actions: &[Action]) {
    for a in actions {
        if let Action::Persist(writes) = a {
            for (k, v) in writes {
                match v {
                    Some(v) => disk.insert(k.clone(), v.clone()),
                    None => disk.remove(k),
                };
            }
        }
    }
}

fn append(
    term: u64,
    prev_index: u64,
    prev_term: u64,
    entries: Vec<Block>,
    leader_commit: u64,
) -> Input {
    Input::Message {
        from: 0,
        msg: ConsensusMessage::Raft(RaftMessage::AppendEntries {
            term,
            prev_index,
            prev_term,
            entries,
            leader_commit,
        }),
    }
}

fn append_response(actions: &[Action]) -> Option<(bool, u64, u64)> {
    actions.iter().find_map(|a| match a {
        Action::Send {
            msg:
                ConsensusMessage::Raft(RaftMessage::AppendResponse {
                    success,
                    index,
                    hint_term,
                    ..
                }),
            ..
        } => Some((*success, *index, *hint_term)),
        _ => None,
    })
}

#[test]
fn vote_is_persisted_before_it_is_sent() {
    let mut r = Raft::new(cfg(1, 3), genesis(), &BTreeMap::new());
    let acts = r.handle(
        0,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Raft(RaftMessage::RequestVote {
                term: 1,
                last_index: 0,
                last_term: 0,
                pre: false,
            }),
        },
    );
    let persist = acts
        .iter()
        .rposition(|a| matches!(a, Action::Persist(_)))
        .expect("persists");
    let send = acts
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    to: 0,
                    msg: ConsensusMessage::Raft(RaftMessage::VoteResponse {
                        term: 1,
                        granted: true,
                        pre: false,
                    })
                }
            )
        })
        .expect("grants");
    assert!(persist < send);
    // The persisted hard state records the vote.
    let Action::Persist(w) = &acts[persist] else {
        unreachable!()
    };
    assert_eq!(w[0].1, Some(codec::encode(&(1u64, Some(0u32)))));
}

#[test]
fn refuses_a_vote_for_a_stale_log_and_a_second_candidate() {
    let mut r = Raft::new(cfg(2, 3), genesis(), &BTreeMap::new());
    // Give node 2 an entry of term 1.
    let b = block_on(genesis().hash, 1, 1, 9);
    r.handle(
        0,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Raft(RaftMessage::AppendEntries {
                term: 1,
                prev_index: 0,
                prev_term: 0,
                entries: vec![b],
                leader_commit: 0,
            }),
        },
    );
    // Long after the leader of term 1 was last heard from.
    let vote = |r: &mut Raft, from, term, last_index, last_term| {
        r.handle(
            1_000,
            Input::Message {
                from,
                msg: ConsensusMessage::Raft(RaftMessage::RequestVote {
                    term,
                    last_index,
                    last_term,
                    pre: false,
                }),
            },
        )
        .into_iter()
        .find_map(|a| match a {
            Action::Send {
                msg: ConsensusMessage::Raft(RaftMessage::VoteResponse { granted, .. }),
                ..
            } => Some(granted),
            _ => None,
        })
    };
    assert_eq!(vote(&mut r, 1, 2, 0, 0), Some(false), "stale log");
    assert_eq!(vote(&mut r, 1, 2, 1, 1), Some(true), "up to date");
    assert_eq!(
        vote(&mut r, 0, 2, 1, 1),
        Some(false),
        "already voted in term 2"
    );
}

#[test]
fn a_restarted_node_recovers_term_vote_and_log_from_disk() {
    let mut disk = BTreeMap::new();
    let mut r = Raft::new(cfg(1, 3), genesis(), &disk);
    let b1 = block_on(genesis().hash, 1, 2, 1);
    let b2 = block_on(b1.hash(), 2, 2, 2);
    let acts = r.handle(5, append(2, 0, 0, vec![b1.clone(), b2.clone()], 1));
    persist_into(&mut disk, &acts);
    assert!(acts.contains(&Action::Commit {
        blocks: vec![b1.clone()]
    }));
    let before = r.status();
    // Restart from the store's head (block 1) and the persisted keys.
    let head = CommittedHead {
        index: 1,
        term: 2,
        hash: b1.hash(),
    };
    let restored = Raft::new(cfg(1, 3), head, &disk);
    let after = restored.status();
    assert_eq!(
        (after.term, after.committed_height, after.uncommitted),
        (before.term, before.committed_height, before.uncommitted)
    );
    assert_eq!(after.leader, None, "who leads is not persisted");
    assert_eq!(restored.voted_for, r.voted_for);
    assert_eq!(restored.tail, vec![b2]);
}

#[test]
fn a_conflicting_follower_points_the_leader_past_the_whole_term() {
    // The follower holds entries 1..=5 of term 1, none final.
    let mut r = Raft::new(cfg(1, 3), genesis(), &BTreeMap::new());
    let mut parent = genesis().hash;
    let mut entries = Vec::new();
    for h in 1..=5 {
        let b = block_on(parent, h, 1, h as u8);
        parent = b.hash();
        entries.push(b);
    }
    r.handle(0, append(1, 0, 0, entries, 0));
    // A leader of term 3 probes at index 7 (term 3): the follower has no
    // entry 7 and its entry 5 is of term 1, so it answers (5, 1).
    let acts = r.handle(1, append(3, 7, 3, Vec::new(), 0));
    assert_eq!(append_response(&acts), Some((false, 5, 1)));
    // Probing at 5 with term 2 (the leader's entry 5 is of term 2): the
    // follower's entries of term 1 are at most term 2, so 5 may match.
    let acts = r.handle(2, append(3, 5, 2, Vec::new(), 0));
    assert_eq!(append_response(&acts), Some((false, 5, 1)));
    // The leader looks for its last entry of a term at most 1; say none
    // above 0: it probes at 0, which matches (up to 0 only: the entries
    // beyond are the follower's, not yet known to be the leader's).
    let acts = r.handle(3, append(3, 0, 0, Vec::new(), 0));
    assert_eq!(append_response(&acts), Some((true, 0, 0)));
}

#[test]
fn a_follower_acknowledges_only_what_the_leader_sent_not_its_own_longer_log() {
    // Found by the simulator (raft/figure8, 3 nodes, seed 16): a follower
    // with stale entries beyond the leader's message answered with its own
    // last index, so the leader counted it for entries it did not have.
    let mut r = Raft::new(cfg(1, 3), genesis(), &BTreeMap::new());
    let b1 = block_on(genesis().hash, 1, 1, 1);
    let b2 = block_on(b1.hash(), 2, 1, 2);
    let b3 = block_on(b2.hash(), 3, 1, 3);
    r.handle(0, append(1, 0, 0, vec![b1.clone(), b2, b3], 0));
    // A leader of term 2 whose log is only b1 sends a heartbeat at 1.
    let acts = r.handle(1, append(2, 1, 1, Vec::new(), 0));
    assert_eq!(append_response(&acts), Some((true, 1, 0)));
    // Sending b1 again: still 1.
    let acts = r.handle(2, append(2, 0, 0, vec![b1], 0));
    assert_eq!(append_response(&acts), Some((true, 1, 0)));
}

fn request_vote(from: u32, term: u64, last_index: u64, last_term: u64, pre: bool) -> Input {
    Input::Message {
        from,
        msg: ConsensusMessage::Raft(RaftMessage::RequestVote {
            term,
            last_index,
            last_term,
            pre,
        }),
    }
}

fn vote_response(actions: &[Action]) -> Option<(u64, bool, bool)> {
    actions.iter().find_map(|a| match a {
        Action::Send {
            msg: ConsensusMessage::Raft(RaftMessage::VoteResponse { term, granted, pre }),
            ..
        } => Some((*term, *granted, *pre)),
        _ => None,
    })
}

#[test]
fn a_node_that_hears_its_leader_refuses_pre_votes_and_ignores_higher_terms() {
    let mut r = Raft::new(cfg(2, 3), genesis(), &BTreeMap::new());
    r.handle(0, append(1, 0, 0, Vec::new(), 0));
    // Within the election timeout (100 ms) of the leader's message.
    let acts = r.handle(50, request_vote(1, 2, 0, 0, true));
    assert_eq!(vote_response(&acts), Some((1, false, true)));
    let acts = r.handle(60, request_vote(1, 5, 0, 0, false));
    assert_eq!(vote_response(&acts), None, "ignored");
    assert_eq!(
        r.status().term,
        1,
        "a deposing vote request changes nothing"
    );
    // The leader fell silent: a pre-vote is granted, still without any
    // change of term or vote.
    let acts = r.handle(500, request_vote(1, 2, 0, 0, true));
    assert_eq!(vote_response(&acts), Some((2, true, true)));
    assert_eq!((r.status().term, r.voted_for), (1, None));
}

#[test]
fn an_election_starts_with_pre_votes_and_raises_the_term_only_when_they_win() {
    let mut r = Raft::new(cfg(0, 3), genesis(), &BTreeMap::new());
    r.handle(0, Input::Tick);
    let acts = r.handle(1_000, Input::Tick);
    assert_eq!(r.status().role, "pre-candidate");
    assert_eq!(r.status().term, 0);
    assert!(acts.iter().all(|a| !matches!(a, Action::Persist(_))));
    let acts = r.handle(
        1_001,
        Input::Message {
            from: 1,
            msg: ConsensusMessage::Raft(RaftMessage::VoteResponse {
                term: 1,
                granted: true,
                pre: true,
            }),
        },
    );
    assert_eq!(r.status().role, "candidate");
    assert_eq!(r.status().term, 1);
    assert!(acts.iter().any(|a| matches!(a, Action::Persist(_))));
}

#[test]
fn a_leader_asks_again_for_a_block_the_driver_could_not_build() {
    // A lone validator leads after an election timeout.
    let mut r = Raft::new(cfg(0, 1), genesis(), &BTreeMap::new());
    let mut now = 0;
    while r.status().role != "leader" {
        now += 10;
        assert!(now < 10_000, "never became leader");
        r.handle(now, Input::Tick);
    }
    let builds = |acts: &[Action]| {
        acts.iter()
            .filter(|a| matches!(a, Action::BuildBlock { .. }))
            .count()
    };
    now += 20;
    let acts = r.handle(now, Input::TransactionsAvailable { count: 5 });
    let mut asked = builds(&acts);
    now += 10;
    asked += builds(&r.handle(now, Input::Tick));
    assert_eq!(asked, 1, "the leader asks for a block");
    // The driver answers nothing. Within the election timeout the leader
    // waits; past it, it asks again.
    now += 50;
    assert_eq!(builds(&r.handle(now, Input::Tick)), 0);
    // (Within the next 100 ms: one election timeout after the ask.)
    let mut again = 0;
    for _ in 0..5 {
        now += 20;
        again += builds(&r.handle(now, Input::Tick));
    }
    assert_eq!(again, 1, "asked again once the build was given up");
}

#[test]
fn terms_and_indexes_no_honest_node_reaches_are_refused_and_penalised() {
    // Found by fuzzing: a term of u64::MAX, adopted, made the next election
    // timeout overflow `term + 1`.
    let mut r = Raft::new(cfg(1, 3), genesis(), &BTreeMap::new());
    r.handle(0, Input::Tick);
    for (term, prev) in [(u64::MAX, 0), (3, u64::MAX), (MAX_TERM_OR_INDEX + 1, 0)] {
        let acts = r.handle(1, append(term, prev, 0, Vec::new(), 0));
        assert!(
            acts.iter()
                .any(|a| matches!(a, Action::Penalize { peer: 0, .. })),
            "{acts:?}"
        );
        assert_eq!(append_response(&acts), None);
    }
    assert_eq!(r.status().term, 0);
    assert_eq!(r.status().rejected_messages, 3);
    // The node still campaigns when its election timeout passes.
    r.handle(10_000, Input::Tick);
    assert_ne!(r.status().role, "follower");
}
