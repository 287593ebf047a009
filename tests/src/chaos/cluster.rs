//! The devnet under test: `cairn-node` processes on loopback, and the
//! faults applied to them — signals for kills and pauses, the nodes' own
//! admin bans (both ends of every cut link) for partitions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cairn_genesis::{generate, GeneratedNetwork, NetworkSpec};
use cairn_wallet::bench;
use serde_json::Value;

use super::plan::{Fault, FaultKind, DISK_SPARE_KIB};
use super::Options;
use crate::e2e::{admin_token, NodeProc};

/// Benchmark accounts the load sends from, funded at genesis.
pub const LOAD_ACCOUNTS: u32 = 400;

pub struct Cluster {
    pub net: GeneratedNetwork,
    pub nodes: Vec<NodeProc>,
    pub urls: Vec<String>,
    /// Each node's libp2p peer id (its key survives restarts).
    pub peer_ids: Vec<String>,
    /// Small tmpfs data directories mounted for [`FaultKind::DiskFull`].
    mounted: Vec<PathBuf>,
    /// What the runner saw that is not a violation (a node that stopped
    /// on a full disk, and the error it gave).
    pub notes: Vec<String>,
    /// Validator 0's Byzantine behaviour, if it runs as `cairn-byzantine`.
    byzantine: Option<String>,
    agent: ureq::Agent,
    /// For height polls: a stopped node must not delay the others' reading.
    probe: ureq::Agent,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill9();
        }
        for m in &self.mounted {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Moves `home/data` aside (to `data.disk`) and mounts in its place a
/// tmpfs the size of the data plus [`DISK_SPARE_KIB`], holding a copy.
fn onto_small_disk(home: &Path) -> Result<PathBuf> {
    let data = home.join("data");
    let disk = home.join("data.disk");
    let used: u64 = walk_size(&data);
    let size_kib = used.div_ceil(1 << 10) + DISK_SPARE_KIB;
    std::fs::rename(&data, &disk).context("moving the data directory aside")?;
    std::fs::create_dir(&data)?;
    sh(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
        .arg(&data))?;
    sh(Command::new("cp").arg("-a").arg(disk.join(".")).arg(&data))?;
    Ok(data)
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let Ok(mut f) = std::fs::File::create(path) else {
        return;
    };
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// Copies what the node wrote on the tmpfs back to its disk (all but the
/// ballast) and unmounts.
fn back_to_disk(home: &Path) -> Result<()> {
    let data = home.join("data");
    let disk = home.join("data.disk");
    let _ = std::fs::remove_file(data.join("ballast"));
    std::fs::remove_dir_all(&disk)?;
    std::fs::create_dir(&disk)?;
    sh(Command::new("cp").arg("-a").arg(data.join(".")).arg(&disk))?;
    sh(Command::new("umount").arg(&data))?;
    std::fs::remove_dir(&data)?;
    std::fs::rename(&disk, &data)?;
    Ok(())
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => walk_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A log line without its colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// libfaketime, multi-threaded build (Debian's `faketime` package).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Whether the clock-skew fault can run here.
pub fn can_skew() -> bool {
    Path::new(LIBFAKETIME).exists()
}

/// The environment that starts a process with its wall clock `skew_ms`
/// off; its monotonic clock (timers) stays true.
fn skewed_clock(skew_ms: i64) -> Vec<(&'static str, String)> {
    vec![
        ("LD_PRELOAD", LIBFAKETIME.to_owned()),
        ("FAKETIME", format!("{:+.3}s", skew_ms as f64 / 1000.0)),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_DONT_RESET", "1".to_owned()),
    ]
}

/// A short-timeout client: a paused node must not hold the runner up.
pub fn quick_agent() -> ureq::Agent {
    bench::agent_with_timeout(Duration::from_secs(3))
}

pub fn get(agent: &ureq::Agent, url: &str) -> Option<Value> {
    let mut r = agent.get(url).call().ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.body_mut().read_json().ok()
}

impl Cluster {
    /// Generates the network in `dir` and starts every node; returns once
    /// every node answers.
    pub fn start(opts: &Options, dir: &Path) -> Result<Cluster> {
        let spec = NetworkSpec {
            engine: opts.engine,
            validators: opts.validators,
            chain_id: format!("chaos-{}", opts.engine.as_str()),
            base_port: opts.base_port,
            seed: Some(opts.seed),
            bench_accounts: LOAD_ACCOUNTS,
            bench_seed: opts.seed,
            bench_balance: 1_000_000_000,
            ..NetworkSpec::default()
        };
        let net = generate(&spec, dir).context("generating the network")?;
        let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
        let byzantine = opts.byzantine.clone();
        let nodes = net
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| launch(byzantine.as_deref(), i, &n.home, &[]))
            .collect();
        let mut cluster = Cluster {
            byzantine,
            net,
            nodes,
            urls,
            peer_ids: Vec::new(),
            mounted: Vec::new(),
            notes: Vec::new(),
            agent: quick_agent(),
            probe: bench::agent_with_timeout(Duration::from_millis(500)),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..cluster.urls.len() {
            loop {
                if let Some(id) = cluster
                    .status(i)
                    .and_then(|s| s["node_id"].as_str().map(str::to_owned))
                {
                    cluster.peer_ids.push(id);
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node n{i} did not answer on {} within 60 s (see {}/node.log)",
                        cluster.urls[i],
                        cluster.nodes[i].home.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn status(&self, i: usize) -> Option<Value> {
        get(&self.agent, &format!("{}/status", self.urls[i]))
    }

    /// Every node's height, `None` where it does not answer within
    /// 500 ms.
    pub fn heights(&self) -> Vec<Option<u64>> {
        (0..self.len())
            .map(|i| {
                get(&self.probe, &format!("{}/status", self.urls[i]))
                    .and_then(|s| s["height"].as_u64())
            })
            .collect()
    }

    /// Starts the fault.
    pub fn apply(&mut self, f: &Fault) {
        match f.kind {
            FaultKind::Kill => {
                for &n in &f.nodes {
                    self.nodes[n].kill9();
                }
            }
            FaultKind::Pause => {
                for &n in &f.nodes {
                    self.nodes[n].pause();
                }
            }
            FaultKind::Isolate | FaultKind::Halves => {
                for (a, b) in self.cut_links(f) {
                    self.block(a, b, true);
                    self.block(b, a, true);
                }
            }
            FaultKind::Skew => {
                for &n in &f.nodes {
                    self.nodes[n].kill9();
                    let home = self.nodes[n].home.clone();
                    self.nodes[n] = self.launch(n, &home, &skewed_clock(f.skew_ms));
                }
            }
            FaultKind::DiskFull => {
                for &n in &f.nodes {
                    self.nodes[n].kill9();
                    let home = self.nodes[n].home.clone();
                    let mounted = match onto_small_disk(&home) {
                        Ok(data) => {
                            self.mounted.push(data.clone());
                            Some(data)
                        }
                        Err(e) => {
                            self.notes.push(format!("n{n}: no small disk ({e:#})"));
                            None
                        }
                    };
                    self.nodes[n] = self.launch(n, &home, &[]);
                    if let Some(data) = mounted {
                        // Running, then out of space.
                        std::thread::sleep(Duration::from_secs(3));
                        fill(&data.join("ballast"));
                    }
                }
            }
        }
    }

    /// (Re)starts node `n` from `home`, as `cairn-byzantine` if it is the
    /// Byzantine validator.
    fn launch(&self, n: usize, home: &Path, env: &[(&str, String)]) -> NodeProc {
        launch(self.byzantine.as_deref(), n, home, env)
    }

    /// Ends the fault: restarts, resumes, or unblocks both ends of every
    /// cut link.
    pub fn heal(&mut self, f: &Fault) {
        match f.kind {
            FaultKind::Kill | FaultKind::Skew => {
                for &n in &f.nodes {
                    self.nodes[n].kill9();
                    let home = self.nodes[n].home.clone();
                    self.nodes[n] = self.launch(n, &home, &[]);
                }
            }
            FaultKind::Pause => {
                for &n in &f.nodes {
                    self.nodes[n].resume();
                }
            }
            FaultKind::DiskFull => {
                for &n in &f.nodes {
                    let home = self.nodes[n].home.clone();
                    let data = home.join("data");
                    let up = self.status(n).is_some();
                    self.nodes[n].kill9();
                    let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
                    let error = log
                        .lines()
                        .rev()
                        .find(|l| l.contains("ERROR") || l.contains("error:"))
                        .unwrap_or("no error logged")
                        .to_owned();
                    self.notes.push(format!(
                        "n{n} on a full disk: {}; last error: {}",
                        if up {
                            "still answering at the end"
                        } else {
                            "stopped"
                        },
                        strip_ansi(&error)
                    ));
                    if self.mounted.contains(&data) {
                        if let Err(e) = back_to_disk(&home) {
                            self.notes.push(format!("n{n}: {e:#}"));
                        }
                        self.mounted.retain(|m| *m != data);
                    }
                    self.nodes[n] = self.launch(n, &home, &[]);
                }
            }
            FaultKind::Isolate | FaultKind::Halves => {
                for (a, b) in self.cut_links(f) {
                    self.block(a, b, false);
                    self.block(b, a, false);
                }
            }
        }
    }

    /// The links a partition cuts: every pair across the divide.
    fn cut_links(&self, f: &Fault) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for a in f.nodes.iter().copied() {
            for b in (0..self.len()).filter(|b| !f.nodes.contains(b)) {
                out.push((a, b));
            }
        }
        out
    }

    /// `node` bans (or unbans) `peer`, retried for a few seconds: a node
    /// just restarted may not answer yet.
    fn block(&self, node: usize, peer: usize, ban: bool) {
        let path = if ban { "ban" } else { "unban" };
        let url = format!("{}/admin/{path}", self.urls[node]);
        let body = format!("{{\"peer\": \"{}\"}}", self.peer_ids[peer]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let auth = format!("Bearer {}", admin_token(&self.nodes[node].home));
            let answer = self
                .agent
                .post(&url)
                .header("content-type", "application/json")
                .header("authorization", &auth)
                .send(body.as_str());
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("chaos: n{node} did not take the {path} of n{peer}");
    }

    /// Ends every fault that may still hold: resumes every node, starts
    /// the dead ones, unblocks every link.
    pub fn heal_all(&mut self) {
        for n in 0..self.len() {
            if self.nodes[n].is_up() {
                self.nodes[n].resume();
            } else {
                let home = self.nodes[n].home.clone();
                self.nodes[n] = self.launch(n, &home, &[]);
            }
        }
        for a in 0..self.len() {
            for b in 0..self.len() {
                if a != b {
                    self.block(a, b, false);
                }
            }
        }
    }
}

fn launch(byzantine: Option<&str>, n: usize, home: &Path, env: &[(&str, String)]) -> NodeProc {
    match byzantine {
        Some(behaviour) if n == 0 => NodeProc::start_byzantine_with_env(home, behaviour, env),
        _ => NodeProc::start_with_env(home, env),
    }
}
