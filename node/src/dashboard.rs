//! The dashboard's web page and assets, embedded in the binary (no build
//! step for users): at `/` of every node's HTTP API for that node, and
//! served by `cairn-node devnet` for the whole network (which adds
//! `/network.json`, the list of its nodes). The page reads the nodes' HTTP
//! APIs and event streams; its charts are uPlot's (vendored, MIT).

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/dashboard.js");
const STYLE: &str = include_str!("../dashboard/dashboard.css");
const UPLOT_JS: &str = include_str!("../dashboard/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../dashboard/vendor/uPlot.min.css");

fn asset(kind: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The page and its assets: path, content type, body.
const ASSETS: [(&str, &str, &str); 5] = [
    ("/", "text/html; charset=utf-8", INDEX),
    (
        "/assets/dashboard.js",
        "text/javascript; charset=utf-8",
        SCRIPT,
    ),
    ("/assets/dashboard.css", "text/css; charset=utf-8", STYLE),
    (
        "/assets/uplot.js",
        "text/javascript; charset=utf-8",
        UPLOT_JS,
    ),
    ("/assets/uplot.css", "text/css; charset=utf-8", UPLOT_CSS),
];

/// The routes of the page and its assets.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, kind, body)| {
            router.route(path, get(move || async move { asset(kind, body) }))
        })
}

/// Lets pages of other origins read the API's GET answers (the devnet's
/// dashboard reads every node's); nothing else crosses origins: a page
/// cannot submit a transaction or use the admin routes from elsewhere.
pub async fn allow_reads(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let get = req.method() == axum::http::Method::GET;
    let mut resp = next.run(req).await;
    if get {
        resp.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::HeaderValue::from_static("*"),
        );
    }
    resp
}
