//! A real 4-node proof-of-work network (3 miners): `cairn-node run`
//! processes on loopback ports, partitioned 2|2 with the admin API so that
//! both sides mine, then healed.

use cairn_genesis::{generate, EngineKind, NetworkSpec};
use cairn_tests::e2e::{
    admin_bans, admin_peer, admin_post, admin_token, balance, consensus, eventually, http_get,
    keygen, metric, post_raw, post_with, same_head, status, submit, NodeProc, ADMIN_COOKIE,
};

fn height(url: &str) -> Option<u64> {
    status(url)?["height"].as_u64()
}

fn head(url: &str) -> Option<String> {
    Some(status(url)?["head_hash"].as_str()?.to_owned())
}

fn confirmations(url: &str, tx: &str) -> u64 {
    http_get(&format!("{url}/transactions/{tx}"))
        .filter(|t| t["status"] == "committed")
        .and_then(|t| t["confirmations"].as_u64())
        .unwrap_or(0)
}

fn state_root(url: &str) -> Option<String> {
    let b = http_get(&format!("{url}/blocks/latest"))?;
    Some(b["state_root"].as_str()?.to_owned())
}

#[test]
fn pow_network_confirms_partitions_mines_on_both_sides_and_converges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pow,
        validators: 4,
        miners: Some(3),
        block_time_ms: Some(1_000),
        base_port: 28900,
        chain_id: "e2e-pow".into(),
        seed: Some(21),
        // A real creation time: the first retarget measures from it.
        genesis_time_ms: Some(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        ),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let _nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let faucet = net.faucet_key();
    let alice_key = dir.path().join("alice.key");
    let alice = keygen(urls[3], &alice_key);
    let bob = keygen(urls[3], &dir.path().join("bob.key"));
    eventually("every node serves and sees its peers", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(3)))
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

    // 1. A transfer (sent to the node that does not mine) reaches 6
    // confirmations on every node.
    let tx = submit(urls[3], &faucet, &alice, 10_000);
    eventually("6 confirmations everywhere", || {
        urls.iter().all(|u| confirmations(u, &tx) >= 6)
    });
    // Blocks travel by their transactions' hashes (compact blocks), which
    // the other nodes assemble from their mempools.
    let assembled: f64 = urls
        .iter()
        .filter_map(|u| metric(u, "cairn_pow_compact_blocks_total{outcome=\"assembled\"}"))
        .sum();
    assert!(assembled >= 1.0, "no block assembled from a mempool");
    let c = consensus(urls[0]).expect("consensus");
    assert_eq!(c["engine"], "pow", "{c}");
    assert!(c["difficulty"].as_u64() > Some(0), "{c}");
    assert!(c["tip_work"].as_u64() > Some(0), "{c}");
    assert!(c["hash_rate"].as_u64() > Some(0), "{c}");
    let s = status(urls[0]).expect("status");
    assert_eq!(
        s["finalized_height"].as_u64(),
        s["height"].as_u64().map(|h| h.saturating_sub(5)),
        "{s}"
    );

    // The admin API wants the node's token and a JSON body; bad input is a
    // clear error.
    let ban_url = format!("{}/admin/ban", urls[0]);
    let (code, body) = admin_post(&ban_url, &net.nodes[0].home, "{\"peer\": \"nope\"}");
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (400, Some("bad_peer_id"))
    );
    let (code, body) = post_raw(&ban_url, &format!("{{\"peer\": \"{}\"}}", ids[1]));
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (401, Some("admin_unauthorized")),
        "no token"
    );
    // What a page in a browser could send: a form post, even with the
    // right token guessed, is refused.
    let auth = format!("Bearer {}", admin_token(&net.nodes[0].home));
    let (code, body) = post_with(
        &ban_url,
        &format!("{{\"peer\": \"{}\"}}", ids[1]),
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("authorization", &auth),
        ],
    );
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (415, Some("admin_json_only"))
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(net.nodes[0].home.join(ADMIN_COOKIE)).expect("cookie");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    // 2. Partition 2|2: {0, 1} (two miners) and {2, 3} (one miner).
    let sides = [[0usize, 1], [2, 3]];
    for (mine, other) in [(sides[0], sides[1]), (sides[1], sides[0])] {
        for &a in &mine {
            for &b in &other {
                admin_peer(urls[a], &net.nodes[a].home, "ban", &ids[b]);
            }
        }
    }
    eventually("each node sees only its side", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() == Some(1)))
    });
    let banned = admin_bans(urls[0], &net.nodes[0].home);
    assert_eq!(banned.len(), 2, "{banned:?}");
    let split = urls
        .iter()
        .filter_map(|u| height(u))
        .max()
        .expect("heights");
    // A transfer on each side, from different senders: both valid on
    // whichever side wins.
    let tx_a = submit(urls[0], &faucet, &bob, 300);
    let tx_b = submit(urls[3], &alice_key, &bob, 200);
    eventually("both sides mine past the split, apart", || {
        let (h0, h2) = (height(urls[0]), height(urls[2]));
        h0 > Some(split + 3)
            && h2 > Some(split + 3)
            && head(urls[0]) != head(urls[2])
            && confirmations(urls[1], &tx_a) >= 1
            && confirmations(urls[3], &tx_b) >= 1
    });
    // Neither side saw the other's transfer.
    assert_eq!(confirmations(urls[0], &tx_b), 0);
    assert_eq!(confirmations(urls[2], &tx_a), 0);

    // 3. Heal: every node ends on the same most-work head with the same
    // state, and both transfers are in the chain.
    for (mine, other) in [(sides[0], sides[1]), (sides[1], sides[0])] {
        for &a in &mine {
            for &b in &other {
                admin_peer(urls[a], &net.nodes[a].home, "unban", &ids[b]);
            }
        }
    }
    eventually("one head, both transfers, on every node", || {
        same_head(&urls)
            && urls
                .iter()
                .all(|u| confirmations(u, &tx_a) >= 1 && confirmations(u, &tx_b) >= 1)
    });
    eventually("the same state everywhere", || {
        same_head(&urls) && {
            let roots: Vec<Option<String>> = urls.iter().map(|u| state_root(u)).collect();
            roots[0].is_some() && roots.iter().all(|r| *r == roots[0])
        }
    });
    let reorgs: u64 = urls
        .iter()
        .filter_map(|u| consensus(u)?["reorgs"].as_u64())
        .sum();
    assert!(reorgs >= 1, "the losing side reorganised");
    for u in &urls {
        assert_eq!(balance(u, &bob), Some(500), "bob on {u}");
        assert_eq!(balance(u, &alice), Some(10_000 - 200 - 1), "alice on {u}");
    }
}
