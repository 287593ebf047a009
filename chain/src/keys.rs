//! ed25519 keys and signatures.
//!
//! One rule decides whether a signature is valid, whether it is checked alone
//! or in a batch: ZIP-215 (the cofactored equation `[8][s]B = [8]R + [8][k]A`,
//! `s` canonical, non-canonical encodings of `A` and `R` accepted), as
//! implemented by `ed25519-zebra`. Under it, a batch verifies if and only if
//! every signature in it verifies alone, so two nodes that check the same
//! block in different batches always agree. On top of it, one extra rule
//! applies on both paths alike: a public key of small order is refused (anyone
//! could sign for it). Signing and key handling stay with `ed25519-dalek`;
//! every signature it makes is valid under ZIP-215.

use foldhash::{HashMap, HashMapExt};
use std::sync::{Mutex, OnceLock};

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signer, SigningKey};
use ed25519_zebra::{batch, VerificationKey, VerificationKeyBytes};
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
    /// The public key bytes are not a curve point, or a point of small order.
    #[error("public key is not a valid ed25519 point")]
    BadPublicKey,
    /// The signature does not match the message and key.
    #[error("signature does not verify")]
    Mismatch,
}

/// Most public keys remembered as checked (about 200 bytes each).
const KEY_CACHE_MAX: usize = 65_536;

/// Public keys already found to be points of large order, decompressed.
/// Decompressing a point costs a field exponentiation, and the same
/// accounts sign again and again. Emptied when full (cheap, and bounded
/// whatever the key stream).
fn checked_keys() -> &'static Mutex<HashMap<[u8; 32], VerificationKey>> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], VerificationKey>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

impl PublicKey {
    /// Decodes the point (non-canonical encodings accepted, as ZIP-215 says)
    /// and refuses points of small order.
    fn check_point(&self) -> Result<VerificationKey, SignatureError> {
        match CompressedEdwardsY(self.0).decompress() {
            Some(point) if !point.is_small_order() => {
                VerificationKey::try_from(self.0).map_err(|_| SignatureError::BadPublicKey)
            }
            _ => Err(SignatureError::BadPublicKey),
        }
    }

    fn check_cached(
        &self,
        cache: &mut HashMap<[u8; 32], VerificationKey>,
    ) -> Result<VerificationKey, SignatureError> {
        if let Some(key) = cache.get(&self.0) {
            return Ok(*key);
        }
        let key = self.check_point()?;
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(self.0, key);
        Ok(key)
    }

    fn verification_key(&self) -> Result<VerificationKey, SignatureError> {
        match checked_keys().lock() {
            Ok(mut cache) => self.check_cached(&mut cache),
            Err(_) => self.check_point(),
        }
    }

    /// Checks that the bytes are a usable ed25519 public key: a curve point
    /// not of small order.
    pub fn validate(&self) -> Result<(), SignatureError> {
        self.verification_key().map(|_| ())
    }

    /// Verifies `signature` over `message` (ZIP-215; small-order keys
    /// refused).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        self.verification_key()?
            .verify(&ed25519_zebra::Signature::from_bytes(&signature.0), message)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// The account address controlled by this key.
    pub fn address(&self) -> Address {
        Address::from_public_key(self)
    }
}

/// Verifies many signatures at once, by the same rule as
/// [`PublicKey::verify`]: the result is `Ok` exactly when every item verifies
/// alone. On failure, returns the index of the first item that does not.
pub fn verify_batch(
    items: &[(&[u8], PublicKey, Signature)],
) -> Result<(), (usize, SignatureError)> {
    if items.is_empty() {
        return Ok(());
    }
    {
        // One lock for the whole batch.
        let mut guard = checked_keys().lock();
        for (i, (_, pk, _)) in items.iter().enumerate() {
            let checked = match guard.as_deref_mut() {
                Ok(cache) => pk.check_cached(cache),
                Err(_) => pk.check_point(),
            };
            checked.map_err(|e| (i, e))?;
        }
    }
    let mut verifier = batch::Verifier::new();
    for (m, pk, s) in items {
        verifier.queue((
            VerificationKeyBytes::from(pk.0),
            ed25519_zebra::Signature::from_bytes(&s.0),
            *m,
        ));
    }
    if verifier.verify(rand::thread_rng()).is_ok() {
        return Ok(());
    }
    // Under ZIP-215 a failed batch has at least one item that fails alone;
    // find the first.
    for (i, (m, pk, s)) in items.iter().enumerate() {
        pk.verify(m, s).map_err(|e| (i, e))?;
    }
    Ok(())
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

    /// Edge cases of ed25519 validation (after ZIP-215's test vectors and
    /// "Taming the many EdDSAs"), each checked alone and in a batch among
    /// good signatures: the two must always give the same answer.
    mod edge_cases {
        use super::*;
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
        use curve25519_dalek::edwards::EdwardsPoint;
        use curve25519_dalek::scalar::Scalar;
        use proptest::prelude::*;
        use sha2::{Digest, Sha512};

        /// A key pair by its secret scalar (not derived from a seed: these
        /// tests make signatures dalek's signer would never make).
        struct RawKey {
            a: Scalar,
            public: [u8; 32],
        }

        fn raw_key(label: &str) -> RawKey {
            let a = Scalar::from_bytes_mod_order(Hash::digest(label.as_bytes()).0);
            RawKey {
                a,
                public: (B * a).compress().to_bytes(),
            }
        }

        fn challenge(r: &[u8; 32], a: &[u8; 32], m: &[u8]) -> Scalar {
            let mut h = Sha512::new();
            h.update(r);
            h.update(a);
            h.update(m);
            Scalar::from_bytes_mod_order_wide(&h.finalize().into())
        }

        fn signature(r: [u8; 32], s: [u8; 32]) -> Signature {
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&r);
            bytes[32..].copy_from_slice(&s);
            Signature(bytes)
        }

        /// A signature whose R is `r·B + torsion`: valid under the cofactored
        /// equation, refused by the cofactorless one.
        fn torsion_signature(key: &RawKey, m: &[u8], torsion: &EdwardsPoint) -> Signature {
            let r = Scalar::from_bytes_mod_order(Hash::digest(m).0);
            let big_r = (B * r + torsion).compress().to_bytes();
            let k = challenge(&big_r, &key.public, m);
            signature(big_r, (r + k * key.a).to_bytes())
        }

        /// A signature whose R is the given encoding of a small-order point
        /// and s = k·a: valid under the cofactored equation.
        fn small_r_signature(key: &RawKey, m: &[u8], r_bytes: [u8; 32]) -> Signature {
            let k = challenge(&r_bytes, &key.public, m);
            signature(r_bytes, (k * key.a).to_bytes())
        }

        /// Encodings of small-order points, canonical and not: y = 1 and
        /// y = -1 with the sign bit set, y = p + 1 (the identity again) and
        /// y = p (a point of order 4), each with both sign bits.
        fn small_order_encodings() -> Vec<[u8; 32]> {
            let mut out: Vec<[u8; 32]> = EIGHT_TORSION
                .iter()
                .map(|p| p.compress().to_bytes())
                .collect();
            let mut one_negative = [0u8; 32];
            one_negative[0] = 1;
            one_negative[31] = 0x80;
            out.push(one_negative);
            let minus_one = (EIGHT_TORSION[4]).compress().to_bytes();
            let mut minus_one_negative = minus_one;
            minus_one_negative[31] |= 0x80;
            out.push(minus_one_negative);
            for low in [0xee_u8, 0xed] {
                let mut y = [0xff_u8; 32];
                y[0] = low;
                y[31] = 0x7f;
                out.push(y);
                y[31] = 0xff;
                out.push(y);
            }
            out
        }

        /// Good signatures by ordinary keys, to batch the edge cases among.
        fn good(n: usize) -> Vec<(Vec<u8>, PublicKey, Signature)> {
            (0..n)
                .map(|i| {
                    let k = SecretKey::from_label(&format!("good {i}"));
                    let m = format!("message {i}").into_bytes();
                    let s = k.sign(&m);
                    (m, k.public_key(), s)
                })
                .collect()
        }

        /// The answer alone, and the answer in a batch of good signatures
        /// with the case at `position`.
        fn alone_and_batched(
            m: &[u8],
            key: PublicKey,
            sig: Signature,
            position: usize,
        ) -> (
            Result<(), SignatureError>,
            Result<(), (usize, SignatureError)>,
        ) {
            let alone = key.verify(m, &sig);
            let others = good(6);
            let mut items: Vec<(&[u8], PublicKey, Signature)> = others
                .iter()
                .map(|(m, k, s)| (m.as_slice(), *k, *s))
                .collect();
            items.insert(position, (m, key, sig));
            (alone, verify_batch(&items))
        }

        #[test]
        fn vectors_are_what_they_claim() {
            for enc in small_order_encodings() {
                let point = CompressedEdwardsY(enc).decompress();
                assert!(
                    point.is_some_and(|p| p.is_small_order()),
                    "{} is not a small-order point",
                    hex::encode(enc)
                );
            }
            let key = raw_key("torsion");
            let sig = torsion_signature(&key, b"m", &EIGHT_TORSION[1]);
            // The cofactorless (strict) rule refuses what ZIP-215 accepts:
            // the disagreement a batch could hide.
            let dalek = ed25519_dalek::VerifyingKey::from_bytes(&key.public).expect("key");
            assert!(dalek
                .verify_strict(b"m", &ed25519_dalek::Signature::from_bytes(&sig.0))
                .is_err());
        }

        #[test]
        fn small_order_keys_are_refused_alone_and_batched() {
            for enc in small_order_encodings() {
                let key = PublicKey(enc);
                // s = 0 and R = the identity satisfy the cofactored equation
                // for any small-order key: refused by the key rule alone.
                let mut identity = [0u8; 32];
                identity[0] = 1;
                let sig = signature(identity, [0u8; 32]);
                let (alone, batched) = alone_and_batched(b"any", key, sig, 2);
                assert_eq!(
                    alone,
                    Err(SignatureError::BadPublicKey),
                    "{}",
                    hex::encode(enc)
                );
                assert_eq!(batched, Err((2, SignatureError::BadPublicKey)));
            }
        }

        #[test]
        fn points_off_the_curve_are_refused() {
            // y = 2 is not the y of any point of the curve.
            let mut y = [0u8; 32];
            y[0] = 2;
            assert!(CompressedEdwardsY(y).decompress().is_none());
            let key = SecretKey::from_label("k");
            let (alone, batched) = alone_and_batched(b"m", PublicKey(y), key.sign(b"m"), 0);
            assert_eq!(alone, Err(SignatureError::BadPublicKey));
            assert_eq!(batched, Err((0, SignatureError::BadPublicKey)));
        }

        #[test]
        fn torsion_in_r_is_accepted_alone_and_batched() {
            let key = raw_key("torsion");
            for (i, t) in EIGHT_TORSION.iter().enumerate() {
                let m = format!("torsion {i}").into_bytes();
                let sig = torsion_signature(&key, &m, t);
                let (alone, batched) = alone_and_batched(&m, PublicKey(key.public), sig, i % 7);
                assert_eq!(alone, Ok(()), "torsion point {i}");
                assert_eq!(batched, Ok(()), "torsion point {i}");
            }
        }

        #[test]
        fn non_canonical_r_is_accepted_alone_and_batched() {
            let key = raw_key("non-canonical r");
            for (i, enc) in small_order_encodings().into_iter().enumerate() {
                let m = format!("r {i}").into_bytes();
                let sig = small_r_signature(&key, &m, enc);
                let (alone, batched) = alone_and_batched(&m, PublicKey(key.public), sig, 3);
                assert_eq!(alone, Ok(()), "R = {}", hex::encode(enc));
                assert_eq!(batched, Ok(()), "R = {}", hex::encode(enc));
            }
        }

        #[test]
        fn non_canonical_s_is_refused_alone_and_batched() {
            let key = SecretKey::from_label("s");
            let mut sig = key.sign(b"m");
            // s + l: the same scalar, not reduced.
            // l = 2^252 + 27742317777372353535851937790883648493.
            let l: [u8; 32] = [
                0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
                0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
            ];
            assert_eq!(Scalar::from_bytes_mod_order(l), Scalar::ZERO);
            let mut carry = 0u16;
            for (s_byte, l_byte) in sig.0[32..].iter_mut().zip(l) {
                let sum = u16::from(*s_byte) + u16::from(l_byte) + carry;
                *s_byte = sum as u8;
                carry = sum >> 8;
            }
            assert_eq!(carry, 0);
            let (alone, batched) = alone_and_batched(b"m", key.public_key(), sig, 5);
            assert_eq!(alone, Err(SignatureError::Mismatch));
            assert_eq!(batched, Err((5, SignatureError::Mismatch)));
        }

        proptest! {
            /// Any mix of good, torsion and broken signatures: the batch is
            /// good exactly when every item is, and names the first bad one.
            #[test]
            fn batch_agrees_with_each_alone(kinds in proptest::collection::vec(0u8..4, 1..24)) {
                let key = raw_key("mix");
                let messages: Vec<Vec<u8>> =
                    (0..kinds.len()).map(|i| format!("mix {i}").into_bytes()).collect();
                let items: Vec<(&[u8], PublicKey, Signature)> = kinds
                    .iter()
                    .zip(&messages)
                    .enumerate()
                    .map(|(i, (kind, m))| {
                        let sig = match kind {
                            0 => {
                                let k = SecretKey::from_label(&format!("mix {i}"));
                                return (m.as_slice(), k.public_key(), k.sign(m));
                            }
                            1 => torsion_signature(&key, m, &EIGHT_TORSION[i % 8]),
                            2 => small_r_signature(&key, m, small_order_encodings()[i % 12]),
                            _ => {
                                let mut s = torsion_signature(&key, m, &EIGHT_TORSION[3]);
                                s.0[40] ^= 4;
                                s
                            }
                        };
                        (m.as_slice(), PublicKey(key.public), sig)
                    })
                    .collect();
                let first_bad = items.iter().position(|(m, k, s)| k.verify(m, s).is_err());
                let batched = verify_batch(&items);
                match first_bad {
                    None => prop_assert_eq!(batched, Ok(())),
                    Some(i) => prop_assert_eq!(batched.map_err(|(j, _)| j), Err(i)),
                }
                prop_assert_eq!(first_bad, kinds.iter().position(|k| *k == 3));
            }
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = SecretKey::from_label("secret");
        let text = format!("{key:?}");
        assert!(!text.contains(&hex::encode(key.seed())));
    }
}
