//! PBFT unit tests: certificates and single steps with exact actions. Runs
//! of whole networks under faults (and Byzantine validators) are the
//! simulator's (`crate::sim::scenarios::pbft`).

use std::collections::BTreeMap;

use cairn_chain::{Address, Block, Hash, Header, PublicKey, SecretKey};

use super::message::new_view_constraint;
use super::*;

fn keys(n: u32) -> Vec<SecretKey> {
    (0..n)
        .map(|i| SecretKey::from_label(&format!("pbft-test/{i}")))
        .collect()
}

fn publics(keys: &[SecretKey]) -> Vec<PublicKey> {
    keys.iter().map(SecretKey::public_key).collect()
}

fn net() -> Hash {
    Hash::digest(b"pbft-test-network")
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

fn block(height: u64, parent: Hash, tag: u8) -> Block {
    Block {
        header: Header {
            parent,
            height,
            timestamp_ms: u64::from(tag),
            tx_root: Hash::digest(&[tag]),
            state_root: Hash::ZERO,
            proposer: Address::ZERO,
            config: Hash::ZERO,
            engine_data: view_data(0),
        },
        transactions: Vec::new(),
        seal: Vec::new(),
    }
}

fn engine(me: u32, keys: &[SecretKey]) -> Pbft {
    let cfg = PbftConfig {
        first_height: 0,
        any_first_parent: false,
        me,
        validators: publics(keys),
        key: keys[me as usize].clone(),
        network: net(),
        block_interval_ms: 10,
        view_timeout_ms: 100,
        empty_blocks: false,
        full_block: 100,
    };
    Pbft::new(cfg, &genesis(), &BTreeMap::new())
}

fn votes(
    keys: &[SecretKey],
    phase: Phase,
    view: u64,
    height: u64,
    digest: Hash,
    who: &[u32],
) -> Vec<Vote> {
    who.iter()
        .map(|&i| Vote::sign(&net(), &keys[i as usize], phase, view, height, digest, i))
        .collect()
}

#[test]
fn a_commit_certificate_needs_2f_plus_1_valid_distinct_commits_for_the_block() {
    let k = keys(4);
    let pks = publics(&k);
    let b = block(1, genesis().hash(), 1);
    let good = Certificate {
        view: 0,
        commits: votes(&k, Phase::Commit, 0, 1, b.hash(), &[0, 1, 2]),
    };
    assert_eq!(good.verify(&net(), &pks, 3, &b), Ok(()));
    let decoded = Certificate::decode(&good.encode()).expect("decode");
    assert_eq!(decoded, good);

    let too_few = Certificate {
        view: 0,
        commits: votes(&k, Phase::Commit, 0, 1, b.hash(), &[0, 1]),
    };
    assert!(too_few.verify(&net(), &pks, 3, &b).is_err());
    let repeated = Certificate {
        view: 0,
        commits: votes(&k, Phase::Commit, 0, 1, b.hash(), &[0, 1, 1]),
    };
    assert!(repeated.verify(&net(), &pks, 3, &b).is_err());
    let mut forged = good.clone();
    forged.commits[2].voter = 3; // signed by 2, claims 3
    assert_eq!(
        forged.verify(&net(), &pks, 3, &b),
        Err(ProofError::BadSignature(3))
    );
    let prepares = Certificate {
        view: 0,
        commits: votes(&k, Phase::Prepare, 0, 1, b.hash(), &[0, 1, 2]),
    };
    assert!(prepares.verify(&net(), &pks, 3, &b).is_err());
    let other = block(1, genesis().hash(), 2);
    assert!(
        good.verify(&net(), &pks, 3, &other).is_err(),
        "another block"
    );
    assert!(Certificate::decode(&[1, 2, 3]).is_err());
}

#[test]
fn a_new_view_must_re_propose_the_highest_prepared_block() {
    let k = keys(4);
    let pks = publics(&k);
    let g = genesis().hash();
    let (b1, b2) = (block(1, g, 1), block(1, g, 2));
    let prepared = |view: u64, b: &Block| Prepared {
        view,
        digest: b.hash(),
        prepares: votes(&k, Phase::Prepare, view, 1, b.hash(), &[0, 1, 2]),
    };
    let vcs = vec![
        ViewChange::sign(&net(), &k[0], 3, 1, Some(prepared(0, &b1)), 0),
        ViewChange::sign(&net(), &k[1], 3, 1, Some(prepared(2, &b2)), 1),
        ViewChange::sign(&net(), &k[2], 3, 1, None, 2),
    ];
    let (height, required) = new_view_constraint(&net(), &pks, 3, 3, &vcs).expect("valid");
    assert_eq!(height, 1);
    assert_eq!(required.map(|p| p.digest), Some(b2.hash()));
    // Two view changes are not enough; a bad prepared certificate spoils one.
    assert!(new_view_constraint(&net(), &pks, 3, 3, &vcs[..2]).is_err());
    let mut bad = prepared(1, &b1);
    bad.prepares.truncate(2);
    let spoiled = vec![
        vcs[0].clone(),
        vcs[2].clone(),
        ViewChange::sign(&net(), &k[3], 3, 1, Some(bad), 3),
    ];
    assert!(new_view_constraint(&net(), &pks, 3, 3, &spoiled).is_err());
}

#[test]
fn a_block_that_names_a_later_view_than_its_pre_prepare_is_refused() {
    // Validators that sync a block move to the view it names, so a primary
    // must not be able to send them to a view nobody entered.
    let k = keys(4);
    let mut e = engine(1, &k);
    let mut b = block(1, genesis().hash(), 1);
    b.header.engine_data = view_data(1_000_000);
    let acts = e.handle(
        0,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Pbft(PbftMessage::PrePrepare {
                view: 0,
                height: 1,
                block: b,
                justification: Vec::new(),
            }),
        },
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Penalize { peer: 0, .. })),
        "{acts:?}"
    );
    assert!(!acts
        .iter()
        .any(|a| matches!(a, Action::ValidateBlock { .. })));
}

#[test]
fn a_backup_validates_then_persists_and_broadcasts_its_prepare() {
    let k = keys(4);
    let mut e = engine(1, &k);
    let b = block(1, genesis().hash(), 1);
    let acts = e.handle(
        0,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Pbft(PbftMessage::PrePrepare {
                view: 0,
                height: 1,
                block: b.clone(),
                justification: Vec::new(),
            }),
        },
    );
    assert!(acts.contains(&Action::ValidateBlock { block: b.clone() }));
    assert!(!acts.iter().any(|a| matches!(a, Action::Broadcast { .. })));
    let acts = e.handle(
        1,
        Input::BlockValidated {
            hash: b.hash(),
            valid: true,
        },
    );
    let persist = acts
        .iter()
        .position(|a| matches!(a, Action::Persist(_)))
        .expect("persists its vote");
    let prepare = acts
        .iter()
        .position(|a| {
            matches!(a, Action::Broadcast { msg: ConsensusMessage::Pbft(PbftMessage::Prepare(v)) } if v.digest == b.hash() && v.voter == 1)
        })
        .expect("broadcasts a prepare");
    assert!(persist < prepare);
}

#[test]
fn a_pre_prepare_from_a_non_primary_or_a_second_one_is_refused() {
    let k = keys(4);
    let mut e = engine(1, &k);
    let g = genesis().hash();
    let pp = |b: &Block| {
        ConsensusMessage::Pbft(PbftMessage::PrePrepare {
            view: 0,
            height: 1,
            block: b.clone(),
            justification: Vec::new(),
        })
    };
    let acts = e.handle(
        0,
        Input::Message {
            from: 2,
            msg: pp(&block(1, g, 1)),
        },
    );
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Penalize { peer: 2, .. })));
    e.handle(
        0,
        Input::Message {
            from: 0,
            msg: pp(&block(1, g, 1)),
        },
    );
    // The primary equivocates: penalised, and a view change starts.
    let acts = e.handle(
        0,
        Input::Message {
            from: 0,
            msg: pp(&block(1, g, 2)),
        },
    );
    assert!(acts
        .iter()
        .any(|a| matches!(a, Action::Penalize { peer: 0, .. })));
    assert!(acts.iter().any(|a| matches!(
        a,
        Action::Broadcast { msg: ConsensusMessage::Pbft(PbftMessage::ViewChange(vc)) } if vc.view == 1
    )));
    assert_eq!(e.status().role, "view-change");
}

#[test]
fn a_quorum_of_commits_makes_the_block_final_with_its_certificate() {
    let k = keys(4);
    let mut e = engine(1, &k);
    let b = block(1, genesis().hash(), 1);
    e.handle(
        0,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Pbft(PbftMessage::PrePrepare {
                view: 0,
                height: 1,
                block: b.clone(),
                justification: Vec::new(),
            }),
        },
    );
    e.handle(
        1,
        Input::BlockValidated {
            hash: b.hash(),
            valid: true,
        },
    );
    let mut committed = None;
    for v in votes(&k, Phase::Prepare, 0, 1, b.hash(), &[0, 2])
        .into_iter()
        .map(PbftMessage::Prepare)
        .chain(
            votes(&k, Phase::Commit, 0, 1, b.hash(), &[0, 2])
                .into_iter()
                .map(PbftMessage::Commit),
        )
    {
        let from = match &v {
            PbftMessage::Prepare(x) | PbftMessage::Commit(x) => x.voter,
            _ => unreachable!(),
        };
        for a in e.handle(
            2,
            Input::Message {
                from,
                msg: ConsensusMessage::Pbft(v),
            },
        ) {
            if let Action::Commit { blocks } = a {
                committed = Some(blocks);
            }
        }
    }
    let blocks = committed.expect("final");
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].hash(), b.hash());
    assert_eq!(e.verify_final(&blocks[0]), Ok(()));
    assert_eq!(e.status().committed_height, 1);
    // Without its seal the block proves nothing.
    assert!(e.verify_final(&b).is_err());
}

#[test]
fn certificates_are_refused_on_counts_and_repeats_before_any_signature_is_checked() {
    let k = keys(4);
    let pks = publics(&k);
    let b = block(1, genesis().hash(), 1);
    // More entries than validators, every signature bad: refused by count,
    // not by checking (and failing) the first signature.
    let mut flood = votes(&k, Phase::Commit, 0, 1, b.hash(), &[0, 1, 2, 3]);
    flood.extend(votes(&k, Phase::Commit, 0, 1, b.hash(), &[0; 1000]));
    for v in &mut flood {
        v.signature.0[0] ^= 1;
    }
    let cert = Certificate {
        view: 0,
        commits: flood,
    };
    match cert.verify(&net(), &pks, 3, &b) {
        Err(ProofError::Invalid(m)) => assert!(m.contains("1004 votes for 4"), "{m}"),
        other => panic!("expected a count error, got {other:?}"),
    }
    // A voter counted twice is refused before its (bad) second signature
    // is checked.
    let mut repeated = votes(&k, Phase::Commit, 0, 1, b.hash(), &[0, 1, 1]);
    repeated[2].signature.0[0] ^= 1;
    let cert = Certificate {
        view: 0,
        commits: repeated,
    };
    match cert.verify(&net(), &pks, 3, &b) {
        Err(ProofError::Invalid(m)) => assert!(m.contains("votes twice"), "{m}"),
        other => panic!("expected a repeat error, got {other:?}"),
    }
}

#[test]
fn a_new_view_justification_is_refused_on_counts_and_repeats_first() {
    let k = keys(4);
    let pks = publics(&k);
    let vc = |i: u32| ViewChange::sign(&net(), &k[i as usize], 1, 1, None, i);
    let mut many: Vec<ViewChange> = (0..4).map(vc).chain((0..100).map(|_| vc(0))).collect();
    for v in &mut many {
        v.signature.0[0] ^= 1;
    }
    match new_view_constraint(&net(), &pks, 3, 1, &many) {
        Err(ProofError::Invalid(m)) => assert!(m.contains("104 view changes for 4"), "{m}"),
        other => panic!("expected a count error, got {other:?}"),
    }
    let mut twice = vec![vc(0), vc(1), vc(1)];
    twice[2].signature.0[0] ^= 1;
    match new_view_constraint(&net(), &pks, 3, 1, &twice) {
        Err(ProofError::Invalid(m)) => assert!(m.contains("two view changes"), "{m}"),
        other => panic!("expected a repeat error, got {other:?}"),
    }
    // The good one still passes.
    assert!(new_view_constraint(&net(), &pks, 3, 1, &[vc(0), vc(1), vc(2)]).is_ok());
}

#[test]
fn messages_for_later_heights_are_held_within_a_byte_budget_per_sender() {
    let k = keys(4);
    let mut e = engine(1, &k);
    let sender = SecretKey::from_label("sender");
    let tx =
        cairn_chain::Transaction::new_signed(&sender, "c", &Hash::ZERO, Address::ZERO, 1, 0, 0);
    // Proposals of about 3 MB each for heights ahead of this validator.
    let mut big = block(3, Hash::ZERO, 1);
    big.transactions = vec![tx; 20_000];
    let size = codec::encoded_len(&PbftMessage::PrePrepare {
        view: 0,
        height: 3,
        block: big.clone(),
        justification: Vec::new(),
    });
    assert!(size > 2_000_000);
    for i in 0..16u64 {
        let mut b = big.clone();
        b.header.height = 2 + i % 3;
        b.header.timestamp_ms = i;
        e.handle(
            0,
            Input::Message {
                from: 0,
                msg: ConsensusMessage::Pbft(PbftMessage::PrePrepare {
                    view: 0,
                    height: b.header.height,
                    block: b,
                    justification: Vec::new(),
                }),
            },
        );
    }
    let held = e.future_bytes(0);
    assert!(held > 0, "some proposals are held");
    assert!(
        held <= MAX_FUTURE_BYTES_PER_SENDER,
        "{held} bytes held from one sender"
    );
    // Another sender's messages are still held.
    let vote = votes(&k, Phase::Prepare, 0, 2, Hash::ZERO, &[2]).remove(0);
    e.handle(
        0,
        Input::Message {
            from: 2,
            msg: ConsensusMessage::Pbft(PbftMessage::Prepare(vote)),
        },
    );
    assert!(e.future_bytes(2) > 0);
}

/// A block at the chain's limit: 50,000 transfers with the longest chain id.
fn full_block(height: u64, parent: Hash) -> Block {
    let sender = SecretKey::from_label("sender");
    let chain = "c".repeat(cairn_chain::MAX_CHAIN_ID_LEN);
    let tx =
        cairn_chain::Transaction::new_signed(&sender, &chain, &Hash::ZERO, Address::ZERO, 1, 1, 0);
    let mut b = block(height, parent, 7);
    b.transactions = vec![tx; cairn_chain::MAX_BLOCK_TRANSACTIONS];
    b.header.tx_root = cairn_chain::transactions_root(&b.transactions);
    b
}

#[test]
fn a_new_primary_fetches_a_prepared_block_it_lacks_and_re_proposes_it_once() {
    let k = keys(4);
    let g = genesis().hash();
    let big = full_block(1, g);
    let digest = big.hash();
    // Validators 0, 2 and 3 prepared the big block in view 0 and ask for
    // view 1, whose primary (1) never saw it.
    let prepared = Prepared {
        view: 0,
        digest,
        prepares: votes(&k, Phase::Prepare, 0, 1, digest, &[0, 2, 3]),
    };
    let mut e = engine(1, &k);
    let mut acts = Vec::new();
    for i in [0u32, 2, 3] {
        let vc = ViewChange::sign(&net(), &k[i as usize], 1, 1, Some(prepared.clone()), i);
        acts.extend(e.handle(
            0,
            Input::Message {
                from: i,
                msg: ConsensusMessage::Pbft(PbftMessage::ViewChange(vc)),
            },
        ));
    }
    let asked: Vec<u32> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                msg: ConsensusMessage::Pbft(PbftMessage::BlockRequest { digest: d, .. }),
            } if *d == digest => Some(*to),
            _ => None,
        })
        .collect();
    assert!(!asked.is_empty(), "the new primary asks for the block");
    assert!(
        !acts.iter().any(|a| matches!(a, Action::BuildBlock { .. })),
        "and builds no other block meanwhile"
    );
    // Another block in answer is not taken.
    let other = e.handle(
        1,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Pbft(PbftMessage::BlockReply(block(1, g, 9))),
        },
    );
    assert!(!other.iter().any(|a| matches!(a, Action::Broadcast { .. })));
    // The block: re-proposed, in one pre-prepare that fits a message.
    let acts = e.handle(
        2,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Pbft(PbftMessage::BlockReply(big.clone())),
        },
    );
    let pre_prepare = acts
        .iter()
        .find_map(|a| match a {
            Action::Broadcast {
                msg: msg @ ConsensusMessage::Pbft(PbftMessage::PrePrepare { view: 1, block, .. }),
            } if block.hash() == digest => Some(msg.clone()),
            _ => None,
        })
        .expect("the new primary re-proposes the prepared block");
    // It travels by its transactions' hashes, and assembles again from a
    // pool that holds them.
    let wire = crate::SignedMessage::sign(&net(), 1, &k[1], &pre_prepare).encode();
    let block_bytes = codec::encoded_len(&big);
    assert!(block_bytes > 10_000_000, "{block_bytes}");
    assert!(
        wire.len() < big.transactions.len() * 32 + 64 * 1024,
        "pre-prepare of {} bytes for a block of {block_bytes}",
        wire.len()
    );
    let (from, compact) = crate::SignedMessage::decode(&wire)
        .and_then(|m| m.open(&net(), &publics(&k)))
        .expect("the message decodes within the limits");
    let pool: std::collections::HashMap<Hash, cairn_chain::Transaction> = big
        .transactions
        .iter()
        .map(|t| (t.hash(), t.clone()))
        .collect();
    let back = compact
        .assemble(|_| None, |h| pool.get(h).cloned())
        .expect("every transaction in the pool");
    assert_eq!((from, back), (1, pre_prepare));
}

#[test]
fn a_validator_hands_out_a_prepared_block_once_per_asker() {
    let k = keys(4);
    let g = genesis().hash();
    let b = block(1, g, 1);
    let mut e = engine(2, &k);
    e.handle(
        0,
        Input::Message {
            from: 0,
            msg: ConsensusMessage::Pbft(PbftMessage::PrePrepare {
                view: 0,
                height: 1,
                block: b.clone(),
                justification: Vec::new(),
            }),
        },
    );
    let ask = |e: &mut Pbft, digest: Hash| {
        e.handle(
            1,
            Input::Message {
                from: 1,
                msg: ConsensusMessage::Pbft(PbftMessage::BlockRequest { height: 1, digest }),
            },
        )
    };
    let replies = |acts: &[Action]| {
        acts.iter()
            .filter(|a| {
                matches!(a, Action::Send { to: 1, msg: ConsensusMessage::Pbft(PbftMessage::BlockReply(r)) } if r.hash() == b.hash())
            })
            .count()
    };
    assert_eq!(replies(&ask(&mut e, b.hash())), 1);
    assert_eq!(
        replies(&ask(&mut e, b.hash())),
        0,
        "asked again: no second copy"
    );
    assert!(ask(&mut e, Hash::digest(b"unknown")).is_empty());
}

/// The views asked for, once per message (broadcast) or per validator
/// asked directly.
fn view_changes_sent(actions: &[Action]) -> Vec<u64> {
    let mut views: Vec<u64> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Broadcast {
                msg: ConsensusMessage::Pbft(PbftMessage::ViewChange(vc)),
            }
            | Action::Send {
                msg: ConsensusMessage::Pbft(PbftMessage::ViewChange(vc)),
                ..
            } => Some(vc.view),
            _ => None,
        })
        .collect();
    views.dedup();
    views
}

#[test]
fn a_validator_moves_past_a_view_only_once_2f_plus_1_asked_for_it() {
    let k = keys(4);
    // Validator 0; view 1's primary is validator 1, which stays silent.
    let mut v1 = engine(0, &k);
    // Work to do and no proposal: the view-change timer runs out.
    v1.handle(0, Input::TransactionsAvailable { count: 1 });
    let acts = v1.handle(1_000, Input::Tick);
    assert_eq!(view_changes_sent(&acts), vec![1], "{acts:?}");
    // Alone in asking for view 1: each timeout asks each validator again
    // directly (gossip would drop the same message), never for view 2.
    for t in [10_000, 20_000] {
        let acts = v1.handle(t, Input::Tick);
        assert_eq!(view_changes_sent(&acts), vec![1], "{acts:?}");
        let direct = acts
            .iter()
            .filter(|a| matches!(a, Action::Send { .. }))
            .count();
        assert_eq!(direct, 3, "{acts:?}");
    }
    // Two others ask for view 1 too: a quorum; the next timeout moves on.
    for voter in [2u32, 3] {
        let vc = ViewChange::sign(&net(), &k[voter as usize], 1, 1, None, voter);
        v1.handle(
            30_000,
            Input::Message {
                from: voter,
                msg: ConsensusMessage::Pbft(PbftMessage::ViewChange(vc)),
            },
        );
    }
    let acts = v1.handle(100_000, Input::Tick);
    assert_eq!(view_changes_sent(&acts), vec![2], "{acts:?}");
}
