//! Key files: one ed25519 secret key as a small JSON document.
//!
//! ```json
//! {"type": "ed25519", "secret_key": "<64 hex>", "public_key": "<64 hex>", "address": "cairn1…"}
//! ```
//! The public key and address are there for people to read; on load they must
//! match the secret key. Files are created with mode 0600 and never
//! overwritten.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Address, PublicKey, SecretKey};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileJson {
    #[serde(rename = "type")]
    kind: String,
    secret_key: String,
    public_key: PublicKey,
    address: Address,
}

/// A key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Writes `key` to a new file at `path` with mode 0600. Refuses to overwrite.
pub fn write_key_file(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    let doc = KeyFileJson {
        kind: "ed25519".into(),
        secret_key: hex::encode(key.seed()),
        public_key: key.public_key(),
        address: key.address(),
    };
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| KeyFileError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    let err = |source| KeyFileError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(err)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

/// The largest key file read (a written one is about 250 bytes).
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Reads a key file written by [`write_key_file`]. Refuses a file that
/// others than its owner may read or write (as ssh does), one larger than
/// [`MAX_KEY_FILE_BYTES`], and anything but a regular file.
pub fn read_key_file(path: &Path) -> Result<SecretKey, KeyFileError> {
    let read_err = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |reason: String| KeyFileError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(invalid(format!(
            "{} bytes; a key file holds at most {MAX_KEY_FILE_BYTES}",
            meta.len()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(invalid(format!(
                "mode {mode:o} lets other users read or change the secret; \
                 `chmod 600 {}` it",
                path.display()
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let doc: KeyFileJson = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if doc.kind != "ed25519" {
        return Err(invalid(format!("type {:?} is not \"ed25519\"", doc.kind)));
    }
    let mut seed = [0u8; 32];
    hex::decode_to_slice(doc.secret_key.trim(), &mut seed)
        .map_err(|e| invalid(format!("secret_key: expected 64 hex characters: {e}")))?;
    let key = SecretKey::from_seed(seed);
    if key.public_key() != doc.public_key {
        return Err(invalid("public_key does not match secret_key".into()));
    }
    if key.address() != doc.address {
        return Err(invalid("address does not match secret_key".into()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        let key = SecretKey::from_label("k");
        write_key_file(&path, &key).expect("write");
        assert_eq!(read_key_file(&path).expect("read").seed(), key.seed());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            write_key_file(&path, &key),
            Err(KeyFileError::Write { .. })
        ));
    }

    #[test]
    fn refuses_mismatched_or_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        write_key_file(&path, &SecretKey::from_label("k")).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let other = SecretKey::from_label("other").public_key().to_hex();
        let mine = SecretKey::from_label("k").public_key().to_hex();
        std::fs::write(&path, text.replace(&mine, &other)).expect("write");
        assert!(matches!(
            read_key_file(&path),
            Err(KeyFileError::Invalid { .. })
        ));
        assert!(matches!(
            read_key_file(&dir.path().join("missing")),
            Err(KeyFileError::Read { .. })
        ));
    }

    fn invalid_reason(path: &Path) -> String {
        match read_key_file(path) {
            Err(KeyFileError::Invalid { reason, .. }) => reason,
            other => panic!("expected an invalid key file, got {other:?}"),
        }
    }

    #[test]
    #[cfg(unix)]
    fn refuses_files_others_can_read_and_oversized_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        write_key_file(&path, &SecretKey::from_label("k")).expect("write");
        for mode in [0o644, 0o640, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let reason = invalid_reason(&path);
            assert!(reason.contains(&format!("mode {mode:o}")), "{reason}");
            assert!(reason.contains("chmod 600"), "{reason}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        assert!(
            read_key_file(&path).is_ok(),
            "read-only by the owner is fine"
        );

        let big = dir.path().join("big.key");
        std::fs::write(&big, vec![b' '; 10_000]).expect("write");
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(invalid_reason(&big).contains("10000 bytes"));
        assert!(invalid_reason(dir.path()).contains("not a regular file"));
    }
}
