//! The RocksDB block store.
//!
//! Column families:
//!
//! | family     | key                         | value                                  |
//! |------------|-----------------------------|----------------------------------------|
//! | `blocks`   | block hash                  | block (canonical or not)               |
//! | `headers`  | block hash                  | header                                 |
//! | `heights`  | height (u64 big-endian)     | hash of the canonical block there      |
//! | `tx_index` | transaction hash            | height and index in its block (canonical blocks only) |
//! | `state`    | see [`crate::state`]        | account state and state-tree nodes     |
//! | `undo`     | block hash                  | previous values of every state key the block changed |
//! | `engine`   | engine-defined              | consensus engine state                 |
//! | `meta`     | `head`, `genesis`           | hashes                                 |
//!
//! Durability contract: [`Store::commit_block`] and [`Store::revert`] write
//! one `WriteBatch` with a synced WAL, holding the block, its indices, its
//! state changes, its undo record and the new head together. A process killed
//! at any instant reopens at the last head whose batch completed, with exactly
//! that head's state. Blocks that leave the canonical chain stay stored.

use foldhash::{HashMap, HashMapExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use super::{ChainStore, RawEntry, StoreError, TxLocation, UndoRecord};
use crate::state::{StateChanges, StateError, StateReader};
use crate::{codec, Account, Address, Block, Hash, Header, MAX_BLOCK_BYTES};

const CF_BLOCKS: &str = "blocks";
const CF_HEADERS: &str = "headers";
const CF_HEIGHTS: &str = "heights";
const CF_TX_INDEX: &str = "tx_index";
const CF_STATE: &str = "state";
const CF_UNDO: &str = "undo";
const CF_ENGINE: &str = "engine";
const CF_META: &str = "meta";
const COLUMN_FAMILIES: [&str; 8] = [
    CF_BLOCKS,
    CF_HEADERS,
    CF_HEIGHTS,
    CF_TX_INDEX,
    CF_STATE,
    CF_UNDO,
    CF_ENGINE,
    CF_META,
];
/// The rate limit of RocksDB's flushes and compactions (see [`Store::open`]):
/// about twice what a node writes at 15,000 transfers/s (some 6 MB/s
/// flushed and 20 MB/s compacted), so that compactions do not fall behind.
const BACKGROUND_WRITE_BYTES_PER_SEC: i64 = 48 * 1024 * 1024;
/// Block entries at least this large are stored in blob files.
const BLOB_MIN_BYTES: u64 = 4 * 1024;
/// Families whose entries are written once under hash keys (see
/// [`Store::open`]).
const WRITE_ONCE_FAMILIES: [&str; 4] = [CF_BLOCKS, CF_HEADERS, CF_TX_INDEX, CF_UNDO];
const META_HEAD: &[u8] = b"head";
const META_GENESIS: &[u8] = b"genesis";
const META_FORMAT: &[u8] = b"format";
/// The layout of the store, written with genesis. 1: a key per state-tree
/// node, transaction index values with the block hash (no `format` entry);
/// 2: tree nodes in pages, index values of height and position; 3: block
/// headers commit to their consensus configuration.
const FORMAT: u32 = 3;
const MAX_HEADER_BYTES: usize = 64 * 1024;
const MAX_UNDO_BYTES: usize = 512 * 1024 * 1024;

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Rocks(e.to_string())
    }
}

/// Bytes the store holds in memory (see [`Store::memory`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMemory {
    /// RocksDB's memtables, all column families.
    pub memtables: u64,
    /// RocksDB's block cache.
    pub block_cache: u64,
    /// The state cache in front of RocksDB.
    pub state_cache: u64,
}

/// All memtables together (see [`Store::open`]). A heap profile of a node
/// at 15,000 transfers/s showed memtable arenas at about 100 MB at its
/// peak with 64 MB here (the memtables being flushed count too): halved.
const MEMTABLE_BUDGET: usize = 32 * 1024 * 1024;
/// One column family's memtable.
const MEMTABLE_BYTES: usize = 8 * 1024 * 1024;
/// The block cache shared by all column families.
const BLOCK_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Most bytes of state entries [`Store`] keeps in memory (keys and values,
/// plus [`CACHE_ENTRY_OVERHEAD`] each): accounts are about 60 bytes, pages
/// of the state tree about a kilobyte.
const STATE_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// What an entry costs the cache besides its key and value (map slot,
/// vector headers, allocator rounding).
const CACHE_ENTRY_OVERHEAD: usize = 80;

/// State entries recently read or written, absent ones included. A transfer's
/// accounts and tree pages are read by mempool admission, block building,
/// execution and the undo record: without the cache each read is a lookup
/// in RocksDB's memtable skiplist (a profile under load showed them at about
/// a fifth of a node's time). Write-through: a commit updates it after its
/// batch is durable; a revert empties it. `generation` moves on every
/// write, so that a reader that missed, read RocksDB and then lost a race
/// with a commit does not put a stale value in.
#[derive(Debug, Default)]
struct StateCache {
    entries: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// What `entries` holds, counted as [`STATE_CACHE_BYTES`] says.
    bytes: usize,
    generation: u64,
}

fn cache_cost(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + CACHE_ENTRY_OVERHEAD
}

impl StateCache {
    fn insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let cost = cache_cost(&key, &value);
        if self.bytes + cost > STATE_CACHE_BYTES {
            self.clear();
        }
        let key_len = key.len();
        if let Some(old) = self.entries.insert(key, value) {
            self.bytes -= key_len + old.as_ref().map_or(0, Vec::len) + CACHE_ENTRY_OVERHEAD;
        }
        self.bytes += cost;
    }

    fn clear(&mut self) {
        self.entries = HashMap::new();
        self.bytes = 0;
    }
}

/// RocksDB's block cache, shared by the column families (kept to read
/// its usage).
struct BlockCache(rocksdb::Cache);

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("usage", &self.0.get_usage())
            .finish()
    }
}

/// The block store. See the module docs.
#[derive(Debug)]
pub struct Store {
    db: DB,
    block_cache: BlockCache,
    path: PathBuf,
    cache: Mutex<StateCache>,
    /// Whether commits write undo records (see [`Store::set_undo`]).
    undo: bool,
}

fn corrupt(what: impl Into<String>, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        reason: e.to_string(),
    }
}

fn height_key(height: u64) -> [u8; 8] {
    height.to_be_bytes()
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_keep_log_file_num(4);
        opts.set_max_open_files(512);
        // Memory bounds: RocksDB's defaults (64 MB memtables, two per
        // column family, and a block cache per family) let a busy node grow
        // past 300 MB. All memtables together stay under
        // MEMTABLE_BUDGET (the largest is flushed when they pass it), and
        // the families share one block cache.
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        // Background writes (flushes first, then compactions) at most this
        // fast: a compaction of a large family otherwise takes a core for
        // seconds at once, on every node together since they write alike,
        // and commits stall behind it (a full compaction of the transaction
        // index, 187 MB, held up a Raft devnet at 15,000 transfers/s for
        // 20 s). Spread out, it fits in the spare CPU.
        opts.set_ratelimiter(BACKGROUND_WRITE_BYTES_PER_SEC, 100_000, 10);
        let block_cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let cfs = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_write_buffer_size(MEMTABLE_BYTES);
            if WRITE_ONCE_FAMILIES.contains(name) {
                // Written once under random keys (hashes): every new file
                // overlaps all older data, so leveled compaction rewrote
                // the family whole each time (129 MB after a minute at
                // 15,000 transfers/s, and growing: up to 1.7 s of a core,
                // on every node at once since they write alike, and
                // commits stalled behind it). Size-tiered merges runs of
                // similar size: each byte is rewritten about log(size)
                // times.
                cf.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
            }
            if *name == CF_BLOCKS {
                // Block bodies (up to megabytes) go to blob files, written
                // once at flush and never rewritten: compactions move only
                // the small references. Blocks are never deleted, so there
                // is nothing for blob garbage collection to do.
                cf.set_enable_blob_files(true);
                cf.set_min_blob_size(BLOB_MIN_BYTES);
            }
            let mut table = rocksdb::BlockBasedOptions::default();
            table.set_block_cache(&block_cache);
            table.set_bloom_filter(10.0, false);
            cf.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| StoreError::Open {
            path: path.to_owned(),
            reason: e.into_string(),
        })?;
        Ok(Self {
            db,
            block_cache: BlockCache(block_cache),
            path: path.to_owned(),
            cache: Mutex::new(StateCache::default()),
            undo: true,
        })
    }

    /// Whether [`Store::commit_block`] writes an undo record with each block
    /// (the default). Chains whose blocks are final when committed (Raft,
    /// PBFT) never revert and skip the cost: reading every changed key's
    /// old value and writing them all again. [`Store::revert`] refuses to
    /// pass a block committed without one.
    pub fn set_undo(&mut self, undo: bool) {
        self.undo = undo;
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created when the store opens")
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    fn put_state(&self, batch: &mut WriteBatch, changes: &StateChanges) {
        let cf = self.cf(CF_STATE);
        for (k, v) in changes {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
    }

    fn get_hash(&self, cf: &str, key: &[u8]) -> Result<Option<Hash>, StoreError> {
        self.db
            .get_cf(self.cf(cf), key)?
            .map(|b| Hash::from_slice(&b).map_err(|e| corrupt(format!("{cf} entry"), e)))
            .transpose()
    }

    /// What the store holds in memory now.
    pub fn memory(&self) -> StoreMemory {
        let memtables = COLUMN_FAMILIES
            .iter()
            .filter_map(|name| {
                self.db
                    .property_int_value_cf(
                        self.cf(name),
                        rocksdb::properties::CUR_SIZE_ALL_MEM_TABLES,
                    )
                    .ok()
                    .flatten()
            })
            .sum();
        let state_cache = self.cache().map(|c| c.bytes as u64).unwrap_or(0);
        StoreMemory {
            memtables,
            block_cache: self.block_cache.0.get_usage() as u64,
            state_cache,
        }
    }

    /// Gives memory back when idle: writes every memtable to disk and frees
    /// it (the data was durable already, through the WAL) and empties the
    /// state cache.
    pub fn release_memory(&self) -> Result<(), StoreError> {
        for name in COLUMN_FAMILIES {
            self.db.flush_cf(self.cf(name))?;
        }
        if let Ok(mut c) = self.cache() {
            c.generation += 1;
            c.clear();
        }
        Ok(())
    }

    /// The values the keys `changes` writes have now: from the cache
    /// (execution read most of them), the rest from RocksDB in one
    /// multi-get.
    fn undo_record(&self, changes: &StateChanges) -> Result<UndoRecord, StoreError> {
        let state_cf = self.cf(CF_STATE);
        let mut undo: UndoRecord = Vec::with_capacity(changes.len());
        let mut missing = Vec::new();
        {
            let cache = self.cache();
            for key in changes.keys() {
                match cache.as_ref().ok().and_then(|c| c.entries.get(key)) {
                    Some(old) => undo.push((key.clone(), old.clone())),
                    None => {
                        missing.push(undo.len());
                        undo.push((key.clone(), None));
                    }
                }
            }
        }
        let old_values = self
            .db
            .multi_get_cf(missing.iter().map(|&i| (state_cf, undo[i].0.as_slice())));
        for (&i, old) in missing.iter().zip(old_values) {
            undo[i].1 = old?;
        }
        Ok(undo)
    }

    fn cache(&self) -> Result<MutexGuard<'_, StateCache>, ()> {
        self.cache.lock().map_err(|_| ())
    }

    /// Every account, in key order (for checks and tools; O(accounts)).
    pub fn accounts(&self) -> Result<Vec<(Address, Account)>, StoreError> {
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            self.cf(CF_STATE),
            IteratorMode::From(b"a", rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            if k.first() != Some(&b'a') {
                break;
            }
            let addr = k
                .get(1..)
                .and_then(|b| <[u8; 20]>::try_from(b).ok())
                .map(Address)
                .ok_or_else(|| corrupt("state", "account key of the wrong length"))?;
            let acct = crate::state_tree::decode_account(&v)
                .map_err(|e| corrupt(format!("account {addr}"), e))?;
            out.push((addr, acct));
        }
        Ok(out)
    }

    /// Every state entry (for tests that compare whole states).
    pub fn state_entries(&self) -> Result<Vec<RawEntry>, StoreError> {
        self.db
            .iterator_cf(self.cf(CF_STATE), IteratorMode::Start)
            .map(|item| {
                item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(StoreError::from)
            })
            .collect()
    }
}

impl ChainStore for Store {
    /// Writes the genesis block and state if the store is empty; otherwise
    /// checks that the store belongs to this genesis.
    fn init_genesis(&self, genesis: &Block, state: &StateChanges) -> Result<(), StoreError> {
        let hash = genesis.hash();
        if let Some(stored) = self.genesis_hash()? {
            // The format first: another version's genesis block hashes
            // differently, and "another network" would mislead.
            let found = match self.db.get_cf(self.cf(CF_META), META_FORMAT)? {
                None => 1,
                Some(b) => <[u8; 4]>::try_from(b.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt("format entry", format!("{} bytes", b.len())))?,
            };
            if found != FORMAT {
                return Err(StoreError::Format {
                    path: self.path.clone(),
                    found,
                    expected: FORMAT,
                });
            }
            if stored != hash {
                return Err(StoreError::GenesisMismatch {
                    stored,
                    expected: hash,
                });
            }
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_BLOCKS), hash.0, genesis.encode());
        batch.put_cf(self.cf(CF_HEADERS), hash.0, codec::encode(&genesis.header));
        batch.put_cf(self.cf(CF_HEIGHTS), height_key(0), hash.0);
        self.put_state(&mut batch, state);
        batch.put_cf(self.cf(CF_META), META_HEAD, hash.0);
        batch.put_cf(self.cf(CF_META), META_GENESIS, hash.0);
        batch.put_cf(self.cf(CF_META), META_FORMAT, FORMAT.to_be_bytes());
        let mut cache = self.cache();
        self.db.write_opt(batch, &Self::synced())?;
        if let Ok(c) = cache.as_mut() {
            c.generation += 1;
            c.clear();
        }
        Ok(())
    }

    /// The genesis block's hash, once initialised.
    fn genesis_hash(&self) -> Result<Option<Hash>, StoreError> {
        self.get_hash(CF_META, META_GENESIS)
    }

    /// The hash of the canonical head.
    fn head_hash(&self) -> Result<Hash, StoreError> {
        self.get_hash(CF_META, META_HEAD)?
            .ok_or(StoreError::NotInitialised)
    }

    /// A stored header, canonical or not.
    fn header(&self, hash: &Hash) -> Result<Option<Header>, StoreError> {
        self.db
            .get_cf(self.cf(CF_HEADERS), hash.0)?
            .map(|b| {
                codec::decode(&b, MAX_HEADER_BYTES)
                    .map_err(|e| corrupt(format!("header {hash}"), e))
            })
            .transpose()
    }

    /// A stored block, canonical or not.
    fn block(&self, hash: &Hash) -> Result<Option<Block>, StoreError> {
        self.db
            .get_cf(self.cf(CF_BLOCKS), hash.0)?
            .map(|b| {
                codec::decode(&b, MAX_BLOCK_BYTES).map_err(|e| corrupt(format!("block {hash}"), e))
            })
            .transpose()
    }

    /// Whether a block with this hash is stored (canonical or not).
    fn has_block(&self, hash: &Hash) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_HEADERS), hash.0)?
            .is_some())
    }

    /// The hash of the canonical block at `height`.
    fn hash_at(&self, height: u64) -> Result<Option<Hash>, StoreError> {
        self.get_hash(CF_HEIGHTS, &height_key(height))
    }

    /// Where a transaction was committed on the canonical chain.
    fn tx_location(&self, tx: &Hash) -> Result<Option<TxLocation>, StoreError> {
        let Some(bytes) = self.db.get_cf(self.cf(CF_TX_INDEX), tx.0)? else {
            return Ok(None);
        };
        let (height, index): (u64, u32) =
            codec::decode(&bytes, 64).map_err(|e| corrupt(format!("tx index {tx}"), e))?;
        // The index holds canonical blocks only: the block is the one at
        // that height.
        let block = self.hash_at(height)?.ok_or_else(|| {
            corrupt(
                format!("tx index {tx}"),
                format!("no canonical block at height {height}"),
            )
        })?;
        Ok(Some(TxLocation {
            block,
            height,
            index,
        }))
    }

    /// Makes `block` the new head, with the state `changes` its execution
    /// produced, in one synced atomic batch. The block must extend the head.
    fn commit_block(&self, block: &Block, changes: &StateChanges) -> Result<(), StoreError> {
        let head = self.head_hash()?;
        let hash = block.hash();
        if block.header.parent != head {
            return Err(StoreError::NotExtendingHead {
                block: hash,
                parent: block.header.parent,
                head,
            });
        }
        let mut batch = WriteBatch::default();
        if self.undo {
            let undo = self.undo_record(changes)?;
            batch.put_cf(self.cf(CF_UNDO), hash.0, codec::encode(&undo));
        }
        batch.put_cf(self.cf(CF_BLOCKS), hash.0, block.encode());
        batch.put_cf(self.cf(CF_HEADERS), hash.0, codec::encode(&block.header));
        batch.put_cf(self.cf(CF_HEIGHTS), height_key(block.header.height), hash.0);
        let tx_cf = self.cf(CF_TX_INDEX);
        for (i, tx) in block.transactions.iter().enumerate() {
            // Height and position (12 bytes): the block hash is the
            // height's. The index is the store's largest family by count.
            let loc: (u64, u32) = (block.header.height, i as u32);
            batch.put_cf(tx_cf, tx.hash().0, codec::encode(&loc));
        }
        self.put_state(&mut batch, changes);
        batch.put_cf(self.cf(CF_META), META_HEAD, hash.0);
        // The cache changes under its lock together with the write, so
        // that no reader caches a value from before it afterwards.
        let mut cache = self.cache();
        self.db.write_opt(batch, &Self::synced())?;
        if let Ok(c) = cache.as_mut() {
            c.generation += 1;
            for (k, v) in changes {
                c.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }

    /// Moves the head back `n` blocks, restoring the exact state before them,
    /// in one synced atomic batch. The reverted blocks stay stored (not
    /// canonical); they are returned, the old head first.
    fn revert(&self, n: u64) -> Result<Vec<Block>, StoreError> {
        let head = self.head()?;
        if n > head.height {
            return Err(StoreError::RevertPastGenesis {
                requested: n,
                height: head.height,
            });
        }
        let mut batch = WriteBatch::default();
        let mut reverted = Vec::with_capacity(n as usize);
        let mut hash = self.head_hash()?;
        for _ in 0..n {
            let block = self
                .block(&hash)?
                .ok_or_else(|| corrupt("chain", format!("canonical block {hash} is missing")))?;
            let undo_bytes = self
                .db
                .get_cf(self.cf(CF_UNDO), hash.0)?
                .ok_or(StoreError::NoUndo { block: hash })?;
            let undo: UndoRecord = codec::decode(&undo_bytes, MAX_UNDO_BYTES)
                .map_err(|e| corrupt(format!("undo record of {hash}"), e))?;
            // Reverting newest first: a key changed by several blocks ends
            // with the value from before the oldest, as the batch keeps the
            // last write to a key.
            let state_cf = self.cf(CF_STATE);
            for (k, old) in undo {
                match old {
                    Some(v) => batch.put_cf(state_cf, k, v),
                    None => batch.delete_cf(state_cf, k),
                }
            }
            batch.delete_cf(self.cf(CF_UNDO), hash.0);
            batch.delete_cf(self.cf(CF_HEIGHTS), height_key(block.header.height));
            for tx in &block.transactions {
                batch.delete_cf(self.cf(CF_TX_INDEX), tx.hash().0);
            }
            hash = block.header.parent;
            reverted.push(block);
        }
        batch.put_cf(self.cf(CF_META), META_HEAD, hash.0);
        let mut cache = self.cache();
        self.db.write_opt(batch, &Self::synced())?;
        if let Ok(c) = cache.as_mut() {
            c.generation += 1;
            c.clear();
        }
        Ok(reverted)
    }

    /// Applies engine-state writes (`None` deletes) durably and atomically.
    fn engine_write(&self, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.put_cf(self.cf(CF_ENGINE), k, v),
                None => batch.delete_cf(self.cf(CF_ENGINE), k),
            }
        }
        self.db.write_opt(batch, &Self::synced())?;
        Ok(())
    }

    /// Every engine-state entry, in key order (read once at start).
    fn engine_entries(&self) -> Result<Vec<RawEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_ENGINE), IteratorMode::Start) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}

impl StateReader for Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let generation = match self.cache() {
            Ok(c) => match c.entries.get(key) {
                Some(v) => return Ok(v.clone()),
                None => Some(c.generation),
            },
            Err(()) => None,
        };
        let value = self
            .db
            .get_cf(self.cf(CF_STATE), key)
            .map_err(|e| StateError::Storage(e.into_string()))?;
        if let Ok(mut c) = self.cache() {
            if Some(c.generation) == generation {
                c.insert(key.to_vec(), value.clone());
            }
        }
        Ok(value)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
