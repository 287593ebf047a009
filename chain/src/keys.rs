//! ed25519 keys and signatures.
//!
//! Single signatures are checked with `verify_strict` (small-order keys and
//! non-canonical encodings refused). Batches are checked with the dalek batch
//! equation after refusing weak keys; when a batch fails, each item is checked
//! alone so the caller learns which one is bad.

use foldhash::{HashMap, HashMapExt};
use std::sync::{Mutex, OnceLock};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand::{CryptoRng, RngCore};

use crate::{Address, Hash};

crate::bytes::fixed_bytes!(
    /// An ed25519 public key (32 bytes, compressed Edwards point).
    PublicKey,
    32,
    "public key"
);

crate::bytes::fixed_bytes!(
    /// An ed25519 signature (64 bytes).
    Signature,
    64,
    "signature"
);

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key bytes are not a valid, non-weak curve point.
    #[error("public key is not a valid ed25519 point")]
    BadPublicKey,
    /// The signature does not match the message and key.
    #[error("signature does not verify")]
    Mismatch,
}

/// Most decompressed public keys kept (about 200 bytes each).
const KEY_CACHE_MAX: usize = 65_536;

/// Valid public keys already decompressed, by their bytes. Decompressing a
/// point (a field exponentiation) costs about a third of a signature's share
/// of a batch verification, and the same accounts sign again and again.
/// Emptied when full (cheap, and bounded whatever the key stream).
fn key_cache() -> &'static Mutex<HashMap<[u8; 32], VerifyingKey>> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

impl PublicKey {
    fn decompress(&self) -> Result<VerifyingKey, SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadPublicKey)?;
        if key.is_weak() {
            return Err(SignatureError::BadPublicKey);
        }
        Ok(key)
    }

    /// The decompressed key, from the cache if it is there.
    fn cached_key(
        &self,
        cache: &mut HashMap<[u8; 32], VerifyingKey>,
    ) -> Result<VerifyingKey, SignatureError> {
        if let Some(k) = cache.get(&self.0) {
            return Ok(*k);
        }
        let key = self.decompress()?;
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(self.0, key);
        Ok(key)
    }

    fn verifying_key(&self) -> Result<VerifyingKey, SignatureError> {
        match key_cache().lock() {
            Ok(mut cache) => self.cached_key(&mut cache),
            Err(_) => self.decompress(),
        }
    }

    /// Checks that the bytes are a usable ed25519 public key.
    pub fn validate(&self) -> Result<(), SignatureError> {
        self.verifying_key().map(|_| ())
    }

    /// Verifies `signature` over `message` (strict ed25519).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        let key = self.verifying_key()?;
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &sig)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// The account address controlled by this key.
    pub fn address(&self) -> Address {
        Address::from_public_key(self)
    }
}

/// Verifies many signatures at once. On failure, returns the index of the
/// first item that does not verify on its own.
pub fn verify_batch(
    items: &[(&[u8], PublicKey, Signature)],
) -> Result<(), (usize, SignatureError)> {
    if items.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(items.len());
    {
        // One lock for the whole batch.
        let mut guard = key_cache().lock();
        for (i, (_, pk, _)) in items.iter().enumerate() {
            let key = match guard.as_deref_mut() {
                Ok(cache) => pk.cached_key(cache),
                Err(_) => pk.decompress(),
            };
            keys.push(key.map_err(|e| (i, e))?);
        }
    }
    let messages: Vec<&[u8]> = items.iter().map(|(m, _, _)| *m).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(&s.0))
        .collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
        return Ok(());
    }
    for (i, (m, pk, s)) in items.iter().enumerate() {
        pk.verify(m, s).map_err(|e| (i, e))?;
    }
    // The batch equation failed yet every signature verifies alone: treat the
    // batch as invalid at its first item rather than accept it.
    Err((0, SignatureError::Mismatch))
}

/// An ed25519 secret key. Its `Debug` form never shows the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public={})", self.public_key())
    }
}

impl SecretKey {
    /// A fresh key from a cryptographic RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(seed)
    }

    /// The key whose 32-byte ed25519 seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed (the secret).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The account address of this key.
    pub fn address(&self) -> Address {
        self.public_key().address()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    /// A deterministic key for tests and benchmarks: the seed is the hash of
    /// `label`. Never use for real funds.
    pub fn from_label(label: &str) -> Self {
        Self::from_seed(Hash::digest(label.as_bytes()).0)
    }

    /// Benchmark account `index` of the set derived from `seed` (the
    /// genesis tool funds them, the load generator signs with them). Never
    /// use for real funds: anyone who knows the seed has the keys.
    pub fn bench_account(seed: u64, index: u32) -> Self {
        Self::from_seed(
            Hash::digest_parts(&[
                b"cairn-bench-account",
                &seed.to_le_bytes(),
                &index.to_le_bytes(),
            ])
            .0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = SecretKey::from_label("a");
        let sig = key.sign(b"hello");
        assert_eq!(key.public_key().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            key.public_key().verify(b"hellp", &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn batch_names_the_bad_item() {
        let keys: Vec<SecretKey> = (0..5)
            .map(|i| SecretKey::from_label(&i.to_string()))
            .collect();
        let msgs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        let mut items: Vec<(&[u8], PublicKey, Signature)> = keys
            .iter()
            .zip(&msgs)
            .map(|(k, m)| (m.as_slice(), k.public_key(), k.sign(m)))
            .collect();
        assert_eq!(verify_batch(&items), Ok(()));
        items[3].2 .0[5] ^= 1;
        assert_eq!(verify_batch(&items), Err((3, SignatureError::Mismatch)));
    }

    #[test]
    fn weak_and_invalid_keys_are_refused() {
        // The identity point is a small-order (weak) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey(identity).validate(),
            Err(SignatureError::BadPublicKey)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = SecretKey::from_label("secret");
        let text = format!("{key:?}");
        assert!(!text.contains(&hex::encode(key.seed())));
    }
}
