//! The swarm task must keep serving the network whatever the node does: a
//! peer that floods a node whose driver is busy (its event queue full) must
//! not stall the node's networking. Two real swarms on loopback.

use std::sync::Arc;
use std::time::Duration;

use cairn_chain::Hash;
use cairn_p2p::{BlockSource, Command, Config, Event, Keypair, Network};

/// Serves one small block at every height.
struct OneBlock;

impl BlockSource for OneBlock {
    fn blocks(&self, from: u64, _max: u32) -> Vec<Vec<u8>> {
        vec![from.to_le_bytes().to_vec()]
    }
    fn blocks_after(&self, _: &[Hash], _: u32) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn block_transactions(&self, wanted: &[(Hash, Vec<u32>)]) -> Vec<Vec<u8>> {
        wanted.iter().map(|_| Vec::new()).collect()
    }
}

fn start(port: u16, bootstrap: Vec<String>, keypair: Keypair) -> Network {
    cairn_p2p::start(
        Config {
            keypair,
            listen: format!("/ip4/127.0.0.1/tcp/{port}").parse().expect("addr"),
            bootstrap: bootstrap
                .iter()
                .map(|b| b.parse().expect("bootstrap"))
                .collect(),
            genesis_hash: Hash::digest(b"swarm-never-waits"),
            max_peers: 10,
            reserved: Vec::new(),
            agent: "test".into(),
        },
        Arc::new(OneBlock),
    )
    .expect("start")
}

async fn next_connected(net: &mut Network) -> cairn_p2p::Peer {
    loop {
        match net.events.recv().await {
            Some(Event::PeerConnected(p)) => return p,
            Some(_) => {}
            None => panic!("network stopped"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_queue_does_not_stall_the_swarm() {
    let busy_key = Keypair::generate_ed25519();
    let busy_id = busy_key.public().to_peer_id();
    let mut busy = start(29310, Vec::new(), busy_key);
    let mut flooder = start(
        29311,
        vec![format!("/ip4/127.0.0.1/tcp/29310/p2p/{busy_id}")],
        Keypair::generate_ed25519(),
    );
    // The busy node's driver reads this one event, then nothing more.
    let flooder_id = next_connected(&mut busy).await;
    next_connected(&mut flooder).await;

    // Consensus messages until the busy node's event queue is full (sent
    // in waves: the connection carries a bounded number of streams).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut i = 0u32;
    while busy.events.len() < busy.events.max_capacity() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flood never filled the queue"
        );
        for _ in 0..200 {
            i += 1;
            flooder
                .commands
                .send(Command::SendConsensus {
                    peer: busy_id,
                    data: i.to_le_bytes().to_vec(),
                })
                .await
                .expect("flooder running");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The busy node's driver sends it commands meanwhile (it must not
    // block on them either), and its peer asks for a block. A swarm task
    // waiting on the full queue would never get to either: the bound below
    // only keeps such a failure from hanging the test.
    let answer = tokio::time::timeout(Duration::from_secs(60), async {
        // More commands than the command queue holds (each a no-op).
        for _ in 0..10_000 {
            busy.commands
                .send(Command::SendTransactions {
                    peer: flooder_id,
                    txs: Vec::new(),
                })
                .await
                .expect("busy swarm running");
        }
        flooder
            .commands
            .send(Command::GetBlocks {
                peer: busy_id,
                from: 7,
                max: 1,
            })
            .await
            .expect("flooder running");
        loop {
            match flooder.events.recv().await.expect("flooder running") {
                Event::Blocks { blocks, .. } => break Some(blocks),
                Event::SyncFailed { .. } => break None,
                _ => {}
            }
        }
    })
    .await
    .expect("the busy node's swarm task stopped serving");
    assert_eq!(
        answer,
        Some(vec![7u64.to_le_bytes().to_vec()]),
        "the busy node did not serve the request"
    );
    assert!(
        busy.dropped_events
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}
