//! A network whose nodes run on separate hosts, without leaving the
//! machine: each node in its own network namespace with its own address,
//! linked to a bridge by a veth pair (the test creates and removes them;
//! it needs root and iproute2, as CI has). The network is generated with
//! `--hosts` and `--listen-any`: a transfer commits across the links, and
//! a node whose link is taken down rejoins and catches up when it comes
//! back.

use std::process::Command;

use cairn_genesis::{generate, NetworkSpec};
use cairn_tests::e2e::{eventually, keygen, same_head, status, transfer, NodeProc};

/// Network namespaces `ns[i]` at `10.X.Y.(i+1)`, bridged in the test's
/// own namespace (which reaches them at `.254`).
struct Hosts {
    ns: Vec<String>,
    host_links: Vec<String>,
    bridge: String,
    addresses: Vec<std::net::Ipv4Addr>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("this test needs iproute2's `ip` (and root): {e}"));
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root: it makes network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    fn create(n: usize) -> Self {
        let id = std::process::id() % 10_000;
        let subnet = (10u8, 77u8, (id % 250) as u8);
        let bridge = format!("cbr{id}");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let mut hosts = Hosts {
            ns: Vec::new(),
            host_links: Vec::new(),
            bridge: bridge.clone(),
            addresses: Vec::new(),
        };
        let gw = format!("{}.{}.{}.254/24", subnet.0, subnet.1, subnet.2);
        ip(&["addr", "add", &gw, "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for i in 0..n {
            let ns = format!("cairn{id}n{i}");
            let (outer, inner) = (format!("ch{id}x{i}"), format!("cn{id}x{i}"));
            ip(&["netns", "add", &ns]);
            hosts.ns.push(ns.clone());
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            hosts.host_links.push(outer.clone());
            ip(&["link", "set", &inner, "netns", &ns]);
            ip(&["link", "set", &outer, "master", &bridge]);
            ip(&["link", "set", &outer, "up"]);
            let addr = std::net::Ipv4Addr::new(subnet.0, subnet.1, subnet.2, i as u8 + 1);
            let cidr = format!("{addr}/24");
            ip(&[
                "netns", "exec", &ns, "ip", "addr", "add", &cidr, "dev", &inner,
            ]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"]);
            ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            hosts.addresses.push(addr);
        }
        hosts
    }

    /// Takes node `i`'s link down (or up again).
    fn link(&self, i: usize, up: bool) {
        ip(&[
            "link",
            "set",
            &self.host_links[i],
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for l in &self.host_links {
            let _ = Command::new("ip").args(["link", "del", l]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

#[test]
fn nodes_on_separate_hosts_commit_and_a_node_cut_off_rejoins() {
    let hosts = Hosts::create(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        hosts: hosts.addresses.clone(),
        listen_any: true,
        base_port: 29120,
        chain_id: "e2e-hosts".into(),
        seed: Some(47),
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate network");
    let urls: Vec<String> = net.nodes.iter().map(|n| n.rpc_url.clone()).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    for (u, a) in urls.iter().zip(&hosts.addresses) {
        assert!(u.contains(&a.to_string()), "{u} is on its own host");
    }
    let _nodes: Vec<NodeProc> = net
        .nodes
        .iter()
        .zip(&hosts.ns)
        .map(|(n, ns)| NodeProc::start_in_netns(&n.home, ns))
        .collect();
    eventually("every node serves and sees the two others", || {
        urls.iter()
            .all(|u| status(u).is_some_and(|s| s["peers"].as_u64() >= Some(2)))
    });
    let faucet = net.faucet_key();
    let gina = keygen(urls[0], &dir.path().join("gina.key"));
    transfer(urls[0], &faucet, &gina, 10);
    eventually("the three agree", || same_head(&urls));

    // Node 2's link goes down: the two others go on (a Raft majority).
    hosts.link(2, false);
    transfer(urls[0], &faucet, &gina, 10);
    transfer(urls[1], &faucet, &gina, 10);
    let api = urls[2]
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    assert!(
        std::net::TcpStream::connect_timeout(&api, std::time::Duration::from_secs(1)).is_err(),
        "node 2 is unreachable"
    );
    eventually("nodes 0 and 1 agree", || same_head(&urls[..2]));
    // Back up: it rejoins and catches up.
    hosts.link(2, true);
    eventually("node 2 rejoins and catches up", || same_head(&urls));
    let balance = cairn_tests::e2e::balance(urls[2], &gina);
    assert_eq!(balance, Some(30));
}
