//! `cairn-genesis`: create and inspect Cairn networks.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use cairn_chain::Address;
use cairn_genesis::{
    add_upgrade, generate, ConsensusConfig, EngineKind, Genesis, NetworkSpec, UpgradeSpec,
};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cairn-genesis",
    version,
    about = "Create and inspect Cairn networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new network: genesis.json, a funded faucet.key, and one folder
    /// per node with node.toml and its keys.
    New {
        /// Consensus engine: raft, pbft or pow.
        #[arg(long, default_value = "raft")]
        engine: EngineKind,
        /// Number of validator nodes.
        #[arg(long, default_value_t = 3)]
        validators: usize,
        /// Nodes that follow without validating (each has a validator
        /// key: `upgrade --validators` can make it a validator later).
        #[arg(long, default_value_t = 0)]
        observers: usize,
        /// Output directory (must not hold a network already).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "cairn-devnet")]
        chain_id: String,
        /// Node i uses ports base+2i (P2P) and base+2i+1 (HTTP).
        #[arg(long, default_value_t = 26600)]
        base_port: u16,
        /// One address per node, validators first (comma-separated): node i
        /// listens on and is dialled at the i-th, one node per machine.
        /// Default: every node on 127.0.0.1.
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<std::net::Ipv4Addr>,
        /// Listen on every interface (0.0.0.0); peers still dial each
        /// node's own address (--hosts).
        #[arg(long)]
        listen_any: bool,
        /// Extra initial balance, ADDRESS=AMOUNT (repeatable).
        #[arg(long, value_name = "ADDRESS=AMOUNT")]
        fund: Vec<String>,
        /// Balance of the generated faucet key.
        #[arg(long, default_value_t = 1_000_000_000_000)]
        faucet_balance: u64,
        /// Minted to each block's proposer.
        #[arg(long, default_value_t = 50)]
        block_reward: u64,
        /// The lowest fee a transaction may pay (0 lets anyone spam for
        /// free).
        #[arg(long, default_value_t = 1)]
        min_fee: u64,
        /// Block interval (Raft, PBFT) or target block time (PoW), in ms.
        #[arg(long)]
        block_time_ms: Option<u64>,
        /// Proof-of-work: how many nodes mine (default: all but the last).
        #[arg(long)]
        miners: Option<usize>,
        /// Derive every key from this seed: the same command writes the same
        /// files (genesis time 0 unless --genesis-time is given).
        #[arg(long)]
        seed: Option<u64>,
        /// Genesis timestamp in ms since the Unix epoch (default: now).
        #[arg(long)]
        genesis_time: Option<u64>,
        /// Fund this many benchmark accounts derived from --bench-seed (for
        /// `cairn-wallet bench`).
        #[arg(long, default_value_t = 0)]
        bench_accounts: u32,
        #[arg(long, default_value_t = 0)]
        bench_seed: u64,
    },
    /// Schedule a switch of engine (and validators) at a coming height:
    /// appends an upgrade to the network in DIR (its genesis.json and every
    /// node's copy). Restart the nodes one at a time before that height.
    Upgrade {
        /// The network's folder (as written by `new`).
        #[arg(long)]
        dir: PathBuf,
        /// The first height made by the new engine.
        #[arg(long)]
        at_height: u64,
        /// The engine from that height: raft or pbft.
        #[arg(long)]
        engine: EngineKind,
        /// Block interval (Raft, PBFT) or target block time (PoW), in ms.
        #[arg(long)]
        block_time_ms: Option<u64>,
        /// The validators from that height, by name (e.g. node0,node2,node3);
        /// default: the current set.
        #[arg(long, value_delimiter = ',')]
        validators: Option<Vec<String>>,
    },
    /// Print a genesis file's hash and a summary.
    Show {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_fund(s: &str) -> Result<(Address, u64)> {
    let (addr, amount) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("--fund {s:?}: expected ADDRESS=AMOUNT"))?;
    let addr = Address::parse(addr).map_err(|e| anyhow!("--fund {s:?}: {e}"))?;
    let amount = amount
        .trim()
        .parse::<u64>()
        .map_err(|e| anyhow!("--fund {s:?}: amount: {e}"))?;
    Ok((addr, amount))
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::New {
            engine,
            validators,
            observers,
            out,
            chain_id,
            base_port,
            hosts,
            listen_any,
            fund,
            faucet_balance,
            block_reward,
            min_fee,
            block_time_ms,
            miners,
            seed,
            genesis_time,
            bench_accounts,
            bench_seed,
        } => {
            let fund = fund
                .iter()
                .map(|f| parse_fund(f))
                .collect::<Result<Vec<_>>>()?;
            let spec = NetworkSpec {
                engine,
                validators,
                observers,
                chain_id,
                base_port,
                hosts,
                listen_any,
                faucet_balance,
                fund,
                block_reward,
                min_fee,
                seed,
                genesis_time_ms: genesis_time,
                block_time_ms,
                miners,
                bench_accounts,
                bench_seed,
                ..NetworkSpec::default()
            };
            let net = generate(&spec, &out)?;
            println!(
                "Wrote a {engine} network of {validators} nodes to {}",
                out.display()
            );
            println!("  genesis hash  {}", net.genesis_hash);
            println!(
                "  faucet        {} ({})",
                net.faucet,
                net.faucet_key().display()
            );
            for n in &net.nodes {
                println!(
                    "  {:<6} rpc {:<24} p2p {}{}",
                    n.name,
                    n.rpc_url,
                    n.p2p_address,
                    if n.mining {
                        "  (miner)"
                    } else if !n.validator {
                        "  (observer)"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Command::Upgrade {
            dir,
            at_height,
            engine,
            block_time_ms,
            validators,
        } => {
            let spec = UpgradeSpec {
                height: at_height,
                consensus: ConsensusConfig::with_block_time(engine, block_time_ms),
                validators,
            };
            let files = add_upgrade(&dir, &spec)?;
            println!("Scheduled {engine} from height {at_height} in:");
            for f in files {
                println!("  {}", f.display());
            }
            println!(
                "Restart the nodes one at a time (never more than the engine tolerates at once) \
                 before the chain reaches height {at_height}."
            );
            Ok(())
        }
        Command::Show { file, json } => {
            let g = Genesis::load(&file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            if json {
                let v = serde_json::json!({
                    "genesis_hash": g.hash().to_hex(),
                    "chain_id": g.chain_id,
                    "engine": g.consensus.kind().as_str(),
                    "validators": g.validators.len(),
                    "schedule": g.segments().iter().map(|s| serde_json::json!({
                        "from_height": s.start,
                        "engine": s.consensus.kind().as_str(),
                        "validators": s.validators.len(),
                        "config": s.config_hash().to_hex(),
                    })).collect::<Vec<_>>(),
                    "accounts": g.allocations.len(),
                    "total_supply": g.total_supply(),
                });
                println!("{}", serde_json::to_string_pretty(&v).context("json")?);
                return Ok(());
            }
            println!("genesis hash   {}", g.hash());
            println!("chain id       {}", g.chain_id);
            println!("genesis time   {} ms", g.genesis_time_ms);
            let params = serde_json::to_string(&g.consensus).context("json")?;
            println!("consensus      {params}");
            println!("block reward   {}", g.block_reward);
            println!("minimum fee    {}", g.min_fee);
            println!("validators     {}", g.validators.len());
            for v in &g.validators {
                println!("  {:<8} {}  {}", v.name, v.public_key, v.p2p_address);
            }
            if !g.upgrades.is_empty() {
                println!("schedule");
                for s in g.segments() {
                    let names: Vec<&str> = s.validators.iter().map(|v| v.name.as_str()).collect();
                    println!(
                        "  from {:<8} {:<5} {}",
                        s.start,
                        s.consensus.kind(),
                        names.join(",")
                    );
                }
            }
            println!(
                "allocations    {} accounts, total supply {}",
                g.allocations.len(),
                g.total_supply()
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
