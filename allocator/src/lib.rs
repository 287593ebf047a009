//! How the node's allocator (mimalloc) gives memory back to the system.
//!
//! mimalloc frees pages to the system ("purges") lazily: a page freed under
//! load is returned only after a delay (1 s in mimalloc 3), and only when
//! the thread that owns it next calls into the allocator. A node's worker
//! threads go quiet when the load stops, so without this a node stayed at
//! its peak size long after a load (measured on a Raft devnet after 60 s at
//! 12,000 transfers/s: ~240 MB per node 30 s later, against ~90–130 MB with
//! immediate purging, at the same throughput and latency).
//!
//! The only `unsafe` of the workspace: two calls into mimalloc's C API.

/// mimalloc's `mi_option_purge_delay` (see `mimalloc.h`: the 16th option).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return a page to the system as soon as it is empty,
/// unless `MIMALLOC_PURGE_DELAY` says otherwise. Call once, early in
/// `main`.
pub fn purge_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one of mimalloc's documented options to a documented
    // value (0: purge at once); it takes no pointers and may be called at
    // any time.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

/// Returns what the calling thread's heap holds free to the system, and
/// purges what is due. For a thread that goes idle after a load.
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
    fn the_option_set_is_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads an option, no pointers.
        #[allow(unsafe_code)]
        let get = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        // mimalloc 3's default purge delay (1,000 ms, the only option with
        // that default): the index names the right option.
        assert_eq!(get(), 1000);
        purge_promptly();
        assert_eq!(get(), 0);
        collect();
    }
}
