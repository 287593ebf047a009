//! Proof-of-work miners: dedicated OS threads (never tokio workers) that
//! search nonces for the current job. A new job, or [`Miner::stop`],
//! abandons the old one within one chunk of hashes (a few milliseconds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use cairn_chain::Block;
use cairn_consensus::pow::{search_nonce, with_nonce};
use tokio::sync::mpsc;

/// Nonces tried between two looks at whether the job is still current.
const CHUNK: u64 = 16_384;

#[derive(Debug, Default)]
struct Job {
    block: Option<Block>,
    generation: u64,
    shutdown: bool,
}

#[derive(Debug, Default)]
struct Shared {
    job: Mutex<Job>,
    wake: Condvar,
    /// The current job's generation, read without the lock.
    generation: AtomicU64,
    hashes: AtomicU64,
}

/// The mining threads. Dropping it stops and joins them.
#[derive(Debug)]
pub struct Miner {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Miner {
    /// Starts `threads` miners; found blocks go to `found`.
    pub fn start(threads: usize, found: mpsc::UnboundedSender<Block>) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            let found = found.clone();
            // Threads start far apart in the nonce space.
            let start = seed.rotate_left(17) ^ ((i as u64) << 56);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("cairn-miner-{i}"))
                    .spawn(move || mine(&shared, start, &found))?,
            );
        }
        Ok(Self {
            shared,
            threads: handles,
        })
    }

    /// Mines `block` from now on (replacing any job).
    pub fn set_job(&self, block: Block) {
        self.replace(Some(block));
    }

    /// Stops mining until the next job.
    pub fn stop(&self) {
        self.replace(None);
    }

    fn replace(&self, block: Option<Block>) {
        if let Ok(mut job) = self.shared.job.lock() {
            job.generation += 1;
            job.block = block;
            self.shared
                .generation
                .store(job.generation, Ordering::Release);
        }
        self.shared.wake.notify_all();
    }

    /// Hashes tried since start (all threads).
    pub fn hashes(&self) -> u64 {
        self.shared.hashes.load(Ordering::Relaxed)
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        if let Ok(mut job) = self.shared.job.lock() {
            job.shutdown = true;
            job.generation += 1;
            self.shared
                .generation
                .store(job.generation, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn mine(shared: &Shared, mut nonce: u64, found: &mpsc::UnboundedSender<Block>) {
    let mut done_generation = 0;
    loop {
        // Wait for a job this thread has not finished.
        let (block, generation) = {
            let Ok(mut job) = shared.job.lock() else {
                return;
            };
            loop {
                if job.shutdown {
                    return;
                }
                match &job.block {
                    Some(b) if job.generation != done_generation => {
                        break (b.clone(), job.generation);
                    }
                    _ => {
                        job = match shared.wake.wait(job) {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                    }
                }
            }
        };
        while shared.generation.load(Ordering::Acquire) == generation {
            let hit = search_nonce(&block.header, nonce, CHUNK);
            let tried = hit.map_or(CHUNK, |(_, t)| t);
            shared.hashes.fetch_add(tried, Ordering::Relaxed);
            nonce = nonce.wrapping_add(tried);
            if let Some((n, _)) = hit {
                if let Some(header) = with_nonce(&block.header, n) {
                    let _ = found.send(Block {
                        header,
                        ..block.clone()
                    });
                }
                break;
            }
        }
        done_generation = generation;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chain::{Address, Hash, Header};
    use cairn_consensus::pow::{check_pow, PowSeal};

    fn template(difficulty: u64) -> Block {
        Block {
            header: Header {
                parent: Hash::digest(b"p"),
                height: 1,
                timestamp_ms: 1,
                tx_root: Hash::ZERO,
                state_root: Hash::ZERO,
                proposer: Address::ZERO,
                config: Hash::ZERO,
                engine_data: PowSeal {
                    difficulty,
                    nonce: 0,
                }
                .encode(),
            },
            transactions: Vec::new(),
            seal: Vec::new(),
        }
    }

    #[test]
    fn miners_find_a_valid_block_and_stop_on_request() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let miner = Miner::start(2, tx).expect("threads");
        miner.set_job(template(2_000));
        let block = rx.blocking_recv().expect("a block");
        assert!(check_pow(&block.header).is_ok());
        assert!(miner.hashes() > 0);
        // An impossible job, then stop: the threads go idle and join.
        miner.set_job(template(u64::MAX));
        miner.stop();
        drop(miner);
    }
}
