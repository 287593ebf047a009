//! The consensus engines under messages from a Byzantine validator: one
//! engine, and a script of inputs read from the fuzzer's bytes. A validator
//! can sign whatever it likes, so messages are handed to the engine as if
//! their envelope's signature had verified; votes inside that carry their
//! own signatures still need valid ones (the seeds hold some).

use std::collections::{BTreeMap, VecDeque};

use cairn_chain::{Block, Header};
use cairn_consensus::pbft::PbftConfig;
use cairn_consensus::pow::{PowSeal, RetargetRule};
use cairn_consensus::raft::{CommittedHead, RaftConfig};
use cairn_consensus::{
    Action, ConsensusEngine, ConsensusMessage, EngineStatus, Input, Pbft, Pow, PowConfig, Raft,
    MAX_MESSAGE_BYTES,
};

use crate::fixtures::{self, VALIDATORS};

/// The fuzzed validator.
const ME: u32 = 1;
/// Time at the start of a script (proof-of-work checks timestamps).
const T0: u64 = 1_750_000_000_000;

/// A script: steps of one opcode byte each, some followed by operands.
pub(crate) struct Script<'a> {
    data: &'a [u8],
}

enum Step<'a> {
    /// Time passes by the operand × 10 ms.
    Tick(u64),
    /// A message from the validator in the operand (its bytes follow,
    /// prefixed by their length on two bytes).
    Message(u32, &'a [u8]),
    /// The mempool holds the operand's count of ready transactions.
    Ready(usize),
    /// The driver answers the engine's last request (validate, build).
    Answer(bool),
}

impl<'a> Script<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn next(&mut self) -> Option<Step<'a>> {
        let op = self.byte()?;
        Some(match op % 4 {
            0 => Step::Tick(u64::from(self.byte()?) * 10),
            1 => {
                let from = u32::from(self.byte()?) % VALIDATORS;
                let len = u16::from_le_bytes([self.byte()?, self.byte()?]) as usize;
                let len = len.min(self.data.len());
                let (msg, rest) = self.data.split_at(len);
                self.data = rest;
                Step::Message(from, msg)
            }
            2 => Step::Ready(usize::from(self.byte()?)),
            _ => Step::Answer(op & 4 == 0),
        })
    }
}

/// Runs `script` on `engine`; `decode` turns a message's bytes into an
/// input.
fn run(
    engine: &mut dyn ConsensusEngine,
    data: &[u8],
    decode: impl Fn(u32, &[u8]) -> Option<Input>,
) -> EngineStatus {
    let mut script = Script { data };
    let mut now = T0;
    let mut last = engine.handle(now, Input::Tick);
    while let Some(step) = script.next() {
        let input = match step {
            Step::Tick(ms) => {
                now += ms;
                Input::Tick
            }
            Step::Message(from, bytes) => match decode(from, bytes) {
                Some(input) => input,
                None => continue,
            },
            Step::Ready(count) => Input::TransactionsAvailable { count },
            Step::Answer(valid) => match answer(&last, valid) {
                Some(input) => input,
                None => continue,
            },
        };
        last = engine.handle(now, input);
        let _ = engine.status();
    }
    engine.status()
}

/// What a driver would answer to the first request among `actions`.
fn answer(actions: &[Action], valid: bool) -> Option<Input> {
    actions.iter().find_map(|a| match a {
        Action::ValidateBlock { block } => Some(Input::BlockValidated {
            hash: block.hash(),
            valid,
        }),
        Action::BuildBlock {
            parent,
            height,
            engine_data,
            ..
        } => {
            let mut header = fixtures::chain().genesis.header.clone();
            header.parent = *parent;
            header.height = *height;
            header.engine_data = engine_data.clone();
            Some(Input::BlockBuilt {
                block: Block {
                    header,
                    transactions: Vec::new(),
                    seal: Vec::new(),
                },
            })
        }
        _ => None,
    })
}

fn answer_for(actions: &[Action]) -> Option<Input> {
    answer(actions, true)
}

fn consensus_message(from: u32, bytes: &[u8]) -> Option<Input> {
    let msg: ConsensusMessage = cairn_chain::codec::decode(bytes, MAX_MESSAGE_BYTES).ok()?;
    Some(Input::Message { from, msg })
}

fn genesis() -> Header {
    fixtures::chain().genesis.header.clone()
}

fn raft(me: u32) -> Raft {
    let cfg = RaftConfig {
        me,
        validators: VALIDATORS,
        election_timeout_ms: 100,
        heartbeat_ms: 20,
        block_interval_ms: 10,
        empty_blocks: false,
        full_block: 100,
        max_uncommitted: 3,
        seed: u64::from(me),
        any_parent_at: None,
    };
    let head = CommittedHead {
        index: 0,
        term: 0,
        hash: genesis().hash(),
    };
    Raft::new(cfg, head, &BTreeMap::new())
}

pub(crate) fn pbft_engine(me: u32) -> Pbft {
    pbft(me)
}

fn pbft(me: u32) -> Pbft {
    let v = fixtures::validators();
    let cfg = PbftConfig {
        first_height: 0,
        any_first_parent: false,
        me,
        validators: v.publics.clone(),
        key: v.keys[me as usize].clone(),
        network: v.network,
        block_interval_ms: 10,
        view_timeout_ms: 100,
        empty_blocks: false,
        full_block: 100,
    };
    Pbft::new(cfg, &genesis(), &BTreeMap::new())
}

/// Raft, as validator 1 of 4.
pub fn raft_messages(data: &[u8]) {
    raft_status(data);
}

/// [`raft_messages`], and where the engine ended.
pub fn raft_status(data: &[u8]) -> EngineStatus {
    run(&mut raft(ME), data, consensus_message)
}

/// PBFT, as validator 1 of 4.
pub fn pbft_messages(data: &[u8]) {
    pbft_status(data);
}

/// [`pbft_messages`], and where the engine ended.
pub fn pbft_status(data: &[u8]) -> EngineStatus {
    run(&mut pbft(ME), data, consensus_message)
}

/// The proof-of-work engine (mining) under blocks from peers, at the
/// lowest difficulty (any nonce is a valid proof).
pub fn pow_blocks(data: &[u8]) {
    pow_status(data);
}

/// [`pow_blocks`], and where the engine ended.
pub fn pow_status(data: &[u8]) -> EngineStatus {
    let cfg = PowConfig {
        rule: RetargetRule {
            target_block_time_ms: 1_000,
            initial_difficulty: 1,
            min_difficulty: 1,
            window: 8,
        },
        first_height: 1,
        later: Vec::new(),
        last_height: None,
        max_future_drift_ms: 15_000,
        mining: true,
        template_refresh_ms: 500,
        max_orphans: 16,
        max_side_bytes: 1 << 20,
    };
    let mut pow = Pow::new(cfg, &[genesis()], 0);
    run(&mut pow, data, |_, bytes| {
        Block::decode(bytes)
            .ok()
            .map(|block| Input::Block { block })
    })
}

/// Records, as a script, what validator [`ME`] receives while four honest
/// engines run for `steps` steps of 10 ms with one transfer always ready:
/// elections or views, proposals, votes and commits.
fn record(mut engines: Vec<Box<dyn ConsensusEngine>>, steps: usize) -> Vec<u8> {
    let me = ME as usize;
    let mut script = Vec::new();
    let mut now = T0;
    let mut work: VecDeque<(usize, Input)> = VecDeque::new();
    for (i, e) in engines.iter_mut().enumerate() {
        let _ = e.handle(now, Input::Tick);
        work.push_back((i, Input::TransactionsAvailable { count: 1 }));
    }
    for _ in 0..steps {
        let mut budget = 10_000;
        while let Some((i, input)) = work.pop_front() {
            budget -= 1;
            if budget == 0 {
                break;
            }
            if i == me {
                match &input {
                    Input::Tick => script.extend([0, 1]),
                    Input::TransactionsAvailable { count } => {
                        script.extend([2, (*count).min(255) as u8]);
                    }
                    Input::Message { from, msg } => {
                        let bytes = cairn_chain::codec::encode(msg);
                        let Ok(len) = u16::try_from(bytes.len()) else {
                            continue;
                        };
                        script.extend([1, *from as u8]);
                        script.extend(len.to_le_bytes());
                        script.extend(bytes);
                    }
                    _ => script.push(3),
                }
            }
            let actions = engines[i].handle(now, input);
            if let Some(reply) = answer_for(&actions) {
                work.push_front((i, reply));
            }
            for a in actions {
                match a {
                    Action::Broadcast { msg } => {
                        for j in (0..engines.len()).filter(|&j| j != i) {
                            work.push_back((
                                j,
                                Input::Message {
                                    from: i as u32,
                                    msg: msg.clone(),
                                },
                            ));
                        }
                    }
                    Action::Send { to, msg } => work.push_back((
                        to as usize,
                        Input::Message {
                            from: i as u32,
                            msg,
                        },
                    )),
                    Action::Commit { .. } => {
                        work.push_back((i, Input::TransactionsAvailable { count: 1 }));
                    }
                    _ => {}
                }
            }
        }
        now += 10;
        for i in 0..engines.len() {
            work.push_back((i, Input::Tick));
        }
    }
    script
}

/// A recorded run of four Raft validators.
pub(crate) fn record_raft() -> Vec<u8> {
    record(
        (0..VALIDATORS).map(|i| Box::new(raft(i)) as _).collect(),
        60,
    )
}

/// A recorded run of four PBFT validators.
pub(crate) fn record_pbft() -> Vec<u8> {
    record(
        (0..VALIDATORS).map(|i| Box::new(pbft(i)) as _).collect(),
        30,
    )
}

/// Two blocks of a chain with valid work, then a rival branch.
pub(crate) fn pow_script() -> Vec<u8> {
    let chain = fixtures::chain();
    let mut parent = genesis();
    let mut script = Vec::new();
    for (height, stamp) in [(1u64, 5_000u64), (2, 4_000), (1, 3_500)] {
        if height == 1 {
            parent = genesis();
        }
        let mut header = parent.clone();
        header.parent = parent.hash();
        header.height = height;
        header.timestamp_ms = T0 - stamp;
        header.engine_data = PowSeal {
            difficulty: 1,
            nonce: stamp,
        }
        .encode();
        header.proposer = chain.keys[0].address();
        let block = Block {
            header: header.clone(),
            transactions: Vec::new(),
            seal: Vec::new(),
        };
        let bytes = block.encode();
        script.extend([1, 0]);
        script.extend((bytes.len() as u16).to_le_bytes());
        script.extend(bytes);
        script.extend([0, 10]);
        parent = header;
    }
    script
}
