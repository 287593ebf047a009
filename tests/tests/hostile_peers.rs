//! Hostile peers against a real network: `cairn-hostile` processes connect
//! over libp2p and send what an attacker would; the honest nodes must keep
//! each other and keep committing.

use std::process::Command;

use cairn_genesis::{generate, NetworkSpec};
use cairn_tests::e2e::{
    admin_bans, balance, eventually, keygen, leader, peer_count, same_head, status, transfer,
    NodeProc,
};
use cairn_tests::workspace_bin;

/// Runs one attack; returns the hostile peer's id and what it printed.
fn hostile(genesis_hash: &str, peer: &str, attack: &[&str]) -> (String, String) {
    let out = Command::new(workspace_bin("cairn-hostile"))
        .args([
            "--genesis-hash",
            genesis_hash,
            "--peer",
            peer,
            "--linger",
            "8",
        ])
        .args(attack)
        .output()
        .expect("run cairn-hostile");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cairn-hostile failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me = stdout
        .lines()
        .find_map(|l| l.strip_prefix("me "))
        .expect("the hostile peer names itself")
        .to_owned();
    (me, stdout)
}

/// Runs `cairn-hostile` with `args` on a thread of its own (the test
/// watches the nodes meanwhile); join for its output.
fn spawn_hostile(args: Vec<String>) -> std::thread::JoinHandle<std::process::Output> {
    std::thread::spawn(move || {
        Command::new(workspace_bin("cairn-hostile"))
            .args(&args)
            .output()
            .expect("run cairn-hostile")
    })
}

/// A running 3-node Raft network with a leader, every node connected to
/// the two others; `max_peers0` caps node 0's other peers.
struct Raft {
    dir: tempfile::TempDir,
    net: cairn_genesis::GeneratedNetwork,
    nodes: Vec<NodeProc>,
    genesis_hash: String,
}

impl Raft {
    fn start(base_port: u16, chain_id: &str, seed: u64, max_peers0: Option<usize>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = NetworkSpec {
            base_port,
            chain_id: chain_id.into(),
            seed: Some(seed),
            ..NetworkSpec::default()
        };
        let net = generate(&spec, dir.path()).expect("generate network");
        if let Some(max) = max_peers0 {
            let home0 = &net.nodes[0].home;
            let mut config = cairn_genesis::NodeConfig::load(home0).expect("node.toml");
            config.p2p.max_peers = max;
            std::fs::write(
                home0.join(cairn_genesis::NodeConfig::FILE),
                config.to_toml(),
            )
            .expect("write node.toml");
        }
        let nodes = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
        let urls: Vec<&str> = net.nodes.iter().map(|n| n.rpc_url.as_str()).collect();
        eventually("a leader is elected", || leader(&urls).is_some());
        eventually("every node sees the two others", || {
            urls.iter().all(|u| peer_count(u) >= 2)
        });
        let genesis_hash = net.genesis_hash.to_hex();
        Raft {
            dir,
            net,
            nodes,
            genesis_hash,
        }
    }

    fn urls(&self) -> Vec<&str> {
        self.net.nodes.iter().map(|n| n.rpc_url.as_str()).collect()
    }
}

#[test]
fn junk_gossip_gets_its_author_banned_and_no_honest_relayer() {
    let raft = Raft::start(29100, "e2e-hostile", 20, None);
    let (dir, net, genesis_hash) = (&raft.dir, &raft.net, &raft.genesis_hash);
    let urls = raft.urls();
    let faucet = net.faucet_key();
    let target = &net.nodes[0].p2p_address;

    // Undecodable transactions, then undecodable consensus messages, each
    // published by a fresh hostile peer connected to node 0 only. Without
    // validation before forwarding, node 0 relays them and nodes 1 and 2
    // ban node 0 for what the hostile peer wrote.
    for topic in ["tx", "consensus"] {
        let (me, out) = hostile(genesis_hash, target, &["junk", "--topic", topic]);
        eventually("node 0 bans the author", || {
            admin_bans(urls[0], &net.nodes[0].home).contains(&me)
        });
        assert!(out.contains("disconnected"), "{out}");
    }
    for n in &net.nodes[1..] {
        let bans = admin_bans(&n.rpc_url, &n.home);
        assert!(
            bans.is_empty(),
            "{} banned an honest peer: {bans:?}",
            n.name
        );
    }
    assert!(admin_bans(urls[0], &net.nodes[0].home).len() == 2);

    // The honest nodes still form one network and commit.
    let alice = keygen(urls[1], &dir.path().join("alice.key"));
    transfer(urls[2], &faucet, &alice, 700);
    eventually("all nodes reach the same head", || same_head(&urls));
    for u in &urls {
        assert_eq!(balance(u, &alice), Some(700), "balance on {u}");
        assert!(peer_count(u) >= 2, "{u} lost an honest peer");
    }
}

/// The ids of the peers a node is connected to.
fn peer_ids(url: &str) -> Vec<String> {
    cairn_tests::e2e::http_get(&format!("{url}/peers"))
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[test]
fn full_peer_slots_keep_validators_in_and_sync_floods_are_throttled() {
    // Node 0 takes at most 4 peers besides the validators.
    let mut raft = Raft::start(29120, "e2e-eclipse", 22, Some(4));
    let (dir, net) = (raft.dir.path().to_owned(), raft.net.clone());
    let genesis_hash = raft.genesis_hash.clone();
    let urls = net
        .nodes
        .iter()
        .map(|n| n.rpc_url.as_str())
        .collect::<Vec<_>>();
    let nodes = &mut raft.nodes;
    let faucet = net.faucet_key();
    let target = net.nodes[0].p2p_address.clone();
    let alice = keygen(urls[1], &dir.join("alice.key"));
    transfer(urls[0], &faucet, &alice, 100);

    // 1. Block sync requests as fast as a peer can send them: served one
    // at a time per peer, the rest answered busy.
    let (_, out) = hostile(&genesis_hash, &target, &["sync-flood", "--requests", "50"]);
    let busy: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("answered "))
        .and_then(|l| l.split(" busy ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no tally: {out}"));
    assert!(busy > 0, "every request was served: {out}");
    assert!(!out.contains("never answered"), "{out}");
    assert!(
        cairn_tests::e2e::metric(urls[0], "cairn_sync_requests_busy_total")
            .is_some_and(|n| n >= 1.0)
    );

    // 2. Eight hostile identities try to fill node 0's peer slots; node 1
    // restarts meanwhile and must get back in.
    let occupier = spawn_hostile(
        [
            "--genesis-hash",
            &genesis_hash,
            "--peer",
            &target,
            "--linger",
            "40",
            "occupy",
            "--connections",
            "8",
        ]
        .map(String::from)
        .to_vec(),
    );
    eventually("node 0's free slots are taken", || peer_count(urls[0]) >= 6);
    nodes[1].kill9();
    nodes[1] = NodeProc::start(&net.nodes[1].home);
    eventually("node 1 is back", || status(urls[1]).is_some());
    let node1_id = status(urls[1]).expect("status")["node_id"]
        .as_str()
        .expect("node id")
        .to_owned();
    eventually("node 0 takes node 1 back although it is full", || {
        peer_ids(urls[0]).contains(&node1_id)
    });
    let hostile_slots = peer_count(urls[0]) - 2;
    assert!(
        hostile_slots <= 4,
        "{hostile_slots} hostile peers on node 0"
    );
    transfer(urls[1], &faucet, &alice, 50);
    eventually("all nodes reach the same head", || same_head(&urls));
    assert_eq!(balance(urls[0], &alice), Some(150));
    let out = occupier.join().expect("occupier");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_observer_refuses_a_synced_block_without_a_commit_certificate() {
    // A PBFT network whose validator 0 is hostile (its identity and
    // address taken by cairn-hostile), the others not started: an
    // observer syncing from it is offered a block 1 that executes but was
    // never final.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: cairn_genesis::EngineKind::Pbft,
        validators: 4,
        base_port: 29140,
        chain_id: "e2e-observer".into(),
        seed: Some(23),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let v0 = &net.nodes[0];
    let v0_listen = cairn_genesis::NodeConfig::load(&v0.home)
        .expect("node.toml")
        .p2p
        .listen;
    let observer = dir.path().join("observer");
    std::fs::create_dir(&observer).expect("observer home");
    cairn_chain::keyfile::write_key_file(
        &observer.join("p2p.key"),
        &cairn_chain::SecretKey::from_label("observer p2p"),
    )
    .expect("p2p key");
    std::fs::write(
        observer.join(cairn_genesis::NodeConfig::FILE),
        format!(
            "name = \"observer\"\ngenesis = \"../genesis.json\"\np2p_key = \"p2p.key\"\n\
             [p2p]\nlisten = \"/ip4/127.0.0.1/tcp/29160\"\nbootstrap = [\"{}\"]\n\
             [rpc]\nlisten = \"127.0.0.1:29161\"\n",
            v0.p2p_address
        ),
    )
    .expect("node.toml");

    let genesis_hash = net.genesis_hash.to_hex();
    let key = v0.home.join("p2p.key");
    let genesis = dir.path().join("genesis.json");
    let forger = spawn_hostile(
        [
            "--genesis-hash",
            &genesis_hash,
            "--listen",
            &v0_listen,
            "--p2p-key",
            key.to_str().expect("utf-8 path"),
            "--linger",
            "20",
            "forge-final",
            "--genesis",
            genesis.to_str().expect("utf-8 path"),
        ]
        .map(String::from)
        .to_vec(),
    );
    let _observer = NodeProc::start(&observer);
    let url = "http://127.0.0.1:29161";
    let v0_id = v0
        .p2p_address
        .rsplit('/')
        .next()
        .expect("peer id")
        .to_owned();
    eventually("the observer penalises the forger", || {
        cairn_tests::e2e::http_get(&format!("{url}/peers")).is_some_and(|peers| {
            peers.as_array().is_some_and(|a| {
                a.iter()
                    .any(|p| p["peer_id"] == v0_id.as_str() && p["penalty"].as_u64() > Some(0))
            })
        })
    });
    assert_eq!(
        status(url).and_then(|s| s["height"].as_u64()),
        Some(0),
        "the observer took a block that was never final"
    );
    let out = forger.join().expect("forger");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("served 0"), "{stdout}");
}

#[test]
fn a_proof_of_work_sync_answer_that_does_not_follow_the_locator_is_refused() {
    // Two proof-of-work nodes that do not mine. A hostile peer answers the
    // fetch a node sends any new peer with a block of valid work whose
    // parent nobody has: taken, it would wait as an orphan and keep the node
    // asking the same peer for its parent.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: cairn_genesis::EngineKind::Pow,
        validators: 2,
        miners: Some(0),
        base_port: 29170,
        chain_id: "e2e-detour".into(),
        seed: Some(24),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let _nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let url = net.nodes[0].rpc_url.as_str();
    eventually("the nodes see each other", || peer_count(url) >= 1);
    let genesis = dir.path().join("genesis.json");
    let detour = spawn_hostile(
        [
            "--genesis-hash",
            &net.genesis_hash.to_hex(),
            "--peer",
            &net.nodes[0].p2p_address,
            "--linger",
            "20",
            "pow-detour",
            "--genesis",
            genesis.to_str().expect("utf-8 path"),
        ]
        .map(String::from)
        .to_vec(),
    );
    // Node 0 asks the new peer for what follows its chain, gets the detour
    // block, and blames the peer for it.
    eventually("node 0 penalises the detour", || {
        cairn_tests::e2e::http_get(&format!("{url}/peers")).is_some_and(|peers| {
            peers.as_array().is_some_and(|a| {
                a.iter().any(|p| {
                    p["agent"]
                        .as_str()
                        .is_some_and(|ag| ag.starts_with("cairn-hostile"))
                        && p["penalty"].as_u64() > Some(0)
                })
            })
        })
    });
    let orphans = cairn_tests::e2e::consensus(url).and_then(|c| c["orphans"].as_u64());
    assert_eq!(orphans, Some(0), "the detour block is held as an orphan");
    assert_eq!(status(url).and_then(|s| s["height"].as_u64()), Some(0));
    let out = detour.join().expect("hostile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("served 0"), "never asked: {stdout}");
}

#[test]
fn a_mining_node_survives_heavier_blocks_that_do_not_execute() {
    // One mining node; a hostile miner races it on its own head with blocks
    // of the right work and a made-up state root. A block that wins the
    // race becomes the heaviest branch: the node moves its head onto it,
    // finds it does not execute, and must go on mining on its own chain.
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: cairn_genesis::EngineKind::Pow,
        validators: 1,
        miners: Some(1),
        base_port: 29180,
        chain_id: "e2e-bad-miner".into(),
        seed: Some(25),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let _node = NodeProc::start(&net.nodes[0].home);
    let url = net.nodes[0].rpc_url.as_str();
    let height = |u: &str| status(u).and_then(|s| s["height"].as_u64());
    eventually("the node mines", || height(url).is_some_and(|h| h >= 1));
    // The node logs each block it moved its head onto and could not apply.
    let log = net.nodes[0].home.join("node.log");
    let applied_bad =
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("block does not execute"));
    // Rounds of 20 s until one bad block has won a race (each round a fresh
    // identity: the node bans a peer after a few bad blocks).
    for _ in 0..6 {
        let out = Command::new(workspace_bin("cairn-hostile"))
            .args(["--genesis-hash", &net.genesis_hash.to_hex()])
            .args(["--peer", &net.nodes[0].p2p_address, "--linger", "20"])
            .args(["pow-bad-blocks", "--node", url])
            .output()
            .expect("run cairn-hostile");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if applied_bad() || status(url).is_none() {
            break;
        }
    }
    assert!(status(url).is_some(), "the node stopped");
    assert!(applied_bad(), "no bad block ever won a race");
    // And it mines on.
    let at = height(url).expect("height");
    eventually("the node mines on", || height(url).is_some_and(|h| h > at));
}
