//! Raft tests: exact actions for single steps, and a small in-memory network
//! (messages delivered in FIFO order, nodes can be cut off) for runs.

use std::collections::{BTreeMap, VecDeque};

use cairn_chain::{Address, Block, Hash, Header};

use super::*;

fn cfg(me: u32, n: u32) -> RaftConfig {
    RaftConfig {
        me,
        validators: n,
        election_timeout_ms: 100,
        heartbeat_ms: 20,
        block_interval_ms: 10,
        empty_blocks: false,
        full_block: 1000,
        seed: 42,
    }
}

fn genesis() -> CommittedHead {
    CommittedHead {
        index: 0,
        term: 0,
        hash: Hash::digest(b"genesis"),
    }
}

fn block_on(parent: Hash, height: u64, term: u64, tag: u8) -> Block {
    Block {
        header: Header {
            parent,
            height,
            timestamp_ms: height,
            tx_root: Hash::digest(&[tag]),
            state_root: Hash::ZERO,
            proposer: Address::ZERO,
            engine_data: term_data(term),
        },
        transactions: Vec::new(),
        seal: Vec::new(),
    }
}

/// A node: the engine plus what a driver would keep.
struct Node {
    raft: Raft,
    disk: BTreeMap<Vec<u8>, Vec<u8>>,
    chain: Vec<Block>,
    up: bool,
}

struct Net {
    nodes: Vec<Node>,
    queue: VecDeque<(u32, u32, ConsensusMessage)>,
    now: u64,
    tag: u8,
    /// Cut links: (from, to).
    cut: Vec<(u32, u32)>,
}

impl Net {
    fn new(n: u32) -> Self {
        let nodes = (0..n)
            .map(|i| Node {
                raft: Raft::new(cfg(i, n), genesis(), &BTreeMap::new()),
                disk: BTreeMap::new(),
                chain: Vec::new(),
                up: true,
            })
            .collect();
        Net {
            nodes,
            queue: VecDeque::new(),
            now: 0,
            tag: 0,
            cut: Vec::new(),
        }
    }

    fn run_actions(&mut self, id: u32, actions: Vec<Action>) {
        let mut follow_up = Vec::new();
        for a in actions {
            match a {
                Action::Send { to, msg } => self.queue.push_back((id, to, msg)),
                Action::Broadcast { msg } => {
                    for to in 0..self.nodes.len() as u32 {
                        if to != id {
                            self.queue.push_back((id, to, msg.clone()));
                        }
                    }
                }
                Action::Persist(writes) => {
                    let disk = &mut self.nodes[id as usize].disk;
                    for (k, v) in writes {
                        match v {
                            Some(v) => disk.insert(k, v),
                            None => disk.remove(&k),
                        };
                    }
                }
                Action::BuildBlock {
                    parent,
                    height,
                    engine_data,
                    ..
                } => {
                    self.tag = self.tag.wrapping_add(1);
                    let mut b = block_on(parent, height, block_term(&engine_data), self.tag);
                    b.header.engine_data = engine_data;
                    follow_up.push(Input::BlockBuilt { block: b });
                }
                Action::Commit { blocks } => {
                    let chain = &mut self.nodes[id as usize].chain;
                    for b in blocks {
                        let parent = chain.last().map(Block::hash).unwrap_or(genesis().hash);
                        assert_eq!(b.header.parent, parent, "commit out of order");
                        chain.push(b);
                    }
                }
                Action::Sync { peer, height } => {
                    // What the node's block sync does: fetch final blocks
                    // from the peer, import them, tell the engine.
                    let have = self.nodes[id as usize].chain.len();
                    let fetched: Vec<Block> = self.nodes[peer as usize]
                        .chain
                        .iter()
                        .take(height as usize)
                        .skip(have)
                        .cloned()
                        .collect();
                    for b in fetched {
                        self.nodes[id as usize].chain.push(b.clone());
                        follow_up.push(Input::Committed {
                            height: b.header.height,
                            hash: b.hash(),
                            engine_data: b.header.engine_data.clone(),
                        });
                    }
                }
                Action::SetTimer { .. } => {}
            }
        }
        for input in follow_up {
            let acts = self.nodes[id as usize].raft.handle(input);
            self.run_actions(id, acts);
        }
    }

    fn input(&mut self, id: u32, input: Input) {
        if !self.nodes[id as usize].up {
            return;
        }
        let acts = self.nodes[id as usize].raft.handle(input);
        self.run_actions(id, acts);
    }

    fn step(&mut self, ms: u64) {
        self.now += ms;
        for id in 0..self.nodes.len() as u32 {
            self.input(id, Input::Tick { now_ms: self.now });
        }
        while let Some((from, to, msg)) = self.queue.pop_front() {
            if self.cut.contains(&(from, to)) || !self.nodes[from as usize].up {
                continue;
            }
            self.input(to, Input::Message { from, msg });
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 5 {
            self.step(5);
        }
    }

    fn leaders(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&i| {
                self.nodes[i as usize].up && self.nodes[i as usize].raft.status().role == "leader"
            })
            .collect()
    }

    fn offer_transactions(&mut self, count: usize) {
        for id in 0..self.nodes.len() as u32 {
            self.input(id, Input::TransactionsAvailable { count });
        }
    }

    fn isolate(&mut self, id: u32) {
        for other in 0..self.nodes.len() as u32 {
            self.cut.push((id, other));
            self.cut.push((other, id));
        }
    }

    fn check_prefix_agreement(&self) {
        for a in &self.nodes {
            for b in &self.nodes {
                let n = a.chain.len().min(b.chain.len());
                assert_eq!(a.chain[..n], b.chain[..n], "final chains diverge");
            }
        }
    }
}

#[test]
fn vote_is_persisted_before_it_is_sent() {
    let mut r = Raft::new(cfg(1, 3), genesis(), &BTreeMap::new());
    let acts = r.handle(Input::Message {
        from: 0,
        msg: ConsensusMessage::Raft(RaftMessage::RequestVote {
            term: 1,
            last_index: 0,
            last_term: 0,
        }),
    });
    let persist = acts
        .iter()
        .rposition(|a| matches!(a, Action::Persist(_)))
        .expect("persists");
    let send = acts
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send {
                    to: 0,
                    msg: ConsensusMessage::Raft(RaftMessage::VoteResponse {
                        term: 1,
                        granted: true
                    })
                }
            )
        })
        .expect("grants");
    assert!(persist < send);
    // The persisted hard state records the vote.
    let Action::Persist(w) = &acts[persist] else {
        unreachable!()
    };
    assert_eq!(w[0].1, Some(codec::encode(&(1u64, Some(0u32)))));
}

#[test]
fn refuses_a_vote_for_a_stale_log_and_a_second_candidate() {
    let mut r = Raft::new(cfg(2, 3), genesis(), &BTreeMap::new());
    // Give node 2 an entry of term 1.
    let b = block_on(genesis().hash, 1, 1, 9);
    r.handle(Input::Message {
        from: 0,
        msg: ConsensusMessage::Raft(RaftMessage::AppendEntries {
            term: 1,
            prev_index: 0,
            prev_term: 0,
            entries: vec![b],
            leader_commit: 0,
        }),
    });
    let vote = |r: &mut Raft, from, term, last_index, last_term| {
        r.handle(Input::Message {
            from,
            msg: ConsensusMessage::Raft(RaftMessage::RequestVote {
                term,
                last_index,
                last_term,
            }),
        })
        .into_iter()
        .find_map(|a| match a {
            Action::Send {
                msg: ConsensusMessage::Raft(RaftMessage::VoteResponse { granted, .. }),
                ..
            } => Some(granted),
            _ => None,
        })
    };
    assert_eq!(vote(&mut r, 1, 2, 0, 0), Some(false), "stale log");
    assert_eq!(vote(&mut r, 1, 2, 1, 1), Some(true), "up to date");
    assert_eq!(
        vote(&mut r, 0, 2, 1, 1),
        Some(false),
        "already voted in term 2"
    );
}

#[test]
fn three_nodes_elect_one_leader_and_commit_the_same_blocks() {
    let mut net = Net::new(3);
    net.run(400);
    assert_eq!(net.leaders().len(), 1);
    for _ in 0..5 {
        net.offer_transactions(3);
        net.run(50);
    }
    net.run(100);
    let len = net.nodes[0].chain.len();
    assert!(len >= 3, "committed {len}");
    net.check_prefix_agreement();
    assert!(net.nodes.iter().all(|n| n.chain.len() == len));
    // Idle: no empty blocks.
    net.offer_transactions(0);
    net.run(300);
    let idle = net.nodes[0].chain.len();
    net.run(300);
    assert_eq!(net.nodes[0].chain.len(), idle, "no empty blocks when idle");
}

#[test]
fn a_new_leader_takes_over_when_the_leader_dies_and_keeps_final_blocks() {
    let mut net = Net::new(3);
    net.run(400);
    let old = net.leaders()[0];
    net.offer_transactions(1);
    net.run(200);
    let before = net.nodes[old as usize].chain.clone();
    assert!(!before.is_empty());
    net.nodes[old as usize].up = false;
    net.run(1000);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], old);
    net.offer_transactions(1);
    net.run(300);
    for (i, n) in net.nodes.iter().enumerate() {
        if i as u32 != old {
            assert!(n.chain.len() > before.len(), "node {i} made progress");
            assert_eq!(n.chain[..before.len()], before[..]);
        }
    }
    net.check_prefix_agreement();
}

#[test]
fn a_restarted_node_recovers_term_vote_and_log_from_disk() {
    let mut net = Net::new(3);
    net.run(400);
    net.offer_transactions(1);
    net.run(200);
    let follower = (0..3)
        .find(|i| !net.leaders().contains(i))
        .expect("a follower");
    let node = &net.nodes[follower as usize];
    let status = node.raft.status();
    let head = node.chain.last().expect("committed");
    let restored = Raft::new(
        cfg(follower, 3),
        CommittedHead {
            index: head.header.height,
            term: block_term(&head.header.engine_data),
            hash: head.hash(),
        },
        &node.disk,
    );
    let s = restored.status();
    assert_eq!(s.term, status.term);
    assert_eq!(s.committed_height, status.committed_height);
    assert_eq!(s.uncommitted, status.uncommitted);
    assert_eq!(restored.voted_for, node.raft.voted_for);
}

#[test]
fn a_partitioned_leader_cannot_commit_and_its_tail_is_replaced() {
    let mut net = Net::new(3);
    net.run(400);
    let old = net.leaders()[0];
    net.isolate(old);
    // The isolated leader appends a block it can never commit.
    net.input(old, Input::TransactionsAvailable { count: 1 });
    net.run(50);
    let committed_by_old = net.nodes[old as usize].chain.len();
    assert_eq!(net.nodes[old as usize].raft.status().uncommitted, 1);
    net.run(1000);
    let new = *net
        .leaders()
        .iter()
        .find(|&&l| l != old)
        .expect("majority side elects a leader");
    net.offer_transactions(1);
    net.run(300);
    assert_eq!(net.nodes[old as usize].chain.len(), committed_by_old);
    // Heal: the old leader steps down, drops its block, adopts the new chain.
    net.cut.clear();
    net.run(500);
    assert_eq!(net.leaders(), vec![new]);
    net.offer_transactions(1);
    net.run(300);
    net.check_prefix_agreement();
    let a = &net.nodes[old as usize].chain;
    let b = &net.nodes[new as usize].chain;
    assert_eq!(a.len(), b.len());
}
