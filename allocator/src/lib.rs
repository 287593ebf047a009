//! Giving memory back to the system after a load.
//!
//! The node allocates through mimalloc, which returns freed pages to the
//! system lazily: a page is purged a while after it empties (1 s in
//! mimalloc 3), and only when the thread that owns it next calls into the
//! allocator. A node whose threads go quiet when a load stops therefore
//! stayed near its peak size. [`collect`] purges what is free at once; the
//! node calls it when it has been idle for a while.
//!
//! Purging every page the moment it empties (`MIMALLOC_PURGE_DELAY=0`)
//! gives memory back too, but costs CPU under load (pages given back and
//! faulted in again): measured on a Raft devnet it was no better after the
//! load than this, and worse during it.
//!
//! The only `unsafe` of the workspace: calls into mimalloc's C API.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Moves on with every [`request_collect`]; each thread remembers the last
/// one it acted on.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

/// Asks every thread to [`collect`] its heap the next time it calls
/// [`collect_if_requested`] (mimalloc collects one thread's heap at a time:
/// pages a thread owns go back only when that thread collects), and
/// collects the calling thread's at once.
pub fn request_collect() {
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    SEEN.with(|s| s.set(epoch));
    collect();
}

/// Collects the calling thread's heap if a [`request_collect`] came since
/// it last did: one atomic load otherwise, cheap enough for a hook that runs
/// whenever a worker thread goes idle.
pub fn collect_if_requested() {
    let epoch = EPOCH.load(Ordering::Relaxed);
    if SEEN.with(|s| s.replace(epoch)) != epoch {
        collect();
    }
}

/// Returns the free memory of the calling thread's heap and of mimalloc's
/// arenas to the system, whatever the purge delay.
pub fn collect() {
    // SAFETY: `mi_collect` only walks mimalloc's own structures; it takes
    // no pointers and may be called from any thread at any time.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reaches_each_thread_once() {
        request_collect();
        let seen_here = SEEN.with(Cell::get);
        assert_eq!(seen_here, EPOCH.load(Ordering::Relaxed));
        // Another thread has not acted on it yet: it does, once.
        std::thread::spawn(|| {
            assert_eq!(SEEN.with(Cell::get), 0);
            collect_if_requested();
            let after = SEEN.with(Cell::get);
            assert!(after >= 1);
            collect_if_requested();
            assert_eq!(
                SEEN.with(Cell::get),
                after.max(EPOCH.load(Ordering::Relaxed))
            );
        })
        .join()
        .expect("thread");
    }

    /// Resident size of this process in bytes (Linux).
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn collect_gives_freed_memory_back_at_once() {
        const BLOCKS: usize = 100_000;
        const SIZE: usize = 1024;
        let before = resident();
        // SAFETY: every pointer comes from mi_malloc, is written within
        // its SIZE bytes, and is freed exactly once.
        #[allow(unsafe_code)]
        unsafe {
            let mut blocks = Vec::with_capacity(BLOCKS);
            for i in 0..BLOCKS {
                let p = libmimalloc_sys::mi_malloc(SIZE).cast::<u8>();
                assert!(!p.is_null());
                std::ptr::write_bytes(p, i as u8, SIZE);
                blocks.push(p);
            }
            assert!(resident() > before + BLOCKS * SIZE / 2);
            for p in blocks {
                libmimalloc_sys::mi_free(p.cast());
            }
        }
        let freed = resident();
        collect();
        let collected = resident();
        // ~100 MB were touched: after collect, at most a tenth stays.
        assert!(
            collected < before + BLOCKS * SIZE / 10,
            "resident {before} before, {freed} after free, {collected} after collect"
        );
    }
}
