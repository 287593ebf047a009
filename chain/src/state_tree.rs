//! The state root: a binary Merkle tree over accounts in creation order.
//!
//! Each account has a fixed leaf index, given when it is created. With `n`
//! accounts the tree has depth `d = ceil(log2 n)`; leaf `i` is
//! `H(0x00 || address || balance || nonce)`, an inner node is
//! `H(0x01 || left || right)`, and a missing subtree of level `l` has the
//! precomputed hash `EMPTY[l]`. The root is the node at `(d, 0)`.
//!
//! Nodes are stored in pages of four levels: page `j` of tier `t` holds the
//! 16 nodes of level `4t` under node `(4t + 4, j)` and the 8 + 4 + 2 nodes
//! above them, one state entry of 30 hashes. Updating `k` accounts
//! recomputes only their paths — `O(k · log n)` hashes, whatever the total
//! number of accounts — and writes one entry per page those paths cross:
//! for a block of a thousand transfers about a tenth of the entries a key
//! per node took (each entry costs RocksDB a memtable insert, whatever its
//! size). Growing past a power of two keeps the old tree as the left subtree
//! of the new root, so nothing is rebuilt.

use foldhash::HashMap;
use std::collections::hash_map::Entry;
use std::sync::OnceLock;

use crate::state::{Overlay, StateError, StateReader};
use crate::{codec, Account, Address, Hash};

/// Levels above the leaves that can exist (2^64 accounts).
const MAX_LEVEL: usize = 64;
/// Levels one page holds.
const PAGE_LEVELS: u32 = 4;
/// Nodes one page holds: 16 + 8 + 4 + 2.
const PAGE_NODES: usize = 30;
/// Where each of a page's levels starts among its nodes.
const LEVEL_OFFSET: [usize; PAGE_LEVELS as usize] = [0, 16, 24, 28];
/// The size of a stored page.
const PAGE_BYTES: usize = PAGE_NODES * 32;

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

/// A page: its tier and its index in that tier.
type PageId = (u32, u64);

/// The state key of a page.
pub fn page_key(tier: u32, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(b'p');
    k.push(tier as u8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// The page holding node `(level, index)`, and the node's place in it.
fn locate(level: u32, index: u64) -> (PageId, usize) {
    let tier = level / PAGE_LEVELS;
    let within = level % PAGE_LEVELS;
    let bits = PAGE_LEVELS - within;
    let slot = LEVEL_OFFSET[within as usize] + (index & ((1 << bits) - 1)) as usize;
    ((tier, index >> bits), slot)
}

/// The nodes of one page, bottom level first.
#[derive(Clone)]
struct Page([Hash; PAGE_NODES]);

impl Page {
    /// A page of empty subtrees.
    fn empty(tier: u32) -> Self {
        let mut nodes = [Hash::ZERO; PAGE_NODES];
        for (within, &start) in LEVEL_OFFSET.iter().enumerate() {
            let end = LEVEL_OFFSET.get(within + 1).copied().unwrap_or(PAGE_NODES);
            let hash = empty_hash(tier * PAGE_LEVELS + within as u32);
            nodes[start..end].fill(hash);
        }
        Self(nodes)
    }

    fn read(state: &impl StateReader, (tier, index): PageId) -> Result<Self, StateError> {
        let Some(bytes) = state.get(&page_key(tier, index))? else {
            return Ok(Self::empty(tier));
        };
        if bytes.len() != PAGE_BYTES {
            return Err(StateError::Corrupt {
                key: format!("tree page ({tier}, {index})"),
                reason: format!("{} bytes, expected {PAGE_BYTES}", bytes.len()),
            });
        }
        let mut nodes = [Hash::ZERO; PAGE_NODES];
        for (node, chunk) in nodes.iter_mut().zip(bytes.chunks_exact(32)) {
            node.0.copy_from_slice(chunk);
        }
        Ok(Self(nodes))
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAGE_BYTES);
        for node in &self.0 {
            out.extend_from_slice(&node.0);
        }
        out
    }
}

/// The pages one update reads and changes, written back at its end.
#[derive(Default)]
struct Pages {
    pages: HashMap<PageId, (Page, bool)>,
}

impl Pages {
    fn page(
        &mut self,
        state: &impl StateReader,
        id: PageId,
    ) -> Result<&mut (Page, bool), StateError> {
        Ok(match self.pages.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert((Page::read(state, id)?, false)),
        })
    }

    fn get(
        &mut self,
        state: &impl StateReader,
        level: u32,
        index: u64,
    ) -> Result<Hash, StateError> {
        let (id, slot) = locate(level, index);
        Ok(self.page(state, id)?.0 .0[slot])
    }

    fn set(
        &mut self,
        state: &impl StateReader,
        level: u32,
        index: u64,
        hash: Hash,
    ) -> Result<(), StateError> {
        let (id, slot) = locate(level, index);
        let page = self.page(state, id)?;
        page.0 .0[slot] = hash;
        page.1 = true;
        Ok(())
    }

    /// Sets a node of a tree built from nothing (no page is read).
    fn set_new(&mut self, level: u32, index: u64, hash: Hash) {
        let ((tier, page), slot) = locate(level, index);
        let entry = self
            .pages
            .entry((tier, page))
            .or_insert_with(|| (Page::empty(tier), true));
        entry.0 .0[slot] = hash;
    }

    fn write<R: StateReader>(self, state: &mut Overlay<R>) {
        for ((tier, index), (page, changed)) in self.pages {
            if changed {
                state.put(page_key(tier, index), page.encode());
            }
        }
    }
}

/// The root stored in `state` for a tree of `count` accounts.
pub fn stored_root(state: &impl StateReader, count: u64) -> Result<Hash, StateError> {
    let (id, slot) = locate(depth_for(count), 0);
    Ok(Page::read(state, id)?.0[slot])
}

/// Writes the given leaves and recomputes their paths up to the root of a tree
/// of `count` accounts; returns the new root.
pub fn update<R: StateReader>(
    state: &mut Overlay<R>,
    count: u64,
    leaves: impl IntoIterator<Item = (u64, Hash)>,
) -> Result<Hash, StateError> {
    let depth = depth_for(count);
    let mut pages = Pages::default();
    let mut dirty = Vec::new();
    for (index, hash) in leaves {
        pages.set(state, 0, index, hash)?;
        dirty.push(index);
    }
    dirty.sort_unstable();
    dirty.dedup();
    for level in 0..depth {
        // Parents of sorted indices come sorted: dedup leaves them unique.
        for i in dirty.iter_mut() {
            *i /= 2;
        }
        dirty.dedup();
        for &p in &dirty {
            let left = pages.get(state, level, 2 * p)?;
            let right = pages.get(state, level, 2 * p + 1)?;
            pages.set(state, level + 1, p, node_hash(&left, &right))?;
        }
    }
    let root = pages.get(state, depth, 0)?;
    pages.write(state);
    Ok(root)
}

/// Builds every node of the tree over `leaves` (in index order) at once, in
/// `O(n)` hashes, on a state without a tree; returns the root. Used for
/// genesis allocations.
pub fn build<R: StateReader>(state: &mut Overlay<R>, leaves: &[Hash]) -> Hash {
    let depth = depth_for(leaves.len() as u64);
    let mut pages = Pages::default();
    let mut level_nodes: Vec<Hash> = leaves.to_vec();
    for (i, h) in level_nodes.iter().enumerate() {
        pages.set_new(0, i as u64, *h);
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
            pages.set_new(level + 1, i as u64, *h);
        }
    }
    pages.write(state);
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
    fn nodes_map_to_pages_of_four_levels() {
        // Level 0: sixteen consecutive leaves share a page.
        assert_eq!(locate(0, 0), ((0, 0), 0));
        assert_eq!(locate(0, 15), ((0, 0), 15));
        assert_eq!(locate(0, 16), ((0, 1), 0));
        // Levels 1..3 sit above them in the same page.
        assert_eq!(locate(1, 7), ((0, 0), 23));
        assert_eq!(locate(2, 3), ((0, 0), 27));
        assert_eq!(locate(3, 1), ((0, 0), 29));
        assert_eq!(locate(3, 2), ((0, 1), 28));
        // Level 4 starts the next tier.
        assert_eq!(locate(4, 0), ((1, 0), 0));
        assert_eq!(locate(9, 5), ((2, 0), 16 + 5));
    }

    /// One thousand accounts changed in a tree of ten thousand: one entry
    /// per page their paths cross, not one per node.
    #[test]
    fn an_update_writes_one_entry_per_page() {
        let n = 10_000u64;
        let mut mem = MemState::default();
        let leaves: Vec<Hash> = (0..n).map(|i| Hash::digest(&i.to_le_bytes())).collect();
        let mut o = Overlay::new(&mem);
        build(&mut o, &leaves);
        mem.apply(&o.into_changes());
        // 625 + 40 + 3 + 1 pages for 10,000 leaves (depth 14).
        assert_eq!(mem.entries.len(), 669);
        let mut o = Overlay::new(&mem);
        let changed = (0..1000u64).map(|i| (i * 10, Hash::digest(b"x")));
        update(&mut o, n, changed).expect("update");
        let written = o.changes().len();
        // The changed leaves lie in 625 level-0 pages, all above in 44.
        assert_eq!(written, 625 + 44);
    }

    #[test]
    fn a_page_of_the_wrong_size_is_an_error() {
        let mut mem = MemState::default();
        mem.entries.insert(page_key(0, 0), vec![0u8; 31]);
        let err = stored_root(&mem, 3).expect_err("corrupt page");
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
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
