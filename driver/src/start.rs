//! Starting engines from what a store holds.

use cairn_chain::{ChainStore, StoreError};
use cairn_consensus::pow::header_work;
use cairn_consensus::{Pow, PowConfig};

/// The proof-of-work engine over the store's chain: the recent headers
/// it needs and the head's cumulative work (summed over the whole chain).
pub fn pow(store: &impl ChainStore, cfg: PowConfig) -> Result<Pow, StoreError> {
    let missing = |what: String| StoreError::Corrupt {
        what: "chain".into(),
        reason: what,
    };
    let head = store.head()?.height;
    let keep_from = head.saturating_sub(Pow::headers_needed(&cfg.rule));
    let mut work: u128 = 0;
    let mut recent = Vec::new();
    for h in 0..=head {
        let hash = store
            .hash_at(h)?
            .ok_or_else(|| missing(format!("no block at height {h}")))?;
        let header = store
            .header(&hash)?
            .ok_or_else(|| missing(format!("no header {hash}")))?;
        work += u128::from(header_work(&header));
        if h >= keep_from {
            recent.push(header);
        }
    }
    Ok(Pow::new(cfg, &recent, work))
}
