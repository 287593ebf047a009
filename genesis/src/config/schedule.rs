//! The consensus schedule: which engine and which validators rule a height.
//!
//! A network starts with the genesis `consensus` and `validators`; each
//! [`Upgrade`] in `upgrades` replaces the engine (and, if it names one, the
//! validator set) from its height on. The heights split the chain into
//! [`Segment`]s, and every block commits in its header to the
//! [`Segment::config_hash`] of the segment it belongs to, so nodes whose
//! schedules differ notice at the first block where they disagree.

use cairn_chain::{codec, Hash};
use serde::{Deserialize, Serialize};

use super::Validator;
use super::{validate_consensus, validate_validators, ConsensusConfig, Genesis, GenesisError};

/// From `height` on, blocks are made under `consensus`, by `validators` if
/// given (by the previous set otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upgrade {
    /// The first height made under the new configuration (at least 1).
    pub height: u64,
    pub consensus: ConsensusConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<Vec<Validator>>,
}

/// Heights `start..end` of the chain and the configuration that rules them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// 0 for the genesis configuration, `i + 1` for `upgrades[i]`.
    pub index: usize,
    /// The first height of the segment (0 for the genesis segment, whose
    /// first block made by its engine is 1).
    pub start: u64,
    /// The first height of the next segment, if one is scheduled.
    pub end: Option<u64>,
    pub consensus: &'a ConsensusConfig,
    pub validators: &'a [Validator],
}

impl Segment<'_> {
    /// What every block of the segment commits to in its header: the
    /// engine, its parameters, the validator set and the first height.
    pub fn config_hash(&self) -> Hash {
        Hash::digest(&codec::encode(&(
            "cairn-consensus-v1",
            self.start,
            self.consensus,
            self.validators,
        )))
    }

    /// Whether `height` belongs to this segment.
    pub fn contains(&self, height: u64) -> bool {
        height >= self.start && self.end.is_none_or(|end| height < end)
    }
}

impl Genesis {
    /// Every segment of the schedule, in height order.
    pub fn segments(&self) -> Vec<Segment<'_>> {
        let mut out = Vec::with_capacity(self.upgrades.len() + 1);
        let mut validators: &[Validator] = &self.validators;
        let mut start = 0;
        let mut consensus = &self.consensus;
        for (i, u) in self.upgrades.iter().enumerate() {
            out.push(Segment {
                index: i,
                start,
                end: Some(u.height),
                consensus,
                validators,
            });
            start = u.height;
            consensus = &u.consensus;
            if let Some(v) = &u.validators {
                validators = v;
            }
        }
        out.push(Segment {
            index: self.upgrades.len(),
            start,
            end: None,
            consensus,
            validators,
        });
        out
    }

    /// The segment that rules blocks at `height` (without building the
    /// whole schedule: the node asks for every block it applies).
    pub fn segment_at(&self, height: u64) -> Segment<'_> {
        // Upgrades are in height order (validated): those at or below
        // `height` have taken effect.
        let i = self.upgrades.partition_point(|u| u.height <= height);
        let (start, consensus) = match i.checked_sub(1).map(|j| &self.upgrades[j]) {
            Some(u) => (u.height, &u.consensus),
            None => (0, &self.consensus),
        };
        let validators = self.upgrades[..i]
            .iter()
            .rev()
            .find_map(|u| u.validators.as_deref())
            .unwrap_or(&self.validators);
        Segment {
            index: i,
            start,
            end: self.upgrades.get(i).map(|u| u.height),
            consensus,
            validators,
        }
    }
}

/// Upgrades are in strictly increasing height order, above 0, each with a
/// valid engine configuration and validator set.
pub(super) fn validate_upgrades(genesis: &Genesis) -> Result<(), GenesisError> {
    let mut previous = 0;
    for (i, u) in genesis.upgrades.iter().enumerate() {
        let at = |f: &str| format!("upgrades[{i}].{f}");
        if u.height <= previous {
            let why = if i == 0 {
                "must be at least 1 (height 0 is the genesis block)".to_owned()
            } else {
                format!(
                    "{} is not above upgrades[{}].height ({previous}): upgrades are listed in height order",
                    u.height,
                    i - 1
                )
            };
            return Err(GenesisError::new(at("height"), why));
        }
        previous = u.height;
        validate_consensus(&at("consensus"), &u.consensus)?;
        if let Some(v) = &u.validators {
            validate_validators(&at("validators"), v)?;
        }
    }
    Ok(())
}
