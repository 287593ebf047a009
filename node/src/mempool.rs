//! The mempool: signature-checked transactions waiting for a block.
//!
//! - Entry: the caller verifies signatures (batched for gossip); the mempool
//!   checks chain id, nonce and funds against the committed state.
//! - Nonce gaps: a transaction ahead of the account's nonce is held until the
//!   gap fills (at most `max_per_sender` ahead).
//! - Replacement: same sender and nonce with a strictly higher fee replaces.
//! - Limits: per sender and in total; when full, a new transaction evicts the
//!   cheapest last-in-line transaction of another sender if it pays more.
//! - Blocks take, per sender, the run of consecutive nonces from the account's
//!   nonce, highest fee first across senders.

use std::collections::{BTreeMap, BinaryHeap};

use foldhash::{HashMap, HashMapExt};

use cairn_chain::{Account, Address, Hash, Transaction};

/// Why a transaction was refused. `code()` is the API's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("wrong chain: this node runs {expected:?}, the transaction is for {got:?}")]
    WrongChain { expected: String, got: String },
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
    #[error("mempool is full")]
    Full,
}

impl Rejection {
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::BadSignature(_) => "bad_signature",
            Rejection::WrongChain { .. } => "wrong_chain",
            Rejection::BadNonce { .. } | Rejection::NonceTooFar { .. } => "bad_nonce",
            Rejection::InsufficientFunds { .. } => "insufficient_funds",
            Rejection::Malformed(_) => "malformed",
            Rejection::Underpriced { .. } => "underpriced",
            Rejection::Duplicate => "duplicate",
            Rejection::Full => "mempool_full",
        }
    }
}

/// One sender's pending transactions, in nonce order. A sender has at most
/// `max_per_sender`, under load mostly one or two: a sorted vector costs
/// their size, where a B-tree map's first node costs eleven transactions'
/// (about 2 KB per sender; a profile at 15,000 transfers/s showed the
/// mempool's maps at 44 MB for 24,000 transactions).
#[derive(Debug, Default)]
struct Queue(Vec<Transaction>);

impl Queue {
    fn position(&self, nonce: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&nonce, |tx| tx.nonce)
    }

    fn get(&self, nonce: &u64) -> Option<&Transaction> {
        self.position(*nonce).ok().map(|i| &self.0[i])
    }

    fn contains_key(&self, nonce: &u64) -> bool {
        self.position(*nonce).is_ok()
    }

    /// Adds `tx`, replacing the transaction with its nonce if any.
    fn insert(&mut self, tx: Transaction) -> Option<Transaction> {
        match self.position(tx.nonce) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i], tx)),
            Err(i) => {
                // Grown one at a time: queues stay short.
                self.0.reserve_exact(1);
                self.0.insert(i, tx);
                None
            }
        }
    }

    fn remove(&mut self, nonce: &u64) -> Option<Transaction> {
        let i = self.position(*nonce).ok()?;
        let tx = self.0.remove(i);
        if self.0.len() * 4 <= self.0.capacity() {
            self.0.shrink_to_fit();
        }
        Some(tx)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn last(&self) -> Option<&Transaction> {
        self.0.last()
    }

    fn values(&self) -> impl Iterator<Item = &Transaction> {
        self.0.iter()
    }

    /// The transactions with nonces below `nonce`.
    fn below(&self, nonce: u64) -> impl Iterator<Item = &Transaction> {
        let end = self.position(nonce).unwrap_or_else(|i| i);
        self.0[..end].iter()
    }

    /// The transactions with nonces from `nonce` on.
    fn from(&self, nonce: u64) -> impl Iterator<Item = &Transaction> {
        let start = self.position(nonce).unwrap_or_else(|i| i);
        self.0[start..].iter()
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Mempool {
    chain_id: String,
    max_total: usize,
    max_per_sender: usize,
    by_sender: BTreeMap<Address, Queue>,
    by_hash: HashMap<Hash, (Address, u64)>,
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
}

impl Mempool {
    pub fn new(chain_id: String, max_total: usize, max_per_sender: usize) -> Self {
        Self {
            chain_id,
            max_total: max_total.max(1),
            max_per_sender: max_per_sender.max(1),
            by_sender: BTreeMap::new(),
            by_hash: HashMap::new(),
            next: HashMap::new(),
            min_fee: u64::MAX,
            runs: HashMap::new(),
            ready_total: 0,
        }
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
        if self.by_hash.contains_key(&hash) {
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
        let account = account.unwrap_or_default();
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
        if let Some(old) = self.by_sender.get(&sender).and_then(|q| q.get(&tx.nonce)) {
            if tx.fee <= old.fee {
                return Err(Rejection::Underpriced { fee: old.fee });
            }
            let old_hash = old.hash();
            self.by_hash.remove(&old_hash);
        } else if self.len() >= self.max_total {
            if tx.fee <= self.min_fee {
                return Err(Rejection::Full);
            }
            self.evict_for(&sender, tx.fee)?;
        }
        self.min_fee = self.min_fee.min(tx.fee);
        self.by_hash.insert(hash, (sender, tx.nonce));
        self.by_sender.entry(sender).or_default().insert(tx);
        self.next.insert(sender, account.nonce);
        self.recount(&sender);
        Ok(hash)
    }

    /// Recomputes `sender`'s ready run after a change to its queue or nonce.
    fn recount(&mut self, sender: &Address) {
        let run = match (self.by_sender.get(sender), self.next.get(sender)) {
            (Some(q), Some(&first)) => {
                let mut n = first;
                while q.contains_key(&n) {
                    n += 1;
                }
                (n - first) as usize
            }
            _ => 0,
        };
        let old = if run == 0 {
            self.runs.remove(sender)
        } else {
            self.runs.insert(*sender, run)
        };
        self.ready_total = self.ready_total - old.unwrap_or(0) + run;
    }

    /// Makes room for a transaction paying `fee`: drops the cheapest
    /// transaction that is last in its sender's queue, if it pays less.
    fn evict_for(&mut self, sender: &Address, fee: u64) -> Result<(), Rejection> {
        let victim = self
            .by_sender
            .iter()
            .filter(|(s, _)| *s != sender)
            .filter_map(|(s, q)| q.last().map(|tx| (tx.fee, *s, tx.nonce)))
            .min();
        match victim {
            Some((victim_fee, s, n)) if victim_fee < fee => {
                self.remove(&s, n);
                Ok(())
            }
            _ => Err(Rejection::Full),
        }
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

    /// About how many transactions are ready, counting at most `cap`,
    /// without reading the store: per sender the run of nonces from its
    /// committed nonce as of the last insert or prune. Every commit prunes
    /// the senders it touched, so the hint is exact but after a
    /// reorganisation lowered a nonce, when it can only undercount.
    /// O(ready) where [`Mempool::ready_count`] reads every sender's account.
    pub fn ready_hint(&self, cap: usize) -> usize {
        self.ready_total.min(cap)
    }

    /// How many transactions are ready now (for the engine).
    pub fn ready_count(&self, next_nonce: impl Fn(&Address) -> u64) -> usize {
        self.by_sender
            .iter()
            .map(|(s, q)| {
                let mut n = next_nonce(s);
                let mut c = 0;
                while q.contains_key(&n) {
                    c += 1;
                    n += 1;
                }
                c
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_keeps_nonce_order_whatever_the_insert_order() {
        let key = SecretKey::from_label("queue");
        let tx = |n: u64, fee: u64| Transaction::new_signed(&key, "c", key.address(), 1, fee, n);
        let mut q = Queue::default();
        for n in [5u64, 2, 9, 3] {
            assert!(q.insert(tx(n, 1)).is_none());
        }
        let nonces =
            |it: &mut dyn Iterator<Item = &Transaction>| it.map(|t| t.nonce).collect::<Vec<_>>();
        assert_eq!(nonces(&mut q.values()), vec![2, 3, 5, 9]);
        assert_eq!(nonces(&mut q.below(5)), vec![2, 3]);
        assert_eq!(nonces(&mut q.from(4)), vec![5, 9]);
        assert_eq!(q.last().map(|t| t.nonce), Some(9));
        // Same nonce: replaced, the old one handed back.
        assert_eq!(q.insert(tx(5, 7)).map(|t| t.fee), Some(1));
        assert_eq!(q.get(&5).map(|t| t.fee), Some(7));
        assert_eq!(q.remove(&2).map(|t| t.nonce), Some(2));
        assert!(q.remove(&2).is_none());
        assert!(!q.contains_key(&2) && q.contains_key(&3));
    }

    #[test]
    fn the_ready_hint_counts_runs_from_the_committed_nonce_and_stops_at_the_cap() {
        let key = SecretKey::from_label("hint");
        let mut pool = Mempool::new("c".into(), 100, 100);
        for n in [3u64, 4, 6] {
            let tx = Transaction::new_signed(&key, "c", key.address(), 1, 1, n);
            pool.insert(tx, acct(1_000, 3)).expect("insert");
        }
        // 3 and 4 are ready; 6 waits for 5.
        assert_eq!(pool.ready_hint(100), 2);
        assert_eq!(pool.ready_hint(1), 1);
        assert_eq!(pool.ready_count(|_| 3), 2);
        // Block commits nonces 3 and 4: prune, nothing ready.
        pool.prune([(key.address(), 5, 1_000)]);
        assert_eq!(pool.ready_hint(100), 0);
    }
    use cairn_chain::SecretKey;

    /// The hint's running total equals a count from scratch after any mix
    /// of inserts (gaps, replacements, evictions), prunes and discards.
    #[test]
    fn the_ready_total_matches_a_recount_after_every_change() {
        use rand::{Rng, SeedableRng};
        let keys: Vec<SecretKey> = (0..6)
            .map(|i| SecretKey::from_label(&format!("run{i}")))
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut pool = Mempool::new("c".into(), 20, 8);
        let mut committed = vec![0u64; keys.len()];
        for _ in 0..2_000 {
            let k = rng.gen_range(0..keys.len());
            let key = &keys[k];
            match rng.gen_range(0..10) {
                0..=6 => {
                    let nonce = committed[k] + rng.gen_range(0..6);
                    let fee = rng.gen_range(1..5);
                    let tx = Transaction::new_signed(key, "c", key.address(), 1, fee, nonce);
                    let _ = pool.insert(tx, acct(1_000, committed[k]));
                }
                7 | 8 => {
                    committed[k] += rng.gen_range(0..3);
                    pool.prune([(key.address(), committed[k], rng.gen_range(0..20))]);
                }
                _ => {
                    if let Some(tx) = pool
                        .pending(100)
                        .into_iter()
                        .find(|t| t.from == key.public_key())
                    {
                        pool.discard(&tx);
                    }
                }
            }
            let brute: usize = pool
                .by_sender
                .iter()
                .map(|(s, q)| {
                    let mut n = pool.next.get(s).copied().unwrap_or(0);
                    let mut c = 0;
                    while q.contains_key(&n) {
                        c += 1;
                        n += 1;
                    }
                    c
                })
                .sum();
            assert_eq!(pool.ready_hint(usize::MAX), brute);
        }
    }

    fn acct(balance: u64, nonce: u64) -> Option<Account> {
        Some(Account {
            balance,
            nonce,
            index: 0,
        })
    }

    #[test]
    fn gaps_are_held_replacement_needs_a_higher_fee_and_ready_follows_nonces() {
        let k = SecretKey::from_label("a");
        let to = SecretKey::from_label("b").address();
        let mut m = Mempool::new("c".into(), 10, 5);
        let tx = |nonce, fee| Transaction::new_signed(&k, "c", to, 1, fee, nonce);
        m.insert(tx(1, 1), acct(100, 0)).expect("gap held");
        assert!(m.ready(10, |_| None).is_empty());
        m.insert(tx(0, 1), acct(100, 0)).expect("fills gap");
        assert_eq!(m.ready(10, |_| None).len(), 2);
        assert_eq!(
            m.insert(tx(0, 1), acct(100, 0)).map_err(|e| e.code()),
            Err("duplicate")
        );
        assert_eq!(
            m.insert(Transaction::new_signed(&k, "c", to, 2, 1, 0), acct(100, 0))
                .map_err(|e| e.code()),
            Err("underpriced")
        );
        m.insert(tx(0, 5), acct(100, 0))
            .expect("replaced by higher fee");
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.insert(tx(9, 1), acct(100, 0)).map_err(|e| e.code()),
            Err("bad_nonce")
        );
        // What a (re)connecting peer is pushed: everything, in nonce order.
        let pending = m.pending(10);
        assert_eq!(
            pending.iter().map(|t| t.nonce).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert_eq!(m.pending(1).len(), 1);
        m.prune([(k.address(), 1, 100)]);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.insert(tx(0, 9), acct(100, 1)).map_err(|e| e.code()),
            Err("bad_nonce")
        );
    }

    #[test]
    fn transactions_the_balance_can_no_longer_pay_for_are_pruned() {
        // Each costs 6; the balance pays for one. Left in, the second would
        // count as ready for ever and keep the engine proposing blocks.
        let k = SecretKey::from_label("spender");
        let to = SecretKey::from_label("to").address();
        let mut m = Mempool::new("c".into(), 10, 5);
        for nonce in 0..3 {
            m.insert(
                Transaction::new_signed(&k, "c", to, 5, 1, nonce),
                acct(12, 0),
            )
            .expect("each affordable alone");
        }
        m.insert(Transaction::new_signed(&k, "c", to, 5, 1, 4), acct(12, 0))
            .expect("a gap is held");
        m.prune([(k.address(), 0, 10)]);
        assert_eq!(m.ready_count(|_| 0), 1);
        assert_eq!(
            m.len(),
            1,
            "the unaffordable run and what waits on it are gone"
        );
        let tx = Transaction::new_signed(&k, "c", to, 5, 1, 0);
        m.discard(&tx);
        assert!(m.is_empty());
    }

    #[test]
    fn limits_evict_the_cheapest_or_refuse() {
        let to = SecretKey::from_label("to").address();
        let mut m = Mempool::new("c".into(), 2, 5);
        let keys: Vec<_> = (0..3)
            .map(|i| SecretKey::from_label(&format!("k{i}")))
            .collect();
        m.insert(
            Transaction::new_signed(&keys[0], "c", to, 1, 1, 0),
            acct(9, 0),
        )
        .expect("a");
        m.insert(
            Transaction::new_signed(&keys[1], "c", to, 1, 3, 0),
            acct(9, 0),
        )
        .expect("b");
        let cheap = Transaction::new_signed(&keys[2], "c", to, 1, 1, 0);
        assert_eq!(
            m.insert(cheap, acct(9, 0)).map_err(|e| e.code()),
            Err("mempool_full")
        );
        let rich = Transaction::new_signed(&keys[2], "c", to, 1, 2, 0);
        m.insert(rich, acct(9, 0)).expect("evicts the fee-1 one");
        let fees: Vec<u64> = m.ready(10, |_| None).iter().map(|t| t.fee).collect();
        assert_eq!(fees, vec![3, 2]);
        let poor = Transaction::new_signed(&keys[0], "c", to, 100, 1, 0);
        assert_eq!(
            m.insert(poor, acct(9, 0)).map_err(|e| e.code()),
            Err("insufficient_funds")
        );
        let other = Transaction::new_signed(&keys[0], "other", to, 1, 1, 0);
        assert_eq!(
            m.insert(other, acct(9, 0)).map_err(|e| e.code()),
            Err("wrong_chain")
        );
    }
}
