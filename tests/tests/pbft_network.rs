//! A real 4-validator PBFT network (f = 1): `cairn-node run` processes on
//! loopback ports, driven by the wallet binary and the HTTP API.

use std::time::Duration;

use cairn_genesis::{generate, EngineKind, NetworkSpec};
use cairn_tests::e2e::{
    balance, consensus, eventually, keygen, same_head, status, transfer, wallet, NodeProc,
};

fn primary(urls: &[&str]) -> Option<usize> {
    urls.iter()
        .position(|u| consensus(u).is_some_and(|c| c["role"] == "primary"))
}

fn height(url: &str) -> Option<u64> {
    status(url)?["height"].as_u64()
}

#[test]
fn pbft_network_survives_a_primary_crash_and_stops_safely_without_a_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pbft,
        validators: 4,
        base_port: 28800,
        chain_id: "e2e-pbft".into(),
        seed: Some(12),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let faucet = net.faucet_key();
    let alice = keygen(urls[1], &dir.path().join("alice.key"));
    eventually("every node serves and sees its peers", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(3)))
    });

    // 1. Transfers commit with certificates; every node agrees.
    transfer(urls[1], &faucet, &alice, 1_000);
    eventually("all nodes reach the same head", || same_head(&urls));
    for u in &urls {
        assert_eq!(balance(u, &alice), Some(1_000), "balance on {u}");
        let c = consensus(u).expect("consensus status");
        assert_eq!(
            (c["engine"].as_str(), c["view"].as_u64()),
            (Some("pbft"), Some(0)),
            "{c}"
        );
        assert_eq!(c["primary"].as_u64(), Some(0), "{c}");
    }

    // 2. Kill -9 the primary: a view change, and transfers keep committing.
    let old = primary(&urls).expect("a primary");
    nodes[old].kill9();
    let survivors: Vec<&str> = (0..4).filter(|&i| i != old).map(|i| urls[i]).collect();
    transfer(survivors[0], &faucet, &alice, 500);
    eventually("survivors agree", || same_head(&survivors));
    for u in &survivors {
        let c = consensus(u).expect("consensus status");
        assert!(c["view"].as_u64() >= Some(1), "view changed on {u}: {c}");
        assert!(c["view_changes"].as_u64() >= Some(1), "{c}");
        assert_ne!(c["primary"].as_u64(), Some(old as u64), "{c}");
        assert!(c["height"].as_u64() >= Some(2), "{c}");
    }

    // 3. Restart it: it catches up (blocks checked by their certificates)
    // and votes again — with another validator down, progress needs it.
    let home = nodes[old].home.clone();
    nodes[old] = NodeProc::start(&home);
    eventually("the restarted validator catches up", || {
        same_head(&urls) && balance(urls[old], &alice) == Some(1_500)
    });
    let other = (0..4)
        .find(|&i| i != old && Some(i) != primary(&urls))
        .expect("a backup besides the restarted one");
    nodes[other].kill9();
    let up: Vec<&str> = (0..4).filter(|&i| i != other).map(|i| urls[i]).collect();
    transfer(up[0], &faucet, &alice, 250);
    eventually("the three agree", || same_head(&up));

    // 4. Kill a second validator: 2 of 4 up, no quorum. Nothing becomes
    // final and the two do not diverge, however long we give them (here
    // several view timeouts).
    let second = (0..4).find(|&i| i != other && i != old).expect("another");
    nodes[second].kill9();
    let left: Vec<&str> = (0..4)
        .filter(|&i| i != other && i != second)
        .map(|i| urls[i])
        .collect();
    let before: Vec<Option<u64>> = left.iter().map(|u| height(u)).collect();
    let (ok, _, _) = wallet(
        left[0],
        &[
            "transfer",
            "--key",
            faucet.to_str().expect("utf-8"),
            "--to",
            &alice,
            "--amount",
            "125",
        ],
    );
    assert!(ok, "the node accepts the transfer into its mempool");
    std::thread::sleep(Duration::from_secs(10));
    let after: Vec<Option<u64>> = left.iter().map(|u| height(u)).collect();
    assert_eq!(before, after, "a block became final without a quorum");
    assert!(same_head(&left), "the two diverged");

    // 5. Bring both back: progress resumes, the pending transfer commits.
    nodes[other] = NodeProc::start(&net.nodes[other].home);
    nodes[second] = NodeProc::start(&net.nodes[second].home);
    eventually("the pending transfer commits everywhere", || {
        urls.iter().all(|u| balance(u, &alice) == Some(1_875)) && same_head(&urls)
    });
}
