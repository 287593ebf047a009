//! Applying an upgrade appended to a running devnet's `genesis.json`: the
//! supervisor restarts the nodes one at a time, each back and caught up
//! before the next goes down, so no engine ever loses its quorum.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cairn_genesis::Genesis;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{spawn, wait_or_kill, Node};

/// How far ahead of the chain an upgrade must be for the devnet to apply
/// it: restarting every node takes a few seconds, and blocks come every
/// 100 ms under load.
const MARGIN_BLOCKS: u64 = 50;
/// How long one node may take to stop, and to come back and catch up.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// Watches `genesis.json` for appended upgrades.
pub(super) struct Watch {
    path: PathBuf,
    modified: Option<SystemTime>,
    running: Genesis,
    next_check: Instant,
}

impl Watch {
    pub fn new(path: &Path, running: Genesis) -> Self {
        Self {
            path: path.to_owned(),
            modified: modified(path),
            running,
            next_check: Instant::now(),
        }
    }

    /// Once a second: if `genesis.json` changed, applies what was added.
    pub fn poll(&mut self, exe: &Path, nodes: &mut [Node], stop: &AtomicBool) {
        if Instant::now() < self.next_check {
            return;
        }
        self.next_check = Instant::now() + Duration::from_secs(1);
        let now = modified(&self.path);
        if now == self.modified {
            return;
        }
        self.modified = now;
        let changed = match Genesis::load(&self.path) {
            Ok(g) => g,
            Err(e) => {
                say!(
                    "{} changed but does not load ({e}); the nodes keep running as they are",
                    self.path.display()
                );
                return;
            }
        };
        if changed == self.running {
            return;
        }
        let appended = changed.hash() == self.running.hash()
            && changed.upgrades.len() > self.running.upgrades.len()
            && changed.upgrades[..self.running.upgrades.len()] == self.running.upgrades[..];
        if !appended {
            say!(
                "{} changed in more than appended upgrades: restart the devnet to run it",
                self.path.display()
            );
            return;
        }
        let added = &changed.upgrades[self.running.upgrades.len()..];
        let height = nodes
            .iter()
            .filter_map(|n| node_height(n.rpc_addr))
            .max()
            .unwrap_or(0);
        let first = added[0].height;
        if first < height + MARGIN_BLOCKS {
            say!(
                "The upgrade at height {first} is too close: the chain is at {height}, and \
                 restarting every node takes time. Remove it from {} and schedule it at \
                 height {} or later; a node restarted with it now would refuse a passed switch.",
                self.path.display(),
                height + MARGIN_BLOCKS
            );
            return;
        }
        for u in added {
            say!(
                "Upgrade: {} from height {}{}; restarting the nodes one at a time.",
                u.consensus.kind(),
                u.height,
                u.validators
                    .as_ref()
                    .map(|v| format!(" with {} validators", v.len()))
                    .unwrap_or_default()
            );
        }
        for n in nodes.iter_mut() {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if let Err(e) = restart(exe, n, height) {
                say!("{}: {e:#}; the remaining nodes are not restarted", n.name);
                return;
            }
            say!("  {} restarted", n.name);
        }
        self.running = changed;
        say!("Every node runs the new schedule.");
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Stops `node` (SIGTERM, then SIGKILL), starts it again, and waits until
/// it serves its API at `height` or above.
fn restart(exe: &Path, node: &mut Node, height: u64) -> anyhow::Result<()> {
    if let Some(mut child) = node.child.take() {
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        wait_or_kill(&mut child, Instant::now() + STOP_TIMEOUT);
    }
    node.child = Some(spawn(exe, node, true)?);
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    while node_height(node.rpc_addr).is_none_or(|h| h < height) {
        if let Some(Ok(Some(status))) = node.child.as_mut().map(|c| c.try_wait()) {
            anyhow::bail!(
                "exited after the restart ({status}); see {}/node.log",
                node.home.display()
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!("did not catch up to height {height} within a minute");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The height a node's `/status` reports (a bare HTTP/1.1 request: the
/// supervisor has no HTTP client).
fn node_height(addr: SocketAddr) -> Option<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.take(1 << 20).read_to_string(&mut text).ok()?;
    let body = text.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["height"].as_u64()
}
