//! Deterministic chains for tests, benchmarks and the store's crash test.
//!
//! Keys come from labels (never use them for real funds); randomness comes
//! from a caller-seeded RNG, so the same seed builds the same chain.

use rand::Rng;

use crate::state::{read_account, StateChanges, StateError, StateReader};
use crate::ConfigSchedule;
use crate::{
    genesis_block, genesis_state, propose_block, Address, Block, ExecutionError, ExecutionParams,
    Hash, Header, Proposal, SecretKey, Transaction,
};

/// A funded set of labelled accounts and the genesis that funds them.
#[derive(Debug, Clone)]
pub struct TestChain {
    pub params: ExecutionParams,
    pub keys: Vec<SecretKey>,
    pub genesis: Block,
    pub genesis_state: StateChanges,
}

impl TestChain {
    /// `accounts` accounts of `balance` each, on chain `chain_id`.
    pub fn new(chain_id: &str, accounts: usize, balance: u64) -> Self {
        let keys: Vec<SecretKey> = (0..accounts)
            .map(|i| SecretKey::from_label(&format!("{chain_id}/account/{i}")))
            .collect();
        let allocs: Vec<(Address, u64)> = keys.iter().map(|k| (k.address(), balance)).collect();
        let (genesis_state, root) = genesis_state(&allocs);
        let config = Hash::digest(format!("{chain_id}/consensus").as_bytes());
        let genesis = genesis_block(Hash::digest(chain_id.as_bytes()), config, 0, root);
        Self {
            params: ExecutionParams {
                chain_id: chain_id.to_owned(),
                genesis_hash: genesis.hash(),
                block_reward: 50,
                min_fee: 0,
                schedule: ConfigSchedule::single(config),
            },
            keys,
            genesis,
            genesis_state,
        }
    }

    /// `n` valid transfers on `state`: random funded senders (consecutive
    /// nonces when a sender repeats), random recipients, one in eight to a
    /// brand-new address.
    pub fn random_transfers<R: Rng>(
        &self,
        rng: &mut R,
        state: &impl StateReader,
        n: usize,
    ) -> Result<Vec<Transaction>, StateError> {
        let mut nonces: std::collections::HashMap<usize, u64> = Default::default();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let from = rng.gen_range(0..self.keys.len());
            let nonce = match nonces.get(&from) {
                Some(n) => *n,
                None => read_account(state, &self.keys[from].address())?.map_or(0, |a| a.nonce),
            };
            nonces.insert(from, nonce + 1);
            let to = if rng.gen_ratio(1, 8) {
                let mut a = [0u8; 20];
                rng.fill(&mut a);
                Address(a)
            } else {
                self.keys[rng.gen_range(0..self.keys.len())].address()
            };
            out.push(Transaction::new_signed(
                &self.keys[from],
                &self.params.chain_id,
                &self.params.genesis_hash,
                to,
                rng.gen_range(1..100),
                rng.gen_range(0..3),
                nonce,
            ));
        }
        Ok(out)
    }

    /// A block on `parent` holding `txs` (invalid ones are skipped).
    pub fn block_on(
        &self,
        state: &impl StateReader,
        parent: &Header,
        proposer: usize,
        txs: Vec<Transaction>,
    ) -> Result<Proposal, ExecutionError> {
        propose_block(
            state,
            &self.params,
            parent,
            self.keys[proposer % self.keys.len()].address(),
            parent.timestamp_ms + 1000,
            txs,
            Vec::new(),
        )
    }
}
