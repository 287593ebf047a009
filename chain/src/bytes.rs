//! Fixed-size byte strings (hashes, keys, signatures) with one text form and
//! one binary form.
//!
//! In human-readable formats (JSON, TOML) they are lower-case hex strings; in
//! the canonical binary encoding they are their raw bytes, with no length
//! prefix (a serde tuple).

/// Defines a `Copy` newtype over `[u8; N]` with hex text, `Debug`, `Display`,
/// `FromStr` and the two serde forms described in the module docs.
macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr, $what:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Lower-case hex, no prefix.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// Parses hex (an optional `0x` prefix is accepted).
            pub fn from_hex(text: &str) -> Result<Self, $crate::error::ParseError> {
                let text = text.trim();
                let text = text.strip_prefix("0x").unwrap_or(text);
                let mut out = [0u8; $len];
                hex::decode_to_slice(text, &mut out).map_err(|e| {
                    $crate::error::ParseError::new(
                        $what,
                        format!("expected {} hex characters: {e}", 2 * $len),
                    )
                })?;
                Ok(Self(out))
            }

            /// Builds the value from a slice of exactly the right length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::error::ParseError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| {
                    $crate::error::ParseError::new(
                        $what,
                        format!("expected {} bytes, got {}", $len, bytes.len()),
                    )
                })?;
                Ok(Self(arr))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self([0u8; $len])
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::from_hex(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    $crate::bytes::serialize_array(&self.0, s)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    Self::from_hex(&text).map_err(serde::de::Error::custom)
                } else {
                    $crate::bytes::deserialize_array::<D, $len>(d).map(Self)
                }
            }
        }
    };
}
pub(crate) use fixed_bytes;

/// Serialises `N` bytes as a tuple: raw bytes in bincode, no length prefix.
pub(crate) fn serialize_array<S: serde::Serializer, const N: usize>(
    bytes: &[u8; N],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeTuple;
    let mut t = s.serialize_tuple(N)?;
    for b in bytes {
        t.serialize_element(b)?;
    }
    t.end()
}

/// The inverse of [`serialize_array`].
pub(crate) fn deserialize_array<'de, D: serde::Deserializer<'de>, const N: usize>(
    d: D,
) -> Result<[u8; N], D::Error> {
    struct Visitor<const N: usize>;
    impl<'de, const N: usize> serde::de::Visitor<'de> for Visitor<N> {
        type Value = [u8; N];
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{N} bytes")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; N], A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
            }
            Ok(out)
        }
    }
    d.deserialize_tuple(N, Visitor::<N>)
}
