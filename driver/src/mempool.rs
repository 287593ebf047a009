//! The mempool: signature-checked transactions waiting for a block.
//!
//! - Entry: the caller verifies signatures (batched for gossip); the mempool
//!   checks chain id, nonce and funds against the committed state.
//! - Nonce gaps: a transaction ahead of the account's nonce is held until the
//!   gap fills (at most `max_per_sender` ahead).
//! - Replacement: same sender and nonce with a strictly higher fee replaces.
//! - Limits: per sender and in total; when full, a new transaction evicts the
//!   cheapest last-in-line transaction of another sender if it pays more.
//! - Waiting transactions (behind a nonce gap) hold at most a quarter of the
//!   pool, and a full pool drops them first: a transaction that can go in a
//!   block evicts the cheapest waiting one whatever the fees. Otherwise a
//!   pool filled with transactions whose missing nonces were refused (while
//!   it was full) stays full for ever, refuses everything else and leaves
//!   the block builder nothing: the chain stops (seen under a load test
//!   offering more than a devnet could commit).
//! - Blocks take, per sender, the run of consecutive nonces from the account's
//!   nonce, highest fee first across senders.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use foldhash::{HashMap, HashMapExt};

use cairn_chain::{Account, Address, Hash, Transaction};

/// Most dropped transactions remembered between two
/// [`Mempool::take_dropped`] calls (the rest are not reported).
pub const MAX_DROPPED_KEPT: usize = 1_024;

/// Why a transaction was refused. `code()` is the API's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("wrong chain: this node runs {expected:?}, the transaction is for {got:?}")]
    WrongChain { expected: String, got: String },
    #[error("fee {fee} is below this network's minimum of {min}")]
    FeeTooLow { fee: u64, min: u64 },
    #[error("the sending account does not exist (it has never received funds)")]
    UnknownSender,
    #[error("bad nonce: the account's next nonce is {expected}, got {got}")]
    BadNonce { expected: u64, got: u64 },
    #[error("nonce {got} is too far ahead of the account's next nonce {expected}")]
    NonceTooFar { expected: u64, got: u64 },
    #[error("insufficient funds: balance {balance}, amount + fee {needed}")]
    InsufficientFunds { balance: u64, needed: u64 },
    #[error("malformed transaction: {0}")]
    Malformed(String),
    #[error("a transaction with this nonce and a fee of {fee} is pending; pay more to replace it")]
    Underpriced { fee: u64 },
    #[error("already pending")]
    Duplicate,
    #[error("the node cannot read its state: {0}")]
    Storage(String),
    #[error("mempool is full")]
    Full,
    #[error(
        "the mempool holds its limit of {limit} transactions waiting for an earlier nonce \
         (the account's next nonce is {expected}); send the missing nonces first"
    )]
    GapsFull { limit: usize, expected: u64 },
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::BadSignature(_) => "bad_signature",
            Rejection::WrongChain { .. } => "wrong_chain",
            Rejection::FeeTooLow { .. } => "fee_too_low",
            Rejection::UnknownSender => "unknown_sender",
            Rejection::BadNonce { .. } | Rejection::NonceTooFar { .. } => "bad_nonce",
            Rejection::InsufficientFunds { .. } => "insufficient_funds",
            Rejection::Malformed(_) => "malformed",
            Rejection::Underpriced { .. } => "underpriced",
            Rejection::Duplicate => "duplicate",
            Rejection::Storage(_) => "internal",
            Rejection::Full | Rejection::GapsFull { .. } => "mempool_full",
        }
    }
}

/// One sender's pending transactions, in nonce order. A sender has at most
/// `max_per_sender`, under load mostly one or two: a sorted vector costs
/// their size, where a B-tree map's first node costs eleven transactions'
/// (about 2 KB per sender; a profile at 15,000 transfers/s showed the
/// mempool's maps at 44 MB for 24,000 transactions).
#[derive(Debug, Default)]
struct Queue(Vec<Pending>);

/// What [`Mempool::insert`] must drop to take a transaction.
#[derive(Debug)]
enum Room {
    Free,
    /// The pending transaction with the same sender and nonce (this hash).
    Replaces(Hash),
    /// Another transaction, to make room: (sender, nonce).
    Evicts(Address, u64),
}

/// A pending transaction and when this node last gossiped it (it arrived,
/// or [`Mempool::rebroadcast`] announced it again).
#[derive(Debug)]
struct Pending {
    tx: Transaction,
    gossiped: u64,
    /// When it entered the pool (to expire it while it waits behind a gap).
    added: u64,
}

impl Queue {
    fn position(&self, nonce: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&nonce, |p| p.tx.nonce)
    }

    fn get(&self, nonce: &u64) -> Option<&Transaction> {
        self.position(*nonce).ok().map(|i| &self.0[i].tx)
    }

    #[cfg(test)]
    fn contains_key(&self, nonce: &u64) -> bool {
        self.position(*nonce).is_ok()
    }

    /// Adds `tx` (gossiped at `now`), replacing the transaction with its
    /// nonce if any.
    fn insert(&mut self, tx: Transaction, now: u64) -> Option<Transaction> {
        let pending = Pending {
            tx,
            gossiped: now,
            added: now,
        };
        match self.position(pending.tx.nonce) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], pending).tx),
            Err(i) => {
                // Grown one at a time: queues stay short.
                self.0.reserve_exact(1);
                self.0.insert(i, pending);
                None
            }
        }
    }

    fn remove(&mut self, nonce: &u64) -> Option<Transaction> {
        let i = self.position(*nonce).ok()?;
        let p = self.0.remove(i);
        if self.0.len() * 4 <= self.0.capacity() {
            self.0.shrink_to_fit();
        }
        Some(p.tx)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn last(&self) -> Option<&Transaction> {
        self.0.last().map(|p| &p.tx)
    }

    fn values(&self) -> impl Iterator<Item = &Transaction> {
        self.0.iter().map(|p| &p.tx)
    }

    /// The transactions with nonces below `nonce`.
    fn below(&self, nonce: u64) -> impl Iterator<Item = &Transaction> {
        let end = self.position(nonce).unwrap_or_else(|i| i);
        self.0[..end].iter().map(|p| &p.tx)
    }

    /// The transactions with nonces from `nonce` on.
    fn from(&self, nonce: u64) -> impl Iterator<Item = &Transaction> {
        let start = self.position(nonce).unwrap_or_else(|i| i);
        self.0[start..].iter().map(|p| &p.tx)
    }

    /// How many consecutive nonces from `nonce` are here.
    fn run_len(&self, nonce: u64) -> usize {
        let Ok(start) = self.position(nonce) else {
            return 0;
        };
        self.0[start..]
            .iter()
            .zip(nonce..)
            .take_while(|(p, n)| p.tx.nonce == *n)
            .count()
    }

    /// The run of consecutive nonces from `nonce`, to mark as gossiped.
    fn run_mut(&mut self, nonce: u64) -> impl Iterator<Item = &mut Pending> {
        let len = self.run_len(nonce);
        let start = self.position(nonce).unwrap_or(self.0.len());
        self.0[start..].iter_mut().take(len)
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Mempool {
    chain_id: String,
    max_total: usize,
    max_per_sender: usize,
    by_sender: BTreeMap<Address, Queue>,
    /// Every pending transaction's hash, to its sender and nonce.
    by_hash: HashMap<Hash, (Address, u64)>,
    /// The sender [`Mempool::rebroadcast`] starts from next.
    rebroadcast_from: Option<Address>,
    /// Each pending sender's committed nonce as last seen (on insert and
    /// prune): what [`Mempool::ready_hint`] counts from without reading
    /// the store.
    next: HashMap<Address, u64>,
    /// At most the lowest fee in the pool (a bound, not kept exact): a
    /// transaction paying no more cannot evict anything, which is then
    /// known without scanning every sender.
    min_fee: u64,
    /// Per pending sender, the length of its run of consecutive nonces from
    /// `next` (what [`Mempool::ready_hint`] counts), and their sum: kept
    /// up to date per touched sender, so the hint is O(1).
    runs: HashMap<Address, usize>,
    ready_total: usize,
    /// Most transactions waiting behind a nonce gap (a quarter of the pool).
    max_waiting: usize,
    /// The senders with transactions behind a gap (their queue is longer
    /// than their run), by the fee of their last one: what a full pool
    /// drops first, cheapest first. `waiting_fee` is each one's key.
    waiting: BTreeSet<(u64, Address)>,
    waiting_fee: HashMap<Address, u64>,
    /// The chain's minimum fee (genesis `min_fee`).
    fee_floor: u64,
    /// Transactions dropped without committing, with why, until
    /// [`Mempool::take_dropped`] (at most [`MAX_DROPPED_KEPT`]).
    dropped: Vec<(Hash, &'static str)>,
    /// The pool's clock in milliseconds: when transactions arrived and were
    /// last gossiped (see [`Mempool::with_clock`]).
    clock: PoolClock,
}

/// A clock in milliseconds.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone)]
struct PoolClock(Clock);

impl std::fmt::Debug for PoolClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolClock")
    }
}

/// Milliseconds since the process's first look at this clock (monotonic).
fn process_clock() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Mempool {
    pub fn new(chain_id: String, max_total: usize, max_per_sender: usize) -> Self {
        Self {
            chain_id,
            max_total: max_total.max(1),
            max_per_sender: max_per_sender.max(1),
            by_sender: BTreeMap::new(),
            by_hash: HashMap::new(),
            rebroadcast_from: None,
            next: HashMap::new(),
            min_fee: u64::MAX,
            runs: HashMap::new(),
            ready_total: 0,
            max_waiting: (max_total / 4).max(1),
            waiting: BTreeSet::new(),
            waiting_fee: HashMap::new(),
            fee_floor: 0,
            dropped: Vec::new(),
            clock: PoolClock(Arc::new(process_clock)),
        }
    }

    /// Reads time from `clock` (the simulator's node clocks) instead of the
    /// process's monotonic clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = PoolClock(clock);
        self
    }

    /// The pool's clock now (what [`Mempool::rebroadcast`] and
    /// [`Mempool::expire_waiting`] compare with).
    pub fn now_ms(&self) -> u64 {
        (self.clock.0)()
    }

    /// Refuses transactions paying less than `fee` (the chain's minimum).
    pub fn with_fee_floor(mut self, fee: u64) -> Self {
        self.fee_floor = fee;
        self
    }

    /// How many transactions wait behind a nonce gap.
    pub fn waiting_len(&self) -> usize {
        self.len().saturating_sub(self.ready_total)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.by_hash.contains_key(hash)
    }

    /// The pending transaction with this hash.
    pub fn get(&self, hash: &Hash) -> Option<&Transaction> {
        let (sender, nonce) = self.by_hash.get(hash)?;
        self.by_sender.get(sender)?.get(nonce)
    }

    /// Up to `max` pending transactions, each sender's in nonce order.
    pub fn pending(&self, max: usize) -> Vec<Transaction> {
        self.by_sender
            .values()
            .flat_map(|txs| txs.values())
            .take(max)
            .cloned()
            .collect()
    }

    /// Adds a transaction whose signature the caller verified. `account` is
    /// the sender's committed account (`None`: it does not exist yet).
    pub fn insert(&mut self, tx: Transaction, account: Option<Account>) -> Result<Hash, Rejection> {
        let hash = tx.hash();
        // A sender that does not exist cannot pay, and no block takes it.
        let account = account.ok_or(Rejection::UnknownSender)?;
        match self.plan(&tx, &hash, &account)? {
            Room::Free => {}
            Room::Replaces(old) => {
                self.by_hash.remove(&old);
                self.note_dropped(
                    old,
                    "replaced by a transfer with the same nonce and a higher fee",
                );
            }
            Room::Evicts(s, n) => {
                if let Some(old) = self.by_sender.get(&s).and_then(|q| q.get(&n)) {
                    let old = old.hash();
                    self.note_dropped(old, "evicted: the pool was full and a higher fee came");
                }
                self.remove(&s, n)
            }
        }
        let sender = tx.sender();
        self.min_fee = self.min_fee.min(tx.fee);
        self.by_hash.insert(hash, (sender, tx.nonce));
        self.by_sender
            .entry(sender)
            .or_default()
            .insert(tx, (self.clock.0)());
        self.next.insert(sender, account.nonce);
        self.recount(&sender);
        Ok(hash)
    }

    /// Whether [`Mempool::insert`] would take `tx` now, without taking it
    /// and without its signature: what is refused anyway (a full pool, a
    /// used nonce, a duplicate) is not worth a signature check.
    pub fn check(&self, tx: &Transaction, account: Option<&Account>) -> Result<(), Rejection> {
        let account = account.ok_or(Rejection::UnknownSender)?;
        self.plan(tx, &tx.hash(), account).map(|_| ())
    }

    /// The rules of [`Mempool::insert`], and what it must drop first.
    fn plan(&self, tx: &Transaction, hash: &Hash, account: &Account) -> Result<Room, Rejection> {
        if self.by_hash.contains_key(hash) {
            return Err(Rejection::Duplicate);
        }
        if tx.chain_id != self.chain_id {
            return Err(Rejection::WrongChain {
                expected: self.chain_id.clone(),
                got: tx.chain_id.clone(),
            });
        }
        tx.check_format()
            .map_err(|e| Rejection::Malformed(e.to_string()))?;
        if tx.fee < self.fee_floor {
            return Err(Rejection::FeeTooLow {
                fee: tx.fee,
                min: self.fee_floor,
            });
        }
        if tx.nonce < account.nonce {
            return Err(Rejection::BadNonce {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        if tx.nonce >= account.nonce.saturating_add(self.max_per_sender as u64) {
            return Err(Rejection::NonceTooFar {
                expected: account.nonce,
                got: tx.nonce,
            });
        }
        let needed = tx.total_cost().unwrap_or(u64::MAX);
        if needed > account.balance {
            return Err(Rejection::InsufficientFunds {
                balance: account.balance,
                needed,
            });
        }
        let sender = tx.sender();
        let queue = self.by_sender.get(&sender);
        if let Some(old) = queue.and_then(|q| q.get(&tx.nonce)) {
            if tx.fee <= old.fee {
                return Err(Rejection::Underpriced { fee: old.fee });
            }
            return Ok(Room::Replaces(old.hash()));
        }
        // Whether it can go in a block (no gap before it) or waits.
        let run = queue.map_or(0, |q| q.run_len(account.nonce));
        if tx.nonce == account.nonce.saturating_add(run as u64) {
            if self.len() < self.max_total {
                return Ok(Room::Free);
            }
            // Full: the cheapest waiting transaction goes, whatever it
            // pays; else the cheapest last-in-line one, if it pays less.
            if let Some((_, s, n)) = self.cheapest_waiting(&sender) {
                return Ok(Room::Evicts(s, n));
            }
            if tx.fee <= self.min_fee {
                return Err(Rejection::Full);
            }
            return match self.cheapest_last(&sender) {
                Some((fee, s, n)) if fee < tx.fee => Ok(Room::Evicts(s, n)),
                _ => Err(Rejection::Full),
            };
        }
        if self.len() < self.max_total && self.waiting_len() < self.max_waiting {
            return Ok(Room::Free);
        }
        // It would wait: only in place of a cheaper waiting one.
        match self.cheapest_waiting(&sender) {
            Some((fee, s, n)) if fee < tx.fee => Ok(Room::Evicts(s, n)),
            _ => Err(Rejection::GapsFull {
                limit: self.max_waiting,
                expected: account.nonce,
            }),
        }
    }

    /// Recomputes `sender`'s ready run after a change to its queue or nonce.
    fn recount(&mut self, sender: &Address) {
        let run = match (self.by_sender.get(sender), self.next.get(sender)) {
            (Some(q), Some(&first)) => q.run_len(first),
            _ => 0,
        };
        let old = if run == 0 {
            self.runs.remove(sender)
        } else {
            self.runs.insert(*sender, run)
        };
        self.ready_total = self.ready_total - old.unwrap_or(0) + run;
        let waiting = self
            .by_sender
            .get(sender)
            .filter(|q| q.len() > run)
            .and_then(|q| q.last())
            .map(|tx| tx.fee);
        if self.waiting_fee.get(sender) != waiting.as_ref() {
            if let Some(fee) = self.waiting_fee.remove(sender) {
                self.waiting.remove(&(fee, *sender));
            }
            if let Some(fee) = waiting {
                self.waiting.insert((fee, *sender));
                self.waiting_fee.insert(*sender, fee);
            }
        }
    }

    /// The cheapest last waiting transaction of a sender other than
    /// `sender`, as (fee, its sender, nonce).
    fn cheapest_waiting(&self, sender: &Address) -> Option<(u64, Address, u64)> {
        self.waiting
            .iter()
            .find(|(_, s)| s != sender)
            .and_then(|&(fee, s)| Some((fee, s, self.by_sender.get(&s)?.last()?.nonce)))
    }

    /// The cheapest transaction that is last in its sender's queue, of a
    /// sender other than `sender`, as (fee, its sender, nonce). A scan of
    /// every sender: only reached when the pool is full, holds nothing
    /// waiting, and the newcomer pays more than the pool's lowest fee.
    fn cheapest_last(&self, sender: &Address) -> Option<(u64, Address, u64)> {
        self.by_sender
            .iter()
            .filter(|(s, _)| *s != sender)
            .filter_map(|(s, q)| q.last().map(|tx| (tx.fee, *s, tx.nonce)))
            .min()
    }

    fn remove(&mut self, sender: &Address, nonce: u64) {
        if let Some(q) = self.by_sender.get_mut(sender) {
            if let Some(tx) = q.remove(&nonce) {
                self.by_hash.remove(&tx.hash());
            }
            if q.is_empty() {
                self.by_sender.remove(sender);
                self.next.remove(sender);
            }
            if self.by_hash.is_empty() {
                self.min_fee = u64::MAX;
            }
            self.recount(sender);
        }
    }

    /// Drops what the committed state made stale for each touched sender
    /// (its committed account nonce and balance): nonces below the account
    /// nonce, and from the first transaction the balance can no longer pay
    /// for (counting the ones before it) on, since none of those can be
    /// included any more. Left in, they would count as ready for ever.
    pub fn prune(&mut self, senders: impl IntoIterator<Item = (Address, u64, u64)>) {
        for (sender, next_nonce, balance) in senders {
            let Some(q) = self.by_sender.get(&sender) else {
                continue;
            };
            self.next.insert(sender, next_nonce);
            let mut drop: Vec<u64> = q.below(next_nonce).map(|tx| tx.nonce).collect();
            let mut spent: u64 = 0;
            let mut expected = next_nonce;
            let mut broke = false;
            for tx in q.from(next_nonce) {
                let n = tx.nonce;
                if broke || n != expected {
                    // A gap: what follows waits for the missing nonce.
                    if broke {
                        drop.push(n);
                    }
                    continue;
                }
                match tx.total_cost().and_then(|c| spent.checked_add(c)) {
                    Some(total) if total <= balance => {
                        spent = total;
                        expected += 1;
                    }
                    _ => {
                        broke = true;
                        drop.push(n);
                    }
                }
            }
            for n in drop {
                self.remove(&sender, n);
            }
            self.recount(&sender);
        }
    }

    /// Drops one transaction (a block builder found it invalid).
    pub fn discard(&mut self, tx: &Transaction) {
        self.remove(&tx.sender(), tx.nonce);
    }

    /// Transactions ready for a block, at most `max`: per sender the run of
    /// consecutive nonces from its next nonce, highest fee first. The next
    /// nonce is `ahead(sender)` where the block goes on blocks not yet
    /// committed that move it, else the committed one as of the sender's
    /// last insert or prune — exact, since every commit and every revert
    /// prunes the senders it touched, and without a state read per sender
    /// (a build reads none; with 20,000 pending senders and cold caches
    /// those reads took a tenth of a second per block).
    pub fn ready(&self, max: usize, ahead: impl Fn(&Address) -> Option<u64>) -> Vec<Transaction> {
        let mut heads = BinaryHeap::new();
        let mut cursors = HashMap::new();
        for (sender, q) in &self.by_sender {
            let n = ahead(sender)
                .or_else(|| self.next.get(sender).copied())
                .unwrap_or(0);
            if let Some(tx) = q.get(&n) {
                heads.push((tx.fee, std::cmp::Reverse(*sender)));
                cursors.insert(*sender, n);
            }
        }
        let mut out = Vec::new();
        while let Some((_, std::cmp::Reverse(sender))) = heads.pop() {
            if out.len() >= max {
                break;
            }
            let (Some(q), Some(n)) = (self.by_sender.get(&sender), cursors.get_mut(&sender)) else {
                continue;
            };
            if let Some(tx) = q.get(n) {
                out.push(tx.clone());
                *n += 1;
                if let Some(next) = q.get(n) {
                    heads.push((next.fee, std::cmp::Reverse(sender)));
                }
            }
        }
        out
    }

    /// Transactions a block could take (the run of nonces from each
    /// sender's committed one) last gossiped from here at least `age`
    /// before `now`, at most `max`, marked as gossiped `now`: for the node
    /// to announce again. Gossip is not retried, and a peer whose pool was
    /// full refused what it got: a Raft leader that missed transactions its
    /// followers accepted would never include them, and the followers'
    /// pools would stay full of them. Each call starts at the sender where
    /// the last one stopped, so every sender gets its turn.
    pub fn rebroadcast(&mut self, now: u64, age: u64, max: usize) -> Vec<Transaction> {
        let mut out = Vec::new();
        let start = self.rebroadcast_from.take();
        let order: Box<dyn Iterator<Item = (&Address, &mut Queue)>> = match start {
            Some(a) => {
                let (before, after): (Vec<_>, Vec<_>) =
                    self.by_sender.iter_mut().partition(|(s, _)| **s < a);
                Box::new(after.into_iter().chain(before))
            }
            None => Box::new(self.by_sender.iter_mut()),
        };
        for (sender, q) in order {
            if out.len() >= max {
                self.rebroadcast_from = Some(*sender);
                break;
            }
            let Some(&first) = self.next.get(sender) else {
                continue;
            };
            for p in q.run_mut(first) {
                if out.len() >= max {
                    break;
                }
                if now.saturating_sub(p.gossiped) >= age {
                    p.gossiped = now;
                    out.push(p.tx.clone());
                }
            }
        }
        out
    }

    /// Drops the transactions that have waited behind a nonce gap for
    /// `lifetime` or longer (nothing filled the gap: the sender's earlier
    /// nonce was refused or never sent) and returns how many. A transaction
    /// a block can take never expires. Like go-ethereum's lifetime for its
    /// queued transactions; without it they stayed until evicted.
    pub fn expire_waiting(&mut self, now: u64, lifetime: u64) -> usize {
        let mut stale: Vec<(Address, u64)> = Vec::new();
        for sender in self.waiting_fee.keys() {
            let (Some(q), Some(&first)) = (self.by_sender.get(sender), self.next.get(sender))
            else {
                continue;
            };
            let run_end = first.saturating_add(q.run_len(first) as u64);
            stale.extend(
                q.0.iter()
                    .filter(|p| p.tx.nonce >= run_end)
                    .filter(|p| now.saturating_sub(p.added) >= lifetime)
                    .map(|p| (*sender, p.tx.nonce)),
            );
        }
        for (sender, nonce) in &stale {
            if let Some(old) = self.by_sender.get(sender).and_then(|q| q.get(nonce)) {
                let old = old.hash();
                self.note_dropped(old, "expired: it waited too long behind a missing nonce");
            }
            self.remove(sender, *nonce);
        }
        stale.len()
    }

    fn note_dropped(&mut self, hash: Hash, why: &'static str) {
        if self.dropped.len() < MAX_DROPPED_KEPT {
            self.dropped.push((hash, why));
        }
    }

    /// The transactions dropped without committing since the last call
    /// (replaced, evicted, expired), with why.
    pub fn take_dropped(&mut self) -> Vec<(Hash, &'static str)> {
        std::mem::take(&mut self.dropped)
    }

    /// About how many transactions are ready, counting at most `cap`,
    /// without reading the store: per sender the run of nonces from its
    /// committed nonce as of the last insert or prune. Every commit prunes
    /// the senders it touched, so the hint is exact but after a
    /// reorganisation lowered a nonce, when it can only undercount.
    /// O(ready) where [`Mempool::ready_count`] reads every sender's account.
    pub fn ready_hint(&self, cap: usize) -> usize {
        self.ready_total.min(cap)
    }

    /// The nonce `sender`'s next transaction takes, after its pending ones
    /// here that follow its committed nonce `committed` without a gap (as
    /// Ethereum's `pending` transaction count): what a wallet signs with
    /// when it sends several transfers before the first commits.
    pub fn next_nonce(&self, sender: &Address, committed: u64) -> u64 {
        let run = self
            .by_sender
            .get(sender)
            .map_or(0, |q| q.run_len(committed));
        committed + run as u64
    }

    /// How many transactions are ready now (for the engine).
    pub fn ready_count(&self, next_nonce: impl Fn(&Address) -> u64) -> usize {
        self.by_sender
            .iter()
            .map(|(s, q)| q.run_len(next_nonce(s)))
            .sum()
    }
}

#[cfg(test)]
mod tests;
