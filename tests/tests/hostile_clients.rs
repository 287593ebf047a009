//! Hostile HTTP clients against a real node: malformed requests get a 4xx
//! (never a 5xx or a dropped connection), a batch is refused by its count
//! while it is parsed, and slow or idle connections cannot keep others out
//! for long.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use cairn_genesis::{generate, NetworkSpec, NodeConfig};
use cairn_tests::e2e::{eventually, metric, post_with, status, NodeProc};

/// Sends raw bytes on a fresh connection; the status code of the answer,
/// or `None` if the connection closed without one.
fn raw(addr: &str, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    // The server may answer (and close) before it has read everything.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn get(addr: &str, path: &str) -> Option<u16> {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Whether the server closed `s` (EOF or reset) rather than leaving it open.
fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_)) || matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn malformed_requests_get_4xx_and_slow_clients_cannot_hold_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        validators: 1,
        base_port: 29200,
        chain_id: "e2e-http".into(),
        seed: Some(21),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let home = &net.nodes[0].home;
    let mut config = NodeConfig::load(home).expect("node.toml");
    config.rpc.max_connections = 8;
    config.rpc.header_timeout_ms = 1_000;
    std::fs::write(home.join(NodeConfig::FILE), config.to_toml()).expect("write node.toml");
    let _node = NodeProc::start(home);
    let url = net.nodes[0].rpc_url.clone();
    let addr = url.trim_start_matches("http://").to_owned();
    eventually("the node serves its API", || status(&url).is_some());

    // Malformed requests: each answered, with a 4xx.
    let many_headers = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad height", b"GET /blocks/abc HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("bad hash", b"GET /blocks/hash/zz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("bad address", b"GET /accounts/xyz HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("unknown path", b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("wrong method", b"DELETE /status HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("not HTTP", b"GARBAGE\r\n\r\n".to_vec()),
        ("too many headers", many_headers.into_bytes()),
        (
            "not JSON",
            b"POST /transactions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\n\r\nabc"
                .to_vec(),
        ),
        (
            "truncated body",
            b"POST /transactions/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n["
                .to_vec(),
        ),
    ];
    // JSON nested 100,000 deep (serde_json stops at 128 levels) and a
    // body of 64 MiB (over every route's limit), on both POST routes.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut cases = cases;
    for route in ["/transactions", "/transactions/batch"] {
        cases.push((
            "deep nesting",
            format!(
                "POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{deep}",
                deep.len()
            )
            .into_bytes(),
        ));
        let mut huge = format!(
            "POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            64 << 20
        )
        .into_bytes();
        huge.extend(std::iter::repeat_n(b'[', 64 << 20));
        // Refused with 413 — or, since the server stops reading, closed
        // before the client could read that answer; never a 5xx.
        let code = raw(&addr, &huge);
        assert!(
            code.is_none_or(|c| (400..500).contains(&c)),
            "huge body on {route}: answered {code:?}"
        );
        assert_eq!(get(&addr, "/status"), Some(200), "after a huge body");
    }
    for (what, request) in &cases {
        let code = raw(&addr, request);
        assert!(
            code.is_some_and(|c| (400..500).contains(&c)),
            "{what}: answered {code:?}"
        );
    }

    // A batch of 10,001 entries that are not transactions: refused by its
    // count while parsing (not parsed whole into values first).
    let zeros = format!("[{}0]", "0,".repeat(10_000));
    let (code, body) = post_with(
        &format!("{url}/transactions/batch"),
        &zeros,
        &[("content-type", "application/json")],
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("the limit is 10000")),
        "{body}"
    );

    // Eight connections that never finish their headers fill the server:
    // the ninth is closed unanswered.
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n")
                .expect("write");
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            s
        })
        .collect();
    // (The server may take a moment to accept all eight.)
    eventually("a ninth connection is refused", || {
        get(&addr, "/status").is_none()
    });
    // The server drops them once they exceed the header timeout, and
    // serves again.
    for s in &mut slow {
        assert!(closed_by_server(s), "a slow connection was kept open");
    }
    eventually("the server answers again", || {
        get(&addr, "/status") == Some(200)
    });
    assert!(metric(&url, "cairn_http_connections_refused_total").is_some_and(|n| n >= 1.0));
}

#[test]
fn garbage_on_the_p2p_port_leaves_the_node_serving_and_committing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        validators: 1,
        base_port: 29220,
        chain_id: "e2e-p2p-garbage".into(),
        seed: Some(23),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let _node = NodeProc::start(&net.nodes[0].home);
    let url = net.nodes[0].rpc_url.clone();
    eventually("the node serves its API", || status(&url).is_some());
    let p2p = "127.0.0.1:29220";
    // Random bytes, a multistream-select greeting followed by junk, and
    // many connections at once that say nothing.
    let mut noise = vec![0u8; 1 << 20];
    let mut x: u32 = 0x9e37_79b9;
    for b in &mut noise {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let mut greeting = b"\x13/multistream/1.0.0\n\x07/noise\n".to_vec();
    greeting.extend_from_slice(&noise[..4096]);
    for payload in [noise.clone(), greeting] {
        if let Ok(mut s) = TcpStream::connect(p2p) {
            let _ = s.write_all(&payload);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut sink = [0u8; 1024];
            let _ = s.read(&mut sink);
        }
    }
    let idle: Vec<TcpStream> = (0..64)
        .filter_map(|_| TcpStream::connect(p2p).ok())
        .collect();
    // The node still serves, and still commits a transfer.
    assert!(status(&url).is_some(), "the API stopped answering");
    let faucet = net.faucet_key();
    let alice = cairn_tests::e2e::keygen(&url, &dir.path().join("alice.key"));
    cairn_tests::e2e::transfer(&url, &faucet, &alice, 5);
    assert_eq!(cairn_tests::e2e::balance(&url, &alice), Some(5));
    drop(idle);
}
