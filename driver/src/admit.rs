//! Transaction admission, one path for every way in (the HTTP API, gossip,
//! the simulator's clients): what the mempool would refuse anyway is
//! answered first, without a signature check (under overload that is much
//! of what arrives, and checking it costs the CPU commits need); the rest
//! is verified in one batch (one by one only if the batch fails, to name
//! the bad ones) and inserted.

use std::sync::Mutex;

use cairn_chain::state::read_account;
use cairn_chain::{verify_transactions, Account, Hash, StateReader, Transaction};

use crate::mempool::{Mempool, Rejection};

/// What became of each transaction (in the order given), and the ones that
/// entered the mempool (to gossip), in that order too.
#[derive(Debug, Default)]
pub struct Admitted {
    pub results: Vec<Result<Hash, Rejection>>,
    pub accepted: Vec<Transaction>,
}

/// Whether signatures still need checking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    Verify,
    /// The caller knows them good (the simulator's own clients, or a Raft
    /// validator's node that checked them).
    Trusted,
}

fn accounts(
    state: &impl StateReader,
    txs: &[Transaction],
    wanted: &[bool],
) -> Vec<Result<Option<Account>, Rejection>> {
    txs.iter()
        .zip(wanted)
        .map(|(tx, &w)| {
            if !w {
                return Ok(None);
            }
            read_account(state, &tx.sender()).map_err(|e| Rejection::Storage(e.to_string()))
        })
        .collect()
}

/// Admits `txs` into `pool` against the state at `state`'s head. See the
/// module docs.
pub fn admit(
    pool: &Mutex<Mempool>,
    state: &impl StateReader,
    genesis: &Hash,
    txs: Vec<Transaction>,
    signatures: Signatures,
) -> Admitted {
    let poisoned = || Rejection::Storage("the mempool's lock is poisoned".into());
    let all = vec![true; txs.len()];
    // Accounts are read before the pool is locked: a cold read goes to the
    // disk, and block building waits for the lock.
    let mut results: Vec<Result<Hash, Rejection>> = {
        let read = accounts(state, &txs, &all);
        let Ok(pool) = pool.lock() else {
            return Admitted {
                results: txs.iter().map(|_| Err(poisoned())).collect(),
                accepted: Vec::new(),
            };
        };
        txs.iter()
            .zip(read)
            .map(|(tx, account)| {
                pool.check(tx, account?.as_ref())?;
                Ok(tx.hash())
            })
            .collect()
    };
    if signatures == Signatures::Verify {
        let batch = txs
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(tx, _)| tx);
        if verify_transactions(batch, genesis).is_err() {
            for (tx, r) in txs.iter().zip(results.iter_mut()) {
                if r.is_ok() {
                    if let Err(e) = tx.verify_signature(genesis) {
                        *r = Err(Rejection::BadSignature(e.to_string()));
                    }
                }
            }
        }
    }
    // The accounts again: a block may have been committed meanwhile.
    let wanted: Vec<bool> = results.iter().map(Result::is_ok).collect();
    let read = accounts(state, &txs, &wanted);
    let mut accepted = Vec::new();
    let Ok(mut pool) = pool.lock() else {
        return Admitted {
            results: txs.iter().map(|_| Err(poisoned())).collect(),
            accepted,
        };
    };
    for ((tx, r), account) in txs.into_iter().zip(results.iter_mut()).zip(read) {
        if r.is_err() {
            continue;
        }
        let inserted = account.and_then(|a| pool.insert(tx.clone(), a));
        match inserted {
            Ok(_) => accepted.push(tx),
            Err(e) => *r = Err(e),
        }
    }
    Admitted { results, accepted }
}
