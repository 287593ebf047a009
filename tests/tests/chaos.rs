//! A short chaos run in every `make test`: a real 4-node devnet under load
//! and a seeded schedule of kills, pauses and partitions, then the full
//! check (see `cairn_tests::chaos`). The engine rotates with the seed, and
//! the seed with the day, so CI meets every engine and many schedules;
//! `CAIRN_CHAOS_SEED` picks one. A failure prints the replay command.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_genesis::EngineKind;
use cairn_tests::chaos::{self, FaultKind, Options};

#[test]
fn a_short_chaos_run_loses_nothing_and_every_node_agrees() {
    let seed = std::env::var("CAIRN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / 86_400)
        });
    let engine = [EngineKind::Raft, EngineKind::Pbft, EngineKind::Pow][(seed % 3) as usize];
    let opts = Options {
        engine,
        seed,
        duration: Duration::from_secs(60),
        validators: 4,
        rate: 30,
        base_port: 29_300,
        faults: FaultKind::ALL.to_vec(),
        dir: None,
        byzantine: None,
    };
    let report = chaos::run(&opts).expect("the chaos run starts and ends");
    eprint!("{report}");
    assert!(
        report.passed(),
        "chaos found violations (logs in {}); replay: {}",
        report.dir.display(),
        opts.replay()
    );
    assert!(
        report.acknowledged > 0,
        "no transfer was seen committed: the check checked nothing"
    );
    assert!(!report.faults.is_empty(), "the schedule applied no fault");
}
