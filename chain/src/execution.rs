//! The state transition: executing transactions and blocks.
//!
//! A [`BlockExecutor`] applies transactions one at a time over a read-only
//! state; each either applies entirely or is refused with the rule it breaks
//! and leaves the executor unchanged, so a proposer can skip bad ones. When
//! done, [`BlockExecutor::finish`] credits the block reward and the fees to the
//! proposer, updates the state tree for the touched accounts only, and returns
//! the writes and the new state root. [`execute_block`] checks a whole block
//! received from elsewhere.

use std::collections::BTreeMap;

use crate::state::{
    account_key, read_account, read_account_count, Overlay, StateChanges, StateError, StateReader,
    ACCOUNT_COUNT_KEY,
};
use crate::{
    codec, state_tree, transaction, Account, Address, Block, BlockFormatError, Hash, Header,
    SignatureError, Transaction, TransactionFormatError,
};

/// Chain-wide parameters of the state transition (from genesis).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionParams {
    /// Transactions must carry this chain id.
    pub chain_id: String,
    /// Transactions are signed for this genesis hash (the network's).
    pub genesis_hash: Hash,
    /// Minted to the proposer of every block, on top of the fees.
    pub block_reward: u64,
    /// The lowest fee a transaction may pay.
    pub min_fee: u64,
    /// The consensus configuration each height is made under.
    pub schedule: ConfigSchedule,
}

/// Which consensus configuration hash ([`Header::config`]) each height
/// carries: `(first height, hash)` pairs in height order, the first at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSchedule(Vec<(u64, Hash)>);

impl ConfigSchedule {
    /// One configuration for every height.
    pub fn single(config: Hash) -> Self {
        Self(vec![(0, config)])
    }

    /// `(first height, hash)` pairs; `None` unless they start at 0 and
    /// their heights increase.
    pub fn new(segments: Vec<(u64, Hash)>) -> Option<Self> {
        let ordered = segments.windows(2).all(|w| w[0].0 < w[1].0);
        (segments.first().map(|s| s.0) == Some(0) && ordered).then_some(Self(segments))
    }

    /// The configuration hash blocks at `height` carry.
    pub fn at(&self, height: u64) -> Hash {
        let i = self.0.partition_point(|(start, _)| *start <= height);
        self.0[i.saturating_sub(1)].1
    }
}

/// Whether [`execute_block`] verifies transaction signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// Verify every signature (in one batch).
    Verify,
    /// The caller has verified every signature of this block already.
    AlreadyVerified,
}

/// The rule a transaction breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxRule {
    #[error("bad signature: {0}")]
    BadSignature(SignatureError),
    #[error("{0}")]
    Format(TransactionFormatError),
    #[error("wrong chain: expected {expected:?}, got {got:?}")]
    WrongChain { expected: String, got: String },
    #[error("fee {fee} is below the chain's minimum of {min}")]
    FeeTooLow { fee: u64, min: u64 },
    #[error("sender account {0} does not exist")]
    UnknownSender(Address),
    #[error("bad nonce: expected {expected}, got {got}")]
    BadNonce { expected: u64, got: u64 },
    #[error("insufficient funds: balance {balance}, needed {needed}")]
    InsufficientFunds { balance: u64, needed: u64 },
    #[error("recipient balance would overflow")]
    RecipientOverflow,
    #[error("total fees of the block would overflow")]
    FeesOverflow,
}

/// Applying one transaction failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The transaction is invalid on this state; nothing was applied.
    #[error(transparent)]
    Invalid(#[from] TxRule),
    /// The state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Executing a block failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutionError {
    #[error("transaction {index} ({hash}) is invalid: {rule}")]
    InvalidTransaction {
        index: usize,
        hash: Hash,
        rule: TxRule,
    },
    #[error("block reward plus fees would overflow the proposer's balance")]
    RewardOverflow,
    #[error(transparent)]
    State(#[from] StateError),
}

/// A received block is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error(transparent)]
    Format(#[from] BlockFormatError),
    #[error("parent {got} is not the expected {expected}")]
    WrongParent { expected: Hash, got: Hash },
    #[error("height {got} is not the expected {expected}")]
    WrongHeight { expected: u64, got: u64 },
    #[error(transparent)]
    Execution(#[from] ExecutionError),
    #[error("state root {header} in the header, {computed} computed")]
    StateRootMismatch { header: Hash, computed: Hash },
    #[error(
        "block {height} was made under consensus configuration {block}, this node's schedule \
         has {ours} at that height: the two schedules (upgrades in genesis.json) differ"
    )]
    WrongConfig {
        height: u64,
        block: Hash,
        ours: Hash,
    },
}

/// The result of executing a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// The state writes to commit with the block.
    pub changes: StateChanges,
    /// The state root after the block.
    pub state_root: Hash,
    /// Fees paid to the proposer.
    pub fees: u64,
}

/// Applies transactions over a state; see the module docs.
#[derive(Debug)]
pub struct BlockExecutor<R> {
    state: R,
    params: ExecutionParams,
    accounts: BTreeMap<Address, Account>,
    count: u64,
    initial_count: u64,
    fees: u64,
}

impl<R: StateReader> BlockExecutor<R> {
    /// Starts a block over `state` (which the executor only reads).
    pub fn new(state: R, params: ExecutionParams) -> Result<Self, StateError> {
        let count = read_account_count(&state)?;
        Ok(Self {
            state,
            params,
            accounts: BTreeMap::new(),
            count,
            initial_count: count,
            fees: 0,
        })
    }

    /// The account as the block has left it so far.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StateError> {
        match self.accounts.get(address) {
            Some(a) => Ok(Some(*a)),
            None => read_account(&self.state, address),
        }
    }

    /// Applies one transaction whose signature the caller has verified.
    /// On error nothing changes.
    pub fn apply(&mut self, tx: &Transaction) -> Result<(), ApplyError> {
        tx.check_format().map_err(TxRule::Format)?;
        if tx.chain_id != self.params.chain_id {
            return Err(TxRule::WrongChain {
                expected: self.params.chain_id.clone(),
                got: tx.chain_id.clone(),
            }
            .into());
        }
        if tx.fee < self.params.min_fee {
            return Err(TxRule::FeeTooLow {
                fee: tx.fee,
                min: self.params.min_fee,
            }
            .into());
        }
        let sender_addr = tx.sender();
        let mut sender = self
            .account(&sender_addr)?
            .ok_or(TxRule::UnknownSender(sender_addr))?;
        if tx.nonce != sender.nonce {
            return Err(TxRule::BadNonce {
                expected: sender.nonce,
                got: tx.nonce,
            }
            .into());
        }
        let needed = tx
            .total_cost()
            .ok_or(TxRule::Format(TransactionFormatError::TotalOverflow))?;
        if sender.balance < needed {
            return Err(TxRule::InsufficientFunds {
                balance: sender.balance,
                needed,
            }
            .into());
        }
        let fees = self.fees.checked_add(tx.fee).ok_or(TxRule::FeesOverflow)?;
        sender.balance -= needed;
        sender.nonce += 1;
        if tx.to == sender_addr {
            // Cannot overflow: `amount <= needed` was just subtracted.
            sender.balance += tx.amount;
            self.accounts.insert(sender_addr, sender);
        } else {
            let (mut recipient, created) = match self.account(&tx.to)? {
                Some(r) => (r, false),
                None => (
                    Account {
                        balance: 0,
                        nonce: 0,
                        index: self.count,
                    },
                    true,
                ),
            };
            recipient.balance = recipient
                .balance
                .checked_add(tx.amount)
                .ok_or(TxRule::RecipientOverflow)?;
            self.accounts.insert(sender_addr, sender);
            self.accounts.insert(tx.to, recipient);
            if created {
                self.count += 1;
            }
        }
        self.fees = fees;
        Ok(())
    }

    /// Credits the reward and fees to `proposer`, updates the state tree, and
    /// returns the writes and the new root.
    pub fn finish(mut self, proposer: &Address) -> Result<Executed, ExecutionError> {
        let credit = self
            .params
            .block_reward
            .checked_add(self.fees)
            .ok_or(ExecutionError::RewardOverflow)?;
        if credit > 0 {
            let mut acct = match self.account(proposer)? {
                Some(a) => a,
                None => {
                    let a = Account {
                        balance: 0,
                        nonce: 0,
                        index: self.count,
                    };
                    self.count += 1;
                    a
                }
            };
            acct.balance = acct
                .balance
                .checked_add(credit)
                .ok_or(ExecutionError::RewardOverflow)?;
            self.accounts.insert(*proposer, acct);
        }
        let mut overlay = Overlay::new(&self.state);
        let mut leaves = Vec::with_capacity(self.accounts.len());
        for (addr, acct) in &self.accounts {
            overlay.put(account_key(addr), codec::encode(acct));
            leaves.push((acct.index, state_tree::leaf_hash(addr, acct)));
        }
        if self.count != self.initial_count {
            overlay.put(ACCOUNT_COUNT_KEY.to_vec(), codec::encode(&self.count));
        }
        let state_root = state_tree::update(&mut overlay, self.count, leaves)?;
        Ok(Executed {
            changes: overlay.into_changes(),
            state_root,
            fees: self.fees,
        })
    }
}

/// Executes `txs` in order on `state`, failing on the first invalid one.
pub fn execute_transactions<R: StateReader>(
    state: R,
    params: &ExecutionParams,
    proposer: &Address,
    txs: &[Transaction],
    signatures: SignatureCheck,
) -> Result<Executed, ExecutionError> {
    if signatures == SignatureCheck::Verify {
        transaction::verify_transactions(txs, &params.genesis_hash).map_err(|(index, e)| {
            ExecutionError::InvalidTransaction {
                index,
                hash: txs.get(index).map(Transaction::hash).unwrap_or_default(),
                rule: TxRule::BadSignature(e),
            }
        })?;
    }
    let mut exec = BlockExecutor::new(state, params.clone())?;
    for (index, tx) in txs.iter().enumerate() {
        exec.apply(tx).map_err(|e| match e {
            ApplyError::Invalid(rule) => ExecutionError::InvalidTransaction {
                index,
                hash: tx.hash(),
                rule,
            },
            ApplyError::State(s) => ExecutionError::State(s),
        })?;
    }
    exec.finish(proposer)
}

/// Checks a block against its parent and the parent's state: format, link,
/// every transaction, and the resulting state root.
pub fn execute_block<R: StateReader>(
    state: R,
    params: &ExecutionParams,
    parent: &Header,
    block: &Block,
    signatures: SignatureCheck,
) -> Result<Executed, BlockError> {
    block.check_format()?;
    let parent_hash = parent.hash();
    if block.header.parent != parent_hash {
        return Err(BlockError::WrongParent {
            expected: parent_hash,
            got: block.header.parent,
        });
    }
    if block.header.height != parent.height + 1 {
        return Err(BlockError::WrongHeight {
            expected: parent.height + 1,
            got: block.header.height,
        });
    }
    check_config(params, &block.header)?;
    let executed = execute_transactions(
        state,
        params,
        &block.header.proposer,
        &block.transactions,
        signatures,
    )?;
    if executed.state_root != block.header.state_root {
        return Err(BlockError::StateRootMismatch {
            header: block.header.state_root,
            computed: executed.state_root,
        });
    }
    Ok(executed)
}

/// Whether `header` carries the configuration hash the schedule names for
/// its height.
pub fn check_config(params: &ExecutionParams, header: &Header) -> Result<(), BlockError> {
    let ours = params.schedule.at(header.height);
    if header.config != ours {
        return Err(BlockError::WrongConfig {
            height: header.height,
            block: header.config,
            ours,
        });
    }
    Ok(())
}

/// The outcome of [`propose_block`].
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The block, with its transaction and state roots filled in.
    pub block: Block,
    /// Its state changes, to commit with it.
    pub executed: Executed,
    /// Candidates left out, with the rule each broke at its turn.
    pub rejected: Vec<(Transaction, TxRule)>,
}

/// Builds a block on `parent` from `candidates` in order, skipping any that
/// is invalid at its turn. Signatures must have been verified by the caller.
#[allow(clippy::too_many_arguments)]
pub fn propose_block<R: StateReader>(
    state: R,
    params: &ExecutionParams,
    parent: &Header,
    proposer: Address,
    timestamp_ms: u64,
    candidates: impl IntoIterator<Item = Transaction>,
    engine_data: Vec<u8>,
) -> Result<Proposal, ExecutionError> {
    let mut exec = BlockExecutor::new(state, params.clone())?;
    let mut included = Vec::new();
    let mut rejected = Vec::new();
    for tx in candidates {
        if included.len() >= crate::MAX_BLOCK_TRANSACTIONS {
            break;
        }
        match exec.apply(&tx) {
            Ok(()) => included.push(tx),
            Err(ApplyError::Invalid(rule)) => rejected.push((tx, rule)),
            Err(ApplyError::State(e)) => return Err(e.into()),
        }
    }
    let executed = exec.finish(&proposer)?;
    let block = Block {
        header: Header {
            parent: parent.hash(),
            height: parent.height + 1,
            timestamp_ms,
            tx_root: crate::transactions_root(&included),
            state_root: executed.state_root,
            proposer,
            config: params.schedule.at(parent.height + 1),
            engine_data,
        },
        transactions: included,
        seal: Vec::new(),
    };
    Ok(Proposal {
        block,
        executed,
        rejected,
    })
}

/// The genesis block of a network: height 0, no transactions, its parent
/// field holding the hash of the genesis configuration (so the block hash
/// commits to the whole configuration), its state root that of the
/// allocations, and its `config` the hash of the first consensus
/// configuration.
pub fn genesis_block(
    config_hash: Hash,
    consensus: Hash,
    timestamp_ms: u64,
    state_root: Hash,
) -> Block {
    Block {
        header: Header {
            parent: config_hash,
            height: 0,
            timestamp_ms,
            tx_root: Hash::ZERO,
            state_root,
            proposer: Address::ZERO,
            config: consensus,
            engine_data: Vec::new(),
        },
        transactions: Vec::new(),
        seal: Vec::new(),
    }
}

/// The initial state: `allocations` become accounts with indices in the
/// given order. Duplicate addresses are the caller's to refuse.
pub fn genesis_state(allocations: &[(Address, u64)]) -> (StateChanges, Hash) {
    let mut overlay = Overlay::new(crate::state::MemState::default());
    let mut leaves = Vec::with_capacity(allocations.len());
    for (i, (addr, balance)) in allocations.iter().enumerate() {
        let acct = Account {
            balance: *balance,
            nonce: 0,
            index: i as u64,
        };
        overlay.put(account_key(addr), codec::encode(&acct));
        leaves.push(state_tree::leaf_hash(addr, &acct));
    }
    overlay.put(
        ACCOUNT_COUNT_KEY.to_vec(),
        codec::encode(&(allocations.len() as u64)),
    );
    let root = state_tree::build(&mut overlay, &leaves);
    (overlay.into_changes(), root)
}

#[cfg(test)]
mod tests;
