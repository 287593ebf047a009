//! Account addresses.
//!
//! An address is the first 20 bytes of `SHA-256("cairn-address" || public
//! key)`. Its text form is Bech32m (BIP-350) with the human-readable prefix
//! `cairn`, e.g. `cairn1…`: the checksum detects any error in up to four
//! characters, and a mixed-case or wrong-prefix string is refused.

use bech32::{primitives::decode::CheckedHrpstring, Bech32m, Hrp};

use crate::{error::ParseError, Hash, PublicKey};

/// The human-readable part of every address.
pub const ADDRESS_HRP: Hrp = Hrp::parse_unchecked("cairn");

/// A 20-byte account address. See the module docs for the text form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The address of an all-zero key hash: used where no account applies
    /// (the genesis block's proposer).
    pub const ZERO: Address = Address([0u8; 20]);

    /// The address controlled by `key`.
    pub fn from_public_key(key: &PublicKey) -> Self {
        let h = Hash::digest_parts(&[b"cairn-address", key.as_ref()]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&h.0[..20]);
        Address(out)
    }

    /// The Bech32m text form.
    pub fn to_bech32(&self) -> String {
        bech32::encode::<Bech32m>(ADDRESS_HRP, &self.0)
            .expect("20 bytes are far below the Bech32m length limit")
    }

    /// Parses the Bech32m text form, naming what is wrong on failure.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let text = text.trim();
        let checked = CheckedHrpstring::new::<Bech32m>(text).map_err(|e| {
            ParseError::new(
                "address",
                format!("{text:?} is not a valid cairn1… address ({e})"),
            )
        })?;
        if checked.hrp() != ADDRESS_HRP {
            return Err(ParseError::new(
                "address",
                format!(
                    "prefix {:?} is not \"{}\"",
                    checked.hrp().as_str(),
                    ADDRESS_HRP.as_str()
                ),
            ));
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        let arr: [u8; 20] = bytes.as_slice().try_into().map_err(|_| {
            ParseError::new(
                "address",
                format!("expected 20 bytes of data, got {}", bytes.len()),
            )
        })?;
        Ok(Address(arr))
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Address({})", self.to_bech32())
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_bech32())
    }
}

impl std::str::FromStr for Address {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

impl serde::Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_bech32())
        } else {
            crate::bytes::serialize_array(&self.0, s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            Address::parse(&text).map_err(serde::de::Error::custom)
        } else {
            crate::bytes::deserialize_array::<D, 20>(d).map(Address)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    #[test]
    fn round_trips_through_text() {
        let a = SecretKey::from_label("x").address();
        let text = a.to_bech32();
        assert!(text.starts_with("cairn1"));
        assert_eq!(Address::parse(&text), Ok(a));
        assert_eq!(Address::parse(&text.to_uppercase()), Ok(a));
    }

    #[test]
    fn detects_every_single_character_typo() {
        let text = SecretKey::from_label("y").address().to_bech32();
        let charset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
        for pos in "cairn1".len()..text.len() {
            for c in charset.chars() {
                let mut typo: Vec<char> = text.chars().collect();
                if typo[pos] == c {
                    continue;
                }
                typo[pos] = c;
                let typo: String = typo.into_iter().collect();
                assert!(Address::parse(&typo).is_err(), "accepted typo {typo}");
            }
        }
    }

    #[test]
    fn refuses_other_prefixes_and_garbage() {
        let a = SecretKey::from_label("z").address();
        let other = bech32::encode::<Bech32m>(Hrp::parse_unchecked("bc"), &a.0).expect("encode");
        assert!(Address::parse(&other).is_err());
        assert!(Address::parse("").is_err());
        assert!(Address::parse("cairn1").is_err());
        assert!(Address::parse("0xdeadbeef").is_err());
    }
}
