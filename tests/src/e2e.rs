//! Helpers for tests that run `cairn-node` processes and the wallet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::workspace_bin;

/// A guard: the node process dies with the test, pass or fail.
#[derive(Debug)]
pub struct NodeProc {
    pub home: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    /// Starts `cairn-node run --home <home>`, appending its output to
    /// `home/node.log` (a restart keeps what the last run wrote).
    pub fn start(home: &Path) -> Self {
        Self::start_with_env(home, &[])
    }

    /// [`NodeProc::start`] with these environment variables set.
    pub fn start_with_env(home: &Path, env: &[(&str, String)]) -> Self {
        Self::spawn(home, "cairn-node", &["run"], env)
    }

    /// [`NodeProc::start`] inside network namespace `netns` (`ip netns
    /// exec`, which becomes the node's process).
    pub fn start_in_netns(home: &Path, netns: &str) -> Self {
        let node = workspace_bin("cairn-node");
        let node = node.to_str().expect("utf-8 path");
        Self::spawn_with(home, "ip", &["netns", "exec", netns, node, "run"], &[])
    }

    /// A PBFT validator that misbehaves as `behaviour` (see
    /// `cairn-byzantine --help`): the node's own code around a Byzantine
    /// engine.
    pub fn start_byzantine(home: &Path, behaviour: &str) -> Self {
        Self::start_byzantine_with_env(home, behaviour, &[])
    }

    /// [`NodeProc::start_byzantine`] with these environment variables set.
    pub fn start_byzantine_with_env(home: &Path, behaviour: &str, env: &[(&str, String)]) -> Self {
        Self::spawn(home, "cairn-byzantine", &["--behaviour", behaviour], env)
    }

    fn spawn(home: &Path, program: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let program = workspace_bin(program);
        Self::spawn_with(home, program.to_str().expect("utf-8 path"), args, env)
    }

    fn spawn_with(home: &Path, program: &str, args: &[&str], env: &[(&str, String)]) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.join("node.log"))
            .expect("log file");
        let child = Command::new(program)
            .args(args)
            .arg("--home")
            .arg(home)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        NodeProc {
            home: home.to_owned(),
            child: Some(child),
        }
    }
    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not been killed.
    pub fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`NodeProc::pause`].
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
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

pub fn http_get(url: &str) -> Option<Value> {
    let mut r = ureq::get(url).call().ok()?;
    r.body_mut().read_json().ok()
}

/// The value of one sample of the node's Prometheus metrics, by its full
/// name with labels as printed (e.g. `cairn_height` or
/// `cairn_pow_compact_blocks_total{outcome="assembled"}`).
pub fn metric(url: &str, sample: &str) -> Option<f64> {
    let mut r = ureq::get(&format!("{url}/metrics")).call().ok()?;
    let text = r.body_mut().read_to_string().ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub fn post_raw(url: &str, body: &str) -> (u16, Value) {
    post_with(url, body, &[("content-type", "application/json")])
}

/// POSTs `body` with exactly these headers; the status and the JSON answer.
pub fn post_with(url: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body).expect("node answers");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().expect("json body"))
}

/// POSTs to the admin API with the node's token.
pub fn admin_post(url: &str, home: &Path, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {}", admin_token(home));
    post_with(
        url,
        body,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
    )
}

/// Polls until `f` holds; fails the test (with `what`) after a generous
/// bound. The bound guards against hangs, it is not a performance claim.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("gave up waiting: {what}");
}

/// Submits a transfer without waiting; returns its hash.
pub fn submit(url: &str, key: &Path, to: &str, amount: u64) -> String {
    let (ok, out, err) = wallet(
        url,
        &[
            "--json",
            "transfer",
            "--key",
            key.to_str().expect("utf-8 path"),
            "--to",
            to,
            "--amount",
            &amount.to_string(),
        ],
    );
    assert!(ok, "transfer failed: {out} {err}");
    let v: Value = serde_json::from_str(&out).expect("json output");
    v["hash"].as_str().expect("hash").to_owned()
}

/// `POST /admin/{what}` (`ban`, `unban`) of `peer` with the node's token;
/// it must succeed.
pub fn admin_peer(url: &str, home: &Path, what: &str, peer: &str) {
    let (code, body) = admin_post(
        &format!("{url}/admin/{what}"),
        home,
        &format!("{{\"peer\": \"{peer}\"}}"),
    );
    assert_eq!(code, 200, "{what} {peer} on {url}: {body}");
}

/// No node of `homes` (name, home) logged a penalty: honest nodes blamed
/// nobody.
pub fn assert_nobody_blamed<'a>(homes: impl IntoIterator<Item = (&'a str, &'a Path)>) {
    for (name, home) in homes {
        let text = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
        let blamed: Vec<&str> = text.lines().filter(|l| l.contains("penalised")).collect();
        assert!(blamed.is_empty(), "{name}: nobody is blamed: {blamed:?}");
    }
}

/// `cairn-genesis upgrade ARGS --dir DIR`.
pub fn genesis_upgrade(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(workspace_bin("cairn-genesis"))
        .arg("upgrade")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("cairn-genesis upgrade")
}

pub fn wallet(node: &str, args: &[&str]) -> (bool, String, String) {
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

/// `cairn-wallet watch` on a node, its lines collected as they come.
#[derive(Debug)]
pub struct Watcher {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Watcher {
    pub fn start(node: &str) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(workspace_bin("cairn-wallet"))
            .args(["--node", node, "watch"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run cairn-wallet watch");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Self { child, lines }
    }

    /// Every line printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether some line holds every one of `parts`.
    pub fn saw(&self, parts: &[&str]) -> bool {
        self.lines()
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status(url: &str) -> Option<Value> {
    http_get(&format!("{url}/status"))
}

/// How many peers a node says it has (0 if it does not answer).
pub fn peer_count(url: &str) -> u64 {
    status(url).and_then(|s| s["peers"].as_u64()).unwrap_or(0)
}

pub fn leader(urls: &[&str]) -> Option<usize> {
    urls.iter()
        .position(|u| status(u).is_some_and(|s| s["role"] == "leader"))
}

pub fn balance(url: &str, addr: &str) -> Option<u64> {
    http_get(&format!("{url}/accounts/{addr}"))?["balance"].as_u64()
}

pub fn transfer(url: &str, faucet: &Path, to: &str, amount: u64) {
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
            "--timeout",
            "120",
        ],
    );
    assert!(ok, "transfer failed: {out} {err}");
    assert!(out.contains("committed"), "{out}");
}

/// Whether every node in `urls` answers with the same head.
pub fn same_head(urls: &[&str]) -> bool {
    let heads: Vec<Option<String>> = urls
        .iter()
        .map(|u| status(u).and_then(|s| s["head_hash"].as_str().map(str::to_owned)))
        .collect();
    heads[0].is_some() && heads.iter().all(|h| *h == heads[0])
}

/// `GET /consensus`.
pub fn consensus(url: &str) -> Option<Value> {
    http_get(&format!("{url}/consensus"))
}

/// The new address of a fresh key written to `path`.
pub fn keygen(url: &str, path: &Path) -> String {
    let (ok, out, err) = wallet(
        url,
        &["keygen", "--out", path.to_str().expect("utf-8 path")],
    );
    assert!(ok, "keygen failed: {err}");
    out.split_whitespace().next().expect("address").to_owned()
}

/// The node's admin token (written at start to `<home>/admin.cookie`).
pub fn admin_token(home: &Path) -> String {
    std::fs::read_to_string(home.join(ADMIN_COOKIE))
        .map(|t| t.trim().to_owned())
        .unwrap_or_default()
}

/// The admin cookie's file name in a node's home.
pub const ADMIN_COOKIE: &str = "admin.cookie";

/// `GET /admin/bans`: the peers the node has blocked.
pub fn admin_bans(url: &str, home: &Path) -> Vec<String> {
    let token = admin_token(home);
    let Ok(mut r) = ureq::get(&format!("{url}/admin/bans"))
        .header("authorization", &format!("Bearer {token}"))
        .call()
    else {
        return Vec::new();
    };
    let Ok(v) = r.body_mut().read_json::<Value>() else {
        return Vec::new();
    };
    v["banned"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
