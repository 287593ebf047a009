//! Starting engines from what a store holds.

use cairn_chain::{ChainStore, StoreError};
use cairn_consensus::{Pow, PowConfig};

/// The proof-of-work engine over the store's chain: the recent headers
/// it needs and the head's cumulative work (summed over the chain from
/// where proof-of-work starts).
pub fn pow(store: &impl ChainStore, cfg: PowConfig) -> Result<Pow, StoreError> {
    let missing = |what: String| StoreError::Corrupt {
        what: "chain".into(),
        reason: what,
    };
    let head = store.head()?.height;
    let keep_from = head.saturating_sub(Pow::headers_needed(&cfg));
    let mut work: u128 = 0;
    let mut recent = Vec::new();
    // Headers below both are neither needed nor worth anything.
    for h in keep_from.min(cfg.first_height)..=head {
        let hash = store
            .hash_at(h)?
            .ok_or_else(|| missing(format!("no block at height {h}")))?;
        let header = store
            .header(&hash)?
            .ok_or_else(|| missing(format!("no header {hash}")))?;
        work += u128::from(Pow::work_of(&cfg, &header));
        if h >= keep_from {
            recent.push(header);
        }
    }
    Ok(Pow::new(cfg, &recent, work))
}
