//! Proof-of-work arithmetic: the seal in the header, targets, the retarget
//! rule, and the nonce search shared by the node's miners and the simulator.

use cairn_chain::{codec, Hash, Header};
use serde::{Deserialize, Serialize};

/// What a proof-of-work header carries in its engine data (covered by the
/// block hash). The nonce is encoded last, so a miner rewrites only the
/// last 8 bytes of the encoded header.
///
/// The target is carried in compact form, as its difficulty `d`:
/// `target = ⌊(2²⁵⁶ − 1) / d⌋`, and a block of difficulty `d` is `d`
/// expected hashes of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowSeal {
    pub difficulty: u64,
    pub nonce: u64,
}

impl PowSeal {
    /// The header's engine data.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Reads a header's engine data.
    pub fn decode(data: &[u8]) -> Result<Self, ProofOfWorkError> {
        codec::decode(data, 16).map_err(|e| ProofOfWorkError::Seal(e.to_string()))
    }
}

/// Why a header carries no valid proof of work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofOfWorkError {
    #[error("bad proof-of-work seal: {0}")]
    Seal(String),
    #[error("difficulty 0")]
    ZeroDifficulty,
    #[error("proof-of-work hash is above the target of difficulty {0}")]
    AboveTarget(u64),
}

/// The proof-of-work hash: double SHA-256 of the header's canonical
/// encoding (SHA-256 of the block hash).
pub fn pow_hash(header: &Header) -> Hash {
    Hash::digest(header.hash().as_ref())
}

/// `⌊(2²⁵⁶ − 1) / difficulty⌋`, big-endian (difficulty 0 counts as 1).
pub fn target(difficulty: u64) -> [u8; 32] {
    let d = u128::from(difficulty.max(1));
    let mut out = [0u8; 32];
    let mut rem: u128 = 0;
    for limb in 0..4 {
        let cur = (rem << 64) | u128::from(u64::MAX);
        // cur / d < 2^64 because rem < d.
        let q = (cur / d) as u64;
        rem = cur % d;
        out[limb * 8..limb * 8 + 8].copy_from_slice(&q.to_be_bytes());
    }
    out
}

/// Whether `hash`, read as a big-endian number, is at most `target`.
pub fn meets_target(hash: &Hash, target: &[u8; 32]) -> bool {
    hash.0.as_slice() <= target.as_slice()
}

/// Whether `header` carries a valid proof of work for the difficulty in
/// its seal.
pub fn check_pow(header: &Header) -> Result<PowSeal, ProofOfWorkError> {
    let seal = PowSeal::decode(&header.engine_data)?;
    if seal.difficulty == 0 {
        return Err(ProofOfWorkError::ZeroDifficulty);
    }
    if !meets_target(&pow_hash(header), &target(seal.difficulty)) {
        return Err(ProofOfWorkError::AboveTarget(seal.difficulty));
    }
    Ok(seal)
}

/// The retarget rule's parameters (from genesis).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetargetRule {
    pub target_block_time_ms: u64,
    pub initial_difficulty: u64,
    pub min_difficulty: u64,
    /// Blocks per window; the difficulty changes only at heights that are
    /// multiples of it.
    pub window: u64,
}

impl RetargetRule {
    /// The difficulty of the block at `height` (counted from the chain's
    /// proof-of-work base: genesis, or a switch) whose parent has difficulty
    /// `parent_difficulty`. At a window boundary, `span` is the number of
    /// block intervals measured and the time they took (from the block
    /// `window` blocks before the parent, or genesis, to the parent); the
    /// difficulty scales by expected / actual time, the actual time clamped
    /// to [expected / 4, expected × 4], and never goes below the minimum.
    pub fn next(&self, height: u64, parent_difficulty: u64, span: Option<(u64, u64)>) -> u64 {
        let window = self.window.max(1);
        let Some((intervals, actual)) =
            span.filter(|(i, _)| height % window == 0 && height > 0 && *i > 0)
        else {
            return parent_difficulty.max(self.min_difficulty);
        };
        let expected = u128::from(intervals) * u128::from(self.target_block_time_ms.max(1));
        let actual = u128::from(actual).clamp(expected / 4, expected * 4).max(1);
        let next = u128::from(parent_difficulty) * expected / actual;
        u64::try_from(next)
            .unwrap_or(u64::MAX)
            .max(self.min_difficulty)
    }
}

/// Searches nonces `start, start+1, …` (at most `tries` of them) for one
/// that puts `header` under its seal's target; returns the nonce and how
/// many hashes it took. The header is encoded once: the nonce is its last
/// 8 bytes.
pub fn search_nonce(header: &Header, start: u64, tries: u64) -> Option<(u64, u64)> {
    let seal = PowSeal::decode(&header.engine_data).ok()?;
    let target = target(seal.difficulty);
    let mut bytes = codec::encode(header);
    let at = bytes.len().checked_sub(8)?;
    for i in 0..tries {
        let nonce = start.wrapping_add(i);
        bytes[at..].copy_from_slice(&nonce.to_le_bytes());
        let once = Hash::digest(&bytes);
        if meets_target(&Hash::digest(once.as_ref()), &target) {
            return Some((nonce, i + 1));
        }
    }
    None
}

/// `header` with `nonce` in its seal.
pub fn with_nonce(header: &Header, nonce: u64) -> Option<Header> {
    let mut seal = PowSeal::decode(&header.engine_data).ok()?;
    seal.nonce = nonce;
    let mut h = header.clone();
    h.engine_data = seal.encode();
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_chain::Address;

    fn header(difficulty: u64) -> Header {
        Header {
            parent: Hash::digest(b"parent"),
            height: 5,
            timestamp_ms: 1_700_000_000_000,
            tx_root: Hash::ZERO,
            state_root: Hash::digest(b"state"),
            proposer: Address::ZERO,
            config: Hash::ZERO,
            engine_data: PowSeal {
                difficulty,
                nonce: 0,
            }
            .encode(),
        }
    }

    #[test]
    fn targets_shrink_with_difficulty() {
        assert_eq!(target(1), [0xff; 32]);
        let t2 = target(2);
        assert_eq!(t2[0], 0x7f);
        assert!(t2[1..].iter().all(|b| *b == 0xff));
        let t256 = target(256);
        assert_eq!(t256[0], 0);
        assert_eq!(t256[1], 0xff);
        assert!(target(1000) < target(999));
    }

    #[test]
    fn a_found_nonce_passes_the_check_and_the_nonce_is_the_last_bytes() {
        let h = header(500);
        let (nonce, tries) = search_nonce(&h, 0, 1_000_000).expect("found");
        assert!(tries >= 1);
        let sealed = with_nonce(&h, nonce).expect("seal");
        assert_eq!(check_pow(&sealed).map(|s| s.nonce), Ok(nonce));
        // The search's in-place rewrite hashes exactly the sealed header.
        let bytes = codec::encode(&sealed);
        assert_eq!(bytes[bytes.len() - 8..], nonce.to_le_bytes());
        // Any other field change breaks the proof (almost surely).
        let mut other = sealed.clone();
        other.height += 1;
        let broken = (0..20).any(|i| {
            other.timestamp_ms += i;
            check_pow(&other).is_err()
        });
        assert!(broken);
    }

    #[test]
    fn difficulty_in_the_seal_is_what_is_checked() {
        let h = header(1_000_000);
        assert!(check_pow(&h).is_err() || pow_hash(&h).0[0] < 0x01);
        assert!(check_pow(&header(0)).is_err());
        let mut bad = header(1);
        bad.engine_data = vec![1, 2, 3];
        assert!(check_pow(&bad).is_err());
    }

    #[test]
    fn retarget_follows_the_window_and_clamps_to_four_times() {
        let rule = RetargetRule {
            target_block_time_ms: 1000,
            initial_difficulty: 100,
            min_difficulty: 10,
            window: 10,
        };
        // Not a boundary: unchanged.
        assert_eq!(rule.next(15, 400, Some((10, 1))), 400);
        assert_eq!(rule.next(15, 400, None), 400);
        // On time: unchanged; twice too fast: doubled.
        assert_eq!(rule.next(20, 400, Some((10, 10_000))), 400);
        assert_eq!(rule.next(20, 400, Some((10, 5_000))), 800);
        // The first window measures from genesis: 9 intervals.
        assert_eq!(rule.next(10, 400, Some((9, 4_500))), 800);
        // Far too fast or slow: clamped to 4x.
        assert_eq!(rule.next(20, 400, Some((10, 1))), 1600);
        assert_eq!(rule.next(20, 400, Some((10, 1_000_000))), 100);
        // Never under the minimum.
        assert_eq!(rule.next(20, 20, Some((10, 1_000_000))), 10);
        assert_eq!(rule.next(3, 1, None), 10);
    }
}
