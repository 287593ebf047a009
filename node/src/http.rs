//! The HTTP server: the API's router behind an accept loop of the node's
//! own, for what `axum::serve` leaves unbounded. A client that can reach
//! the port may hold at most one of `max_connections` connections at once
//! (past that, new ones are closed at once), has `header_timeout` to send
//! each request's headers — also the longest a kept-alive connection may
//! sit idle — and `request_timeout` for the rest of the request (its body)
//! and the answer (408 after it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// What one client can take of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` changes; then lets open
/// requests finish (for a few seconds at most).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    refused: impl Fn() + Send + 'static,
) {
    let router = router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limits.request_timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => crate::api::request_timeout(limits.request_timeout),
            }
        },
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, addr) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = connection_service(router.clone(), addr);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// The router for one connection: its requests carry the client's address
/// (what the admin routes check).
fn connection_service(
    router: Router,
    addr: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(addr));
        let mut router = router.clone();
        async move {
            use tower_service::Service;
            router.call(req.map(axum::body::Body::new)).await
        }
    })
}
