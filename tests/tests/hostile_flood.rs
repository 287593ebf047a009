//! A flood from hostile identities against a real node, in a test binary
//! of its own: it loads the machine, and the other hostile-peer tests time
//! gossip meshes that a loaded machine would slow down.

use std::process::Command;

use cairn_genesis::{generate, NetworkSpec};
use cairn_tests::e2e::{
    balance, eventually, keygen, leader, peer_count, same_head, transfer, NodeProc,
};
use cairn_tests::workspace_bin;

/// Resident memory of a process, in MiB (Linux).
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

#[test]
fn a_flood_from_fresh_identities_is_banned_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        base_port: 29160,
        chain_id: "e2e-flood".into(),
        seed: Some(24),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let nodes: Vec<NodeProc> = net.nodes.iter().map(|n| NodeProc::start(&n.home)).collect();
    let urls: Vec<&str> = net.nodes.iter().map(|n| n.rpc_url.as_str()).collect();
    eventually("a leader is elected", || leader(&urls).is_some());
    eventually("every node sees the two others", || {
        urls.iter().all(|u| peer_count(u) >= 2)
    });
    let genesis_hash = net.genesis_hash.to_hex();
    let pid = nodes[0].pid().expect("node 0 runs");
    let before = rss_mib(pid).expect("node 0's memory");
    let args: Vec<String> = vec![
        "--genesis-hash".into(),
        genesis_hash.clone(),
        "--peer".into(),
        net.nodes[0].p2p_address.clone(),
        "--linger".into(),
        "1".into(),
        "flood".into(),
        "--seconds".into(),
        "20".into(),
    ];
    let flood = std::thread::spawn(move || {
        Command::new(workspace_bin("cairn-hostile"))
            .args(&args)
            .output()
            .expect("run cairn-hostile")
    });
    // Transfers commit meanwhile; node 0's memory is sampled throughout.
    let faucet = net.faucet_key();
    let alice = keygen(urls[1], &dir.path().join("alice.key"));
    let mut peak = before;
    let mut sent = 0;
    while !flood.is_finished() {
        if sent < 5 {
            transfer(urls[0], &faucet, &alice, 100);
            sent += 1;
        }
        peak = peak.max(rss_mib(pid).unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = flood.join().expect("the flood thread");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("flood "))
        .unwrap_or_else(|| panic!("no flood summary: {stdout}"));
    eprintln!("{line}; node 0 resident memory {before} MiB before, {peak} MiB at most");
    let field = |name: &str| -> u64 {
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(field("identities") >= 1, "{line}");
    assert!(
        field("banned") >= 1,
        "no flooding identity was banned: {line}"
    );
    // Bounded: the flood sent tens of megabytes and more per identity;
    // what the node holds for it stays within a fixed budget.
    assert!(
        peak < before + 512,
        "node 0 grew from {before} MiB to {peak} MiB under the flood"
    );
    // The honest nodes still agree and commit.
    transfer(urls[0], &faucet, &alice, 100);
    eventually("all nodes reach the same head", || same_head(&urls));
    for u in &urls {
        assert_eq!(balance(u, &alice), Some(100 * (sent + 1)), "balance on {u}");
    }
}
