//! The load and its history, Jepsen style: every transfer the load
//! submitted, what the node it went to answered, and whether — and at
//! which height, in which block — a client saw it committed.
//!
//! Transfers are signed ahead by the load generator's code
//! ([`cairn_wallet::bench::sign_batches`]) and posted on a fixed schedule
//! spread over every node, whether or not the node answers (open loop). A
//! client that got no answer or saw no commit sends the same transfers
//! again to another node, as a wallet would; a duplicate is refused and
//! changes nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use cairn_chain::{Hash, SecretKey};
use cairn_wallet::bench::{self, Batch, BenchSpec, Submitted};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::cluster::{get, quick_agent, LOAD_ACCOUNTS};

/// What the client saw of one transfer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The answer to its first submission.
    pub outcome: Submitted,
    /// The node it first went to.
    pub node: usize,
    /// The height and block it was seen committed in (for proof-of-work:
    /// once the block had the confirmations the client waits for).
    pub acked: Option<(u64, String)>,
}

/// Every transfer offered, by hash.
pub type History = HashMap<String, Entry>;

struct Shared {
    urls: Vec<String>,
    batches: Vec<Batch>,
    /// When each batch was first posted.
    posted: Mutex<Vec<Option<Instant>>>,
    history: Mutex<History>,
    /// Transfers the watcher saw committed: height and block.
    committed: Mutex<HashMap<String, (u64, String)>>,
    /// Blocks a client waits on top of a transfer's block before it counts
    /// it committed (1 for final engines: the block itself).
    confirmations: u64,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, batch: &Batch, node: usize, outcomes: Vec<Submitted>) {
        let Ok(mut h) = self.history.lock() else {
            return;
        };
        for (hash, outcome) in batch.hashes.iter().zip(outcomes) {
            h.entry(hash.clone()).or_insert(Entry {
                outcome,
                node,
                acked: None,
            });
        }
    }

    fn unacked(&self, batch: &Batch) -> bool {
        self.committed
            .lock()
            .is_ok_and(|c| batch.hashes.iter().any(|x| !c.contains_key(x)))
    }
}

/// The load under way.
pub struct Load {
    shared: Arc<Shared>,
    schedule: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

/// What the load needs to know of the network.
pub struct Target<'a> {
    pub urls: &'a [String],
    pub chain_id: &'a str,
    pub genesis: Hash,
    pub fee: u64,
    pub confirmations: u64,
}

impl Load {
    /// Signs `rate` × `duration` transfers and starts offering them.
    pub fn start(target: &Target<'_>, seed: u64, rate: u64, duration: Duration) -> Result<Load> {
        let spec = BenchSpec {
            nodes: target.urls.to_vec(),
            seed,
            accounts: LOAD_ACCOUNTS,
            rate,
            duration,
            warmup: Duration::ZERO,
            batch_every: Duration::from_millis(200),
            drain: Duration::ZERO,
            senders: 4,
            series_every: Duration::from_secs(10),
        };
        let keys: Vec<SecretKey> = (0..LOAD_ACCOUNTS)
            .map(|i| SecretKey::bench_account(seed, i))
            .collect();
        let nonces = vec![0; keys.len()];
        let batches = bench::sign_batches(
            &spec,
            target.chain_id,
            &target.genesis,
            target.fee,
            &keys,
            &nonces,
        )?;
        let shared = Arc::new(Shared {
            urls: target.urls.to_vec(),
            posted: Mutex::new(vec![None; batches.len()]),
            batches,
            history: Mutex::new(HashMap::new()),
            committed: Mutex::new(HashMap::new()),
            confirmations: target.confirmations.max(1),
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel::<usize>();
        let rx = Arc::new(Mutex::new(rx));
        let mut background = Vec::new();
        for _ in 0..spec.senders {
            let (shared, rx) = (shared.clone(), rx.clone());
            background.push(std::thread::spawn(move || sender(&shared, &rx)));
        }
        let s = shared.clone();
        background.push(std::thread::spawn(move || watcher(&s)));
        let s = shared.clone();
        background.push(std::thread::spawn(move || resender(&s, seed)));
        let s = shared.clone();
        let every = spec.batch_every;
        let schedule = std::thread::spawn(move || {
            let start = Instant::now();
            for i in 0..s.batches.len() {
                let due = start + every * i as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if tx.send(i).is_err() {
                    return;
                }
            }
        });
        Ok(Load {
            shared,
            schedule: Some(schedule),
            background,
        })
    }

    /// Waits until every batch has been handed to a sender.
    pub fn finish_offering(&mut self) {
        if let Some(s) = self.schedule.take() {
            let _ = s.join();
        }
    }

    /// Transfers offered so far, and how many of them were seen committed.
    pub fn progress(&self) -> (usize, usize) {
        let offered = self.shared.history.lock().map_or(0, |h| h.len());
        let acked = self.shared.committed.lock().map_or(0, |c| c.len());
        (offered, acked)
    }

    /// Stops resending and watching; the history.
    pub fn stop(mut self) -> Result<History> {
        self.finish_offering();
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.background.drain(..) {
            let _ = t.join();
        }
        let mut h = self
            .shared
            .history
            .lock()
            .map_err(|_| anyhow!("the history lock was poisoned"))?
            .clone();
        let c = self
            .shared
            .committed
            .lock()
            .map_err(|_| anyhow!("the commit lock was poisoned"))?;
        for (hash, e) in h.iter_mut() {
            e.acked = c.get(hash).cloned();
        }
        Ok(h)
    }
}

/// Posts the batches the schedule hands over, each to the node its index
/// names; a node that does not answer gets the batch resent elsewhere by
/// the resender.
fn sender(shared: &Shared, rx: &Mutex<mpsc::Receiver<usize>>) {
    let agent = quick_agent();
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(i) = next else {
            return;
        };
        let batch = &shared.batches[i];
        let node = i % shared.urls.len();
        if let Ok(mut p) = shared.posted.lock() {
            p[i] = Some(Instant::now());
        }
        let outcomes = bench::submit(&agent, &shared.urls[node], batch);
        shared.record(batch, node, outcomes);
    }
}

/// Every 2 s, sends again (to a random node) the batches posted more than
/// 5 s ago that hold a transfer not yet seen committed.
fn resender(shared: &Shared, seed: u64) {
    let agent = quick_agent();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7265_7365_6e64);
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(2));
        let due: Vec<usize> = shared.posted.lock().map_or(Vec::new(), |p| {
            p.iter()
                .enumerate()
                .filter(|(_, t)| t.is_some_and(|t| t.elapsed() > Duration::from_secs(5)))
                .map(|(i, _)| i)
                .collect()
        });
        let mut sent = 0;
        for i in due {
            if shared.stop.load(Ordering::Relaxed) || sent >= 50 {
                break;
            }
            let batch = &shared.batches[i];
            if !shared.unacked(batch) {
                continue;
            }
            let node = rng.gen_range(0..shared.urls.len());
            let outcomes = bench::submit(&agent, &shared.urls[node], batch);
            shared.record(batch, node, outcomes);
            sent += 1;
        }
    }
}

/// A client watching the chain: reads each new block (with enough
/// confirmations) from one node, moving to the next node when that one
/// does not answer, and acknowledges the transfers it holds.
fn watcher(shared: &Shared) {
    let agent = quick_agent();
    let mut node = 0;
    let mut next = 1u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let url = &shared.urls[node];
        let Some(height) = get(&agent, &format!("{url}/status")).and_then(|s| s["height"].as_u64())
        else {
            node = (node + 1) % shared.urls.len();
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let settled = (height + 1).saturating_sub(shared.confirmations);
        while next <= settled {
            let Some(b) = get(&agent, &format!("{url}/blocks/{next}")) else {
                break;
            };
            let block = b["hash"].as_str().unwrap_or_default().to_owned();
            if let Ok(mut c) = shared.committed.lock() {
                for t in b["transactions"].as_array().into_iter().flatten() {
                    if let Some(x) = t["hash"].as_str() {
                        c.entry(x.to_owned()).or_insert((next, block.clone()));
                    }
                }
            }
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
