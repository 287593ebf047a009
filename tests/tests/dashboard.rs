//! The dashboard in a real browser: `cairn-node devnet` serves it; headless
//! Chromium loads it, and the test reads the page itself (its DOM, not the
//! API) while transfers commit and a node is killed and restarted. It saves
//! a screenshot (to CAIRN_DASHBOARD_SCREENSHOT if set: the README's).

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use cairn_tests::browser::Browser;
use cairn_tests::e2e::{eventually, keygen, transfer, wallet, NodeProc};
use cairn_tests::workspace_bin;

const BASE: u16 = 29150;

struct Devnet {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Devnet {
    fn start(dir: &std::path::Path) -> Self {
        let mut child = Command::new(workspace_bin("cairn-node"))
            .args([
                "devnet",
                "--engine",
                "pbft",
                "--base-port",
                &BASE.to_string(),
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cairn-node devnet");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(mut v) = sink.lock() {
                    v.push(l);
                }
            }
        });
        Devnet { child, lines }
    }

    /// The pid the node table printed for `name`.
    fn pid(&self, name: &str) -> Option<i32> {
        let lines = self.lines.lock().ok()?;
        let line = lines.iter().find(|l| l.starts_with(&format!("{name} ")))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    fn printed(&self, text: &str) -> bool {
        self.lines
            .lock()
            .is_ok_and(|l| l.iter().any(|x| x.contains(text)))
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

#[test]
fn the_dashboard_shows_the_network_live_in_a_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = dir.path().join("devnet");
    let devnet = Devnet::start(&net);
    let dashboard = format!("http://127.0.0.1:{}/", BASE - 1);
    eventually("the devnet prints its dashboard", || {
        devnet.printed(&format!("Dashboard: {dashboard}"))
    });
    let node0 = format!("http://127.0.0.1:{}", BASE + 1);

    let browser = Browser::start(29199);
    browser.open(&dashboard);
    let rows = |state: &str| {
        browser
            .eval(&format!(
                "return [...document.querySelectorAll('#nodes tr[data-node]')]\
                 .filter(r => r.querySelector('.state').textContent === '{state}').length;"
            ))
            .as_u64()
            .unwrap_or(0)
    };
    eventually("the page shows four nodes up", || rows("up") == 4);
    let height = |node: &str| {
        browser
            .text(&format!("#nodes tr[data-node='{node}'] .height"))
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };

    // Transfers commit: the heights move and the transfer appears.
    let faucet = net.join("faucet.key");
    let hana = keygen(&node0, &dir.path().join("hana.key"));
    let before = height("node1");
    for _ in 0..3 {
        transfer(&node0, &faucet, &hana, 7);
    }
    let (ok, out, err) = wallet(
        &node0,
        &[
            "transfer",
            "--key",
            faucet.to_str().expect("utf-8"),
            "--to",
            &hana,
            "--amount",
            "1",
            "--wait",
        ],
    );
    assert!(ok, "{out} {err}");
    let hash = out
        .split_whitespace()
        .nth(1)
        .expect("committed <hash> …")
        .to_owned();
    eventually("the page's heights move", || height("node1") > before);
    eventually("the transfer appears, committed", || {
        browser.text(&format!("#txs tr[data-tx='{hash}'] .status")) == Some("committed".into())
    });
    eventually("its block is in the latest blocks", || {
        browser
            .eval("return document.querySelectorAll('#blocks tr[data-block]').length;")
            .as_u64()
            .unwrap_or(0)
            >= 4
    });

    // A killed node shows as down, then back when it restarts.
    let pid = devnet.pid("node2").expect("node2's pid in the node table");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    eventually("the page shows node2 down", || {
        browser.text("#nodes tr[data-node='node2'] .state") == Some("down".into())
    });
    assert!(
        browser
            .text("#events")
            .is_some_and(|t| t.contains("node2 is down")),
        "the timeline says so"
    );
    let _restarted = NodeProc::start(&net.join("node2"));
    eventually("the page shows node2 back", || {
        browser.text("#nodes tr[data-node='node2'] .state") == Some("up".into())
    });
    // Searching an address shows its account.
    browser.eval(&format!(
        "document.querySelector('#query').value = '{hana}'; \
         document.querySelector('#search button').click(); return true;"
    ));
    eventually("the search shows the account", || {
        browser
            .text("#details")
            .is_some_and(|t| t.contains("\"balance\": 22"))
    });

    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&shot);
    if let Ok(path) = std::env::var("CAIRN_DASHBOARD_SCREENSHOT") {
        std::fs::copy(&shot, path).expect("copy the screenshot");
    }
}
