//! `cairn-wallet`: keys, transfers and queries against a Cairn node's HTTP API.
//! Every failure is one line on stderr and a non-zero exit.

use cairn_wallet::{bench, genesis_hash};

mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cairn_chain::keyfile::{read_key_file, write_key_file};
use cairn_chain::{Address, SecretKey, Transaction};
use clap::{Parser, Subcommand};
use serde_json::Value;

#[derive(Parser)]
#[command(name = "cairn-wallet", version, about = "Wallet for Cairn nodes")]
struct Cli {
    /// The node's HTTP API.
    #[arg(long, global = true, default_value = "http://127.0.0.1:26601")]
    node: String,
    /// Print the node's JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new key file (mode 0600).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the address of a key file.
    Address {
        #[arg(long)]
        key: PathBuf,
    },
    /// Balance and nonce of an address.
    Balance { address: String },
    /// Sign and submit a transfer.
    Transfer {
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        to: String,
        #[arg(long)]
        amount: u64,
        /// The fee (default: the network's minimum, from the node).
        #[arg(long)]
        fee: Option<u64>,
        /// Use this nonce instead of the account's next one.
        #[arg(long)]
        nonce: Option<u64>,
        /// Wait until the transfer is committed.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// With --wait: wait for this many confirmations (proof-of-work;
        /// Raft and PBFT blocks are final at 1).
        #[arg(long, default_value_t = 1)]
        confirmations: u64,
    },
    /// A transaction's status.
    Tx { hash: String },
    /// A block by height, or the latest.
    Block {
        #[arg(default_value = "latest")]
        height: String,
    },
    /// The node's status.
    Status,
    /// Print the node's events as they happen (new heads, transactions,
    /// leaders and views, reorganisations, switches) until Ctrl-C.
    Watch,
    /// Load generator: offer a fixed rate of transfers from the benchmark
    /// accounts (see `cairn-genesis new --bench-accounts`) to every node,
    /// and report throughput, latency and each node's CPU and memory.
    Bench {
        /// The nodes to spread the load over (comma-separated HTTP URLs;
        /// default: --node). Commits are timed on the first.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Benchmark accounts to send from (funded at genesis).
        #[arg(long, default_value_t = 10_000)]
        accounts: u32,
        /// Offered transfers per second.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// A batch every this many milliseconds.
        #[arg(long, default_value_t = 20)]
        batch_ms: u64,
        /// Seconds without a new commit after which the run ends.
        #[arg(long, default_value_t = 15)]
        drain: u64,
        /// Concurrent HTTP senders.
        #[arg(long, default_value_t = 8)]
        senders: usize,
        /// Seconds of load before the measured --duration, left out of
        /// the figures (shown in the latency series, at negative times).
        #[arg(long, default_value_t = 0)]
        warmup: u64,
        /// Latency percentiles per window of this many seconds, too.
        #[arg(long, default_value_t = 10)]
        series_every: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn handle(
        &self,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, Value)> {
        let mut resp = resp.map_err(|e| anyhow!("cannot reach the node at {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let body: Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| anyhow!("the node at {} sent an unreadable answer: {e}", self.base))?;
        Ok((status, body))
    }

    fn get(&self, path: &str) -> Result<Value> {
        let (status, body) = self.handle(self.agent.get(format!("{}{path}", self.base)).call())?;
        check(status, body)
    }

    fn post(&self, path: &str, json: &Value) -> Result<Value> {
        let (status, body) = self.handle(
            self.agent
                .post(format!("{}{path}", self.base))
                .send_json(json),
        )?;
        check(status, body)
    }
}

fn check(status: u16, body: Value) -> Result<Value> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let code = body["error"]["code"].as_str().unwrap_or("error");
    let msg = body["error"]["message"].as_str().unwrap_or("no message");
    bail!("node refused ({status} {code}): {msg}")
}

/// Blocks until the node reports what may change transaction `hash`'s
/// status: a new head, or an event about it. Without an event stream (or
/// once it breaks off), 200 ms.
fn wait_for_change(stream: &mut Option<watch::Events>, hash: &str, deadline: Instant) {
    while let Some(s) = stream.as_mut() {
        match s.next_event() {
            Ok(Some((kind, v))) => {
                if kind == "head" || (kind == "tx" && v["hash"] == hash) {
                    return;
                }
            }
            _ => *stream = None,
        }
        if Instant::now() > deadline {
            return;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
}

/// How settled a committed transaction is: final (Raft, PBFT), or its
/// confirmations (proof-of-work).
fn depth(t: &Value) -> String {
    if t["final"].as_bool().unwrap_or(false) {
        " (final)".into()
    } else {
        let n = t["confirmations"].as_u64().unwrap_or(1);
        format!(" ({n} confirmation{})", if n == 1 { "" } else { "s" })
    }
}

/// What to do when the node refused a transfer for its nonce.
fn refused_nonce_hint(error: &str, nonce: u64) -> String {
    if error.contains("duplicate") || error.contains("underpriced") {
        format!(
            "\n  The node already holds a pending transfer from this account with nonce {nonce}. \
             Wait for it to commit (transfer --wait, or cairn-wallet tx HASH), replace it by \
             sending again with --nonce {nonce} and a higher --fee, or send the next one with \
             --nonce {}.",
            nonce + 1
        )
    } else if error.contains("bad_nonce") {
        "\n  Leave out --nonce: the wallet then takes the account's next nonce after its \
         pending transfers on this node."
            .into()
    } else {
        String::new()
    }
}

fn parse_address(text: &str) -> Result<Address> {
    Address::parse(text).map_err(|e| anyhow!("bad address {text:?}: {e}"))
}

fn load_key(path: &std::path::Path) -> Result<SecretKey> {
    read_key_file(path).map_err(|e| anyhow!("{e}"))
}

fn print(json: bool, value: &Value, text: impl FnOnce() -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", text());
    }
}

fn run(cli: Cli) -> Result<()> {
    let client = Client::new(&cli.node);
    let json = cli.json;
    match cli.command {
        Cmd::Keygen { out } => {
            let key = SecretKey::generate(&mut rand::rngs::OsRng);
            write_key_file(&out, &key).map_err(|e| anyhow!("{e}"))?;
            let v = serde_json::json!({"address": key.address(), "key": out});
            print(json, &v, || {
                format!("{}  (key written to {})", key.address(), out.display())
            });
        }
        Cmd::Address { key } => {
            let key = load_key(&key)?;
            let v = serde_json::json!({"address": key.address()});
            print(json, &v, || key.address().to_string());
        }
        Cmd::Balance { address } => {
            let a = parse_address(&address)?;
            let v = client.get(&format!("/accounts/{a}"))?;
            print(json, &v, || {
                format!("{} (nonce {})", v["balance"], v["nonce"])
            });
        }
        Cmd::Transfer {
            key,
            to,
            amount,
            fee,
            nonce,
            wait,
            timeout,
            confirmations,
        } => {
            let key = load_key(&key)?;
            let to = parse_address(&to)?;
            let status = client.get("/status")?;
            let chain_id = status["chain_id"]
                .as_str()
                .context("the node did not say its chain id")?;
            let genesis = genesis_hash(&status)?;
            let fee = fee.unwrap_or_else(|| status["min_fee"].as_u64().unwrap_or(1));
            // The next nonce after this account's pending transfers on the
            // node, so that transfers sent in a row each take their own.
            let nonce = match nonce {
                Some(n) => n,
                None => {
                    let acct = client.get(&format!("/accounts/{}", key.address()))?;
                    acct["pending_nonce"]
                        .as_u64()
                        .or(acct["nonce"].as_u64())
                        .context("the node sent no nonce")?
                }
            };
            let tx = Transaction::new_signed(&key, chain_id, &genesis, to, amount, fee, nonce);
            let body = serde_json::to_value(&tx)?;
            // Subscribed before submitting, so that no event is missed.
            let events = if wait {
                watch::Events::open(&cli.node, Some(Duration::from_secs(timeout))).ok()
            } else {
                None
            };
            let v = client.post("/transactions", &body).map_err(|e| {
                let hint = refused_nonce_hint(&e.to_string(), nonce);
                anyhow!("{e}{hint}")
            })?;
            let hash = v["hash"]
                .as_str()
                .context("the node sent no hash")?
                .to_owned();
            if !wait {
                print(json, &v, || format!("submitted {hash}"));
                return Ok(());
            }
            let deadline = Instant::now() + Duration::from_secs(timeout);
            // The transaction is looked up again whenever the node reports
            // a new head or a status change of a transaction (its event
            // stream, subscribed before submitting); every 200 ms if the
            // stream is not there or breaks off.
            let mut stream = events;
            loop {
                let t = client.get(&format!("/transactions/{hash}"));
                if let Ok(t) = &t {
                    let confirmed = t["confirmations"].as_u64().unwrap_or(1);
                    let fin = t["final"].as_bool().unwrap_or(false);
                    if t["status"] == "committed" && (fin || confirmed >= confirmations) {
                        print(json, t, || {
                            format!("committed {hash} at height {}{}", t["height"], depth(t))
                        });
                        return Ok(());
                    }
                }
                if Instant::now() > deadline {
                    bail!("transaction {hash} not committed after {timeout} s");
                }
                wait_for_change(&mut stream, &hash, deadline);
            }
        }
        Cmd::Bench {
            nodes,
            seed,
            accounts,
            rate,
            duration,
            batch_ms,
            drain,
            senders,
            series_every,
            warmup,
            out,
        } => {
            if accounts == 0 || rate == 0 || duration == 0 || batch_ms == 0 || series_every == 0 {
                bail!(
                    "--accounts, --rate, --duration, --batch-ms and --series-every must be positive"
                );
            }
            let spec = bench::BenchSpec {
                nodes: if nodes.is_empty() {
                    vec![cli.node.clone()]
                } else {
                    nodes
                },
                seed,
                accounts,
                rate,
                duration: Duration::from_secs(duration),
                batch_every: Duration::from_millis(batch_ms),
                drain: Duration::from_secs(drain),
                senders,
                series_every: Duration::from_secs(series_every),
                warmup: Duration::from_secs(warmup),
            };
            let report = bench::run(&spec)?;
            if let Some(path) = out {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            print(json, &report, || bench::summary(&report));
        }
        Cmd::Tx { hash } => {
            let v = client.get(&format!("/transactions/{hash}"))?;
            print(json, &v, || match v["height"].as_u64() {
                Some(h) => format!(
                    "{} committed at height {h}{}",
                    v["hash"].as_str().unwrap_or(""),
                    depth(&v)
                ),
                None => format!(
                    "{} {}",
                    v["hash"].as_str().unwrap_or(""),
                    v["status"].as_str().unwrap_or("")
                ),
            });
        }
        Cmd::Block { height } => {
            let path = if height == "latest" {
                "/blocks/latest".to_owned()
            } else {
                let h: u64 = height
                    .parse()
                    .map_err(|_| anyhow!("{height:?} is not a block height"))?;
                format!("/blocks/{h}")
            };
            let v = client.get(&path)?;
            print(json, &v, || {
                format!(
                    "height {}  hash {}  txs {}  proposer {}",
                    v["height"],
                    v["hash"].as_str().unwrap_or(""),
                    v["transactions"].as_array().map_or(0, |a| a.len()),
                    v["proposer"].as_str().unwrap_or("")
                )
            });
        }
        Cmd::Watch => {
            let mut events = watch::Events::open(&cli.node, None)?;
            while let Some((kind, v)) = events.next_event()? {
                if json {
                    println!("{v}");
                } else {
                    println!("{}", watch::describe(&kind, &v));
                }
                if kind == "dropped" {
                    bail!("the node dropped this subscription: it fell too far behind");
                }
            }
        }
        Cmd::Status => {
            let mut v = client.get("/status")?;
            let c = client.get("/consensus")?;
            v["segment"] = c["segment"].clone();
            v["next_switch"] = c["next_switch"].clone();
            print(json, &v, || {
                let mut line = format!(
                    "{} on {} ({} since height {}): height {} head {} role {} peers {}",
                    v["name"].as_str().unwrap_or(""),
                    v["chain_id"].as_str().unwrap_or(""),
                    v["engine"].as_str().unwrap_or(""),
                    v["segment"]["since_height"],
                    v["height"],
                    v["head_hash"].as_str().unwrap_or(""),
                    v["role"].as_str().unwrap_or(""),
                    v["peers"]
                );
                if let Some(h) = v["next_switch"]["height"].as_u64() {
                    line.push_str(&format!(
                        "; switches to {} at height {h}",
                        v["next_switch"]["engine"].as_str().unwrap_or("?")
                    ));
                }
                line
            });
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
