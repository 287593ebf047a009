//! A 4-validator PBFT network (f = 1) in which validator 0, the first
//! primary, is a real process with a Byzantine engine (`cairn-byzantine`):
//! the three honest nodes keep committing transfers, agree on every block,
//! and ban the Byzantine one when what it sent proves it faulty.

use std::path::Path;

use cairn_genesis::{generate, EngineKind, NetworkSpec};
use cairn_tests::e2e::{
    admin_bans, consensus, eventually, http_get, keygen, same_head, status, transfer, NodeProc,
};

const BYZANTINE: usize = 0;

fn height(url: &str) -> Option<u64> {
    status(url)?["height"].as_u64()
}

fn block_hash(url: &str, h: u64) -> Option<String> {
    http_get(&format!("{url}/blocks/{h}"))?["hash"]
        .as_str()
        .map(str::to_owned)
}

/// Runs the network with validator 0 behaving as `behaviour`; `provable`
/// when what it sends is evidence against it (honest nodes must ban it).
fn survive(behaviour: &str, provable: bool, base_port: u16) {
    eprintln!("validator {BYZANTINE} behaves as {behaviour}");
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pbft,
        validators: 4,
        base_port,
        chain_id: format!("e2e-byzantine-{behaviour}"),
        seed: Some(21),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let _nodes: Vec<NodeProc> = net
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i == BYZANTINE {
                NodeProc::start_byzantine(&n.home, behaviour)
            } else {
                NodeProc::start(&n.home)
            }
        })
        .collect();
    let honest: Vec<(String, &Path)> = net
        .nodes
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != BYZANTINE)
        .map(|(_, n)| (n.rpc_url.clone(), n.home.as_path()))
        .collect();
    let urls: Vec<&str> = honest.iter().map(|(u, _)| u.as_str()).collect();
    let byzantine_peer = net.nodes[BYZANTINE]
        .p2p_address
        .rsplit("/p2p/")
        .next()
        .expect("a peer id in the address")
        .to_owned();
    eventually("the honest nodes serve and see each other", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(2)))
    });

    // Transfers commit through the honest nodes, whatever validator 0 does.
    let faucet = net.faucet_key();
    let alice = keygen(urls[0], &dir.path().join("alice.key"));
    for i in 0..6 {
        // Through each honest node in turn, once all hold the last one
        // (the wallet takes the sender's nonce from the node it talks to).
        eventually("the honest nodes agree", || same_head(&urls));
        transfer(urls[i % urls.len()], &faucet, &alice, 100);
    }
    eventually("the honest nodes reach the same head", || same_head(&urls));

    // They hold the same block at every height (not only the head).
    let head = urls
        .iter()
        .filter_map(|u| height(u))
        .min()
        .expect("a height");
    assert!(head >= 6, "six transfers, {head} blocks");
    for h in 1..=head {
        let hashes: Vec<Option<String>> = urls.iter().map(|u| block_hash(u, h)).collect();
        assert!(
            hashes[0].is_some() && hashes.iter().all(|x| *x == hashes[0]),
            "{behaviour}: the honest nodes differ at height {h}: {hashes:?}"
        );
    }

    if provable {
        // Its evidence comes with votes, so with blocks: transfers go on
        // until an honest node has refused enough of it to ban it (a vote
        // that arrives after its height is final is dropped as stale, not
        // held against the sender).
        let banned = || {
            honest.iter().any(|(u, home)| {
                consensus(u).is_some_and(|c| c["messages_rejected"].as_u64() > Some(0))
                    && admin_bans(u, home).contains(&byzantine_peer)
            })
        };
        let mut more = 0;
        while !banned() {
            assert!(more < 30, "{behaviour}: no honest node banned validator 0");
            eventually("the honest nodes agree", || same_head(&urls));
            transfer(urls[more % urls.len()], &faucet, &alice, 100);
            more += 1;
        }
        // Banned, it is out of the quorum's way: progress goes on.
        eventually("the honest nodes agree", || same_head(&urls));
        transfer(urls[1], &faucet, &alice, 100);
        eventually("the honest nodes agree after the ban", || same_head(&urls));
    }
    for (i, n) in net
        .nodes
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != BYZANTINE)
    {
        let log = std::fs::read_to_string(n.home.join("node.log")).unwrap_or_default();
        assert!(!log.contains("panicked"), "{behaviour}: node {i} panicked");
    }
}

// One behaviour after another (not in parallel): four node processes at a
// time on a CI machine's two cores.
#[test]
fn honest_validators_outlast_byzantine_ones_and_ban_forgers() {
    survive("equivocate", false, 29400);
    survive("forged-signatures", true, 29420);
    survive("conflicting-votes", true, 29440);
    survive("replay", false, 29460);
}
