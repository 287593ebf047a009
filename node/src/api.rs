//! The HTTP API (JSON). Errors are `{"error": {"code", "message"}}` with a
//! 4xx/5xx status.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_chain::state::read_account;
use cairn_chain::ChainStore;
use cairn_chain::{Address, Block, Hash, Transaction};
use cairn_p2p::{Command, Topic};
use serde::Serialize;
use serde_json::json;

use crate::shared::Shared;
use cairn_driver::admit::Signatures;
use cairn_driver::bodies;
use cairn_driver::Rejection;

/// Proof-of-work: confirmations after which `/status` counts a block as
/// final (probabilistically: a deeper reorganisation is possible, only
/// unlikely).
pub const POW_FINAL_CONFIRMATIONS: u64 = 6;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
    }
    fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// The answer to a request that did not finish within `limit`.
pub fn request_timeout(limit: std::time::Duration) -> Response {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!("the request took longer than {} ms", limit.as_millis()),
    )
    .into_response()
}

/// Runs `f` on the blocking pool: store reads may go to disk, and the async
/// workers must keep serving every other connection meanwhile.
async fn off_runtime<T: Send + 'static>(
    s: &Arc<Shared>,
    f: impl FnOnce(&Shared) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(ApiError::internal)?
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/blocks/latest", get(latest_block))
        .route("/blocks/{height}", get(block_at))
        .route("/blocks/hash/{hash}", get(block_by_hash))
        .route("/accounts/{address}", get(account))
        .route("/transactions", post(submit))
        .route(
            "/transactions/batch",
            post(submit_batch).layer(axum::extract::DefaultBodyLimit::max(bodies::MAX_BATCH_BODY)),
        )
        .route("/transactions/{hash}", get(transaction))
        .route("/consensus", get(consensus))
        .route("/events", get(crate::events::stream))
        .route("/peers", get(peers))
        .route("/metrics", get(metrics))
        .route("/admin/bans", get(admin_bans))
        .route("/admin/ban", post(admin_ban))
        .route("/admin/unban", post(admin_unban))
        .merge(crate::dashboard::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn(crate::dashboard::allow_reads))
        .with_state(shared)
}

#[derive(Serialize)]
struct StatusView {
    name: String,
    chain_id: String,
    genesis_hash: Hash,
    engine: String,
    height: u64,
    head_hash: Hash,
    finalized_height: u64,
    peers: usize,
    node_id: String,
    validator: Option<u32>,
    role: String,
    mempool: usize,
    /// The lowest fee a transaction may pay on this network.
    min_fee: u64,
}

async fn status(State(s): State<Arc<Shared>>) -> ApiResult<StatusView> {
    let head = off_runtime(&s, |s| s.store.head().map_err(ApiError::internal)).await?;
    let engine = s.engine.lock().map_err(ApiError::internal)?.clone();
    Ok(Json(StatusView {
        name: s.name.clone(),
        chain_id: s.genesis.chain_id.clone(),
        genesis_hash: s.genesis_hash,
        engine: engine.engine.to_string(),
        height: head.height,
        head_hash: head.hash(),
        // Raft and PBFT: every committed block is final. Proof-of-work:
        // none is; blocks with 6 confirmations count as final here.
        finalized_height: if engine.engine == "pow" {
            (head.height + 1).saturating_sub(POW_FINAL_CONFIRMATIONS)
        } else {
            head.height
        },
        peers: s.peers.lock().map(|p| p.len()).unwrap_or(0),
        node_id: s.node_id.clone(),
        validator: s.validator_at(head.height + 1),
        role: engine.role.to_string(),
        mempool: s.mempool.lock().map(|m| m.len()).unwrap_or(0),
        min_fee: s.genesis.min_fee,
    }))
}

#[derive(Serialize)]
struct TxView {
    hash: Hash,
    from: Address,
    to: Address,
    amount: u64,
    fee: u64,
    nonce: u64,
}

impl From<&Transaction> for TxView {
    fn from(t: &Transaction) -> Self {
        TxView {
            hash: t.hash(),
            from: t.sender(),
            to: t.to,
            amount: t.amount,
            fee: t.fee,
            nonce: t.nonce,
        }
    }
}

#[derive(Serialize)]
struct BlockView {
    hash: Hash,
    height: u64,
    parent: Hash,
    timestamp_ms: u64,
    proposer: Address,
    tx_root: Hash,
    state_root: Hash,
    /// The consensus configuration the block was made under.
    config: Hash,
    engine_data: String,
    /// Whether the block is on this node's chain, and how many blocks
    /// (itself included) it has under the head; 0 off the chain.
    canonical: bool,
    confirmations: u64,
    transactions: Vec<TxView>,
}

fn block_view(s: &Shared, b: &Block) -> Result<BlockView, ApiError> {
    let hash = b.hash();
    let canonical = s
        .store
        .hash_at(b.header.height)
        .map_err(ApiError::internal)?
        == Some(hash);
    let head = s.store.head().map_err(ApiError::internal)?.height;
    Ok(BlockView {
        canonical,
        confirmations: if canonical {
            head + 1 - b.header.height
        } else {
            0
        },
        hash: b.hash(),
        height: b.header.height,
        parent: b.header.parent,
        timestamp_ms: b.header.timestamp_ms,
        proposer: b.header.proposer,
        tx_root: b.header.tx_root,
        state_root: b.header.state_root,
        config: b.header.config,
        engine_data: hex::encode(&b.header.engine_data),
        transactions: b.transactions.iter().map(TxView::from).collect(),
    })
}

async fn latest_block(State(s): State<Arc<Shared>>) -> ApiResult<BlockView> {
    off_runtime(&s, |s| {
        let head = s.store.head_hash().map_err(ApiError::internal)?;
        match s.store.block(&head).map_err(ApiError::internal)? {
            Some(b) => Ok(Json(block_view(s, &b)?)),
            None => Err(ApiError::internal("head block missing")),
        }
    })
    .await
}

async fn block_at(
    State(s): State<Arc<Shared>>,
    Path(height): Path<String>,
) -> ApiResult<BlockView> {
    let h: u64 = height.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_height",
            format!("{height:?} is not a block height"),
        )
    })?;
    off_runtime(&s, move |s| {
        match s.store.block_at(h).map_err(ApiError::internal)? {
            Some(b) => Ok(Json(block_view(s, &b)?)),
            None => Err(ApiError::not_found(format!("no block at height {h}"))),
        }
    })
    .await
}

fn parse_hash(text: &str) -> Result<Hash, ApiError> {
    Hash::from_hex(text)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_hash", e.to_string()))
}

async fn block_by_hash(
    State(s): State<Arc<Shared>>,
    Path(hash): Path<String>,
) -> ApiResult<BlockView> {
    let h = parse_hash(&hash)?;
    off_runtime(&s, move |s| {
        match s.store.block(&h).map_err(ApiError::internal)? {
            Some(b) => Ok(Json(block_view(s, &b)?)),
            None => Err(ApiError::not_found(format!("no block {h}"))),
        }
    })
    .await
}

async fn account(
    State(s): State<Arc<Shared>>,
    Path(address): Path<String>,
) -> ApiResult<serde_json::Value> {
    let a = Address::parse(&address)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_address", e.to_string()))?;
    let (acct, pending_nonce) = off_runtime(&s, move |s| {
        let acct = read_account(&*s.store, &a)
            .map_err(ApiError::internal)?
            .unwrap_or_default();
        let pool = s
            .mempool
            .lock()
            .map_err(|_| ApiError::internal("the mempool lock is poisoned"))?;
        Ok((acct, pool.next_nonce(&a, acct.nonce)))
    })
    .await?;
    Ok(Json(json!({
        "address": a,
        "balance": acct.balance,
        "nonce": acct.nonce,
        "pending_nonce": pending_nonce,
    })))
}

async fn submit(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match off_runtime(&s, move |s| submit_inner(s, &body)).await {
        Ok(hash) => (StatusCode::ACCEPTED, Json(json!({"hash": hash}))).into_response(),
        Err(e) => e.into_response(),
    }
}

fn rejected(r: Rejection) -> ApiError {
    let status = match r {
        Rejection::Full | Rejection::GapsFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Rejection::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, r.code(), r.to_string())
}

fn submit_inner(s: &Shared, body: &[u8]) -> Result<Hash, ApiError> {
    let tx = bodies::single(body).map_err(rejected)?;
    let admitted = cairn_driver::admit(
        &s.mempool,
        &*s.store,
        &s.genesis_hash,
        vec![tx],
        Signatures::Verify,
    );
    let result = admitted
        .results
        .into_iter()
        .next()
        .unwrap_or(Err(Rejection::Malformed("no transaction".into())));
    let hash = result.map_err(rejected)?;
    s.events.pending([hash]);
    dropped_events(s);
    // A full network queue loses the gossip, not the transaction: it is
    // pending here, and pushed to peers that connect.
    let _ = s.net_commands.try_send(gossip(&admitted.accepted));
    s.offer.notify_one();
    Ok(hash)
}

/// Transactions an admission pushed out of the pool (replaced, evicted),
/// for the event stream's subscribers.
pub(crate) fn dropped_events(s: &Shared) {
    if s.events.wanted() {
        if let Ok(mut pool) = s.mempool.lock() {
            let dropped = pool.take_dropped();
            drop(pool);
            s.events.dropped(dropped);
        }
    }
}

/// The gossip of accepted transactions (one message per batch).
fn gossip(txs: &[Transaction]) -> Command {
    Command::Publish {
        topic: Topic::Transactions,
        data: cairn_chain::codec::encode(txs),
    }
}

async fn submit_batch(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    // Signature checks and mempool inserts are CPU work: off the runtime.
    let shared = s.clone();
    match tokio::task::spawn_blocking(move || submit_batch_inner(&shared, &body)).await {
        Ok(Ok(v)) => (StatusCode::OK, Json(v)).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => ApiError::internal(e).into_response(),
    }
}

/// Parses a JSON array of signed transactions, verifies their signatures
/// in one batch, and inserts each; answers one result per transaction, in
/// order: `{"hash"}` or `{"error": {"code", "message"}}`.
fn submit_batch_inner(s: &Shared, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    // What a body can make the node allocate is bounded by the count, not
    // only by the body's size (see `cairn_driver::bodies`).
    let bodies::Batch { txs, slots } = bodies::batch(body).map_err(rejected)?;
    let slots: Vec<Result<usize, ApiError>> = slots
        .into_iter()
        .map(|slot| slot.map_err(rejected))
        .collect();
    // One admission for the whole batch (see `cairn_driver::admit`).
    let admitted = cairn_driver::admit(
        &s.mempool,
        &*s.store,
        &s.genesis_hash,
        txs,
        Signatures::Verify,
    );
    let mut outcomes = admitted.results.into_iter();
    let results: Vec<serde_json::Value> = slots
        .into_iter()
        .map(|slot| {
            let outcome = slot.and_then(|_| {
                outcomes
                    .next()
                    .unwrap_or(Err(Rejection::Malformed("no transaction".into())))
                    .map_err(rejected)
            });
            match outcome {
                Ok(hash) => json!({ "hash": hash }),
                Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
            }
        })
        .collect();
    let count = admitted.accepted.len();
    s.events
        .pending(admitted.accepted.iter().map(Transaction::hash));
    dropped_events(s);
    if count > 0 {
        // Blocking (this runs on a blocking thread): the network's queue
        // pushes back on submitters rather than losing the gossip.
        for chunk in admitted.accepted.chunks(cairn_p2p::MAX_GOSSIP_BATCH) {
            let _ = s.net_commands.blocking_send(self::gossip(chunk));
        }
        s.offer.notify_one();
    }
    Ok(json!({ "accepted": count, "results": results }))
}

async fn transaction(
    State(s): State<Arc<Shared>>,
    Path(hash): Path<String>,
) -> ApiResult<serde_json::Value> {
    let h = parse_hash(&hash)?;
    let committed = off_runtime(&s, move |s| {
        let Some(loc) = s.store.tx_location(&h).map_err(ApiError::internal)? else {
            return Ok(None);
        };
        let head = s.store.head().map_err(ApiError::internal)?.height;
        // Raft and PBFT blocks are final once committed; mined blocks
        // gain confirmations.
        let mined = matches!(
            s.genesis.segment_at(loc.height).consensus,
            cairn_genesis::ConsensusConfig::Pow(_)
        );
        Ok(Some(json!({
            "hash": h, "status": "committed", "height": loc.height, "block": loc.block,
            "index": loc.index, "confirmations": head + 1 - loc.height.min(head),
            "final": !mined,
        })))
    })
    .await?;
    if let Some(v) = committed {
        return Ok(Json(v));
    }
    if s.mempool.lock().map(|m| m.contains(&h)).unwrap_or(false) {
        return Ok(Json(json!({"hash": h, "status": "pending"})));
    }
    Err(ApiError::not_found(format!(
        "transaction {h} is neither pending nor committed here"
    )))
}

/// The engine's state, in its own words: Raft's term and leader, PBFT's
/// view, primary and view changes.
async fn consensus(State(s): State<Arc<Shared>>) -> ApiResult<serde_json::Value> {
    let head = off_runtime(&s, |s| s.store.head().map_err(ApiError::internal)).await?;
    let st = s.engine.lock().map_err(ApiError::internal)?.clone();
    let segment = s.genesis.segment_at(head.height + 1);
    let next = segment.end.map(|height| {
        let n = s.genesis.segment_at(height);
        serde_json::json!({
            "height": height,
            "engine": n.consensus.kind().as_str(),
            "validators": n.validators.len(),
        })
    });
    let mut v = serde_json::json!({
        "engine": st.engine,
        "role": st.role,
        "height": st.committed_height,
        "uncommitted": st.uncommitted,
        "messages_dropped": st.dropped_messages,
        "messages_rejected": st.rejected_messages,
        // The schedule's segment this engine runs: since which height,
        // with how many validators, under which configuration hash (what
        // its blocks carry); and the next scheduled switch, if any.
        "segment": {
            "index": segment.index,
            "since_height": segment.start,
            "validators": segment.validators.len(),
            "config": segment.config_hash(),
        },
        "next_switch": next,
    });
    if let Some(p) = &st.pow {
        v["difficulty"] = p.difficulty.into();
        v["target"] = p.target.clone().into();
        v["tip_work"] = u64::try_from(p.tip_work)
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| p.tip_work.to_string().into());
        v["hash_rate"] = p.hash_rate.into();
        v["head"] = p.head.clone().into();
        v["reorgs"] = p.reorgs.into();
        v["max_reorg_depth"] = p.max_reorg_depth.into();
        v["orphans"] = p.orphans.into();
        v["known_blocks"] = p.known_blocks.into();
        v["accepted_blocks"] = p.accepted_blocks.into();
        v["blocks_rejected"] = st.rejected_messages.into();
    } else if st.engine == "pbft" {
        v["view"] = st.term.into();
        v["primary"] = st.leader.into();
        v["view_changes"] = st.view_changes.into();
    } else {
        v["term"] = st.term.into();
        v["leader"] = st.leader.into();
    }
    Ok(Json(v))
}

async fn peers(State(s): State<Arc<Shared>>) -> ApiResult<Vec<cairn_p2p::PeerInfo>> {
    Ok(Json(s.peers.lock().map_err(ApiError::internal)?.clone()))
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let (mempool, waiting) = s
        .mempool
        .lock()
        .map(|m| (m.len(), m.waiting_len()))
        .unwrap_or((0, 0));
    s.metrics.mempool.set(mempool as i64);
    s.metrics.mempool_waiting.set(waiting as i64);
    s.metrics
        .event_subscribers
        .set(s.events.subscribers() as i64);
    s.metrics.set_store_memory(&s.store.memory());
    for (total, counter) in [
        (&s.network_dropped, &s.metrics.network_events_dropped),
        (&s.sync_busy, &s.metrics.sync_busy),
    ] {
        let total = total.load(Ordering::Relaxed);
        let counted = counter.get();
        if total > counted {
            counter.inc_by(total - counted);
        }
    }
    s.metrics
        .peers
        .set(s.peers.lock().map(|p| p.len()).unwrap_or(0) as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

/// The admin routes answer loopback clients only, whatever address the API
/// listens on (like Bitcoin Core's `setban` over its local RPC).
fn loopback_only(addr: &std::net::SocketAddr) -> Result<(), ApiError> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_loopback_only",
            "the admin API answers loopback clients only",
        ))
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerRequest {
    /// A libp2p peer id (`12D3Koo…`).
    peer: String,
}

fn parse_peer(body: &[u8]) -> Result<cairn_p2p::Peer, ApiError> {
    let req: PeerRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("expected {{\"peer\": \"<peer id>\"}}: {e}"),
        )
    })?;
    req.peer.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_peer_id",
            format!("{:?} is not a peer id: {e}", req.peer),
        )
    })
}

/// The admin API asks for the token of the node's `admin.cookie` as a
/// bearer token, and for JSON bodies: a page in a browser on the node's
/// machine can send a form to loopback, but it cannot read the cookie file,
/// and a cross-site request with that header or content type needs a
/// preflight the node never answers.
fn admin_authorized(
    addr: &std::net::SocketAddr,
    headers: &HeaderMap,
    s: &Shared,
    post: bool,
) -> Result<(), ApiError> {
    loopback_only(addr)?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), s.admin_token.as_bytes()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "admin_unauthorized",
            format!(
                "the admin API needs `Authorization: Bearer <token>`, the token in {} of the node's home",
                crate::shared::ADMIN_COOKIE
            ),
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if post && !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "admin_json_only",
            "admin requests carry `Content-Type: application/json`",
        ));
    }
    Ok(())
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn admin_bans(
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> ApiResult<serde_json::Value> {
    admin_authorized(&addr, &headers, &s, false)?;
    let banned = s.banned.lock().map_err(ApiError::internal)?.clone();
    Ok(Json(json!({ "banned": banned })))
}

async fn admin_ban(
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<serde_json::Value> {
    admin_authorized(&addr, &headers, &s, true)?;
    admin_block(&s, &body, true).await
}

async fn admin_unban(
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<serde_json::Value> {
    admin_authorized(&addr, &headers, &s, true)?;
    admin_block(&s, &body, false).await
}

/// Blocks (`block`) or unblocks the peer the body names.
async fn admin_block(s: &Shared, body: &[u8], block: bool) -> ApiResult<serde_json::Value> {
    let peer = parse_peer(body)?;
    let (cmd, key) = if block {
        (cairn_p2p::Command::Ban { peer }, "banned")
    } else {
        (cairn_p2p::Command::Unban { peer }, "unbanned")
    };
    s.net_commands.send(cmd).await.map_err(ApiError::internal)?;
    Ok(Json(json!({ key: peer.to_string() })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_answers_loopback_only_and_names_bad_peers() {
        assert!(loopback_only(&"127.0.0.1:5000".parse().expect("addr")).is_ok());
        assert!(loopback_only(&"[::1]:5000".parse().expect("addr")).is_ok());
        let e = loopback_only(&"10.0.0.7:5000".parse().expect("addr")).expect_err("refused");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "admin_loopback_only")
        );
        assert_eq!(
            parse_peer(b"{}").map_err(|e| e.code).err(),
            Some("malformed")
        );
        assert_eq!(
            parse_peer(br#"{"peer": "x"}"#).map_err(|e| e.code).err(),
            Some("bad_peer_id")
        );
        let id = "12D3KooWKBDry1yugVaycjvG3TXd6RGxpEBoCw17ER1ELjik8MAx";
        let body = format!(r#"{{"peer": "{id}"}}"#);
        assert_eq!(
            parse_peer(body.as_bytes()).map(|p| p.to_string()).ok(),
            Some(id.into())
        );
    }
}
