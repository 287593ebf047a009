//! The fault schedule: drawn from the seed before the run starts, printed,
//! and replayed exactly by the same seed, engine, size and duration.

use std::fmt;
use std::time::Duration;

use cairn_genesis::EngineKind;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The kinds of fault the runner applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum FaultKind {
    /// `kill -9` of one node, restarted when the fault ends.
    Kill,
    /// SIGSTOP of one node for several election / view timeouts, then
    /// SIGCONT.
    Pause,
    /// One node cut off from every other (both directions).
    Isolate,
    /// The network split into two halves.
    Halves,
    /// One node restarted with its wall clock off by seconds to minutes
    /// (libfaketime), restarted again with the true time when the fault
    /// ends.
    Skew,
    /// One node restarted on a small disk (a tmpfs) that a ballast file
    /// then fills; restarted on its own disk, with everything it wrote,
    /// when the fault ends.
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Isolate,
        FaultKind::Halves,
        FaultKind::Skew,
        FaultKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Isolate => "isolate",
            FaultKind::Halves => "halves",
            FaultKind::Skew => "skew",
            FaultKind::DiskFull => "disk-full",
        }
    }
}

/// One fault: what, to whom, from when (since the load started) and for
/// how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub at: Duration,
    pub kind: FaultKind,
    /// The node faulted; for [`FaultKind::Halves`], one half.
    pub nodes: Vec<usize>,
    pub lasts: Duration,
    /// [`FaultKind::Skew`]: how far the node's clock is off (ms; ahead
    /// when positive).
    pub skew_ms: i64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.nodes.iter().map(|n| format!("n{n}")).collect();
        let what = match self.kind {
            FaultKind::Kill => format!("kill -9 {}, restart after", names.join(" ")),
            FaultKind::Pause => format!("SIGSTOP {}, SIGCONT after", names.join(" ")),
            FaultKind::Isolate => format!("cut {} off from the others for", names.join(" ")),
            FaultKind::Halves => format!("split {{{}}} from the rest for", names.join(", ")),
            FaultKind::DiskFull => format!(
                "restart {} on a small disk and fill it, back on its own disk after",
                names.join(" ")
            ),
            FaultKind::Skew => format!(
                "restart {} with its clock {:.1} s {}, true time again after",
                names.join(" "),
                self.skew_ms.unsigned_abs() as f64 / 1000.0,
                if self.skew_ms >= 0 { "ahead" } else { "behind" }
            ),
        };
        write!(
            f,
            "{:>7.1} s  {what} {:.1} s",
            self.at.as_secs_f64(),
            self.lasts.as_secs_f64()
        )
    }
}

/// Free space a [`FaultKind::DiskFull`] data directory starts with; a
/// ballast file takes it all a few seconds after the node starts.
pub const DISK_SPARE_KIB: u64 = 64 << 10;

/// The engine's own timeout (Raft's election timeout, PBFT's view
/// timeout, proof-of-work's target block time), the unit of a pause.
fn engine_timeout(engine: EngineKind) -> Duration {
    Duration::from_millis(match engine {
        EngineKind::Raft => 1_500,
        EngineKind::Pbft => 3_000,
        EngineKind::Pow => 2_000,
    })
}

/// Faults one at a time, from `settle` after the load starts until
/// `duration`, with 3–8 s of calm between them.
pub fn plan(
    seed: u64,
    engine: EngineKind,
    nodes: usize,
    duration: Duration,
    kinds: &[FaultKind],
) -> Vec<Fault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let settle = Duration::from_secs(5);
    let mut at = settle;
    let mut out = Vec::new();
    if kinds.is_empty() || nodes < 2 {
        return out;
    }
    loop {
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let ms =
            |rng: &mut ChaCha8Rng, lo: u64, hi: u64| Duration::from_millis(rng.gen_range(lo..=hi));
        let lasts = match kind {
            FaultKind::Kill => ms(&mut rng, 2_000, 10_000),
            FaultKind::Pause => {
                let t = engine_timeout(engine).as_millis() as u64;
                ms(&mut rng, 2 * t, 4 * t)
            }
            FaultKind::Isolate => ms(&mut rng, 3_000, 12_000),
            FaultKind::Halves => ms(&mut rng, 3_000, 10_000),
            FaultKind::Skew | FaultKind::DiskFull => ms(&mut rng, 10_000, 30_000),
        };
        // Seconds to minutes, either way.
        let skew_ms = match kind {
            FaultKind::Skew => {
                let magnitude = rng.gen_range(2_000..=120_000i64);
                if rng.gen_bool(0.5) {
                    magnitude
                } else {
                    -magnitude
                }
            }
            _ => 0,
        };
        if at + lasts > duration {
            return out;
        }
        let victims = match kind {
            FaultKind::Halves => {
                let mut all: Vec<usize> = (0..nodes).collect();
                all.shuffle(&mut rng);
                let mut half = all[..nodes / 2].to_vec();
                half.sort_unstable();
                half
            }
            _ => vec![rng.gen_range(0..nodes)],
        };
        out.push(Fault {
            at,
            kind,
            nodes: victims,
            lasts,
            skew_ms,
        });
        at += lasts + ms(&mut rng, 3_000, 8_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_schedule_and_it_fits_the_run() {
        let d = Duration::from_secs(300);
        let a = plan(7, EngineKind::Pbft, 4, d, &FaultKind::ALL);
        assert_eq!(a, plan(7, EngineKind::Pbft, 4, d, &FaultKind::ALL));
        assert_ne!(a, plan(8, EngineKind::Pbft, 4, d, &FaultKind::ALL));
        assert!(a.len() > 10, "{a:?}");
        for w in a.windows(2) {
            assert!(w[0].at + w[0].lasts < w[1].at, "one fault at a time: {w:?}");
        }
        for f in &a {
            assert!(f.at + f.lasts <= d);
            assert!(f.nodes.iter().all(|&n| n < 4));
            match f.kind {
                FaultKind::Halves => assert_eq!(f.nodes.len(), 2),
                _ => assert_eq!(f.nodes.len(), 1),
            }
            match f.kind {
                FaultKind::Skew => assert!((2_000..=120_000).contains(&f.skew_ms.abs())),
                _ => assert_eq!(f.skew_ms, 0),
            }
        }
        for kind in FaultKind::ALL {
            assert!(a.iter().any(|f| f.kind == kind), "no {kind:?} in {a:?}");
        }
        let only = plan(7, EngineKind::Raft, 4, d, &[FaultKind::Pause]);
        assert!(only.iter().all(|f| f.kind == FaultKind::Pause));
    }
}
