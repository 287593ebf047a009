//! Errors shared across the crate's modules.

/// A value given as text (hex, an address, a key) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct ParseError {
    /// What was being parsed ("address", "hash", ...).
    pub what: &'static str,
    /// Why it was refused.
    pub reason: String,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}
