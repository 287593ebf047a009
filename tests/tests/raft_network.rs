//! A real 3-node Raft network: `cairn-node run` processes on loopback ports,
//! driven by the real `cairn-wallet` binary and the HTTP API.

use cairn_chain::keyfile::read_key_file;
use cairn_chain::{SecretKey, Transaction};
use cairn_genesis::{generate, NetworkSpec};
use cairn_tests::e2e::{
    balance, eventually, http_get, keygen, leader, metric, post_raw, same_head, status, transfer,
    wallet, NodeProc, Watcher,
};

#[test]
fn raft_network_commits_survives_a_leader_crash_and_refuses_bad_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        base_port: 28600,
        chain_id: "e2e-raft".into(),
        seed: Some(11),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mut nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let faucet = net.faucet_key();

    eventually("a leader is elected", || leader(&urls).is_some());
    // A follower's events, watched through the whole test.
    let first_leader = leader(&urls).expect("a leader");
    let watched = (first_leader + 1) % urls.len();
    let mut watcher = Watcher::start(urls[watched]);
    eventually("the watcher is subscribed", || {
        metric(urls[watched], "cairn_event_subscribers").unwrap_or(0.0) >= 1.0
    });

    // 1. A transfer (sent to a follower) commits; every node has the same
    // head and balances.
    let alice = keygen(urls[1], &dir.path().join("alice.key"));
    transfer(urls[watched], &faucet, &alice, 1_000);
    eventually("all nodes reach the same head", || same_head(&urls));
    for u in &urls {
        assert_eq!(balance(u, &alice), Some(1_000), "balance on {u}");
    }
    // The leader had the transfer by gossip from the follower, a Raft
    // validator that checked its signature: taken without a second check.
    if leader(&urls) == Some(first_leader) {
        let admitted = |how: &str| {
            let sample =
                format!("cairn_gossip_admitted_transactions_total{{signatures=\"{how}\"}}");
            metric(urls[first_leader], &sample).unwrap_or(0.0)
        };
        assert!(
            admitted("trusted") >= 1.0,
            "the leader trusted its follower's gossip"
        );
        assert_eq!(admitted("checked"), 0.0, "and checked none of it again");
    }

    eventually("the watcher saw the transfer commit in a new head", || {
        watcher.saw(&["head ", "(1 transactions, final)"]) && watcher.saw(&["committed at height"])
    });

    // 2. Kill -9 the leader: the survivors elect a new one and commit.
    let old = leader(&urls).expect("a leader");
    nodes[old].kill9();
    let survivors: Vec<&str> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != old)
        .map(|(_, u)| *u)
        .collect();
    eventually("a new leader among the survivors", || {
        leader(&survivors).is_some()
    });
    transfer(survivors[0], &faucet, &alice, 500);
    eventually("survivors agree", || same_head(&survivors));
    if watched != old {
        let new_leader = leader(&survivors).expect("a leader");
        eventually("the watcher saw the new leader", || {
            watcher.saw(&["raft leader", &format!("leader {new_leader} ")])
                || watcher
                    .lines()
                    .iter()
                    .any(|l| l.starts_with("raft leader") && !l.contains(&format!("leader {old} ")))
        });
    }
    for u in &survivors {
        assert_eq!(balance(u, &alice), Some(1_500));
    }
    // Restart the killed node: it catches up to the same head.
    let home = nodes[old].home.clone();
    nodes[old] = NodeProc::start(&home);
    eventually("the restarted node catches up", || {
        same_head(&urls) && balance(urls[old], &alice) == Some(1_500)
    });
    if watched == old {
        // Its stream ended with it (leadership moved before the crash).
        watcher = Watcher::start(urls[watched]);
        eventually("the watcher is subscribed again", || {
            metric(urls[watched], "cairn_event_subscribers").unwrap_or(0.0) >= 1.0
        });
    }

    // 3. Bad transactions get the matching code, and the node keeps serving.
    let url = format!("{}/transactions", urls[old]);
    let key: SecretKey = read_key_file(&faucet).expect("faucet key");
    let to = key.address();
    let nonce = http_get(&format!("{}/accounts/{}", urls[old], key.address())).expect("account")
        ["nonce"]
        .as_u64()
        .expect("nonce");
    let g = net.genesis_hash;
    let mut forged = Transaction::new_signed(&key, "e2e-raft", &g, to, 5, 1, nonce);
    forged.amount = 6;
    let replayed = Transaction::new_signed(&key, "e2e-raft", &g, to, 5, 1, nonce - 1);
    let other_chain = Transaction::new_signed(&key, "another-chain", &g, to, 5, 1, nonce);
    // Signed for another network that reuses this chain id.
    let other_network = Transaction::new_signed(
        &key,
        "e2e-raft",
        &cairn_chain::Hash::digest(b"an older network"),
        to,
        5,
        1,
        nonce,
    );
    let free = Transaction::new_signed(&key, "e2e-raft", &g, to, 5, 0, nonce);
    let nobody = SecretKey::from_label("never funded");
    let unknown = Transaction::new_signed(&nobody, "e2e-raft", &g, to, 0, 1, 0);
    let cases = [
        (
            serde_json::to_string(&forged).expect("json"),
            "bad_signature",
        ),
        (serde_json::to_string(&replayed).expect("json"), "bad_nonce"),
        (
            serde_json::to_string(&other_chain).expect("json"),
            "wrong_chain",
        ),
        (
            serde_json::to_string(&other_network).expect("json"),
            "bad_signature",
        ),
        (serde_json::to_string(&free).expect("json"), "fee_too_low"),
        (
            serde_json::to_string(&unknown).expect("json"),
            "unknown_sender",
        ),
        ("{\"chain_id\": 7".to_owned(), "malformed"),
    ];
    for (body, code) in cases {
        let (status, json) = post_raw(&url, &body);
        assert_eq!(status, 400, "{code}: {json}");
        assert_eq!(json["error"]["code"], code, "{json}");
    }
    assert!(status(urls[old]).is_some(), "node still serving");

    // 4. A batch: one answer per transaction, in order; the good ones
    // commit, the bad ones are named (a forged signature, an entry that
    // is not a transaction).
    let good = |n| Transaction::new_signed(&key, "e2e-raft", &g, to, 5, 1, n);
    let batch = format!(
        "[{}, {}, {}, {{\"amount\": 1}}]",
        serde_json::to_string(&good(nonce)).expect("json"),
        serde_json::to_string(&forged).expect("json"),
        serde_json::to_string(&good(nonce + 1)).expect("json"),
    );
    let (code, json) = post_raw(&format!("{url}/batch"), &batch);
    assert_eq!(code, 200, "{json}");
    assert_eq!(json["accepted"], 2, "{json}");
    let results = json["results"].as_array().expect("results");
    assert_eq!(results[0]["hash"], good(nonce).hash().to_string(), "{json}");
    assert_eq!(results[1]["error"]["code"], "bad_signature", "{json}");
    assert_eq!(
        results[2]["hash"],
        good(nonce + 1).hash().to_string(),
        "{json}"
    );
    assert_eq!(results[3]["error"]["code"], "malformed", "{json}");
    eventually("the batch commits", || {
        urls.iter().all(|u| {
            http_get(&format!("{u}/accounts/{to}"))
                .is_some_and(|a| a["nonce"].as_u64() == Some(nonce + 2))
        })
    });
    let (code, json) = post_raw(&format!("{url}/batch"), "{\"not\": \"an array\"}");
    assert_eq!(
        (code, json["error"]["code"].as_str()),
        (400, Some("malformed"))
    );
    // The wallet reports a refusal as one line and a non-zero exit.
    let (ok, _, err) = wallet(urls[old], &["balance", "cairn1notanaddress"]);
    assert!(!ok && err.starts_with("error: bad address"), "{err}");
    let (ok, _, err) = wallet("http://127.0.0.1:1", &["status"]);
    assert!(!ok && err.contains("cannot reach the node"), "{err}");

    // 4. Transfers sent in a row without --wait each take the nonce after
    // the account's pending ones, and all commit; Raft's are final.
    let faucet_path = faucet.to_str().expect("utf-8 path");
    let send = |url: &str, extra: &[&str]| {
        let mut args = vec![
            "transfer",
            "--key",
            faucet_path,
            "--to",
            &alice,
            "--amount",
            "1",
        ];
        args.extend_from_slice(extra);
        wallet(url, &args)
    };
    let mut hashes = Vec::new();
    for _ in 0..3 {
        let (ok, out, err) = send(urls[0], &[]);
        assert!(ok, "a transfer in a row is refused: {out} {err}");
        let hash = out.trim().strip_prefix("submitted ").expect("a hash");
        hashes.push(hash.to_owned());
    }
    eventually("the three transfers commit", || {
        hashes.iter().all(|h| {
            http_get(&format!("{}/transactions/{h}", urls[0]))
                .is_some_and(|t| t["status"] == "committed")
        })
    });
    let (ok, out, _) = wallet(urls[0], &["tx", &hashes[2]]);
    assert!(
        ok && out.contains("(final)") && !out.contains("confirmation"),
        "{out}"
    );
    // A nonce already used: the refusal says what to do.
    let (ok, _, err) = send(urls[0], &["--nonce", "0"]);
    assert!(!ok && err.contains("Leave out --nonce"), "{err}");

    // 5. A transfer replaced by one with a higher fee shows in the event
    // stream as dropped, with why (both wait behind a nonce gap, so
    // neither can commit first).
    let key_address = read_key_file(&faucet).expect("faucet key").address();
    let next = http_get(&format!("{}/accounts/{key_address}", urls[watched]))
        .and_then(|a| a["pending_nonce"].as_u64())
        .expect("pending nonce");
    let gap = (next + 1).to_string();
    let submit = |fee: &str| {
        let (ok, out, err) = send(urls[watched], &["--nonce", &gap, "--fee", fee]);
        assert!(ok, "{out} {err}");
        out.trim()
            .strip_prefix("submitted ")
            .expect("a hash")
            .to_owned()
    };
    let replaced = submit("1");
    submit("5");
    eventually("the watcher saw the replaced transfer dropped", || {
        watcher.saw(&[&replaced[..16], "dropped: replaced"])
    });
    // The gap filled, the replacement commits.
    transfer(urls[watched], &faucet, &alice, 1);
}
