//! The state root: a binary Merkle tree over accounts in creation order.
//!
//! Each account has a fixed leaf index, given when it is created. With `n`
//! accounts the tree has depth `d = ceil(log2 n)`; leaf `i` is
//! `H(0x00 || address || balance || nonce)`, an inner node is
//! `H(0x01 || left || right)`, and a missing subtree of level `l` has the
//! precomputed hash `EMPTY[l]`. The root is the node at `(d, 0)`.
//!
//! Every node is stored in the state keyspace, so updating `k` accounts
//! recomputes only their paths: `O(k · log n)` hashes and reads, whatever the
//! total number of accounts. Growing past a power of two keeps the old tree as
//! the left subtree of the new root, so nothing is rebuilt.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use crate::state::{Overlay, StateError, StateReader};
use crate::{codec, Account, Address, Hash};

/// Levels above the leaves that can exist (2^64 accounts).
const MAX_LEVEL: usize = 64;

fn empty_hashes() -> &'static [Hash; MAX_LEVEL + 1] {
    static EMPTY: OnceLock<[Hash; MAX_LEVEL + 1]> = OnceLock::new();
    EMPTY.get_or_init(|| {
        let mut out = [Hash::ZERO; MAX_LEVEL + 1];
        out[0] = Hash::digest(b"cairn-empty-account");
        for l in 1..=MAX_LEVEL {
            out[l] = node_hash(&out[l - 1], &out[l - 1]);
        }
        out
    })
}

/// The hash of an empty subtree whose root is at `level`.
pub fn empty_hash(level: u32) -> Hash {
    empty_hashes()[(level as usize).min(MAX_LEVEL)]
}

/// The leaf hash of an account.
pub fn leaf_hash(address: &Address, account: &Account) -> Hash {
    Hash::digest_parts(&[
        &[0u8],
        &address.0,
        &account.balance.to_le_bytes(),
        &account.nonce.to_le_bytes(),
    ])
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash::digest_parts(&[&[1u8], left.as_ref(), right.as_ref()])
}

/// The depth of the tree holding `count` accounts.
pub fn depth_for(count: u64) -> u32 {
    if count <= 1 {
        0
    } else {
        64 - (count - 1).leading_zeros()
    }
}

/// The state key of node `(level, index)`.
pub fn node_key(level: u32, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(b'n');
    k.push(level as u8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn read_node(state: &impl StateReader, level: u32, index: u64) -> Result<Option<Hash>, StateError> {
    state
        .get(&node_key(level, index))?
        .map(|b| {
            Hash::from_slice(&b).map_err(|e| StateError::Corrupt {
                key: format!("tree node ({level}, {index})"),
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn node_or_empty(state: &impl StateReader, level: u32, index: u64) -> Result<Hash, StateError> {
    Ok(read_node(state, level, index)?.unwrap_or_else(|| empty_hash(level)))
}

/// The root stored in `state` for a tree of `count` accounts.
pub fn stored_root(state: &impl StateReader, count: u64) -> Result<Hash, StateError> {
    node_or_empty(state, depth_for(count), 0)
}

/// Writes the given leaves and recomputes their paths up to the root of a tree
/// of `count` accounts; returns the new root.
pub fn update<R: StateReader>(
    state: &mut Overlay<R>,
    count: u64,
    leaves: impl IntoIterator<Item = (u64, Hash)>,
) -> Result<Hash, StateError> {
    let depth = depth_for(count);
    let mut dirty = BTreeSet::new();
    for (index, hash) in leaves {
        state.put(node_key(0, index), hash.0.to_vec());
        dirty.insert(index);
    }
    for level in 0..depth {
        let parents: BTreeSet<u64> = dirty.iter().map(|i| i / 2).collect();
        for &p in &parents {
            let left = node_or_empty(state, level, 2 * p)?;
            let right = node_or_empty(state, level, 2 * p + 1)?;
            state.put(node_key(level + 1, p), node_hash(&left, &right).0.to_vec());
        }
        dirty = parents;
    }
    stored_root(state, count)
}

/// Builds every node of the tree over `leaves` (in index order) at once, in
/// `O(n)` hashes; returns the root. Used for genesis allocations.
pub fn build<R: StateReader>(state: &mut Overlay<R>, leaves: &[Hash]) -> Hash {
    let depth = depth_for(leaves.len() as u64);
    let mut level_nodes: Vec<Hash> = leaves.to_vec();
    for (i, h) in level_nodes.iter().enumerate() {
        state.put(node_key(0, i as u64), h.0.to_vec());
    }
    for level in 0..depth {
        let empty = empty_hash(level);
        level_nodes = level_nodes
            .chunks(2)
            .map(|pair| match pair {
                [l, r] => node_hash(l, r),
                [l] => node_hash(l, &empty),
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
        for (i, h) in level_nodes.iter().enumerate() {
            state.put(node_key(level + 1, i as u64), h.0.to_vec());
        }
    }
    level_nodes
        .first()
        .copied()
        .unwrap_or_else(|| empty_hash(0))
}

/// Recomputes the root from the accounts alone, ignoring stored nodes: the
/// reference the incremental tree is checked against.
pub fn root_from_accounts(accounts: &[(Address, Account)]) -> Result<Hash, StateError> {
    let mut leaves = vec![None; accounts.len()];
    for (addr, acct) in accounts {
        let slot = leaves
            .get_mut(acct.index as usize)
            .ok_or_else(|| StateError::Corrupt {
                key: format!("account {addr}"),
                reason: format!("index {} out of range", acct.index),
            })?;
        if slot.is_some() {
            return Err(StateError::Corrupt {
                key: format!("account {addr}"),
                reason: format!("index {} used twice", acct.index),
            });
        }
        *slot = Some(leaf_hash(addr, acct));
    }
    let mut level: Vec<Hash> = leaves.into_iter().flatten().collect();
    if level.is_empty() {
        return Ok(empty_hash(0));
    }
    let depth = depth_for(level.len() as u64);
    for l in 0..depth {
        let empty = empty_hash(l);
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [a, b] => node_hash(a, b),
                [a] => node_hash(a, &empty),
                _ => unreachable!("chunks(2) yields one or two items"),
            })
            .collect();
    }
    Ok(level[0])
}

/// Decodes an account entry's value (for scans of the state keyspace).
pub fn decode_account(bytes: &[u8]) -> Result<Account, codec::CodecError> {
    codec::decode(bytes, 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemState;
    use proptest::prelude::*;

    fn addr(i: u64) -> Address {
        let mut a = [0u8; 20];
        a[..8].copy_from_slice(&i.to_le_bytes());
        Address(a)
    }

    #[test]
    fn depth_grows_with_powers_of_two() {
        assert_eq!(depth_for(0), 0);
        assert_eq!(depth_for(1), 0);
        assert_eq!(depth_for(2), 1);
        assert_eq!(depth_for(3), 2);
        assert_eq!(depth_for(4), 2);
        assert_eq!(depth_for(5), 3);
        assert_eq!(depth_for(1 << 20), 20);
        assert_eq!(depth_for((1 << 20) + 1), 21);
    }

    proptest! {
        /// Any sequence of incremental updates (creations and changes) gives
        /// the same root as a rebuild from scratch, and as a bulk build.
        #[test]
        fn incremental_matches_rebuild(
            initial in 0u64..40,
            batches in proptest::collection::vec(proptest::collection::vec((0u64..80, any::<u64>()), 1..10), 1..12)
        ) {
            let mut mem = MemState::default();
            let mut accounts: Vec<(Address, Account)> = (0..initial)
                .map(|i| (addr(i), Account { balance: i, nonce: 0, index: i }))
                .collect();
            let mut o = Overlay::new(&mem);
            let leaves: Vec<Hash> = accounts.iter().map(|(a, x)| leaf_hash(a, x)).collect();
            let built = build(&mut o, &leaves);
            let changes = o.into_changes();
            mem.apply(&changes);
            prop_assert_eq!(built, root_from_accounts(&accounts).expect("root"));

            for batch in batches {
                let mut o = Overlay::new(&mem);
                let mut touched = Vec::new();
                for (which, balance) in batch {
                    let i = if which as usize >= accounts.len() {
                        let i = accounts.len();
                        accounts.push((addr(1000 + i as u64), Account { balance: 0, nonce: 0, index: i as u64 }));
                        i
                    } else {
                        which as usize
                    };
                    accounts[i].1.balance = balance;
                    accounts[i].1.nonce += 1;
                    touched.push(i);
                }
                let leaves: Vec<(u64, Hash)> = touched
                    .iter()
                    .map(|&i| (accounts[i].1.index, leaf_hash(&accounts[i].0, &accounts[i].1)))
                    .collect();
                let root = update(&mut o, accounts.len() as u64, leaves).expect("update");
                let changes = o.into_changes();
                mem.apply(&changes);
                prop_assert_eq!(root, root_from_accounts(&accounts).expect("root"));
                prop_assert_eq!(stored_root(&mem, accounts.len() as u64).expect("stored"), root);
            }
        }
    }
}
