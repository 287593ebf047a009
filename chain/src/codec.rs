//! The canonical binary encoding: the one place that knows it is bincode.
//!
//! Everything that is hashed, signed, stored or sent between peers goes
//! through [`encode`] and [`decode`]. The format is bincode 2 with fixed-width
//! little-endian integers, so every value has exactly one encoding. Decoding
//! refuses inputs over a size limit and inputs with bytes left over, and never
//! panics on arbitrary input. Moving to another format-compatible crate means
//! changing this file only.

use serde::{de::DeserializeOwned, Serialize};

/// The largest input [`decode`] accepts, whatever the caller's own limit.
pub const MAX_DECODE_BYTES: usize = 64 * 1024 * 1024;

/// Why a byte string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the limit for this kind of message.
    #[error("input of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The input is not a valid encoding of the expected type.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The input decodes, but bytes are left over after the value.
    #[error("{extra} trailing bytes after the encoded value")]
    TrailingBytes { extra: usize },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_DECODE_BYTES>()
}

/// Encodes `value` canonically.
///
/// The crate's types serialise to plain structs, tuples, sequences with a
/// known length and integers, which bincode always encodes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config())
        .expect("bincode encodes every type of this crate (sized sequences, no maps)")
}

/// The length of [`encode`]'s output for `value`, without building it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(value, &mut size, config())
        .expect("bincode encodes every type of this crate (sized sequences, no maps)");
    size.bytes_written
}

/// Decodes one `T` that must fill `bytes` exactly, refusing inputs longer
/// than `max` bytes (and longer than [`MAX_DECODE_BYTES`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    let max = max.min(MAX_DECODE_BYTES);
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes {
            extra: bytes.len() - read,
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_fixed_width_little_endian() {
        assert_eq!(encode(&1u64), vec![1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(&(7u8, 0x0102u16)), vec![7, 2, 1]);
    }

    #[test]
    fn refuses_trailing_bytes() {
        let mut bytes = encode(&5u32);
        bytes.push(0);
        assert_eq!(
            decode::<u32>(&bytes, 100),
            Err(CodecError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn refuses_oversized_input_before_decoding() {
        let bytes = vec![0u8; 101];
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, 100),
            Err(CodecError::TooLarge { len: 101, max: 100 })
        ));
    }

    #[test]
    fn huge_claimed_length_is_an_error_not_an_allocation() {
        // A Vec<u8> claiming u64::MAX elements, followed by nothing.
        let bytes = u64::MAX.to_le_bytes();
        assert!(matches!(
            decode::<Vec<u8>>(&bytes, 100),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_input_is_malformed() {
        assert!(matches!(
            decode::<u64>(&[1, 2, 3], 100),
            Err(CodecError::Malformed(_))
        ));
    }
}
