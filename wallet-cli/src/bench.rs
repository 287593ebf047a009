//! `cairn-wallet bench`: an open-loop load generator against a running
//! network.
//!
//! It signs every transfer before the run (from the benchmark accounts the
//! genesis tool funded), then submits batches on a fixed schedule spread
//! over all nodes — never waiting for answers before the next batch — and
//! watches one node's blocks to time each transfer from its scheduled
//! submission to its commit (final for Raft and PBFT, one confirmation for
//! proof-of-work). Latency is measured from the schedule, not from when a
//! sender got round to it, so a slow node cannot hide its queueing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_chain::{SecretKey, Transaction};
use serde_json::{json, Value};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub nodes: Vec<String>,
    pub seed: u64,
    pub accounts: u32,
    /// Offered transfers per second.
    pub rate: u64,
    pub duration: Duration,
    /// Load offered before `duration`, left out of the figures (the series
    /// shows it): caches, connections and allocators of a node that has
    /// been idle warm up, and the backlog they cause drains.
    pub warmup: Duration,
    /// One batch every this long.
    pub batch_every: Duration,
    /// How long to wait for the last commits after the run.
    pub drain: Duration,
    pub senders: usize,
    /// Latency percentiles per window of this length, too.
    pub series_every: Duration,
}

/// Signed transfers posted together to `POST /transactions/batch`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Index into the schedule: due at `start + index × batch_every`.
    pub index: usize,
    /// The JSON array of transfers.
    pub body: String,
    /// Their hashes, in order.
    pub hashes: Vec<String>,
}

/// What a node answered for one transfer of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Accepted,
    /// Refused with this error code (`nonce_too_low`, `mempool_full`, …).
    Refused(String),
    /// No answer: the node is down or stopped, or the answer could not be
    /// read (`unreachable`, `timed_out`, `unreadable_answer`).
    NoAnswer(String),
}

/// Posts `batch` to `node`; one outcome per transfer, in order.
pub fn submit(agent: &ureq::Agent, node: &str, batch: &Batch) -> Vec<Submitted> {
    let all = |o: Submitted| vec![o; batch.hashes.len()];
    let answer = agent
        .post(format!("{node}/transactions/batch"))
        .header("content-type", "application/json")
        .send(batch.body.as_str());
    let mut r = match answer {
        Ok(r) => r,
        Err(ureq::Error::Timeout(_)) => return all(Submitted::NoAnswer("timed_out".into())),
        Err(_) => return all(Submitted::NoAnswer("unreachable".into())),
    };
    match r.body_mut().read_json::<Value>() {
        Ok(v) => match v["results"].as_array() {
            Some(results) if results.len() == batch.hashes.len() => results
                .iter()
                .map(|res| match res["error"]["code"].as_str() {
                    Some(code) => Submitted::Refused(code.to_owned()),
                    None => Submitted::Accepted,
                })
                .collect(),
            Some(_) => all(Submitted::NoAnswer("unreadable_answer".into())),
            None => all(Submitted::Refused(
                v["error"]["code"]
                    .as_str()
                    .unwrap_or("http_error")
                    .to_owned(),
            )),
        },
        Err(_) => all(Submitted::NoAnswer("unreadable_answer".into())),
    }
}

/// An HTTP client for the load: generous timeout, error statuses are
/// answers.
pub fn agent() -> ureq::Agent {
    agent_with_timeout(Duration::from_secs(30))
}

/// An HTTP client whose requests give up after `timeout`; error statuses
/// are answers.
pub fn agent_with_timeout(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn get_json(agent: &ureq::Agent, url: &str) -> Result<Value> {
    let mut r = agent
        .get(url)
        .call()
        .map_err(|e| anyhow!("cannot reach {url}: {e}"))?;
    r.body_mut()
        .read_json()
        .map_err(|e| anyhow!("unreadable answer from {url}: {e}"))
}

/// Next nonce of every benchmark account, asked in parallel.
pub fn nonces(node: &str, keys: &[SecretKey]) -> Result<Vec<u64>> {
    let step = keys.len().div_ceil(8).max(1);
    let chunks: Vec<(usize, &[SecretKey])> = keys.chunks(step).enumerate().collect();
    let out = Mutex::new(vec![0u64; keys.len()]);
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|(c, part)| {
                let out = &out;
                s.spawn(move || -> Result<()> {
                    let agent = agent();
                    for (i, k) in part.iter().enumerate() {
                        let v = get_json(&agent, &format!("{node}/accounts/{}", k.address()))?;
                        if v["balance"].as_u64().unwrap_or(0) == 0 {
                            bail!(
                                "benchmark account {} is not funded: generate the network with \
                                 --bench-accounts (and the same --bench-seed)",
                                k.address()
                            );
                        }
                        let n = v["nonce"].as_u64().unwrap_or(0);
                        if let Ok(mut o) = out.lock() {
                            o[c * step + i] = n;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow!("a nonce reader panicked"))??;
        }
        Ok(())
    })?;
    out.into_inner().map_err(|_| anyhow!("nonce lock"))
}

/// Signs the whole run (`rate` × (warm-up + duration) transfers, each
/// benchmark account to the next), in batches, on every core.
pub fn sign_batches(
    spec: &BenchSpec,
    chain_id: &str,
    genesis: &cairn_chain::Hash,
    fee: u64,
    keys: &[SecretKey],
    start_nonces: &[u64],
) -> Result<Vec<Batch>> {
    let total = (spec.rate as f64 * (spec.warmup + spec.duration).as_secs_f64()).round() as usize;
    let per_batch = ((spec.rate as f64 * spec.batch_every.as_secs_f64()).round() as usize).max(1);
    let batches = total.div_ceil(per_batch);
    let k = keys.len();
    let per_account = total.div_ceil(k);
    if per_account > 1_000 {
        bail!(
            "{total} transfers over {k} accounts is {per_account} per account, past a node's \
             1,000 pending per sender: fund more benchmark accounts"
        );
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let out: Mutex<Vec<Option<Batch>>> = Mutex::new((0..batches).map(|_| None).collect());
    std::thread::scope(|s| {
        for t in 0..threads {
            let out = &out;
            s.spawn(move || {
                for b in (t..batches).step_by(threads) {
                    let mut body = String::from("[");
                    let mut hashes = Vec::with_capacity(per_batch);
                    for i in b * per_batch..((b + 1) * per_batch).min(total) {
                        let a = i % k;
                        let nonce = start_nonces[a] + (i / k) as u64;
                        let to = keys[(a + 1) % k].address();
                        let tx =
                            Transaction::new_signed(&keys[a], chain_id, genesis, to, 1, fee, nonce);
                        if !hashes.is_empty() {
                            body.push(',');
                        }
                        body.push_str(&serde_json::to_string(&tx).unwrap_or_default());
                        hashes.push(tx.hash().to_string());
                    }
                    body.push(']');
                    if let Ok(mut o) = out.lock() {
                        o[b] = Some(Batch {
                            index: b,
                            body,
                            hashes,
                        });
                    }
                }
            });
        }
    });
    Ok(out
        .into_inner()
        .map_err(|_| anyhow!("signing lock"))?
        .into_iter()
        .flatten()
        .collect())
}

/// A node's process figures from `/metrics`.
fn process_figures(agent: &ureq::Agent, node: &str) -> Option<(f64, f64, f64)> {
    let mut r = agent.get(format!("{node}/metrics")).call().ok()?;
    let text = r.body_mut().read_to_string().ok()?;
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("process_cpu_seconds_total")?,
        value("process_resident_memory_bytes")?,
        value("process_peak_resident_memory_bytes")?,
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark and returns its report.
pub fn run(spec: &BenchSpec) -> Result<Value> {
    let first = spec
        .nodes
        .first()
        .context("no node to benchmark")?
        .trim_end_matches('/')
        .to_owned();
    let nodes: Vec<String> = spec
        .nodes
        .iter()
        .map(|n| n.trim_end_matches('/').to_owned())
        .collect();
    let a = agent();
    let status = get_json(&a, &format!("{first}/status"))?;
    let chain_id = status["chain_id"]
        .as_str()
        .context("the node's status has no chain id")?
        .to_owned();
    let engine = status["engine"].as_str().unwrap_or("?").to_owned();
    eprintln!(
        "deriving {} benchmark accounts (seed {}) and reading their nonces…",
        spec.accounts, spec.seed
    );
    let keys: Vec<SecretKey> = (0..spec.accounts)
        .map(|i| SecretKey::bench_account(spec.seed, i))
        .collect();
    let start_nonces = nonces(&first, &keys)?;
    eprintln!(
        "signing {} transfers…",
        spec.rate * (spec.warmup + spec.duration).as_secs()
    );
    let genesis = crate::genesis_hash(&status)?;
    let fee = status["min_fee"].as_u64().unwrap_or(1).max(1);
    let batches = sign_batches(spec, &chain_id, &genesis, fee, &keys, &start_nonces)?;
    let total: usize = batches.iter().map(|b| b.hashes.len()).sum();
    let mut before: Vec<Option<(f64, f64, f64)>> =
        nodes.iter().map(|n| process_figures(&a, n)).collect();
    let start_height = status["height"].as_u64().unwrap_or(0);
    let pow_before = pow_blocks(&a, &first);

    // Commit watcher: every new block on the first node.
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let committed = committed.clone();
        let stop = stop.clone();
        let first = first.clone();
        std::thread::spawn(move || {
            let agent = agent();
            let mut next = start_height + 1;
            while !stop.load(Ordering::Relaxed) {
                let height = get_json(&agent, &format!("{first}/status"))
                    .ok()
                    .and_then(|s| s["height"].as_u64())
                    .unwrap_or(0);
                while next <= height {
                    let Ok(b) = get_json(&agent, &format!("{first}/blocks/{next}")) else {
                        break;
                    };
                    let now = Instant::now();
                    if let (Ok(mut c), Some(txs)) = (committed.lock(), b["transactions"].as_array())
                    {
                        for t in txs {
                            if let Some(h) = t["hash"].as_str() {
                                c.entry(h.to_owned()).or_insert(now);
                            }
                        }
                    }
                    next += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Senders: take batches off a queue and post them; the schedule never
    // waits for them.
    let (tx, rx) = mpsc::channel::<Batch>();
    let rx = Arc::new(Mutex::new(rx));
    let rejections: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    // Accepted in all, and of the measured run (batches due after the
    // warm-up: from this index on).
    let accepted: Arc<Mutex<(u64, u64)>> = Arc::default();
    let first_measured = spec
        .warmup
        .as_nanos()
        .div_ceil(spec.batch_every.as_nanos().max(1)) as usize;
    let mut senders = Vec::new();
    for _ in 0..spec.senders.max(1) {
        let rx = rx.clone();
        let nodes = nodes.clone();
        let rejections = rejections.clone();
        let accepted = accepted.clone();
        senders.push(std::thread::spawn(move || {
            let agent = agent();
            loop {
                let batch = match rx.lock().map(|r| r.recv()) {
                    Ok(Ok(b)) => b,
                    _ => return,
                };
                let node = &nodes[batch.index % nodes.len()];
                let outcomes = submit(&agent, node, &batch);
                let ok = outcomes
                    .iter()
                    .filter(|o| **o == Submitted::Accepted)
                    .count() as u64;
                if let Ok(mut rej) = rejections.lock() {
                    for o in outcomes {
                        if let Submitted::Refused(code) | Submitted::NoAnswer(code) = o {
                            *rej.entry(code).or_default() += 1;
                        }
                    }
                }
                if let Ok(mut a) = accepted.lock() {
                    a.0 += ok;
                    if batch.index >= first_measured {
                        a.1 += ok;
                    }
                }
            }
        }));
    }

    eprintln!(
        "offering {} transfers/s for {} s{} to {} nodes…",
        spec.rate,
        spec.duration.as_secs(),
        if spec.warmup.is_zero() {
            String::new()
        } else {
            format!(" after {} s of warm-up", spec.warmup.as_secs())
        },
        nodes.len()
    );
    let start = Instant::now();
    // Where the measured run starts: the figures cover what is due from here.
    let measured = start + spec.warmup;
    let mut warm = spec.warmup.is_zero();
    // Each batch's due time, whether it is measured, and its transfers.
    let mut scheduled: Vec<(Instant, bool, Vec<String>)> = Vec::with_capacity(batches.len());
    for batch in batches {
        let due = start + spec.batch_every * batch.index as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let in_run = batch.index >= first_measured;
        if !warm && in_run {
            // CPU counted from the end of the warm-up.
            warm = true;
            before = nodes.iter().map(|n| process_figures(&a, n)).collect();
        }
        scheduled.push((due, in_run, batch.hashes.clone()));
        tx.send(batch).map_err(|_| anyhow!("the senders stopped"))?;
    }
    drop(tx);
    for s in senders {
        let _ = s.join();
    }
    let offered_secs = measured.elapsed().as_secs_f64();
    // Drain: until everything accepted is committed, or no progress for
    // the drain time.
    let (accepted_all, accepted_count) = accepted.lock().map_or((0, 0), |a| *a);
    let mut last = (0usize, Instant::now());
    loop {
        let n = committed.lock().map_or(0, |c| c.len());
        if n as u64 >= accepted_all {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > spec.drain {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let after: Vec<Option<(f64, f64, f64)>> =
        nodes.iter().map(|n| process_figures(&a, n)).collect();
    // Proof-of-work: of the valid blocks the first node accepted during the
    // run (every branch), the share that did not end on its chain.
    let stale = match (pow_before, pow_blocks(&a, &first)) {
        (Some((h0, b0)), Some((h1, b1))) if b1 > b0 => {
            let blocks = b1 - b0;
            let canonical = h1.saturating_sub(h0).min(blocks);
            json!({
                "blocks": blocks,
                "canonical": canonical,
                "stale_rate": (blocks - canonical) as f64 / blocks as f64,
            })
        }
        _ => Value::Null,
    };

    let commits = committed.lock().map_err(|_| anyhow!("lock"))?.clone();
    let mut latencies = Vec::with_capacity(total);
    // The same per window of the schedule: where in the run the tail is.
    let mut windows: Vec<Vec<f64>> = Vec::new();
    let window_s = spec.series_every.as_secs_f64().max(0.001);
    let mut last_commit = measured;
    let mut measured_offered = 0;
    for (due, in_run, hashes) in &scheduled {
        let w = (due.duration_since(start).as_secs_f64() / window_s) as usize;
        if windows.len() <= w {
            windows.resize_with(w + 1, Vec::new);
        }
        if *in_run {
            measured_offered += hashes.len();
        }
        for h in hashes {
            if let Some(t) = commits.get(h) {
                let ms = t.saturating_duration_since(*due).as_secs_f64() * 1000.0;
                windows[w].push(ms);
                if *in_run {
                    latencies.push(ms);
                    last_commit = last_commit.max(*t);
                }
            }
        }
    }
    let series: Vec<Value> = windows
        .iter_mut()
        .enumerate()
        .map(|(i, l)| {
            l.sort_by(|a, b| a.total_cmp(b));
            json!({
                "from_s": i as f64 * window_s - spec.warmup.as_secs_f64(),
                "committed": l.len(),
                "p50": percentile(l, 0.50),
                "p99": percentile(l, 0.99),
            })
        })
        .collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let committed_n = latencies.len();
    let window = last_commit
        .duration_since(measured)
        .as_secs_f64()
        .max(offered_secs);
    let per_node: Vec<Value> = nodes
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(n, (b, a))| match (b, a) {
            (Some(b), Some(a)) => json!({
                "node": n,
                "cpu_seconds": a.0 - b.0,
                "cpu_percent": (a.0 - b.0) / window * 100.0,
                "rss_mb": a.1 / 1e6,
                "peak_rss_mb": a.2 / 1e6,
            }),
            _ => json!({ "node": n, "error": "no process metrics" }),
        })
        .collect();
    let rej = rejections.lock().map_err(|_| anyhow!("lock"))?.clone();
    Ok(json!({
        "engine": engine,
        "nodes": nodes.len(),
        "offered_rate": spec.rate,
        "duration_s": spec.duration.as_secs_f64(),
        "warmup_s": spec.warmup.as_secs_f64(),
        "offered": measured_offered,
        "accepted": accepted_count,
        "committed": committed_n,
        "committed_per_s": committed_n as f64 / window,
        "latency_ms": {
            "p50": percentile(&latencies, 0.50),
            "p95": percentile(&latencies, 0.95),
            "p99": percentile(&latencies, 0.99),
            "max": latencies.last().copied().unwrap_or(0.0),
        },
        "latency_series": series,
        "rejections": rej,
        "per_node": per_node,
        "pow_blocks": stale,
    }))
}

/// Proof-of-work only: the node's height and the blocks it has accepted
/// into its fork tree since it started.
fn pow_blocks(agent: &ureq::Agent, node: &str) -> Option<(u64, u64)> {
    let c = get_json(agent, &format!("{node}/consensus")).ok()?;
    Some((c["height"].as_u64()?, c["accepted_blocks"].as_u64()?))
}

/// The report as a few lines of text.
pub fn summary(r: &Value) -> String {
    let mut out = format!(
        "{} on {} nodes: offered {} transfers/s for {} s ({} transfers)\n\
         accepted {}, committed {} = {:.0} transfers/s\n\
         latency ms: p50 {:.0}, p95 {:.0}, p99 {:.0}, max {:.0}\n\
         rejections: {}\n",
        r["engine"].as_str().unwrap_or("?"),
        r["nodes"],
        r["offered_rate"],
        r["duration_s"],
        r["offered"],
        r["accepted"],
        r["committed"],
        r["committed_per_s"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["p95"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        r["latency_ms"]["max"].as_f64().unwrap_or(0.0),
        r["rejections"],
    );
    if let Some(rate) = r["pow_blocks"]["stale_rate"].as_f64() {
        out.push_str(&format!(
            "blocks: {} accepted, {} on the chain, stale rate {:.1} %\n",
            r["pow_blocks"]["blocks"],
            r["pow_blocks"]["canonical"],
            rate * 100.0
        ));
    }
    let series: Vec<String> = r["latency_series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            format!(
                "{:.0}s {:.0}/{:.0}",
                w["from_s"].as_f64().unwrap_or(0.0),
                w["p50"].as_f64().unwrap_or(0.0),
                w["p99"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    if !series.is_empty() {
        out.push_str(&format!("p50/p99 ms by window: {}\n", series.join(", ")));
    }
    for n in r["per_node"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}: CPU {:.0} %, RSS {:.0} MB (peak {:.0} MB)\n",
            n["node"].as_str().unwrap_or("?"),
            n["cpu_percent"].as_f64().unwrap_or(0.0),
            n["rss_mb"].as_f64().unwrap_or(0.0),
            n["peak_rss_mb"].as_f64().unwrap_or(0.0),
        ));
    }
    out
}
