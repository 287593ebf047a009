//! `cairn-node devnet` starts every node and leaves no process behind when
//! it gets SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::workspace_bin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn alive(pid: i32) -> bool {
    // A zombie is dead for our purposes; /proc/<pid>/stat says "Z".
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.split_whitespace().nth(2).is_none_or(|s| s != "Z"),
        Err(_) => false,
    }
}

#[test]
fn devnet_stops_every_child_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("net");
    let mut devnet = Command::new(workspace_bin("cairn-node"))
        .args([
            "devnet",
            "--validators",
            "3",
            "--base-port",
            "28700",
            "--dir",
        ])
        .arg(&net)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn devnet");
    let stdout = devnet.stdout.take().expect("stdout");
    let mut pids = Vec::new();
    let mut urls = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("line");
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() == 4 && cols[0].starts_with("node") {
            pids.push(cols[1].parse::<i32>().expect("pid column"));
            urls.push(cols[2].to_owned());
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "the devnet lists three nodes");
    // Keep reading what the devnet prints, as a terminal would.
    let drain = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // Every node comes up and serves its API.
    let deadline = Instant::now() + Duration::from_secs(90);
    for u in &urls {
        while ureq::get(&format!("{u}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "{u} never came up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    kill(Pid::from_raw(devnet.id() as i32), Signal::SIGTERM).expect("signal devnet");
    let status = devnet.wait().expect("devnet exits");
    assert!(status.success(), "devnet exit status {status}");
    let said = drain.join().expect("reader").join("\n");
    assert!(said.contains("All nodes stopped."), "{said}");
    for pid in pids {
        assert!(!alive(pid), "node process {pid} outlived the devnet");
    }
}

/// Asking a devnet folder for another engine or size than the network it
/// holds says what is there and how to go on, and starts nothing; the
/// same request with `--fresh` replaces the network.
#[test]
fn devnet_refuses_another_engine_than_the_network_it_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("net");
    let made = Command::new(workspace_bin("cairn-genesis"))
        .args(["new", "--engine", "raft", "--validators", "3", "--out"])
        .arg(&net)
        .output()
        .expect("cairn-genesis new");
    assert!(made.status.success(), "{made:?}");
    for args in [
        &["--engine", "pbft"][..],
        &["--validators", "5"][..],
        &["--engine", "pow", "--validators", "4"][..],
    ] {
        let out = Command::new(workspace_bin("cairn-node"))
            .arg("devnet")
            .args(args)
            .arg("--dir")
            .arg(&net)
            .output()
            .expect("cairn-node devnet");
        assert!(!out.status.success(), "{args:?} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("holds a raft network of 3 validators") && err.contains("--fresh"),
            "{args:?}: {err}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("NODE"),
            "no node is started"
        );
    }
    // A fresh network of the engine asked for.
    let mut devnet = Command::new(workspace_bin("cairn-node"))
        .args([
            "devnet",
            "--engine",
            "pbft",
            "--fresh",
            "--base-port",
            "28720",
            "--dir",
        ])
        .arg(&net)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn devnet");
    let stdout = devnet.stdout.take().expect("stdout");
    let mut said = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let done = line.starts_with("Ctrl-C");
        said.push(line);
        if done {
            break;
        }
    }
    kill(Pid::from_raw(devnet.id() as i32), Signal::SIGTERM).expect("signal devnet");
    devnet.wait().expect("devnet exits");
    let said = said.join("\n");
    assert!(
        said.contains("Generated a pbft network of 4 validators"),
        "{said}"
    );
}

/// `cairn-node devnet --schedule raft,pbft@5` starts a network that
/// switches to PBFT at height 5; an upgrade appended while it runs
/// (`cairn-genesis upgrade`) is applied by restarting the nodes one at a
/// time, and the chain switches back to Raft at that height without
/// stopping.
#[test]
fn devnet_runs_a_schedule_and_applies_an_upgrade_while_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("net");
    let mut devnet = Command::new(workspace_bin("cairn-node"))
        .args([
            "devnet",
            "--schedule",
            "raft,pbft@5",
            "--base-port",
            "28740",
            "--dir",
        ])
        .arg(&net)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn devnet");
    let stdout = devnet.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut said = Vec::new();
    let wait_for = |what: &str, said: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !said.iter().any(|l: &String| l.contains(what)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "devnet never said {what:?}:\n{}",
                said.join("\n")
            );
            if let Ok(line) = rx.recv_timeout(left) {
                said.push(line);
            }
        }
    };
    wait_for("Ctrl-C", &mut said);
    let text = said.join("\n");
    assert!(text.contains("switches to pbft at height 5"), "{text}");
    let node = "http://127.0.0.1:28741";
    let faucet = net.join("faucet.key");
    let faucet = faucet.to_str().expect("utf-8");
    let height = || {
        ureq::get(&format!("{node}/status"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
            .and_then(|v| v["height"].as_u64())
            .unwrap_or(0)
    };
    let engine = || {
        ureq::get(&format!("{node}/consensus"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
            .and_then(|v| v["engine"].as_str().map(str::to_owned))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while ureq::get(&format!("{node}/status")).call().is_err() {
        assert!(Instant::now() < deadline, "the devnet's node0 never served");
        std::thread::sleep(Duration::from_millis(200));
    }
    let to = Command::new(workspace_bin("cairn-wallet"))
        .args(["address", "--key", faucet])
        .output()
        .expect("cairn-wallet address");
    let to = String::from_utf8_lossy(&to.stdout).trim().to_owned();
    let send_until = |target: u64| {
        let mut sent = 0;
        while height() < target {
            let out = Command::new(workspace_bin("cairn-wallet"))
                .args(["--node", node, "transfer", "--key", faucet, "--amount", "1"])
                .args(["--to", &to])
                .args(["--wait", "--timeout", "60"])
                .output()
                .expect("cairn-wallet");
            assert!(out.status.success(), "{out:?}");
            sent += 1;
            assert!(sent < 400, "the chain does not reach height {target}");
        }
    };
    send_until(7);
    assert_eq!(engine().as_deref(), Some("pbft"));
    // Back to Raft, scheduled while the devnet runs.
    let at = height() + 60;
    let out = Command::new(workspace_bin("cairn-genesis"))
        .args([
            "upgrade",
            "--engine",
            "raft",
            "--at-height",
            &at.to_string(),
            "--dir",
        ])
        .arg(&net)
        .output()
        .expect("cairn-genesis upgrade");
    assert!(out.status.success(), "{out:?}");
    wait_for("Every node runs the new schedule", &mut said);
    send_until(at + 2);
    assert_eq!(engine().as_deref(), Some("raft"));
    kill(Pid::from_raw(devnet.id() as i32), Signal::SIGTERM).expect("signal devnet");
    let status = devnet.wait().expect("devnet exits");
    assert!(status.success(), "{status}");
}
