//! The genesis file: everything that defines a network.
//!
//! ```json
//! {
//!   "chain_id": "cairn-devnet",
//!   "genesis_time_ms": 1767225600000,
//!   "block_reward": 50,
//!   "min_fee": 1,
//!   "consensus": { "engine": "raft", "block_interval_ms": 1000, ... },
//!   "validators": [ { "name": "node0", "public_key": "<hex>", "p2p_address": "/ip4/127.0.0.1/tcp/26600/p2p/12D3…" } ],
//!   "allocations": [ { "address": "cairn1…", "balance": 1000000000 } ]
//! }
//! ```
//!
//! The *genesis hash* that identifies the network is the hash of the genesis
//! block, whose header commits to the hash of this whole configuration (in its
//! canonical encoding, so JSON whitespace and key order do not matter) and to
//! the state root of the allocations.

use std::collections::HashMap;
use std::path::Path;

use cairn_chain::{
    codec, genesis_block, genesis_state, Address, Block, ConfigSchedule, ExecutionParams, Hash,
    PublicKey, StateChanges,
};
use serde::{Deserialize, Serialize};

pub use schedule::{Segment, Upgrade};

/// The largest genesis file read.
const MAX_GENESIS_BYTES: u64 = 64 * 1024 * 1024;

/// A network's definition. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Network name; every transaction carries it.
    pub chain_id: String,
    /// Timestamp of the genesis block (ms since the Unix epoch).
    pub genesis_time_ms: u64,
    /// Minted to each block's proposer.
    #[serde(default)]
    pub block_reward: u64,
    /// The lowest fee a transaction may pay (0: transfers may be free, and
    /// anyone may fill mempools at no cost). Left out of the file and of the
    /// configuration hash when 0, so a genesis written before this field
    /// existed keeps its genesis hash.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_fee: u64,
    /// The consensus engine and its parameters.
    pub consensus: ConsensusConfig,
    /// The validator set (for proof-of-work: the initial peers).
    pub validators: Vec<Validator>,
    /// Initial balances.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// Changes of engine or validator set at later heights, in height
    /// order (see [`Upgrade`]). Not part of the genesis hash: appending one
    /// keeps the network's identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upgrades: Vec<Upgrade>,
}

/// The consensus engine and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "lowercase")]
pub enum ConsensusConfig {
    Raft(RaftParams),
    Pbft(PbftParams),
    Pow(PowParams),
}

/// Engine names, as written in genesis and on command lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Raft,
    Pbft,
    Pow,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Raft => "raft",
            EngineKind::Pbft => "pbft",
            EngineKind::Pow => "pow",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raft" => Ok(EngineKind::Raft),
            "pbft" => Ok(EngineKind::Pbft),
            "pow" => Ok(EngineKind::Pow),
            other => Err(format!(
                "unknown engine {other:?} (expected raft, pbft or pow)"
            )),
        }
    }
}

/// Raft parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftParams {
    /// The leader proposes a block this often while transactions wait.
    pub block_interval_ms: u64,
    /// Election timeouts are drawn from [min, 2·min).
    pub election_timeout_ms: u64,
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Also propose empty blocks when idle.
    pub empty_blocks: bool,
}

impl Default for RaftParams {
    fn default() -> Self {
        Self {
            block_interval_ms: 100,
            election_timeout_ms: 1500,
            heartbeat_ms: 300,
            empty_blocks: false,
        }
    }
}

/// PBFT parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbftParams {
    /// The primary proposes a block this often while transactions wait.
    pub block_interval_ms: u64,
    /// A backup starts a view change after this long without progress;
    /// doubled with each failed view.
    pub view_timeout_ms: u64,
    /// Also propose empty blocks when idle.
    pub empty_blocks: bool,
}

impl Default for PbftParams {
    fn default() -> Self {
        Self {
            block_interval_ms: 100,
            view_timeout_ms: 3000,
            empty_blocks: false,
        }
    }
}

/// Proof-of-work parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowParams {
    /// Target time between blocks.
    pub target_block_time_ms: u64,
    /// Expected hashes per block at genesis, and the lowest allowed.
    pub initial_difficulty: u64,
    pub min_difficulty: u64,
    /// Blocks per retarget window; the change per window is clamped to 4x.
    pub retarget_window: u64,
    /// How far in the future a block's timestamp may be.
    pub max_future_drift_ms: u64,
}

impl Default for PowParams {
    fn default() -> Self {
        Self {
            target_block_time_ms: 2000,
            // One SHA-256d miner thread does about 5 million hashes a
            // second here: three miners on a laptop find a block about
            // every half second at first, and the first retargets bring it
            // to the target. The floor keeps a lone slow miner at a few
            // blocks a second at worst.
            initial_difficulty: 5_000_000,
            min_difficulty: 100_000,
            retarget_window: 20,
            max_future_drift_ms: 15_000,
        }
    }
}

impl ConsensusConfig {
    /// The engine's name.
    pub fn kind(&self) -> EngineKind {
        match self {
            ConsensusConfig::Raft(_) => EngineKind::Raft,
            ConsensusConfig::Pbft(_) => EngineKind::Pbft,
            ConsensusConfig::Pow(_) => EngineKind::Pow,
        }
    }

    /// The default parameters of `kind`, with this block interval (Raft,
    /// PBFT) or target block time (proof-of-work) if given.
    pub fn with_block_time(kind: EngineKind, block_time_ms: Option<u64>) -> Self {
        let mut consensus = Self::default_for(kind);
        if let Some(ms) = block_time_ms {
            match &mut consensus {
                ConsensusConfig::Raft(p) => p.block_interval_ms = ms,
                ConsensusConfig::Pbft(p) => p.block_interval_ms = ms,
                ConsensusConfig::Pow(p) => p.target_block_time_ms = ms,
            }
        }
        consensus
    }

    /// The default parameters of `kind`.
    pub fn default_for(kind: EngineKind) -> Self {
        match kind {
            EngineKind::Raft => ConsensusConfig::Raft(RaftParams::default()),
            EngineKind::Pbft => ConsensusConfig::Pbft(PbftParams::default()),
            EngineKind::Pow => ConsensusConfig::Pow(PowParams::default()),
        }
    }
}

/// A validator (for proof-of-work: a bootstrap peer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validator {
    pub name: String,
    /// Signs consensus messages.
    pub public_key: PublicKey,
    /// Where peers reach it: a multiaddr ending in `/p2p/<peer id>`.
    pub p2p_address: String,
}

/// An initial balance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub address: Address,
    pub balance: u64,
}

/// A genesis file is unreadable or invalid; `field` names where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct GenesisError {
    /// Path of the offending field, e.g. `validators[2].public_key`.
    pub field: String,
    pub message: String,
}

impl GenesisError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Genesis {
    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let file = path.display().to_string();
        let len = std::fs::metadata(path)
            .map_err(|e| GenesisError::new(&file, format!("cannot read: {e}")))?
            .len();
        if len > MAX_GENESIS_BYTES {
            return Err(GenesisError::new(
                &file,
                format!("{len} bytes is over the {MAX_GENESIS_BYTES}-byte limit"),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| GenesisError::new(&file, format!("cannot read: {e}")))?;
        Self::from_json(&text)
    }

    /// Parses and validates genesis JSON.
    pub fn from_json(text: &str) -> Result<Self, GenesisError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let genesis: Genesis = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "genesis".to_owned()
            } else {
                path
            };
            GenesisError::new(field, e.inner().to_string())
        })?;
        genesis.validate()?;
        Ok(genesis)
    }

    /// Pretty JSON, as written to `genesis.json`.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("genesis serialises to JSON");
        s.push('\n');
        s
    }

    /// Checks the rules that the format alone cannot.
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.chain_id.is_empty() || self.chain_id.len() > cairn_chain::MAX_CHAIN_ID_LEN {
            return Err(GenesisError::new(
                "chain_id",
                format!("must be 1 to {} characters", cairn_chain::MAX_CHAIN_ID_LEN),
            ));
        }
        if !self
            .chain_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(GenesisError::new(
                "chain_id",
                "may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        validate_validators("validators", &self.validators)?;
        let mut seen = HashMap::new();
        let mut total: u64 = 0;
        for (i, a) in self.allocations.iter().enumerate() {
            if let Some(j) = seen.insert(a.address, i) {
                return Err(GenesisError::new(
                    format!("allocations[{i}].address"),
                    format!("duplicate of allocations[{j}]"),
                ));
            }
            total = total.checked_add(a.balance).ok_or_else(|| {
                GenesisError::new(
                    format!("allocations[{i}].balance"),
                    "total supply overflows a 64-bit integer",
                )
            })?;
        }
        validate_consensus("consensus", &self.consensus)?;
        schedule::validate_upgrades(self)?;
        Ok(())
    }

    /// Hash of the canonical encoding of this configuration, upgrades left
    /// out (they are scheduled later and do not change the network).
    pub fn config_hash(&self) -> Hash {
        if self.upgrades.is_empty() {
            return Hash::digest(&codec::encode(&("cairn-genesis-v1", self)));
        }
        let base = Genesis {
            upgrades: Vec::new(),
            ..self.clone()
        };
        base.config_hash()
    }

    /// The genesis block and the initial state.
    pub fn build(&self) -> (Block, StateChanges) {
        let allocations: Vec<(Address, u64)> = self
            .allocations
            .iter()
            .map(|a| (a.address, a.balance))
            .collect();
        let (state, root) = genesis_state(&allocations);
        (
            genesis_block(
                self.config_hash(),
                self.segment_at(0).config_hash(),
                self.genesis_time_ms,
                root,
            ),
            state,
        )
    }

    /// The genesis hash that identifies the network.
    pub fn hash(&self) -> Hash {
        self.build().0.hash()
    }

    /// Parameters of the state transition.
    pub fn execution_params(&self) -> ExecutionParams {
        ExecutionParams {
            chain_id: self.chain_id.clone(),
            genesis_hash: self.hash(),
            block_reward: self.block_reward,
            min_fee: self.min_fee,
            schedule: self.config_schedule(),
        }
    }

    /// The configuration hash each height's blocks carry.
    pub fn config_schedule(&self) -> ConfigSchedule {
        let segments = self
            .segments()
            .iter()
            .map(|s| (s.start, s.config_hash()))
            .collect();
        ConfigSchedule::new(segments).expect("validated upgrades start above 0, in height order")
    }

    /// The sum of all allocations.
    pub fn total_supply(&self) -> u64 {
        self.allocations.iter().map(|a| a.balance).sum()
    }
}

/// Checks a validator list; `field` names it in errors.
pub(crate) fn validate_validators(
    field: &str,
    validators: &[Validator],
) -> Result<(), GenesisError> {
    if validators.is_empty() {
        return Err(GenesisError::new(
            field,
            "at least one validator is required",
        ));
    }
    let mut names = HashMap::new();
    let mut keys = HashMap::new();
    let mut addrs = HashMap::new();
    for (i, v) in validators.iter().enumerate() {
        let at = |f: &str| format!("{field}[{i}].{f}");
        if v.name.trim().is_empty() {
            return Err(GenesisError::new(at("name"), "must not be empty"));
        }
        if let Some(j) = names.insert(v.name.as_str(), i) {
            return Err(GenesisError::new(
                at("name"),
                format!("duplicate validator: same name as {field}[{j}]"),
            ));
        }
        v.public_key
            .validate()
            .map_err(|e| GenesisError::new(at("public_key"), format!("malformed key: {e}")))?;
        if let Some(j) = keys.insert(v.public_key, i) {
            return Err(GenesisError::new(
                at("public_key"),
                format!("duplicate validator: same key as {field}[{j}]"),
            ));
        }
        let not_multiaddr = |why: String| {
            GenesisError::new(
                at("p2p_address"),
                format!(
                    "{:?} is not a multiaddr ending in /p2p/<peer id>: {why}",
                    v.p2p_address
                ),
            )
        };
        let addr: multiaddr::Multiaddr = v
            .p2p_address
            .parse()
            .map_err(|e: multiaddr::Error| not_multiaddr(e.to_string()))?;
        if !matches!(addr.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
            return Err(not_multiaddr("no /p2p/<peer id> at the end".into()));
        }
        if let Some(j) = addrs.insert(v.p2p_address.as_str(), i) {
            return Err(GenesisError::new(
                at("p2p_address"),
                format!("duplicate validator: same address as {field}[{j}]"),
            ));
        }
    }
    Ok(())
}

/// Checks an engine's parameters; `field` names them in errors.
pub(crate) fn validate_consensus(
    field: &str,
    consensus: &ConsensusConfig,
) -> Result<(), GenesisError> {
    match consensus {
        ConsensusConfig::Raft(p) => {
            duration(&format!("{field}.block_interval_ms"), p.block_interval_ms)?;
            duration(&format!("{field}.heartbeat_ms"), p.heartbeat_ms)?;
            duration(
                &format!("{field}.election_timeout_ms"),
                p.election_timeout_ms,
            )?;
            if p.election_timeout_ms <= p.heartbeat_ms {
                return Err(GenesisError::new(
                    format!("{field}.election_timeout_ms"),
                    "must be greater than heartbeat_ms",
                ));
            }
        }
        ConsensusConfig::Pbft(p) => {
            duration(&format!("{field}.block_interval_ms"), p.block_interval_ms)?;
            duration(&format!("{field}.view_timeout_ms"), p.view_timeout_ms)?;
        }
        ConsensusConfig::Pow(p) => {
            duration(
                &format!("{field}.target_block_time_ms"),
                p.target_block_time_ms,
            )?;
            positive(&format!("{field}.min_difficulty"), p.min_difficulty)?;
            positive(&format!("{field}.retarget_window"), p.retarget_window)?;
            if p.retarget_window > MAX_RETARGET_WINDOW {
                return Err(GenesisError::new(
                    format!("{field}.retarget_window"),
                    format!(
                        "{} blocks; at most {MAX_RETARGET_WINDOW}",
                        p.retarget_window
                    ),
                ));
            }
            if p.initial_difficulty < p.min_difficulty {
                return Err(GenesisError::new(
                    format!("{field}.initial_difficulty"),
                    "must be at least min_difficulty",
                ));
            }
        }
    }
    Ok(())
}

/// The longest interval or timeout a genesis may set (one day): engines
/// shift and add them, and a day is already far past any useful value.
pub const MAX_DURATION_MS: u64 = 86_400_000;
/// The longest proof-of-work retarget window, in blocks.
pub const MAX_RETARGET_WINDOW: u64 = 100_000;

/// A duration in milliseconds: from 1 to [`MAX_DURATION_MS`].
fn duration(field: &str, v: u64) -> Result<(), GenesisError> {
    positive(field, v)?;
    if v > MAX_DURATION_MS {
        return Err(GenesisError::new(
            field,
            format!("{v} ms; at most {MAX_DURATION_MS} (one day)"),
        ));
    }
    Ok(())
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn positive(field: &str, v: u64) -> Result<(), GenesisError> {
    if v == 0 {
        Err(GenesisError::new(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}

mod schedule;
#[cfg(test)]
mod tests;
