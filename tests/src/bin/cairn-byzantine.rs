//! A real Cairn node process whose PBFT engine is Byzantine: the node's
//! own start-up, store, network and driver, with the engine wrapped in the
//! simulator's Byzantine validator (`cairn_sim::byzantine`), which rewrites
//! what the honest engine inside sends. For end-to-end tests and the chaos
//! runner; never part of what users run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use cairn_sim::byzantine::{Behaviour, Byzantine, Collusion};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Misbehaviour {
    /// Sends nothing, stays up.
    Silent,
    /// As primary, proposes two blocks for one height, one to each half.
    Equivocate,
    /// Also signs votes for made-up blocks, sent to half the validators.
    ConflictingVotes,
    /// Also sends votes claiming to be another validator's, and votes with
    /// garbage signatures.
    ForgedSignatures,
    /// Also re-sends messages it received earlier as its own.
    Replay,
}

#[derive(Debug, Parser)]
#[command(about = "A Cairn PBFT validator that misbehaves, for tests")]
struct Args {
    /// The node's home, as for `cairn-node run`.
    #[arg(long)]
    home: PathBuf,
    #[arg(long, value_enum)]
    behaviour: Misbehaviour,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libp2p=warn,libp2p_gossipsub=error".into()),
        )
        .with_target(false)
        .init();
    let behaviour = match args.behaviour {
        Misbehaviour::Silent => Behaviour::Silent,
        Misbehaviour::Equivocate => Behaviour::Equivocate,
        Misbehaviour::ConflictingVotes => Behaviour::ConflictingVotes,
        Misbehaviour::ForgedSignatures => Behaviour::ForgedSignatures,
        Misbehaviour::Replay => Behaviour::Replay,
    };
    let wrap: cairn_node::node::EngineWrap = Box::new(move |inner, cx| {
        let Some(key) = cx.key.clone() else {
            return inner;
        };
        Box::new(Byzantine::new(
            inner,
            behaviour,
            cx.me,
            cx.validators,
            key,
            cx.network,
            u64::from(cx.me),
            Arc::new(Mutex::new(Collusion::default())),
            BTreeSet::from([cx.me]),
        ))
    });
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cairn_node::node::run_with(&args.home, Some(wrap))));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
