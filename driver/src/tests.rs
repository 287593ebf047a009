//! The driver against a scripted engine over the in-memory store: what it
//! answers, what it returns to the shell, and what stops it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use cairn_chain::testkit::TestChain;
use cairn_chain::{Block, ChainStore, Hash, MemStore};
use cairn_consensus::{Action, ConsensusEngine, EngineStatus, Input};

use super::*;

/// An engine that answers each tick and each block with the next scripted
/// actions (other inputs — what the driver feeds back — with nothing) and
/// remembers every input.
#[derive(Debug, Default)]
struct Script {
    replies: VecDeque<Vec<Action>>,
    inputs: Arc<Mutex<Vec<Input>>>,
    /// Blocks follow the most work, as under proof-of-work.
    most_work: bool,
}

impl ConsensusEngine for Script {
    fn handle(&mut self, _now_ms: u64, input: Input) -> Vec<Action> {
        let scripted = matches!(input, Input::Tick | Input::Block { .. });
        if let Ok(mut i) = self.inputs.lock() {
            i.push(input);
        }
        if scripted {
            self.replies.pop_front().unwrap_or_default()
        } else {
            Vec::new()
        }
    }
    fn final_blocks(&self) -> bool {
        !self.most_work
    }
    fn status(&self) -> EngineStatus {
        EngineStatus {
            engine: "script",
            role: "test",
            term: 0,
            leader: None,
            committed_height: 0,
            uncommitted: 0,
            view_changes: 0,
            dropped_messages: 0,
            rejected_messages: 0,
            pow: None,
        }
    }
}

struct Setup {
    store: Arc<MemStore>,
    driver: Driver<MemStore, u32>,
    inputs: Arc<Mutex<Vec<Input>>>,
}

fn setup(replies: Vec<Vec<Action>>) -> Setup {
    setup_with(replies, false)
}

fn setup_with(replies: Vec<Vec<Action>>, most_work: bool) -> Setup {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let store = Arc::new(MemStore::new(true));
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    let inputs = Arc::new(Mutex::new(Vec::new()));
    let engine = Script {
        replies: replies.into(),
        inputs: inputs.clone(),
        most_work,
    };
    let cfg = Config {
        genesis_hash: chain.genesis.hash(),
        params: chain.params.clone(),
        me: Some(0),
        reward: chain.keys[0].address(),
        block_max: 100,
        sync_batch: 64,
        sync_timeout_ms: 1_000,
        max_locator: 128,
        push_max: 100,
    };
    let pool = Arc::new(Mutex::new(Mempool::new(
        chain.params.chain_id.clone(),
        1_000,
        16,
    )));
    let driver = Driver::new(
        cfg,
        store.clone(),
        pool,
        Some(Box::new(engine)),
        vec![Some(0), Some(1), Some(2)],
    );
    Setup {
        store,
        driver,
        inputs,
    }
}

/// `n` valid blocks on genesis by `proposer` (built on a scratch store).
fn valid_chain(chain: &TestChain, n: usize, proposer: usize) -> Vec<Block> {
    let store = MemStore::new(true);
    store
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(proposer as u64);
    let mut out = Vec::new();
    for _ in 0..n {
        let head = store.head().expect("head");
        let txs = chain
            .random_transfers(&mut rng, &store, 3)
            .expect("transfers");
        let p = chain.block_on(&store, &head, proposer, txs).expect("block");
        store
            .commit_block(&p.block, &p.executed.changes)
            .expect("commit");
        out.push(p.block);
    }
    out
}

fn inputs(s: &Setup) -> Vec<Input> {
    s.inputs.lock().expect("inputs").clone()
}

#[test]
fn a_block_that_cannot_be_built_is_not_answered_and_nothing_stops() {
    let mut s = setup(vec![vec![Action::BuildBlock {
        parent: Hash::digest(b"nowhere"),
        height: 1,
        engine_data: Vec::new(),
        uncommitted: Vec::new(),
    }]]);
    let effects = s.driver.tick(10).expect("a failed build is not fatal");
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(inputs(&s).len(), 1, "only the tick: no BlockBuilt");
    assert_eq!(s.driver.stats().blocks_built, 0);
}

#[test]
fn a_built_block_is_answered_and_a_commit_applies_and_announces_it() {
    let genesis = TestChain::new("driver-test", 8, 1_000_000).genesis.hash();
    let mut builder = setup(vec![vec![Action::BuildBlock {
        parent: genesis,
        height: 1,
        engine_data: vec![7],
        uncommitted: Vec::new(),
    }]]);
    let effects = builder.driver.tick(10).expect("tick");
    let built = inputs(&builder)
        .into_iter()
        .find_map(|i| match i {
            Input::BlockBuilt { block } => Some(block),
            _ => None,
        })
        .expect("BlockBuilt");
    assert_eq!(
        effects,
        vec![Effect::Built {
            height: 1,
            hash: built.hash()
        }]
    );
    assert_eq!(built.header.engine_data, vec![7]);
    assert_eq!(built.header.parent, genesis);
    // Another node commits it.
    let mut s = setup(vec![vec![Action::Commit {
        blocks: vec![built.clone()],
    }]]);
    let effects = s.driver.tick(20).expect("commit");
    assert_eq!(
        effects,
        vec![
            Effect::Applied {
                block: built.clone()
            },
            Effect::Announce {
                header: built.header.clone()
            },
        ]
    );
    assert_eq!(s.store.head_hash().expect("head"), built.hash());
}

#[test]
fn a_final_block_that_does_not_apply_stops_the_driver() {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let mut bad = valid_chain(&chain, 1, 1).remove(0);
    bad.header.state_root = Hash::digest(b"wrong");
    let mut s = setup(vec![vec![Action::Commit { blocks: vec![bad] }]]);
    assert!(matches!(
        s.driver.tick(10),
        Err(DriverError::FinalBlock { height: 1, .. })
    ));
    assert_eq!(s.store.head().expect("head").height, 0);
}

#[test]
fn a_final_block_that_conflicts_with_the_chain_stops_the_driver() {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let a = valid_chain(&chain, 1, 1).remove(0);
    let b = valid_chain(&chain, 1, 2).remove(0);
    assert_ne!(a.hash(), b.hash());
    let mut s = setup(vec![
        vec![Action::Commit {
            blocks: vec![a.clone()],
        }],
        vec![Action::Commit {
            blocks: vec![a.clone()],
        }],
        vec![Action::Commit { blocks: vec![b] }],
    ]);
    s.driver.tick(10).expect("first commit");
    // The same block again is no news.
    assert!(s.driver.tick(11).expect("again").is_empty());
    assert!(matches!(
        s.driver.tick(12),
        Err(DriverError::ConflictingFinal { height: 1, .. })
    ));
    assert_eq!(s.store.head_hash().expect("head"), a.hash());
}

#[test]
fn a_head_move_stops_at_a_block_that_does_not_execute_and_blames_its_sender() {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let two = valid_chain(&chain, 2, 1);
    let (good, mut bad) = (two[0].clone(), two[1].clone());
    bad.header.state_root = Hash::digest(b"made up");
    let mut s = setup_with(
        vec![
            Vec::new(),
            vec![Action::SetHead {
                revert: 0,
                apply: vec![good.clone(), bad.clone()],
            }],
        ],
        true,
    );
    s.driver.remember_origin(bad.hash(), 2);
    s.driver.tick(5).expect("tick");
    let effects = s.driver.block(10, 2, bad.clone()).expect("not fatal");
    assert_eq!(s.store.head_hash().expect("head"), good.hash());
    assert!(effects.contains(&Effect::Applied {
        block: good.clone()
    }));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Penalize { peer: 2, .. })),
        "{effects:?}"
    );
    let rejected = inputs(&s).into_iter().find_map(|i| match i {
        Input::BlockRejected { hash, head, .. } => Some((hash, head)),
        _ => None,
    });
    assert_eq!(rejected, Some((bad.hash(), good.hash())));
    assert_eq!(s.driver.stats().rejected_blocks, 1);
}

#[test]
fn a_head_move_reverts_and_returns_the_abandoned_transactions() {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let a = valid_chain(&chain, 1, 1).remove(0);
    let b = valid_chain(&chain, 1, 2).remove(0);
    let mut s = setup(vec![
        vec![Action::SetHead {
            revert: 0,
            apply: vec![a.clone()],
        }],
        vec![Action::SetHead {
            revert: 1,
            apply: vec![b.clone()],
        }],
    ]);
    s.driver.tick(1).expect("apply a");
    let effects = s.driver.tick(2).expect("switch to b");
    assert_eq!(s.store.head_hash().expect("head"), b.hash());
    assert_eq!(s.driver.stats().reorgs, 1);
    let reverted = inputs(&s).into_iter().find_map(|i| match i {
        Input::Reverted { blocks } => Some(blocks),
        _ => None,
    });
    assert_eq!(reverted, Some(vec![a.clone()]));
    // A's transfers whose nonce B did not use are pending again, and
    // gossiped.
    let in_b: Vec<_> = b
        .transactions
        .iter()
        .map(|t| (t.sender(), t.nonce))
        .collect();
    let back: Vec<Hash> = a
        .transactions
        .iter()
        .filter(|t| !in_b.contains(&(t.sender(), t.nonce)))
        .map(|t| t.hash())
        .collect();
    let pool = s.driver.mempool().lock().expect("pool");
    for h in &back {
        assert!(pool.contains(h), "transaction {h} not back in the mempool");
    }
    drop(pool);
    assert!(!back.is_empty(), "the test needs transfers B does not redo");
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::GossipTransactions { txs } if txs.len() == back.len())));
}

#[test]
fn transfers_that_waited_behind_synced_blocks_are_offered_to_the_engine() {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let block = valid_chain(&chain, 1, 1).remove(0);
    let mut s = setup(Vec::new());
    // The next transfer of one of the block's senders: behind a nonce gap
    // until the block is here.
    let last = block.transactions.last().expect("a transfer").clone();
    let key = chain
        .keys
        .iter()
        .find(|k| k.public_key() == last.from)
        .expect("a test key");
    let next = cairn_chain::Transaction::new_signed(
        key,
        &chain.params.chain_id,
        &chain.params.genesis_hash,
        last.to,
        1,
        1,
        last.nonce + 1,
    );
    let account = cairn_chain::state::read_account(&*s.store, &key.address()).expect("account");
    s.driver
        .mempool()
        .lock()
        .expect("pool")
        .insert(next, account)
        .expect("a waiting transfer");
    assert_eq!(s.driver.transactions_added(5).expect("added"), Vec::new());
    assert!(inputs(&s).is_empty(), "nothing is ready yet");
    // A peer two blocks ahead: sync from it, import its block.
    let effects = s.driver.announced(10, 1, 2).expect("announced");
    assert_eq!(effects, vec![Effect::GetBlocks { peer: 1, from: 1 }]);
    s.driver.blocks(20, 1, vec![block.clone()]).expect("import");
    assert_eq!(s.store.head_hash().expect("head"), block.hash());
    let seen = inputs(&s);
    assert!(
        matches!(
            seen.as_slice(),
            [
                Input::Committed { height: 1, .. },
                Input::TransactionsAvailable { count: 1 }
            ]
        ),
        "{seen:?}"
    );
}

#[test]
fn a_peer_whose_sync_went_unanswered_is_asked_again_only_after_others() {
    // Peer 1 is heard from but cannot be reached (a one-way cut): its
    // request times out, and while it is avoided another peer is asked.
    let mut s = setup(Vec::new());
    let asked = s.driver.announced(10, 1, 5).expect("announced");
    assert_eq!(asked, vec![Effect::GetBlocks { peer: 1, from: 1 }]);
    s.driver.tick(1_100).expect("tick past the sync timeout");
    assert_eq!(s.driver.announced(1_200, 1, 5).expect("again"), Vec::new());
    assert_eq!(
        s.driver.announced(1_300, 2, 5).expect("another peer"),
        vec![Effect::GetBlocks { peer: 2, from: 1 }]
    );
    s.driver.sync_failed(1_400, 2);
    // Three timeouts later, peer 1 is asked again.
    assert_eq!(
        s.driver.announced(4_200, 1, 5).expect("later"),
        vec![Effect::GetBlocks { peer: 1, from: 1 }]
    );
}

#[test]
fn a_fetch_of_a_peers_branch_that_goes_unanswered_is_asked_of_another_peer_at_once() {
    // Under proof-of-work only a new block would start the next fetch:
    // meanwhile the node would mine on a branch the others have left.
    let mut s = setup_with(Vec::new(), true);
    let locator = serve::locator(&*s.store).expect("locator");
    let effects = s.driver.peer_connected(10, 1).expect("connected");
    assert!(
        effects.contains(&Effect::GetBlocksAfter {
            peer: 1,
            locator: locator.clone()
        }),
        "{effects:?}"
    );
    let effects = s.driver.peer_connected(20, 2).expect("connected");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::GetBlocksAfter { .. })),
        "one fetch at a time: {effects:?}"
    );
    assert_eq!(s.driver.tick(500).expect("tick"), Vec::new());
    let effects = s.driver.tick(1_100).expect("tick past the sync timeout");
    assert_eq!(effects, vec![Effect::GetBlocksAfter { peer: 2, locator }]);
    // A node of final blocks waits for the next announcement instead.
    let mut s = setup(Vec::new());
    s.driver.announced(10, 1, 5).expect("announced");
    s.driver.peer_connected(20, 2).expect("connected");
    assert_eq!(s.driver.tick(1_100).expect("tick"), Vec::new());
}

#[test]
fn a_mined_block_reaching_a_node_of_final_blocks_makes_it_sync_from_the_sender() {
    // The network switched to proof-of-work while this node lagged in the
    // final engine's segment: no message of that engine will come again.
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let mined = valid_chain(&chain, 5, 1).remove(4);
    let mut s = setup(Vec::new());
    let effects = s.driver.block(10, 2, mined).expect("block");
    assert_eq!(effects, vec![Effect::GetBlocks { peer: 2, from: 1 }]);
    assert!(
        !inputs(&s).iter().any(|i| matches!(i, Input::Block { .. })),
        "the final engine is not handed a mined block"
    );
}

#[test]
fn a_node_of_final_blocks_asks_a_peer_that_connects_for_what_follows_its_head() {
    // A validator restarted while the network is idle hears no later
    // message that would tell it it is behind.
    let mut s = setup(Vec::new());
    let effects = s.driver.peer_connected(10, 2).expect("connected");
    assert!(
        effects.contains(&Effect::GetBlocks { peer: 2, from: 1 }),
        "{effects:?}"
    );
    // One request at a time.
    let effects = s.driver.peer_connected(11, 1).expect("connected");
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::GetBlocks { .. })),
        "{effects:?}"
    );
}

/// `n` mined blocks on `store`'s head by `proposer` (difficulty 1, as the
/// rule of [`pow_start`] demands), committed to `store`.
fn mined_chain(chain: &TestChain, store: &MemStore, n: usize, proposer: usize) -> Vec<Block> {
    use cairn_consensus::pow::{search_nonce, with_nonce, PowSeal};
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(proposer as u64);
    let mut out = Vec::new();
    for _ in 0..n {
        let head = store.head().expect("head");
        let txs = chain
            .random_transfers(&mut rng, store, 2)
            .expect("transfers");
        let seal = PowSeal {
            difficulty: 1,
            nonce: 0,
        };
        let p = cairn_chain::propose_block(
            store,
            &chain.params,
            &head,
            chain.keys[proposer].address(),
            head.timestamp_ms + 1_000,
            txs,
            seal.encode(),
        )
        .expect("block");
        let (nonce, _) = search_nonce(&p.block.header, 0, 1 << 20).expect("nonce");
        let block = Block {
            header: with_nonce(&p.block.header, nonce).expect("seal"),
            ..p.block
        };
        store
            .commit_block(&block, &p.executed.changes)
            .expect("commit");
        out.push(block);
    }
    out
}

/// Starts a proof-of-work engine that mines heights 1 and 2 over `store`,
/// for every height asked (the segment before a final engine at 3).
fn pow_start(store: Arc<MemStore>) -> SegmentStart<u32> {
    use cairn_consensus::pow::{RetargetRule, MAX_SIDE_BYTES};
    Box::new(move |_height| {
        let cfg = cairn_consensus::PowConfig {
            rule: RetargetRule {
                target_block_time_ms: 1_000,
                initial_difficulty: 1,
                min_difficulty: 1,
                window: 100,
            },
            first_height: 1,
            later: Vec::new(),
            last_height: Some(2),
            max_future_drift_ms: 15_000,
            mining: false,
            template_refresh_ms: 1_000,
            max_orphans: 10,
            max_side_bytes: MAX_SIDE_BYTES,
        };
        let engine = crate::start::pow(&*store, cfg).map_err(|e| e.to_string())?;
        Ok(SegmentEngine {
            index: 0,
            engine: Some(Box::new(engine)),
            me: None,
            validator_peers: Vec::new(),
            observer_check: None,
            end: Some(3),
            open_parent: None,
        })
    })
}

#[test]
fn a_final_block_on_another_mined_branch_waits_until_that_branch_is_fetched_and_adopted() {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    // The peer's chain: two mined blocks, then the final engine's first
    // block on them.
    let theirs = MemStore::new(true);
    theirs
        .init_genesis(&chain.genesis, &chain.genesis_state)
        .expect("genesis");
    let branch = mined_chain(&chain, &theirs, 2, 2);
    let head = theirs.head().expect("head");
    let first = chain
        .block_on(&theirs, &head, 3, Vec::new())
        .expect("block")
        .block;
    let Setup { store, driver, .. } = setup(vec![
        Vec::new(),
        vec![Action::Commit {
            blocks: vec![first.clone()],
        }],
    ]);
    // This node mined its own branch to the same height.
    let ours = mined_chain(&chain, &store, 2, 1);
    assert_ne!(ours[1].hash(), branch[1].hash());
    let mut driver = driver
        .with_segments(1, None, pow_start(store.clone()))
        .with_open_parent(Some(3));
    let now = 1_000_000_000;
    driver.peer_connected(now, 1).expect("connect");
    driver
        .blocks(now, 1, Vec::new())
        .expect("nothing newer yet");
    driver.tick(now).expect("tick");

    // The commit names a parent this node does not hold: it waits, and
    // fetches the branch by locator from its peer.
    let effects = driver.tick(now + 1).expect("commit");
    assert!(driver.settling());
    assert_eq!(store.head_hash().expect("head"), ours[1].hash());
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::GetBlocksAfter { peer: 1, .. })),
        "{effects:?}"
    );

    // The branch comes: checked as proof-of-work, adopted against its
    // work (equal here), and the final block goes on it.
    let effects = driver.blocks(now + 2, 1, branch.clone()).expect("branch");
    assert!(!driver.settling());
    assert_eq!(store.head_hash().expect("head"), first.hash());
    assert_eq!(
        store.hash_at(2).expect("hash"),
        Some(branch[1].hash()),
        "the mined chain is the named one"
    );
    assert!(
        effects.contains(&Effect::Announce {
            header: first.header.clone()
        }),
        "{effects:?}"
    );
    // Our branch's transfers went back to the mempool and to the peers.
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::GossipTransactions { .. })),
        "{effects:?}"
    );
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Penalize { .. })),
        "nobody is blamed: {effects:?}"
    );
}

#[test]
fn a_synced_final_block_executes_in_full_without_its_signatures_checked_again() {
    let chain = TestChain::new("driver-test", 8, 1_000_000);
    let block = valid_chain(&chain, 1, 1).remove(0);
    // Its finality is proven (the engine's verify_final): a signature
    // is not checked again. A transfer with a broken signature, the
    // transaction root made to match: the state and its root do not
    // depend on signatures.
    let mut forged = block.clone();
    forged.transactions[0].signature.0[0] ^= 1;
    forged.header.tx_root = cairn_chain::transactions_root(&forged.transactions);
    assert!(forged.transactions[0]
        .verify_signature(&chain.params.genesis_hash)
        .is_err());
    // A wrong state root is still refused, and its sender blamed.
    let mut wrong_state = forged.clone();
    wrong_state.header.state_root = cairn_chain::Hash::digest(b"another state");
    let mut s = setup(Vec::new());
    let effects = s.driver.announced(5, 1, 2).expect("announced");
    assert_eq!(effects, vec![Effect::GetBlocks { peer: 1, from: 1 }]);
    let effects = s.driver.blocks(10, 1, vec![wrong_state]).expect("import");
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::Penalize { peer: 1, .. })));
    assert_eq!(s.store.head().expect("head").height, 0);
    let effects = s.driver.announced(15, 2, 2).expect("announced");
    assert_eq!(effects, vec![Effect::GetBlocks { peer: 2, from: 1 }]);
    let effects = s
        .driver
        .blocks(20, 2, vec![forged.clone()])
        .expect("import");
    assert!(!effects.iter().any(|e| matches!(e, Effect::Penalize { .. })));
    assert_eq!(s.store.head_hash().expect("head"), forged.hash());
}
