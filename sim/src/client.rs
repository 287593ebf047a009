//! Simulated wallets: each account has at most one transfer in flight,
//! resubmits it to another node when it is not committed in time (its
//! first node may have crashed with it in its mempool), and remembers every
//! transfer it saw committed.

use std::collections::BTreeMap;

use cairn_chain::{Address, Block, Hash, SecretKey, Transaction};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use cairn_consensus::ValidatorId;

/// The clients' behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// Accounts sending transfers (each one at a time).
    pub accounts: usize,
    /// A client sends (or resubmits) a transfer every this many ms.
    pub interval_ms: u64,
    /// A transfer not seen committed after this long is resubmitted.
    pub resubmit_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            accounts: 8,
            interval_ms: 25,
            resubmit_ms: 1_000,
        }
    }
}

/// A transfer a client saw committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub tx: Hash,
    pub height: u64,
    pub block: Hash,
    /// The node whose final chain showed it.
    pub node: ValidatorId,
}

#[derive(Debug)]
struct Outstanding {
    tx: Transaction,
    hash: Hash,
    sent_at: u64,
}

#[derive(Debug)]
struct Account {
    key: SecretKey,
    next_nonce: u64,
    outstanding: Option<Outstanding>,
}

/// What the client wants done this turn.
#[derive(Debug)]
pub(crate) struct Submission {
    pub tx: Transaction,
}

#[derive(Debug)]
pub(crate) struct Client {
    chain_id: String,
    genesis: Hash,
    accounts: Vec<Account>,
    by_address: BTreeMap<Address, usize>,
    recipients: Vec<Address>,
    pub(crate) acks: Vec<Ack>,
    pub(crate) submitted: u64,
}

impl Client {
    pub(crate) fn new(
        chain_id: &str,
        genesis: Hash,
        keys: &[SecretKey],
        recipients: Vec<Address>,
    ) -> Self {
        let accounts: Vec<Account> = keys
            .iter()
            .map(|k| Account {
                key: k.clone(),
                next_nonce: 0,
                outstanding: None,
            })
            .collect();
        let by_address = accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.key.address(), i))
            .collect();
        Self {
            chain_id: chain_id.to_owned(),
            genesis,
            accounts,
            by_address,
            recipients,
            acks: Vec::new(),
            submitted: 0,
        }
    }

    /// One client turn at `now`: a new transfer from an idle account, or a
    /// resubmission of a late one.
    pub(crate) fn turn(
        &mut self,
        rng: &mut ChaCha8Rng,
        now: u64,
        resubmit_ms: u64,
    ) -> Option<Submission> {
        if self.accounts.is_empty() {
            return None;
        }
        let count = self.accounts.len();
        let start = rng.gen_range(0..count);
        for k in 0..count {
            let a = &mut self.accounts[(start + k) % count];
            match &mut a.outstanding {
                Some(o) if now.saturating_sub(o.sent_at) >= resubmit_ms => {
                    o.sent_at = now;
                    return Some(Submission { tx: o.tx.clone() });
                }
                Some(_) => continue,
                None => {
                    let to = self.recipients[rng.gen_range(0..self.recipients.len())];
                    let tx = Transaction::new_signed(
                        &a.key,
                        &self.chain_id,
                        &self.genesis,
                        to,
                        rng.gen_range(1..10),
                        1,
                        a.next_nonce,
                    );
                    let hash = tx.hash();
                    a.outstanding = Some(Outstanding {
                        tx: tx.clone(),
                        hash,
                        sent_at: now,
                    });
                    self.submitted += 1;
                    return Some(Submission { tx });
                }
            }
        }
        None
    }

    /// Node `node` made `block` final: clients whose transfer it holds see
    /// it committed.
    pub(crate) fn observe(&mut self, node: ValidatorId, block: &Block) {
        for tx in &block.transactions {
            let Some(&i) = self.by_address.get(&tx.sender()) else {
                continue;
            };
            let a = &mut self.accounts[i];
            if tx.nonce >= a.next_nonce {
                a.next_nonce = tx.nonce + 1;
            }
            if a.outstanding
                .as_ref()
                .is_some_and(|o| o.tx.nonce <= tx.nonce)
            {
                let o = a.outstanding.take();
                if let Some(o) = o.filter(|o| o.tx.nonce == tx.nonce) {
                    self.acks.push(Ack {
                        tx: o.hash,
                        height: block.header.height,
                        block: block.hash(),
                        node,
                    });
                }
            }
        }
    }
}
