//! Proof-of-work to PBFT on a live network of real processes, with rival
//! branches at the switch: partitioned 2|2 with the admin API, both sides
//! mine their own chain up to the last mined height, and neither can make
//! a PBFT block (it needs three of four). Healed, the first PBFT block
//! names one side's last mined block as its parent; the other side fetches
//! that branch, reorganises onto it, and the mined chain is final from
//! then on. The losing side's transfer goes back to the mempools and
//! commits under PBFT.

use cairn_genesis::{generate, EngineKind, NetworkSpec};
use cairn_tests::e2e::{
    admin_peer, assert_nobody_blamed, balance, consensus, eventually, genesis_upgrade, http_get,
    keygen, same_head, status, submit, NodeProc,
};

/// The last mined height; PBFT from the next one.
const LAST_MINED: u64 = 12;

fn height(url: &str) -> Option<u64> {
    status(url)?["height"].as_u64()
}

fn head(url: &str) -> Option<String> {
    Some(status(url)?["head_hash"].as_str()?.to_owned())
}

fn committed(url: &str, tx: &str) -> bool {
    http_get(&format!("{url}/transactions/{tx}")).is_some_and(|t| t["status"] == "committed")
}

#[test]
fn rival_mined_branches_at_a_switch_to_pbft_are_settled_by_its_first_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pow,
        validators: 4,
        miners: Some(4),
        block_time_ms: Some(500),
        base_port: 29130,
        chain_id: "e2e-from-pow".into(),
        seed: Some(43),
        genesis_time_ms: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        ),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let at = (LAST_MINED + 1).to_string();
    let out = genesis_upgrade(dir.path(), &["--at-height", &at, "--engine", "pbft"]);
    assert!(out.status.success(), "{out:?}");
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let faucet = net.faucet_key();
    let alice_key = dir.path().join("alice.key");
    let alice = keygen(urls[0], &alice_key);
    let bob = keygen(urls[0], &dir.path().join("bob.key"));
    eventually("every node serves and sees its peers", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(3)))
    });
    // Alice's funds, mined before the split so both sides hold them.
    let fund = submit(urls[0], &faucet, &alice, 10_000);
    eventually("alice is funded everywhere", || {
        urls.iter().all(|u| committed(u, &fund))
    });
    let ids: Vec<String> = urls
        .iter()
        .map(|u| {
            status(u).expect("status")["node_id"]
                .as_str()
                .expect("node id")
                .to_owned()
        })
        .collect();
    let split = urls.iter().filter_map(|u| height(u)).max().unwrap_or(0);
    assert!(
        split + 3 < LAST_MINED,
        "the chain reached {split} before the split"
    );

    // Partition 2|2: each side mines its own branch to the last mined
    // height, where it stops.
    let sides = [[0usize, 1], [2, 3]];
    let ban = |what: &str| {
        for (mine, other) in [(sides[0], sides[1]), (sides[1], sides[0])] {
            for &a in &mine {
                for &b in &other {
                    admin_peer(urls[a], &net.nodes[a].home, what, &ids[b]);
                }
            }
        }
    };
    ban("ban");
    let tx_a = submit(urls[0], &faucet, &bob, 300);
    let tx_b = submit(urls[3], &alice_key, &bob, 200);
    eventually("both sides mine to the last mined height, apart", || {
        urls.iter().all(|u| height(u) == Some(LAST_MINED)) && head(urls[0]) != head(urls[2])
    });
    let branch_a = head(urls[0]).expect("head");
    let branch_b = head(urls[2]).expect("head");
    // Neither side can make a PBFT block: three of four are needed.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(urls.iter().all(|u| height(u) == Some(LAST_MINED)));
    for u in &urls {
        assert_eq!(consensus(u).expect("consensus")["engine"], "pbft", "{u}");
    }

    // Heal: the first PBFT block settles one branch; every node follows.
    ban("unban");
    eventually("every node past the switch, on one head", || {
        urls.iter().all(|u| height(u) > Some(LAST_MINED)) && same_head(&urls)
    });
    let settled = http_get(&format!("{}/blocks/{LAST_MINED}", urls[0])).expect("block")["hash"]
        .as_str()
        .expect("hash")
        .to_owned();
    assert!(settled == branch_a || settled == branch_b, "{settled}");
    for u in &urls {
        let b = http_get(&format!("{u}/blocks/{LAST_MINED}")).expect("block");
        assert_eq!(b["hash"], settled.as_str(), "{u}");
    }
    // Both transfers hold: the losing side's went back to the mempools.
    eventually("both transfers committed everywhere", || {
        urls.iter()
            .all(|u| committed(u, &tx_a) && committed(u, &tx_b))
    });
    for u in &urls {
        assert_eq!(balance(u, &bob), Some(500), "bob on {u}");
    }
    // A node restarted after the switch keeps the settled chain.
    drop(nodes.pop());
    nodes.push(NodeProc::start(&net.nodes[3].home));
    let last = submit(urls[1], &faucet, &bob, 1);
    eventually("the restarted node follows PBFT", || {
        same_head(&urls) && urls.iter().all(|u| committed(u, &last))
    });
    assert_nobody_blamed(
        net.nodes
            .iter()
            .map(|n| (n.name.as_str(), n.home.as_path())),
    );
}
