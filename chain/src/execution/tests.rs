use super::*;
use crate::state::MemState;
use crate::SecretKey;
use proptest::prelude::*;

const CHAIN: &str = "cairn-test";

fn params() -> ExecutionParams {
    ExecutionParams {
        chain_id: CHAIN.into(),
        genesis_hash: Hash::ZERO,
        block_reward: 10,
        min_fee: 0,
        schedule: ConfigSchedule::single(Hash::ZERO),
    }
}

fn key(i: u32) -> SecretKey {
    SecretKey::from_label(&format!("acct-{i}"))
}

fn genesis(n: u32, balance: u64) -> MemState {
    let allocs: Vec<(Address, u64)> = (0..n).map(|i| (key(i).address(), balance)).collect();
    let (changes, _) = genesis_state(&allocs);
    let mut mem = MemState::default();
    mem.apply(&changes);
    mem
}

fn transfer(from: u32, to: Address, amount: u64, fee: u64, nonce: u64) -> Transaction {
    Transaction::new_signed(&key(from), CHAIN, &Hash::ZERO, to, amount, fee, nonce)
}

fn balance(state: &MemState, a: &Address) -> u64 {
    read_account(state, a)
        .expect("read")
        .map_or(0, |a| a.balance)
}

#[test]
fn transfer_moves_funds_and_pays_the_proposer() {
    let mut state = genesis(2, 1000);
    let proposer = key(9).address();
    let txs = vec![
        transfer(0, key(1).address(), 100, 3, 0),
        transfer(0, key(5).address(), 50, 2, 1),
    ];
    let out = execute_transactions(&state, &params(), &proposer, &txs, SignatureCheck::Verify)
        .expect("ok");
    assert_eq!(out.fees, 5);
    state.apply(&out.changes);
    assert_eq!(balance(&state, &key(0).address()), 1000 - 155);
    assert_eq!(balance(&state, &key(1).address()), 1100);
    assert_eq!(balance(&state, &key(5).address()), 50);
    assert_eq!(balance(&state, &proposer), 15);
    assert_eq!(read_account_count(&state).expect("count"), 4);
    let accounts: Vec<(Address, Account)> = [0, 1, 5, 9]
        .iter()
        .map(|&i| {
            let a = key(i).address();
            (a, read_account(&state, &a).expect("r").expect("exists"))
        })
        .collect();
    assert_eq!(
        state_tree::root_from_accounts(&accounts).expect("root"),
        out.state_root
    );
}

fn rule_of(r: Result<Executed, ExecutionError>) -> (usize, TxRule) {
    match r {
        Err(ExecutionError::InvalidTransaction { index, rule, .. }) => (index, rule),
        other => panic!("expected an invalid transaction, got {other:?}"),
    }
}

#[test]
fn each_rule_names_the_failing_transaction() {
    let state = genesis(2, 1000);
    let p = key(9).address();
    let ok = transfer(0, key(1).address(), 1, 0, 0);
    let run = |txs: Vec<Transaction>| {
        rule_of(execute_transactions(
            &state,
            &params(),
            &p,
            &txs,
            SignatureCheck::Verify,
        ))
    };

    let mut bad_sig = transfer(0, key(1).address(), 1, 0, 1);
    bad_sig.amount = 2;
    assert!(matches!(
        run(vec![ok.clone(), bad_sig]),
        (1, TxRule::BadSignature(_))
    ));

    let wrong_chain =
        Transaction::new_signed(&key(0), "other", &Hash::ZERO, key(1).address(), 1, 0, 1);
    assert_eq!(
        run(vec![ok.clone(), wrong_chain]),
        (
            1,
            TxRule::WrongChain {
                expected: CHAIN.into(),
                got: "other".into()
            }
        )
    );

    let replay = ok.clone();
    assert_eq!(
        run(vec![ok.clone(), replay]),
        (
            1,
            TxRule::BadNonce {
                expected: 1,
                got: 0
            }
        )
    );

    let gap = transfer(0, key(1).address(), 1, 0, 5);
    assert_eq!(
        run(vec![gap]),
        (
            0,
            TxRule::BadNonce {
                expected: 0,
                got: 5
            }
        )
    );

    let too_much = transfer(0, key(1).address(), 999, 2, 1);
    assert_eq!(
        run(vec![ok.clone(), too_much]),
        (
            1,
            TxRule::InsufficientFunds {
                balance: 999,
                needed: 1001
            }
        )
    );

    let stranger = transfer(7, key(1).address(), 1, 0, 0);
    assert_eq!(
        run(vec![stranger]),
        (0, TxRule::UnknownSender(key(7).address()))
    );

    let overflow = transfer(0, key(1).address(), u64::MAX, 1, 0);
    assert_eq!(
        run(vec![overflow]),
        (0, TxRule::Format(TransactionFormatError::TotalOverflow))
    );
}

#[test]
fn recipient_overflow_is_refused() {
    let allocs = vec![(key(0).address(), 10), (key(1).address(), u64::MAX - 5)];
    let (changes, _) = genesis_state(&allocs);
    let mut state = MemState::default();
    state.apply(&changes);
    let tx = transfer(0, key(1).address(), 6, 0, 0);
    assert_eq!(
        rule_of(execute_transactions(
            &state,
            &params(),
            &key(9).address(),
            &[tx],
            SignatureCheck::Verify
        )),
        (0, TxRule::RecipientOverflow)
    );
}

#[test]
fn refused_transaction_leaves_the_executor_unchanged() {
    let state = genesis(2, 100);
    let mut exec = BlockExecutor::new(&state, params()).expect("new");
    let a = key(0).address();
    assert!(exec
        .apply(&transfer(0, key(1).address(), 500, 0, 0))
        .is_err());
    assert!(exec.apply(&transfer(0, key(4).address(), 10, 1, 0)).is_ok());
    assert!(exec
        .apply(&transfer(0, key(4).address(), 10, 1, 0))
        .is_err());
    let acct = exec.account(&a).expect("read").expect("exists");
    assert_eq!((acct.balance, acct.nonce), (89, 1));
}

#[test]
fn self_transfer_only_costs_the_fee() {
    let mut state = genesis(1, 100);
    let a = key(0).address();
    let out = execute_transactions(
        &state,
        &params(),
        &key(9).address(),
        &[transfer(0, a, 40, 1, 0)],
        SignatureCheck::Verify,
    )
    .expect("ok");
    state.apply(&out.changes);
    assert_eq!(balance(&state, &a), 99);
}

#[test]
fn execute_block_checks_link_and_state_root() {
    let state = genesis(2, 1000);
    let parent = Header {
        parent: Hash::ZERO,
        height: 0,
        timestamp_ms: 0,
        tx_root: Hash::ZERO,
        state_root: Hash::ZERO,
        proposer: Address::ZERO,
        config: Hash::ZERO,
        engine_data: vec![],
    };
    let txs = vec![transfer(0, key(1).address(), 5, 1, 0)];
    let out = execute_transactions(
        &state,
        &params(),
        &key(3).address(),
        &txs,
        SignatureCheck::Verify,
    )
    .expect("ok");
    let mut block = Block {
        header: Header {
            parent: parent.hash(),
            height: 1,
            timestamp_ms: 1,
            tx_root: crate::transactions_root(&txs),
            state_root: out.state_root,
            proposer: key(3).address(),
            config: Hash::ZERO,
            engine_data: vec![],
        },
        transactions: txs,
        seal: vec![],
    };
    assert!(execute_block(&state, &params(), &parent, &block, SignatureCheck::Verify).is_ok());
    block.header.state_root = Hash::ZERO;
    assert!(matches!(
        execute_block(&state, &params(), &parent, &block, SignatureCheck::Verify),
        Err(BlockError::StateRootMismatch { .. })
    ));
    block.header.height = 5;
    assert!(matches!(
        execute_block(&state, &params(), &parent, &block, SignatureCheck::Verify),
        Err(BlockError::WrongHeight {
            expected: 1,
            got: 5
        })
    ));
}

proptest! {
    /// Conservation: the total supply grows by exactly the block reward, no
    /// matter which transfers succeed, and the incremental root always
    /// equals the one rebuilt from all accounts.
    #[test]
    fn supply_is_conserved_and_root_matches(ops in proptest::collection::vec((0u32..6, 0u32..10, 0u64..400, 0u64..5), 1..40)) {
        let mut state = genesis(6, 1000);
        let mut nonces = [0u64; 10];
        let proposer = key(20).address();
        let mut exec = BlockExecutor::new(&state, params()).expect("new");
        for (from, to, amount, fee) in ops {
            let tx = transfer(from, key(to).address(), amount, fee, nonces[from as usize]);
            if exec.apply(&tx).is_ok() {
                nonces[from as usize] += 1;
            }
        }
        let out = exec.finish(&proposer).expect("finish");
        state.apply(&out.changes);
        let all: Vec<(Address, Account)> = (0..10).chain([20])
            .filter_map(|i| {
                let a = key(i).address();
                read_account(&state, &a).expect("r").map(|acct| (a, acct))
            })
            .collect();
        let total: u64 = all.iter().map(|(_, a)| a.balance).sum();
        prop_assert_eq!(total, 6 * 1000 + 10);
        prop_assert_eq!(state_tree::root_from_accounts(&all).expect("root"), out.state_root);
    }
}

#[test]
fn a_fee_below_the_chain_minimum_is_refused() {
    let state = genesis(2, 1000);
    let mut p = params();
    p.min_fee = 3;
    let mut exec = BlockExecutor::new(&state, p).expect("executor");
    let cheap = transfer(0, key(1).address(), 5, 2, 0);
    assert!(matches!(
        exec.apply(&cheap),
        Err(ApplyError::Invalid(TxRule::FeeTooLow { fee: 2, min: 3 }))
    ));
    assert!(exec.apply(&transfer(0, key(1).address(), 5, 3, 0)).is_ok());
}
