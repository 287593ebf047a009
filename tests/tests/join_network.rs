//! A node that joins a running network by configuration: `cairn-node
//! init` writes a follower's home from the network's genesis and a
//! bootstrap peer; the follower syncs from genesis (PBFT blocks checked by
//! their commit certificates), follows the head, serves the API and takes
//! transfers, which it gossips to the validators.

use std::process::Command;

use cairn_genesis::{generate, EngineKind, NetworkSpec};
use cairn_tests::e2e::{eventually, http_get, keygen, same_head, status, transfer, NodeProc};
use cairn_tests::workspace_bin;

#[test]
fn a_follower_joins_a_running_network_by_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pbft,
        validators: 4,
        base_port: 29080,
        chain_id: "e2e-join".into(),
        seed: Some(43),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let _nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let faucet = net.faucet_key();
    let frank = keygen(&urls[0], &dir.path().join("frank.key"));
    eventually("the validators serve and see each other", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(3)))
    });
    for _ in 0..3 {
        transfer(&urls[1], &faucet, &frank, 10);
    }

    let home = dir.path().join("follower");
    let init = |extra: &[&str]| {
        Command::new(workspace_bin("cairn-node"))
            .arg("init")
            .arg("--home")
            .arg(&home)
            .arg("--genesis")
            .arg(dir.path().join("genesis.json"))
            .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/29098"])
            .args(["--rpc-listen", "127.0.0.1:29099"])
            .args(extra)
            .output()
            .expect("cairn-node init")
    };
    // A bootstrap address without its peer id is refused, saying why.
    let out = init(&["--bootstrap", "/ip4/127.0.0.1/tcp/29080"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/p2p/<peer id>"),
        "{out:?}"
    );
    let out = init(&["--bootstrap", &net.nodes[0].p2p_address]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cairn-node run --home"),
        "{out:?}"
    );
    // A home that holds a node is not overwritten.
    let again = init(&["--bootstrap", &net.nodes[0].p2p_address]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a node"),
        "{again:?}"
    );

    let _follower = NodeProc::start(&home);
    let follower = "http://127.0.0.1:29099";
    let mut all: Vec<&str> = urls.iter().map(String::as_str).collect();
    all.push(follower);
    eventually("the follower syncs to the network's head", || {
        same_head(&all)
    });
    let s = status(follower).expect("status");
    assert!(s["validator"].is_null(), "a follower, not a validator: {s}");
    // A transfer through the follower reaches the validators and commits.
    transfer(follower, &faucet, &frank, 5);
    eventually("every node holds it", || {
        all.iter().all(|u| {
            http_get(&format!("{u}/accounts/{frank}")).and_then(|a| a["balance"].as_u64())
                == Some(35)
        })
    });
}
