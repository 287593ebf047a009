//! A live network of real `cairn-node` processes switches engines at the
//! heights its schedule names — Raft, then PBFT, then Raft again — keeping
//! every block and balance; a node that was down through both switches
//! syncs the whole chain, each segment checked by its own rule.

use std::process::Command;

use cairn_genesis::{generate, EngineKind, NetworkSpec};
use cairn_tests::e2e::{
    assert_nobody_blamed, consensus, eventually, http_get, keygen, metric, same_head, status,
    transfer, wallet, NodeProc,
};
use cairn_tests::workspace_bin;

fn height(url: &str) -> u64 {
    status(url).and_then(|s| s["height"].as_u64()).unwrap_or(0)
}

/// The consensus configuration hash block `h` carries, and its hash.
fn block_at(url: &str, h: u64) -> Option<(String, String)> {
    let b = http_get(&format!("{url}/blocks/{h}"))?;
    Some((
        b["config"].as_str()?.to_owned(),
        b["hash"].as_str()?.to_owned(),
    ))
}

use cairn_tests::e2e::genesis_upgrade as upgrade;

/// Starts the first three nodes of `net` (their API URLs `up`) and waits
/// until they serve and see each other.
fn start_three(net: &cairn_genesis::GeneratedNetwork, up: &[&str]) -> Vec<NodeProc> {
    let nodes = net.nodes[..3]
        .iter()
        .map(|n| NodeProc::start(&n.home))
        .collect();
    eventually("the three nodes serve and see each other", || {
        up.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(2)))
    });
    nodes
}

/// Sends transfers of `amount` to `to` through `urls` in turn until every
/// one of them is at `height` or above; returns how many were sent.
fn send_until(
    urls: &[&str],
    faucet: &std::path::Path,
    to: &str,
    amount: u64,
    height_at: u64,
) -> usize {
    let mut sent = 0;
    while urls.iter().any(|u| height(u) < height_at) {
        transfer(urls[sent % urls.len()], faucet, to, amount);
        sent += 1;
        assert!(sent < 200, "the chain does not get past height {height_at}");
    }
    sent
}

#[test]
fn a_live_network_switches_raft_to_pbft_and_back_and_a_late_node_syncs_across() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Raft,
        validators: 4,
        base_port: 28950,
        chain_id: "e2e-switch".into(),
        seed: Some(23),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    for (height, engine) in [("4", "pbft"), ("8", "raft")] {
        let out = upgrade(dir.path(), &["--at-height", height, "--engine", engine]);
        assert!(out.status.success(), "{out:?}");
    }
    // An upgrade before the last one is refused, saying why.
    let out = upgrade(dir.path(), &["--at-height", "6", "--engine", "pbft"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already switches at height 8"),
        "{out:?}"
    );

    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    // Node 3 stays down: three of four are a quorum for both engines.
    let up = &urls[..3];
    let mut nodes = start_three(&net, up);
    let faucet = net.faucet_key();
    let alice = keygen(urls[0], &dir.path().join("alice.key"));
    // Before the first switch, the node and the wallet say what comes.
    let c = consensus(urls[0]).expect("consensus");
    assert_eq!(c["engine"], "raft", "{c}");
    assert_eq!(c["segment"]["since_height"], 0, "{c}");
    assert_eq!(c["next_switch"]["height"], 4, "{c}");
    assert_eq!(c["next_switch"]["engine"], "pbft", "{c}");
    let (ok, out, err) = wallet(urls[0], &["status"]);
    assert!(ok, "{err}");
    assert!(out.contains("switches to pbft at height 4"), "{out}");
    let sent = send_until(up, &faucet, &alice, 10, 10);
    eventually("the three agree", || same_head(up));
    for u in up {
        let c = consensus(u).expect("consensus");
        assert_eq!(c["engine"], "raft", "{u}: {c}");
        assert_eq!(c["segment"]["since_height"], 8, "{u}: {c}");
        assert!(c["next_switch"].is_null(), "{u}: {c}");
        assert_eq!(
            http_get(&format!("{u}/accounts/{alice}")).and_then(|a| a["balance"].as_u64()),
            Some(10 * sent as u64),
            "{u}: every transfer kept across the switches"
        );
        assert!(
            metric(u, "cairn_consensus_switches_total").unwrap_or(0.0) >= 2.0,
            "{u} switched twice"
        );
    }
    // Blocks commit to their segment's configuration: three of them.
    let configs: Vec<String> = (1..=9)
        .map(|h| block_at(urls[0], h).expect("block").0)
        .collect();
    assert!(configs[..3].iter().all(|c| *c == configs[0]), "{configs:?}");
    assert!(
        configs[3..7].iter().all(|c| *c == configs[3]),
        "{configs:?}"
    );
    assert!(configs[7..].iter().all(|c| *c == configs[7]), "{configs:?}");
    assert!(configs[0] != configs[3] && configs[3] != configs[7] && configs[0] != configs[7]);

    // The late node syncs across both switches and joins the last engine.
    nodes.push(NodeProc::start(&net.nodes[3].home));
    eventually("the late node catches up", || {
        height(urls[3]) >= height(urls[0]) && same_head(&urls)
    });
    for h in 1..=9 {
        assert_eq!(block_at(urls[3], h), block_at(urls[0], h), "height {h}");
    }
    transfer(urls[3], &faucet, &alice, 1);
    eventually("all four agree after a transfer", || same_head(&urls));
    let c = consensus(urls[3]).expect("consensus");
    assert_eq!(c["engine"], "raft", "{c}");

    // An upgrade at a height the chain has passed: the node refuses to
    // start, and says why.
    let late = nodes.pop().expect("node 3");
    drop(late);
    let out = upgrade(dir.path(), &["--at-height", "9", "--engine", "pbft"]);
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(workspace_bin("cairn-node"))
        .args(["run", "--home"])
        .arg(&net.nodes[3].home)
        .output()
        .expect("cairn-node run");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("schedules pbft from height 9") && err.contains("has not reached"),
        "{err}"
    );
    drop(nodes);
}

/// Validator sets change by upgrade: PBFT on nodes 0–3; from height 4 PBFT
/// on nodes 1–4 (node 0 leaves, observer node 4 joins); from height 8 Raft
/// on nodes 0, 5 and 6 (every validator replaced). Every node follows
/// throughout, as a validator or an observer, and all agree.
#[test]
fn validator_sets_change_at_scheduled_heights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pbft,
        validators: 4,
        observers: 3,
        base_port: 28970,
        chain_id: "e2e-sets".into(),
        seed: Some(29),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    for (height, engine, set) in [
        ("4", "pbft", "node1,node2,node3,node4"),
        ("8", "raft", "node0,node5,node6"),
    ] {
        let out = upgrade(
            dir.path(),
            &[
                "--at-height",
                height,
                "--engine",
                engine,
                "--validators",
                set,
            ],
        );
        assert!(out.status.success(), "{out:?}");
    }
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let _nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let faucet = net.faucet_key();
    let bob = keygen(urls[0], &dir.path().join("bob.key"));
    eventually("every node serves and sees the others", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(6)))
    });
    // Observers start as observers.
    assert!(status(urls[4]).expect("status")["validator"].is_null());
    let mut sent = 0;
    while urls.iter().any(|u| height(u) < 10) {
        transfer(urls[2], &faucet, &bob, 7);
        sent += 1;
        assert!(sent < 200, "the chain does not get past height 10");
    }
    eventually("all seven agree", || same_head(&urls));
    for (i, u) in urls.iter().enumerate() {
        let s = status(u).expect("status");
        let expected = match i {
            0 => Some(0),
            5 => Some(1),
            6 => Some(2),
            _ => None,
        };
        assert_eq!(s["validator"].as_u64(), expected, "{u}: {s}");
        assert_eq!(s["engine"], "raft", "{u}: {s}");
        assert_eq!(
            http_get(&format!("{u}/accounts/{bob}")).and_then(|a| a["balance"].as_u64()),
            Some(7 * sent as u64),
            "{u}"
        );
    }
    let c = consensus(urls[0]).expect("consensus");
    assert_eq!(c["segment"]["validators"], 3, "{c}");
}

/// A node whose schedule differs from its network's refuses the first
/// block made under another configuration, says so in one line with the
/// height and both configuration hashes, and stops following — it keeps
/// serving, and blames nobody.
#[test]
fn a_node_with_another_schedule_stops_following_at_the_first_difference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Raft,
        validators: 3,
        observers: 1,
        base_port: 29000,
        chain_id: "e2e-diverge".into(),
        seed: Some(31),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    // The observer keeps a copy of the genesis without the upgrade.
    let odd = &net.nodes[3].home;
    std::fs::copy(dir.path().join("genesis.json"), odd.join("genesis.json")).expect("copy");
    let toml = std::fs::read_to_string(odd.join("node.toml")).expect("node.toml");
    std::fs::write(
        odd.join("node.toml"),
        toml.replace(
            "genesis = \"../genesis.json\"",
            "genesis = \"genesis.json\"",
        ),
    )
    .expect("node.toml");
    let out = upgrade(dir.path(), &["--at-height", "4", "--engine", "pbft"]);
    assert!(out.status.success(), "{out:?}");
    // `upgrade` writes every node's copy of the network's genesis: undo
    // it on the observer, which then schedules nothing.
    std::fs::write(odd.join("genesis.json"), net.genesis.to_json()).expect("genesis");

    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let _nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let faucet = net.faucet_key();
    let carol = keygen(urls[0], &dir.path().join("carol.key"));
    eventually("every node serves", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(3)))
    });
    while height(urls[0]) < 6 {
        transfer(urls[0], &faucet, &carol, 3);
    }
    let log = odd.join("node.log");
    eventually("the observer says why it stopped", || {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("stopped following the network: block 4 was made under"))
    });
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .find(|l| l.contains("stopped following"))
        .expect("the line");
    assert!(
        line.contains("this node's schedule has") && line.contains("differ"),
        "{line}"
    );
    assert_eq!(
        height(urls[3]),
        3,
        "it stops at the last block both schedules agree on"
    );
    let blamed: Vec<&str> = text.lines().filter(|l| l.contains("penalised")).collect();
    assert!(blamed.is_empty(), "nobody is blamed: {blamed:?}");
    for u in &urls[..3] {
        assert_eq!(consensus(u).expect("consensus")["engine"], "pbft");
    }
}

/// PBFT to proof-of-work: blocks up to the switch are final under PBFT,
/// mining starts on the last of them, transfers go on committing (mined,
/// with their balances kept), and a node that was down through the switch
/// syncs the PBFT blocks with their certificates, then the mined ones.
#[test]
fn a_live_network_switches_pbft_to_proof_of_work_and_mines_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pbft,
        validators: 4,
        base_port: 29040,
        chain_id: "e2e-to-pow".into(),
        seed: Some(37),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let out = upgrade(dir.path(), &["--at-height", "5", "--engine", "pow"]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("node.toml"), "mining turned on: {printed}");

    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    // Node 3 stays down: three of four are PBFT's quorum.
    let up = &urls[..3];
    let mut nodes = start_three(&net, up);
    let faucet = net.faucet_key();
    let dave = keygen(urls[0], &dir.path().join("dave.key"));
    let sent = send_until(up, &faucet, &dave, 5, 9);
    for u in up {
        let c = consensus(u).expect("consensus");
        assert_eq!(c["engine"], "pow", "{u}: {c}");
        assert_eq!(c["segment"]["since_height"], 5, "{u}: {c}");
        assert!(
            metric(u, "cairn_consensus_switches_total").unwrap_or(0.0) >= 1.0,
            "{u} switched"
        );
    }
    // PBFT's blocks carry commit certificates; the mined ones, seals of
    // the new configuration.
    let configs: Vec<String> = (1..=8)
        .map(|h| block_at(urls[0], h).expect("block").0)
        .collect();
    assert!(configs[..4].iter().all(|c| *c == configs[0]), "{configs:?}");
    assert!(configs[4..].iter().all(|c| *c == configs[4]), "{configs:?}");
    assert_ne!(configs[0], configs[4]);
    let balance =
        |u: &str| http_get(&format!("{u}/accounts/{dave}")).and_then(|a| a["balance"].as_u64());
    eventually("the three agree on every transfer", || {
        up.iter().all(|u| balance(u) == Some(5 * sent as u64))
    });

    // The late node syncs PBFT's final blocks, switches, and follows the
    // miners' chain.
    nodes.push(NodeProc::start(&net.nodes[3].home));
    eventually("the late node catches up", || {
        height(urls[3]) >= 9 && balance(urls[3]) == Some(5 * sent as u64)
    });
    for h in 1..=4 {
        assert_eq!(block_at(urls[3], h), block_at(urls[0], h), "height {h}");
    }
    assert_eq!(consensus(urls[3]).expect("consensus")["engine"], "pow");
    drop(nodes);
    // Around the switch both kinds of block gossip travel: nobody is
    // blamed for it.
    assert_nobody_blamed(
        net.nodes
            .iter()
            .map(|n| (n.name.as_str(), n.home.as_path())),
    );
}

/// Proof-of-work with new parameters from a height: the miners go on
/// across the change under one fork choice, the blocks from that height
/// commit to the new configuration, and a node started later syncs the
/// whole chain.
#[test]
fn a_live_proof_of_work_network_takes_new_parameters_at_a_height() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pow,
        validators: 4,
        base_port: 29060,
        chain_id: "e2e-pow-params".into(),
        seed: Some(41),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let out = upgrade(
        dir.path(),
        &[
            "--at-height",
            "6",
            "--engine",
            "pow",
            "--block-time-ms",
            "500",
        ],
    );
    assert!(out.status.success(), "{out:?}");

    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let up = &urls[..3];
    let mut nodes = start_three(&net, up);
    let faucet = net.faucet_key();
    let erin = keygen(urls[0], &dir.path().join("erin.key"));
    let sent = send_until(up, &faucet, &erin, 4, 10);
    let c = consensus(urls[0]).expect("consensus");
    assert_eq!(c["engine"], "pow", "{c}");
    assert_eq!(c["segment"]["since_height"], 6, "{c}");
    for u in up {
        assert!(
            metric(u, "cairn_consensus_switches_total").unwrap_or(0.0) >= 1.0,
            "{u} counts the change of parameters"
        );
    }
    let configs: Vec<String> = (1..=9)
        .map(|h| block_at(urls[0], h).expect("block").0)
        .collect();
    assert!(configs[..5].iter().all(|c| *c == configs[0]), "{configs:?}");
    assert!(configs[5..].iter().all(|c| *c == configs[5]), "{configs:?}");
    assert_ne!(configs[0], configs[5]);
    let balance =
        |u: &str| http_get(&format!("{u}/accounts/{erin}")).and_then(|a| a["balance"].as_u64());
    nodes.push(NodeProc::start(&net.nodes[3].home));
    eventually("all four hold every transfer", || {
        urls.iter().all(|u| balance(u) == Some(4 * sent as u64))
    });
    for h in 1..=9 {
        assert_eq!(block_at(urls[3], h), block_at(urls[0], h), "height {h}");
    }
    drop(nodes);
    assert_nobody_blamed(
        net.nodes
            .iter()
            .map(|n| (n.name.as_str(), n.home.as_path())),
    );
}

/// The whole round under a steady stream of transfers, by configuration
/// alone: Raft, PBFT from height 5, proof-of-work from 10, Raft again from
/// 20 with node 3 replaced by node 4 (an observer until then). The first
/// Raft block names the mined block it follows, and that settles the mined
/// chain for good. No acknowledged transfer is lost, every node ends with
/// the same balances, and a fresh observer started last syncs every
/// segment from genesis, each by its own rule.
#[test]
fn a_live_network_goes_raft_pbft_pow_and_back_to_raft_with_a_new_validator() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Raft,
        validators: 4,
        observers: 2,
        base_port: 29110,
        chain_id: "e2e-round".into(),
        seed: Some(41),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    for args in [
        &["--at-height", "5", "--engine", "pbft"][..],
        &[
            "--at-height",
            "10",
            "--engine",
            "pow",
            "--block-time-ms",
            "500",
        ][..],
        &[
            "--at-height",
            "20",
            "--engine",
            "raft",
            "--validators",
            "node0,node1,node2,node4",
        ][..],
    ] {
        let out = upgrade(dir.path(), args);
        assert!(out.status.success(), "{out:?}");
    }
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let running = &urls[..5];
    let mut nodes: Vec<NodeProc> = net.nodes[..5]
        .iter()
        .map(|n| NodeProc::start(&n.home))
        .collect();
    eventually("five nodes serve and see each other", || {
        running
            .iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(4)))
    });
    let faucet = net.faucet_key();
    let carol = keygen(urls[0], &dir.path().join("carol.key"));
    let sent = send_until(&running[..4], &faucet, &carol, 3, 24);
    let balance =
        |u: &str| http_get(&format!("{u}/accounts/{carol}")).and_then(|a| a["balance"].as_u64());
    eventually("the five agree on every transfer", || {
        same_head(running) && running.iter().all(|u| balance(u) == Some(3 * sent as u64))
    });
    for (i, u) in running.iter().enumerate() {
        let s = status(u).expect("status");
        let expected = match i {
            3 => None,
            4 => Some(3),
            v => Some(v as u64),
        };
        assert_eq!(s["validator"].as_u64(), expected, "{u}: {s}");
        let c = consensus(u).expect("consensus");
        assert_eq!(c["segment"]["since_height"], 20, "{u}: {c}");
        assert!(
            metric(u, "cairn_consensus_switches_total").unwrap_or(0.0) >= 3.0,
            "{u} switched three times"
        );
    }
    let c = consensus(urls[0]).expect("consensus");
    assert_eq!(c["engine"], "raft", "{c}");
    // Four segments, four configurations.
    let configs: Vec<String> = [1, 5, 10, 20]
        .iter()
        .map(|h| block_at(urls[0], *h).expect("block").0)
        .collect();
    for (i, a) in configs.iter().enumerate() {
        assert!(!configs[i + 1..].contains(a), "{configs:?}");
    }

    // A fresh observer syncs from genesis across the three switches.
    nodes.push(NodeProc::start(&net.nodes[5].home));
    eventually("the fresh observer catches up", || {
        height(urls[5]) >= height(urls[0]) && same_head(&urls)
    });
    assert_eq!(balance(urls[5]), Some(3 * sent as u64));
    for h in 1..=20 {
        assert_eq!(block_at(urls[5], h), block_at(urls[0], h), "height {h}");
    }
    drop(nodes);
    assert_nobody_blamed(
        net.nodes
            .iter()
            .map(|n| (n.name.as_str(), n.home.as_path())),
    );
}
