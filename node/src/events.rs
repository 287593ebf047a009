//! What happens on the node, as a stream of events (`GET /events`,
//! Server-Sent Events): new heads, transaction status changes, and engine
//! events — a new leader or primary, a view change, a reorganisation, a
//! scheduled switch.
//!
//! Every subscriber reads from one bounded broadcast queue. A subscriber
//! that falls more than [`QUEUE`] events behind is sent a last `dropped`
//! event and disconnected: a slow reader costs the node a fixed amount of
//! memory, never a growing buffer, and never slows the chain. Nothing is
//! serialised while nobody listens; each event is serialised once, for
//! every subscriber. At most [`MAX_SUBSCRIBERS`] streams are open at once
//! (an open stream holds one of the API's connections for as long as its
//! client wants): more are refused.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cairn_chain::{Block, Hash};
use cairn_consensus::EngineStatus;
use futures::stream::Stream;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::shared::Shared;

/// Events held for the slowest subscriber before it is dropped.
pub const QUEUE: usize = 4_096;
/// Most event streams open at once: a quarter of the HTTP API's default
/// connection limit, so that subscribers cannot take every connection.
pub const MAX_SUBSCRIBERS: usize = 64;

/// One event: its type and its JSON, built once for every subscriber.
type Item = Arc<(&'static str, String)>;

/// The node's event queue.
#[derive(Debug, Clone)]
pub struct Events {
    tx: broadcast::Sender<Item>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new(QUEUE)
    }
}

impl Events {
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Whether anyone listens (events are not even built otherwise).
    pub fn wanted(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// How many clients are subscribed.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Whether a new stream would pass [`MAX_SUBSCRIBERS`].
    pub fn full(&self) -> bool {
        self.subscribers() >= MAX_SUBSCRIBERS
    }

    fn send(&self, kind: &'static str, mut body: Value) {
        if let Some(map) = body.as_object_mut() {
            map.insert("type".into(), Value::from(kind));
        }
        let _ = self.tx.send(Arc::new((kind, body.to_string())));
    }

    /// `block` became the head: a `head` event, and a `tx` event
    /// (`committed`) for each of its transactions.
    pub fn applied(&self, block: &Block, final_block: bool) {
        if !self.wanted() {
            return;
        }
        let hash = block.hash();
        let h = &block.header;
        self.send(
            "head",
            json!({
                "height": h.height,
                "hash": hash,
                "parent": h.parent,
                "proposer": h.proposer,
                "time_ms": h.timestamp_ms,
                "transactions": block.transactions.len(),
                "final": final_block,
            }),
        );
        for tx in &block.transactions {
            self.send(
                "tx",
                json!({
                    "hash": tx.hash(),
                    "status": "committed",
                    "height": h.height,
                    "block": hash,
                    "final": final_block,
                }),
            );
        }
    }

    /// Transactions entered this node's pool.
    pub fn pending(&self, hashes: impl IntoIterator<Item = Hash>) {
        if !self.wanted() {
            return;
        }
        for hash in hashes {
            self.send("tx", json!({"hash": hash, "status": "pending"}));
        }
    }

    /// Transactions this node's pool dropped without committing, with why.
    pub fn dropped(&self, dropped: Vec<(Hash, &'static str)>) {
        if !self.wanted() {
            return;
        }
        for (hash, reason) in dropped {
            self.send(
                "tx",
                json!({"hash": hash, "status": "dropped", "reason": reason}),
            );
        }
    }

    /// The transactions of `block` reached `confirmations` (a mined block
    /// that many deep).
    pub fn confirmed(&self, block: &Block, confirmations: u64) {
        if !self.wanted() {
            return;
        }
        let hash = block.hash();
        for tx in &block.transactions {
            self.send(
                "tx",
                json!({
                    "hash": tx.hash(),
                    "status": "confirmed",
                    "height": block.header.height,
                    "block": hash,
                    "confirmations": confirmations,
                }),
            );
        }
    }

    /// A reorganisation moved the head off `depth` blocks.
    pub fn reorg(&self, depth: u64, height: u64) {
        self.send("reorg", json!({"depth": depth, "height": height}));
    }

    /// The schedule's next segment took over at `height`.
    pub fn switched(&self, height: u64, engine: &str, validators: usize) {
        self.send(
            "switch",
            json!({"height": height, "engine": engine, "validators": validators}),
        );
    }

    /// Engine events from two successive statuses: a new leader or primary
    /// (or a new term or view), a view change started.
    pub fn engine(&self, before: &EngineStatus, after: &EngineStatus) {
        if !self.wanted() || before.engine != after.engine {
            return;
        }
        if after.view_changes > before.view_changes {
            self.send(
                "view_change",
                json!({"engine": after.engine, "view": after.term, "role": after.role}),
            );
        }
        if after.leader != before.leader || after.term != before.term {
            let (what, number) = if after.engine == "pbft" {
                ("primary", "view")
            } else {
                ("leader", "term")
            };
            if after.engine != "pow" {
                self.send(
                    what,
                    json!({"engine": after.engine, number: after.term, what: after.leader}),
                );
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Item> {
        self.tx.subscribe()
    }
}

/// `GET /events`: the event stream, one SSE event per node event (its
/// `event:` is the type, its `data:` the JSON), until the client leaves
/// or falls too far behind; `503` past [`MAX_SUBSCRIBERS`].
pub async fn stream(State(s): State<Arc<Shared>>) -> Response {
    if s.events.full() {
        let body = json!({"error": {
            "code": "too_many_subscribers",
            "message": format!("this node serves at most {MAX_SUBSCRIBERS} event streams at once"),
        }});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    Sse::new(sse(s.events.subscribe()))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The SSE events of `rx`: a subscriber that lagged gets a `dropped` event
/// and the end of the stream.
fn sse(rx: broadcast::Receiver<Item>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Ok(item) => {
                let (kind, text) = &*item;
                Some((Ok(Event::default().event(*kind).data(text)), Some(rx)))
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let body = json!({
                    "type": "dropped",
                    "reason": format!(
                        "this subscriber fell {missed} events behind (the node holds {QUEUE}); \
                         reconnect, and read faster"
                    ),
                });
                Some((
                    Ok(Event::default().event("dropped").data(body.to_string())),
                    None,
                ))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_and_dropped() {
        let events = Events::new(2);
        let rx = events.subscribe();
        assert!(events.wanted());
        for h in 0..5u64 {
            events.reorg(1, h);
        }
        let got: Vec<_> = sse(rx).collect().await;
        assert_eq!(got.len(), 1, "one event, then the end: {got:?}");
        let text = format!("{:?}", got[0]);
        assert!(
            text.contains("dropped") && text.contains("behind"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn events_arrive_in_order_with_their_type() {
        let events = Events::new(16);
        let rx = events.subscribe();
        events.pending([Hash::digest(b"a")]);
        events.switched(10, "pbft", 4);
        drop(events);
        let got: Vec<String> = sse(rx).map(|e| format!("{e:?}")).collect().await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("pending"), "{got:?}");
        assert!(
            got[1].contains("switch") && got[1].contains("pbft"),
            "{got:?}"
        );
    }

    #[test]
    fn streams_past_the_limit_are_refused_until_one_closes() {
        let events = Events::new(4);
        let mut open: Vec<_> = (0..MAX_SUBSCRIBERS).map(|_| events.subscribe()).collect();
        assert!(events.full());
        open.pop();
        assert!(!events.full());
    }

    #[test]
    fn nothing_is_built_while_nobody_listens() {
        let events = Events::new(4);
        assert!(!events.wanted());
        events.pending([Hash::digest(b"a")]);
        let rx = events.subscribe();
        assert!(rx.is_empty());
    }
}
