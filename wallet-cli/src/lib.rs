//! The wallet's library: the load generator (`cairn-wallet bench`), which
//! the chaos runner drives too, and what both ask of a node.

use anyhow::{Context, Result};

pub mod bench;

/// The genesis hash a node's `/status` reports: transactions are signed for
/// that network.
pub fn genesis_hash(status: &serde_json::Value) -> Result<cairn_chain::Hash> {
    let text = status["genesis_hash"]
        .as_str()
        .context("the node did not say its genesis hash")?;
    cairn_chain::Hash::from_hex(text).context("the node sent a malformed genesis hash")
}
