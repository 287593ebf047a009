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
