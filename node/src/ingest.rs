//! Transactions from peers, admitted on a thread of their own: decoded,
//! checked against the mempool, signature-verified in batches and inserted,
//! off the driver (which runs consensus and commits blocks) and off the
//! network task. The driver only forwards gossip payloads here; this thread
//! tells it through [`Shared::offer`] that new transactions are ready.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use cairn_chain::Transaction;
use cairn_driver::admit::Signatures;
use cairn_driver::Rejection;
use cairn_p2p::{Command, GossipId, Verdict};
use libp2p::PeerId;

use crate::shared::Shared;

/// Most gossip payloads waiting for this thread; more are dropped (the
/// network outruns verification: the sender's node still has them).
pub const QUEUE: usize = 256;
/// How often a quiet thread looks whether the node asked for memory back.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// Most transactions verified in one batch.
const MAX_VERIFY_BATCH: usize = 8_192;

/// One gossip payload (an encoded batch of transactions) and its sender,
/// with its gossip id (`None` when pushed directly).
#[derive(Debug)]
pub struct Payload {
    pub from: PeerId,
    pub data: Vec<u8>,
    pub id: Option<GossipId>,
}

/// What became of the transactions of one payload: its verdict once the
/// batch it joined is checked.
#[derive(Debug)]
struct Judged {
    from: PeerId,
    id: Option<GossipId>,
    /// A transaction in it has a bad signature.
    bad: bool,
    /// A transaction in it entered the mempool.
    added: bool,
}

/// Starts the thread; it stops when every sender of `rx` is gone.
pub fn spawn(
    shared: Arc<Shared>,
    rx: Receiver<Payload>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cairn-ingest".into())
        .spawn(move || loop {
            let first = match rx.recv_timeout(IDLE_CHECK) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => {
                    // Quiet: give free pages back if the node asked.
                    cairn_allocator::collect_if_requested();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut payloads = Vec::new();
            let mut batch: Vec<(usize, Transaction)> = Vec::new();
            decode(&shared, first, &mut payloads, &mut batch);
            // Whatever else is queued joins the same verification.
            while batch.len() < MAX_VERIFY_BATCH {
                match rx.try_recv() {
                    Ok(p) => decode(&shared, p, &mut payloads, &mut batch),
                    Err(_) => break,
                }
            }
            admit(&shared, batch, &mut payloads);
            for p in payloads {
                let verdict = if p.bad {
                    Verdict::Reject("transaction with a bad signature".into())
                } else if p.added {
                    Verdict::Accept
                } else {
                    // Known already, or not admissible here now (nonce,
                    // balance, a full pool): not the sender's fault.
                    Verdict::Ignore
                };
                judge(&shared, p.from, p.id, verdict);
            }
        })
}

/// Verdicts are not worth waiting for: dropped if the network task is that
/// far behind (the message is then not forwarded).
fn judge(shared: &Shared, peer: PeerId, id: Option<GossipId>, verdict: Verdict) {
    let _ = shared
        .net_commands
        .try_send(Command::Judge { peer, id, verdict });
}

/// Decodes one payload into `out`, leaving out transactions already pending;
/// a payload that does not decode is rejected at once.
fn decode(
    shared: &Shared,
    p: Payload,
    payloads: &mut Vec<Judged>,
    out: &mut Vec<(usize, Transaction)>,
) {
    match cairn_chain::codec::decode::<Vec<Transaction>>(&p.data, cairn_p2p::MAX_TX_BATCH_BYTES) {
        Ok(txs) if txs.len() <= cairn_p2p::MAX_GOSSIP_BATCH => {
            let index = payloads.len();
            payloads.push(Judged {
                from: p.from,
                id: p.id,
                bad: false,
                added: false,
            });
            let Ok(pool) = shared.mempool.lock() else {
                return;
            };
            out.extend(
                txs.into_iter()
                    .filter(|tx| !pool.contains(&tx.hash()))
                    .map(|tx| (index, tx)),
            );
        }
        Ok(txs) => judge(
            shared,
            p.from,
            p.id,
            Verdict::Reject(format!("{} transactions in one batch", txs.len())),
        ),
        Err(e) => judge(
            shared,
            p.from,
            p.id,
            Verdict::Reject(format!("undecodable transactions: {e}")),
        ),
    }
}

/// Admits `batch` (see `cairn_driver::admit`) and marks each payload by
/// what became of its transactions.
fn admit(shared: &Shared, batch: Vec<(usize, Transaction)>, payloads: &mut [Judged]) {
    if batch.is_empty() {
        return;
    }
    // What a trusted node delivered (a Raft validator's) goes in without a
    // signature check; the rest is verified.
    let (trusted, checked): (Vec<_>, Vec<_>) = match shared.trusted_peers.read() {
        Ok(peers) if !peers.is_empty() => batch
            .into_iter()
            .partition(|(i, _)| payloads.get(*i).is_some_and(|p| peers.contains(&p.from))),
        _ => (Vec::new(), batch),
    };
    for (batch, signatures) in [
        (trusted, Signatures::Trusted),
        (checked, Signatures::Verify),
    ] {
        if !batch.is_empty() {
            admit_batch(shared, batch, signatures, payloads);
        }
    }
}

fn admit_batch(
    shared: &Shared,
    batch: Vec<(usize, Transaction)>,
    signatures: Signatures,
    payloads: &mut [Judged],
) {
    let (origins, txs): (Vec<usize>, Vec<Transaction>) = batch.into_iter().unzip();
    let admitted = cairn_driver::admit(
        &shared.mempool,
        &*shared.store,
        &shared.genesis_hash,
        txs,
        signatures,
    );
    for (origin, result) in origins.into_iter().zip(admitted.results) {
        let Some(p) = payloads.get_mut(origin) else {
            continue;
        };
        match result {
            Ok(_) => p.added = true,
            Err(Rejection::BadSignature(_)) => p.bad = true,
            Err(Rejection::Storage(e)) => tracing::error!("admitting gossiped transactions: {e}"),
            Err(_) => {}
        }
    }
    let how = match signatures {
        Signatures::Trusted => "trusted",
        Signatures::Verify => "checked",
    };
    shared
        .metrics
        .gossip_admitted(how, admitted.accepted.len() as u64);
    shared
        .events
        .pending(admitted.accepted.iter().map(Transaction::hash));
    crate::api::dropped_events(shared);
    if !admitted.accepted.is_empty() {
        shared.offer.notify_one();
    }
}
