//! SHA-256 hashes.

use sha2::{Digest, Sha256};

crate::bytes::fixed_bytes!(
    /// A 32-byte SHA-256 digest: block, transaction and genesis identifiers,
    /// Merkle nodes.
    Hash,
    32,
    "hash"
);

impl Hash {
    /// The all-zero hash (the parent of the genesis block, the empty root).
    pub const ZERO: Hash = Hash([0u8; 32]);

    /// SHA-256 of `data`.
    pub fn digest(data: &[u8]) -> Hash {
        Hash(Sha256::digest(data).into())
    }

    /// SHA-256 of the concatenation of `parts`, without allocating.
    pub fn digest_parts(parts: &[&[u8]]) -> Hash {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }
}
