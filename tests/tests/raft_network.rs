//! A real 3-node Raft network: `cairn-node run` processes on loopback ports,
//! driven by the real `cairn-wallet` binary and the HTTP API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_chain::keyfile::read_key_file;
use cairn_chain::{SecretKey, Transaction};
use cairn_genesis::{generate, NetworkSpec};
use cairn_tests::workspace_bin;
use serde_json::Value;

/// A guard: the node process dies with the test, pass or fail.
struct NodeProc {
    home: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    fn start(home: &Path) -> Self {
        let log = std::fs::File::create(home.join("node.log")).expect("log file");
        let child = Command::new(workspace_bin("cairn-node"))
            .args(["run", "--home"])
            .arg(home)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn cairn-node");
        NodeProc {
            home: home.to_owned(),
            child: Some(child),
        }
    }
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn http_get(url: &str) -> Option<Value> {
    let mut r = ureq::get(url).call().ok()?;
    r.body_mut().read_json().ok()
}

fn post_raw(url: &str, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .expect("node answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().expect("json body"))
}

/// Polls until `f` holds; fails the test (with `what`) after a generous
/// bound. The bound guards against hangs, it is not a performance claim.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("gave up waiting: {what}");
}

fn wallet(node: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_bin("cairn-wallet"))
        .args(["--node", node])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cairn-wallet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(url: &str) -> Option<Value> {
    http_get(&format!("{url}/status"))
}

fn leader(urls: &[&str]) -> Option<usize> {
    urls.iter()
        .position(|u| status(u).is_some_and(|s| s["role"] == "leader"))
}

fn balance(url: &str, addr: &str) -> Option<u64> {
    http_get(&format!("{url}/accounts/{addr}"))?["balance"].as_u64()
}

fn transfer(url: &str, faucet: &Path, to: &str, amount: u64) {
    let (ok, out, err) = wallet(
        url,
        &[
            "transfer",
            "--key",
            faucet.to_str().expect("utf-8 path"),
            "--to",
            to,
            "--amount",
            &amount.to_string(),
            "--wait",
        ],
    );
    assert!(ok, "transfer failed: {out} {err}");
    assert!(out.contains("committed"), "{out}");
}

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

    // 1. A transfer commits; every node has the same head and balances.
    let (ok, out, _) = wallet(
        urls[1],
        &[
            "keygen",
            "--out",
            dir.path().join("alice.key").to_str().expect("utf-8"),
        ],
    );
    assert!(ok);
    let alice = out.split_whitespace().next().expect("address").to_owned();
    transfer(urls[1], &faucet, &alice, 1_000);
    let same_head = |urls: &[&str]| {
        let heads: Vec<Option<String>> = urls
            .iter()
            .map(|u| status(u).and_then(|s| s["head_hash"].as_str().map(str::to_owned)))
            .collect();
        heads[0].is_some() && heads.iter().all(|h| *h == heads[0])
    };
    eventually("all nodes reach the same head", || same_head(&urls));
    for u in &urls {
        assert_eq!(balance(u, &alice), Some(1_000), "balance on {u}");
    }

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
    for u in &survivors {
        assert_eq!(balance(u, &alice), Some(1_500));
    }
    // Restart the killed node: it catches up to the same head.
    let home = nodes[old].home.clone();
    nodes[old] = NodeProc::start(&home);
    eventually("the restarted node catches up", || {
        same_head(&urls) && balance(urls[old], &alice) == Some(1_500)
    });

    // 3. Bad transactions get the matching code, and the node keeps serving.
    let url = format!("{}/transactions", urls[old]);
    let key: SecretKey = read_key_file(&faucet).expect("faucet key");
    let to = key.address();
    let nonce = http_get(&format!("{}/accounts/{}", urls[old], key.address())).expect("account")
        ["nonce"]
        .as_u64()
        .expect("nonce");
    let mut forged = Transaction::new_signed(&key, "e2e-raft", to, 5, 1, nonce);
    forged.amount = 6;
    let replayed = Transaction::new_signed(&key, "e2e-raft", to, 5, 1, nonce - 1);
    let other_chain = Transaction::new_signed(&key, "another-chain", to, 5, 1, nonce);
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
        ("{\"chain_id\": 7".to_owned(), "malformed"),
    ];
    for (body, code) in cases {
        let (status, json) = post_raw(&url, &body);
        assert_eq!(status, 400, "{code}: {json}");
        assert_eq!(json["error"]["code"], code, "{json}");
    }
    assert!(status(urls[old]).is_some(), "node still serving");
    // The wallet reports a refusal as one line and a non-zero exit.
    let (ok, _, err) = wallet(urls[old], &["balance", "cairn1notanaddress"]);
    assert!(!ok && err.starts_with("error: bad address"), "{err}");
    let (ok, _, err) = wallet("http://127.0.0.1:1", &["status"]);
    assert!(!ok && err.contains("cannot reach the node"), "{err}");
}
