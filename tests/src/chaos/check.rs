//! The checker, run once the faults have healed and the network has
//! settled: what every node holds against what the clients saw.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cluster::{get, quick_agent, Cluster};
use super::history::History;

/// What the checker found.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Everything that must not happen, one line each.
    pub violations: Vec<String>,
    /// Acknowledged transfers missing from the final chain (or at another
    /// height).
    pub lost: usize,
    /// Heights at which two nodes hold different blocks.
    pub divergences: usize,
    /// Proof-of-work: acknowledged transfers a reorganisation deeper than
    /// the client's confirmations moved to another block (still in the
    /// chain). What a partition longer than the confirmations does to
    /// proof-of-work; on a final engine this counts as lost.
    pub moved: usize,
    /// Transfers found twice in a chain.
    pub duplicates: usize,
    /// Lines with `panicked` in the nodes' logs.
    pub panics: usize,
    /// The common head height the nodes settled on.
    pub height: u64,
}

/// Waits until every node answers with the same head; the head height, or
/// what each node reports when they never agree.
pub fn settle(cluster: &Cluster, within: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    while Instant::now() < deadline {
        let heads: Vec<Option<(u64, String)>> = (0..cluster.len())
            .map(|i| {
                let s = cluster.status(i)?;
                Some((s["height"].as_u64()?, s["head_hash"].as_str()?.to_owned()))
            })
            .collect();
        if let Some(Some(first)) = heads.first() {
            if heads.iter().all(|h| h.as_ref() == Some(first)) {
                return Ok(first.0);
            }
        }
        last = heads
            .iter()
            .enumerate()
            .map(|(i, h)| match h {
                Some((height, hash)) => format!("n{i}: {height} {}", &hash[..12.min(hash.len())]),
                None => format!("n{i}: no answer"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(last)
}

/// Blocks 1..=`height` of one node, by height: hash and transactions.
fn walk(url: &str, height: u64) -> Result<Vec<Value>, String> {
    let agent = quick_agent();
    (1..=height)
        .map(|h| {
            // A busy node may take a moment; a few tries before giving up.
            (0..5)
                .find_map(|_| {
                    get(&agent, &format!("{url}/blocks/{h}")).or_else(|| {
                        std::thread::sleep(Duration::from_millis(200));
                        None
                    })
                })
                .ok_or_else(|| format!("{url} did not serve block {h}"))
        })
        .collect()
}

/// Checks the settled network at `height` against the history.
/// `final_blocks`: whether a committed block can never change (Raft,
/// PBFT), or only became likely to stay (proof-of-work).
pub fn check(cluster: &Cluster, history: &History, height: u64, final_blocks: bool) -> Findings {
    let mut f = Findings {
        height,
        ..Findings::default()
    };
    // Every node's chain, block by block.
    let mut chains = Vec::new();
    for url in &cluster.urls {
        match walk(url, height) {
            Ok(c) => chains.push(c),
            Err(e) => f.violations.push(e),
        }
    }
    if chains.len() != cluster.len() {
        return f;
    }
    for h in 0..height as usize {
        let hashes: HashSet<&str> = chains
            .iter()
            .map(|c| c[h]["hash"].as_str().unwrap_or_default())
            .collect();
        if hashes.len() > 1 {
            f.divergences += 1;
            f.violations.push(format!(
                "nodes hold different blocks at height {}: {hashes:?}",
                h + 1
            ));
        }
    }
    // Where each transfer is in the chain (node 0's; the others are equal
    // or the divergence is reported above).
    let mut found: HashMap<&str, (u64, &str)> = HashMap::new();
    for b in &chains[0] {
        let (bh, bhash) = (
            b["height"].as_u64().unwrap_or_default(),
            b["hash"].as_str().unwrap_or_default(),
        );
        for t in b["transactions"].as_array().into_iter().flatten() {
            let hash = t["hash"].as_str().unwrap_or_default();
            if found.insert(hash, (bh, bhash)).is_some() {
                f.duplicates += 1;
                f.violations
                    .push(format!("transfer {hash} appears twice (again at {bh})"));
            }
        }
    }
    for (hash, e) in history {
        let Some((ah, ablock)) = &e.acked else {
            continue;
        };
        match found.get(hash.as_str()) {
            Some((h, b)) if h == ah && b == ablock => {}
            Some(_) if !final_blocks => f.moved += 1,
            Some((h, _)) => {
                f.lost += 1;
                f.violations.push(format!(
                    "transfer {hash} was acknowledged at height {ah} (block {ablock}), the chain has it at {h}"
                ));
            }
            None => {
                f.lost += 1;
                f.violations.push(format!(
                    "transfer {hash} was acknowledged at height {ah} (block {ablock}) and is not in the chain"
                ));
            }
        }
    }
    check_supply(cluster, &chains[0], &mut f);
    for (i, n) in cluster.nodes.iter().enumerate() {
        let log = std::fs::read_to_string(n.home.join("node.log")).unwrap_or_default();
        let panics = log.lines().filter(|l| l.contains("panicked")).count();
        if panics > 0 {
            f.panics += panics;
            f.violations.push(format!(
                "n{i} panicked {panics} times (see {})",
                n.home.join("node.log").display()
            ));
        }
    }
    f
}

/// The sum of every balance equals the genesis supply plus one block
/// reward per block. The accounts: the genesis allocations, every
/// recipient, every proposer.
fn check_supply(cluster: &Cluster, chain: &[Value], f: &mut Findings) {
    let genesis = &cluster.net.genesis;
    let mut accounts: HashSet<String> = genesis
        .allocations
        .iter()
        .map(|a| a.address.to_string())
        .collect();
    for b in chain {
        if let Some(p) = b["proposer"].as_str() {
            accounts.insert(p.to_owned());
        }
        for t in b["transactions"].as_array().into_iter().flatten() {
            if let Some(to) = t["to"].as_str() {
                accounts.insert(to.to_owned());
            }
        }
    }
    let genesis_supply: u128 = genesis
        .allocations
        .iter()
        .map(|a| u128::from(a.balance))
        .sum();
    let agent = quick_agent();
    let url = &cluster.urls[0];
    let head = || cluster.status(0).and_then(|s| s["height"].as_u64());
    // Proof-of-work mines on: a sum is comparable only if the head stood
    // still while the balances were read.
    for _ in 0..10 {
        let Some(before) = head() else {
            continue;
        };
        let mut total: u128 = 0;
        for a in &accounts {
            match get(&agent, &format!("{url}/accounts/{a}")).and_then(|v| v["balance"].as_u64()) {
                Some(b) => total += u128::from(b),
                None => {
                    f.violations
                        .push(format!("{url} did not answer for account {a}"));
                    return;
                }
            }
        }
        if head() != Some(before) {
            continue;
        }
        let supply = genesis_supply + u128::from(genesis.block_reward) * u128::from(before);
        if total != supply {
            f.violations.push(format!(
                "at height {before} the balances add up to {total}; genesis supply plus rewards is {supply}"
            ));
        }
        return;
    }
    f.violations
        .push("the supply check never saw n0's head stand still".into());
}
