use super::*;

#[test]
fn a_queue_keeps_nonce_order_whatever_the_insert_order() {
    let key = SecretKey::from_label("queue");
    let tx = |n: u64, fee: u64| {
        Transaction::new_signed(&key, "c", &Hash::ZERO, key.address(), 1, fee, n)
    };
    let mut q = Queue::default();
    for n in [5u64, 2, 9, 3] {
        assert!(q.insert(tx(n, 1), 0).is_none());
    }
    let nonces =
        |it: &mut dyn Iterator<Item = &Transaction>| it.map(|t| t.nonce).collect::<Vec<_>>();
    assert_eq!(nonces(&mut q.values()), vec![2, 3, 5, 9]);
    assert_eq!(nonces(&mut q.below(5)), vec![2, 3]);
    assert_eq!(nonces(&mut q.from(4)), vec![5, 9]);
    assert_eq!(q.last().map(|t| t.nonce), Some(9));
    // Same nonce: replaced, the old one handed back.
    assert_eq!(q.insert(tx(5, 7), 0).map(|t| t.fee), Some(1));
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
        let tx = Transaction::new_signed(&key, "c", &Hash::ZERO, key.address(), 1, 1, n);
        pool.insert(tx, acct(1_000, 3)).expect("insert");
    }
    // 3 and 4 are ready; 6 waits for 5.
    assert_eq!(pool.ready_hint(100), 2);
    // The sender's next transaction takes 5, the gap; another sender's,
    // its committed nonce.
    assert_eq!(pool.next_nonce(&key.address(), 3), 5);
    assert_eq!(pool.next_nonce(&Address::ZERO, 7), 7);
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
        match rng.gen_range(0..11) {
            0..=6 => {
                let nonce = committed[k] + rng.gen_range(0..6);
                let fee = rng.gen_range(1..5);
                let tx =
                    Transaction::new_signed(key, "c", &Hash::ZERO, key.address(), 1, fee, nonce);
                let account = acct(1_000, committed[k]);
                // The check without inserting predicts the insert.
                let predicted = pool.check(&tx, account.as_ref()).map_err(|e| e.code());
                let got = pool.insert(tx, account).map(|_| ()).map_err(|e| e.code());
                assert_eq!(predicted, got);
            }
            10 => {
                // Whatever waits expires (a lifetime of 0), or nothing.
                let life = rng.gen_range(0..2) * 3_600_000;
                let waiting = pool.waiting_len();
                let expired = pool.expire_waiting(pool.now_ms(), life);
                assert_eq!(expired, if life == 0 { waiting } else { 0 });
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
        // The waiting senders, keyed by their last fee, from scratch.
        let waiting: BTreeSet<(u64, Address)> = pool
            .by_sender
            .iter()
            .filter(|(s, q)| q.len() > pool.runs.get(*s).copied().unwrap_or(0))
            .filter_map(|(s, q)| Some((q.last()?.fee, *s)))
            .collect();
        assert_eq!(pool.waiting, waiting);
        assert_eq!(pool.waiting_fee.len(), waiting.len());
        // The hash index finds exactly what the queues hold.
        let held: Vec<&Transaction> = pool.by_sender.values().flat_map(Queue::values).collect();
        assert_eq!(held.len(), pool.len());
        for tx in held {
            assert_eq!(pool.get(&tx.hash()), Some(tx));
        }
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
    let tx = |nonce, fee| Transaction::new_signed(&k, "c", &Hash::ZERO, to, 1, fee, nonce);
    m.insert(tx(1, 1), acct(100, 0)).expect("gap held");
    assert!(m.ready(10, |_| None).is_empty());
    m.insert(tx(0, 1), acct(100, 0)).expect("fills gap");
    assert_eq!(m.ready(10, |_| None).len(), 2);
    assert_eq!(
        m.insert(tx(0, 1), acct(100, 0)).map_err(|e| e.code()),
        Err("duplicate")
    );
    assert_eq!(
        m.insert(
            Transaction::new_signed(&k, "c", &Hash::ZERO, to, 2, 1, 0),
            acct(100, 0)
        )
        .map_err(|e| e.code()),
        Err("underpriced")
    );
    m.insert(tx(0, 5), acct(100, 0))
        .expect("replaced by higher fee");
    assert_eq!(m.len(), 2);
    // The replaced one is reported dropped, once.
    let dropped = m.take_dropped();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].0, tx(0, 1).hash());
    assert!(dropped[0].1.contains("replaced"), "{dropped:?}");
    assert!(m.take_dropped().is_empty());
    // Committed ones are not dropped.
    m.prune([(k.address(), 1, 100)]);
    assert!(m.take_dropped().is_empty());
    m.insert(tx(0, 5), acct(100, 0))
        .expect("back for the rest of the test");
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
fn free_transfers_and_unknown_senders_are_refused() {
    let k = SecretKey::from_label("payer");
    let to = SecretKey::from_label("to").address();
    let mut m = Mempool::new("c".into(), 10, 5).with_fee_floor(2);
    let tx = |amount, fee| Transaction::new_signed(&k, "c", &Hash::ZERO, to, amount, fee, 0);
    // Below the chain's minimum fee, whatever the balance.
    assert_eq!(
        m.check(&tx(1, 1), acct(100, 0).as_ref())
            .map_err(|e| e.code()),
        Err("fee_too_low")
    );
    assert_eq!(
        m.insert(tx(1, 1), acct(100, 0)).map_err(|e| e.code()),
        Err("fee_too_low")
    );
    // From an account that does not exist, even at no cost at all.
    let free = Mempool::new("c".into(), 10, 5);
    assert_eq!(
        free.check(&tx(0, 0), None).map_err(|e| e.code()),
        Err("unknown_sender")
    );
    assert_eq!(
        m.insert(tx(1, 2), None).map_err(|e| e.code()),
        Err("unknown_sender")
    );
    assert!(m.insert(tx(1, 2), acct(100, 0)).is_ok());
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
            Transaction::new_signed(&k, "c", &Hash::ZERO, to, 5, 1, nonce),
            acct(12, 0),
        )
        .expect("each affordable alone");
    }
    m.insert(
        Transaction::new_signed(&k, "c", &Hash::ZERO, to, 5, 1, 4),
        acct(12, 0),
    )
    .expect("a gap is held");
    m.prune([(k.address(), 0, 10)]);
    assert_eq!(m.ready_count(|_| 0), 1);
    assert_eq!(
        m.len(),
        1,
        "the unaffordable run and what waits on it are gone"
    );
    let tx = Transaction::new_signed(&k, "c", &Hash::ZERO, to, 5, 1, 0);
    m.discard(&tx);
    assert!(m.is_empty());
}

#[test]
fn a_full_pool_drops_waiting_transactions_for_ones_a_block_can_take() {
    let to = SecretKey::from_label("to").address();
    let keys: Vec<SecretKey> = (0..12)
        .map(|i| SecretKey::from_label(&format!("w{i}")))
        .collect();
    let tx = |k: usize, nonce: u64, fee: u64| {
        Transaction::new_signed(&keys[k], "c", &Hash::ZERO, to, 1, fee, nonce)
    };
    let code = |r: Result<Hash, Rejection>| r.map(|_| ()).map_err(|e| e.code());
    // 8 slots, of which at most 2 wait behind a gap.
    let mut m = Mempool::new("c".into(), 8, 10);
    m.insert(tx(0, 1, 5), acct(100, 0)).expect("waits");
    m.insert(tx(1, 1, 6), acct(100, 0)).expect("waits");
    assert_eq!(m.waiting_len(), 2);
    // The waiting quarter is held: another one must pay more than the
    // cheapest waiting one, which it then replaces.
    assert_eq!(
        code(m.insert(tx(2, 1, 5), acct(100, 0))),
        Err("mempool_full")
    );
    m.insert(tx(2, 1, 7), acct(100, 0))
        .expect("evicts the fee-5 one");
    assert_eq!(m.waiting_len(), 2);
    assert!(!m.contains(&tx(0, 1, 5).hash()));
    // Fill the pool with transactions a block can take.
    for k in 3..9 {
        m.insert(tx(k, 0, 1), acct(100, 0)).expect("ready");
    }
    assert_eq!(m.len(), 8);
    // Full: one more that a block can take gets in, at the lowest fee,
    // by dropping the cheapest waiting one (fee 6), not a ready one.
    m.insert(tx(9, 0, 1), acct(100, 0))
        .expect("a waiting one makes room");
    assert_eq!((m.len(), m.waiting_len()), (8, 1));
    assert!(!m.contains(&tx(1, 1, 6).hash()));
    assert_eq!(m.ready(100, |_| None).len(), 7);
    // A waiting one gets in only over a cheaper waiting one.
    assert_eq!(
        code(m.insert(tx(10, 1, 7), acct(100, 0))),
        Err("mempool_full")
    );
    m.insert(tx(10, 1, 8), acct(100, 0))
        .expect("over the fee-7 one");
    assert_eq!((m.len(), m.waiting_len()), (8, 1));
    // Nothing waiting to drop but its own: the rule for a full pool
    // of ready transactions (evict a cheaper last-in-line one of
    // another sender, else refuse) applies.
    assert_eq!(
        code(m.insert(tx(10, 0, 1), acct(100, 0))),
        Err("mempool_full")
    );
    m.insert(tx(11, 0, 1), acct(100, 0))
        .expect("drops sender 10's waiting one");
    assert_eq!((m.len(), m.waiting_len()), (8, 0));
    assert_eq!(
        code(m.insert(tx(0, 0, 1), acct(100, 0))),
        Err("mempool_full")
    );
    m.insert(tx(0, 0, 2), acct(100, 0))
        .expect("evicts a fee-1 one");
    assert_eq!(m.len(), 8);
}

#[test]
fn what_stays_pending_is_gossiped_again_every_sender_in_turn() {
    let to = SecretKey::from_label("to").address();
    let a = SecretKey::from_label("ra");
    let b = SecretKey::from_label("rb");
    let mut m = Mempool::new("c".into(), 100, 10);
    let t0 = m.now_ms();
    for (k, n) in [(&a, 0), (&a, 1), (&a, 3), (&b, 0)] {
        m.insert(
            Transaction::new_signed(k, "c", &Hash::ZERO, to, 1, 1, n),
            acct(100, 0),
        )
        .expect("insert");
    }
    let age = 10_000;
    let at = |s: u64| t0 + s * 1_000;
    let nonces = |txs: Vec<Transaction>| {
        let mut v: Vec<(bool, u64)> = txs
            .iter()
            .map(|t| (t.from == a.public_key(), t.nonce))
            .collect();
        v.sort();
        v
    };
    assert!(m.rebroadcast(t0, age, 100).is_empty(), "just gossiped");
    // After the age: what a block could take, not nonce 3 (behind a gap).
    assert_eq!(
        nonces(m.rebroadcast(at(11), age, 100)),
        vec![(false, 0), (true, 0), (true, 1)]
    );
    assert!(
        m.rebroadcast(at(12), age, 100).is_empty(),
        "announced at 11 s"
    );
    // Capped: the next call goes on where the last one stopped.
    let first = m.rebroadcast(at(22), age, 2);
    assert_eq!(first.len(), 2);
    let second = m.rebroadcast(at(22), age, 2);
    assert_eq!(second.len(), 1);
    assert_eq!(
        nonces(first.into_iter().chain(second).collect()),
        vec![(false, 0), (true, 0), (true, 1)]
    );
    assert!(m.rebroadcast(at(22), age, 2).is_empty());
    // Committed ones are gone from the pool and from the rebroadcast.
    m.prune([(a.address(), 2, 100)]);
    assert_eq!(nonces(m.rebroadcast(at(40), age, 100)), vec![(false, 0)]);
}

#[test]
fn transactions_waiting_behind_a_gap_expire_ready_ones_do_not() {
    let to = SecretKey::from_label("to").address();
    let a = SecretKey::from_label("ea");
    let b = SecretKey::from_label("eb");
    let mut m = Mempool::new("c".into(), 100, 10);
    let t0 = m.now_ms();
    // a: 0, 1 ready, 3 and 4 behind the missing 2; b: 5 and 6 behind the
    // missing 0..4.
    for (k, n) in [(&a, 0), (&a, 1), (&a, 3), (&a, 4), (&b, 5), (&b, 6)] {
        m.insert(
            Transaction::new_signed(k, "c", &Hash::ZERO, to, 1, 1, n),
            acct(100, 0),
        )
        .expect("insert");
    }
    assert_eq!(m.waiting_len(), 4);
    let life = 600_000;
    assert_eq!(m.expire_waiting(t0, life), 0, "too young");
    assert_eq!(m.expire_waiting(t0 + life + 1_000, life), 4);
    assert_eq!(m.len(), 2);
    assert_eq!(m.waiting_len(), 0);
    let left: Vec<u64> = m.ready(10, |_| None).iter().map(|t| t.nonce).collect();
    assert_eq!(left, vec![0, 1]);
    // Nothing else expires, however old.
    assert_eq!(m.expire_waiting(t0 + 100 * life, life), 0);
    assert_eq!(m.len(), 2);
}

#[test]
fn limits_evict_the_cheapest_or_refuse() {
    let to = SecretKey::from_label("to").address();
    let mut m = Mempool::new("c".into(), 2, 5);
    let keys: Vec<_> = (0..3)
        .map(|i| SecretKey::from_label(&format!("k{i}")))
        .collect();
    m.insert(
        Transaction::new_signed(&keys[0], "c", &Hash::ZERO, to, 1, 1, 0),
        acct(9, 0),
    )
    .expect("a");
    m.insert(
        Transaction::new_signed(&keys[1], "c", &Hash::ZERO, to, 1, 3, 0),
        acct(9, 0),
    )
    .expect("b");
    let cheap = Transaction::new_signed(&keys[2], "c", &Hash::ZERO, to, 1, 1, 0);
    assert_eq!(
        m.insert(cheap, acct(9, 0)).map_err(|e| e.code()),
        Err("mempool_full")
    );
    let rich = Transaction::new_signed(&keys[2], "c", &Hash::ZERO, to, 1, 2, 0);
    m.insert(rich, acct(9, 0)).expect("evicts the fee-1 one");
    let fees: Vec<u64> = m.ready(10, |_| None).iter().map(|t| t.fee).collect();
    assert_eq!(fees, vec![3, 2]);
    let poor = Transaction::new_signed(&keys[0], "c", &Hash::ZERO, to, 100, 1, 0);
    assert_eq!(
        m.insert(poor, acct(9, 0)).map_err(|e| e.code()),
        Err("insufficient_funds")
    );
    let other = Transaction::new_signed(&keys[0], "other", &Hash::ZERO, to, 1, 1, 0);
    assert_eq!(
        m.insert(other, acct(9, 0)).map_err(|e| e.code()),
        Err("wrong_chain")
    );
}
