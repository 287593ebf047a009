use super::*;

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("prefix").to_owned();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn writes_every_file_and_a_valid_genesis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: EngineKind::Pbft,
        validators: 4,
        fund: vec![(SecretKey::from_label("f").address(), 77)],
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate");
    let g = Genesis::load(&dir.path().join("genesis.json")).expect("load");
    assert_eq!(g.hash(), net.genesis_hash);
    assert_eq!(g.validators.len(), 4);
    assert_eq!(g.allocations[1].balance, 77);
    let faucet = cairn_chain::keyfile::read_key_file(&net.faucet_key()).expect("faucet");
    assert_eq!(faucet.address(), g.allocations[0].address);
    for (i, node) in net.nodes.iter().enumerate() {
        let cfg = NodeConfig::load(&node.home).expect("node.toml");
        assert_eq!(cfg.p2p.bootstrap.len(), 3);
        assert_eq!(cfg.rpc.listen.port(), 26600 + 2 * i as u16 + 1);
        let key =
            cairn_chain::keyfile::read_key_file(&node.home.join("validator.key")).expect("key");
        assert_eq!(key.public_key(), g.validators[i].public_key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["validator.key", "p2p.key"] {
                let mode = std::fs::metadata(node.home.join(f))
                    .expect("m")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
    }
}

#[test]
fn seed_makes_the_directory_reproducible() {
    let a = tempfile::tempdir().expect("a");
    let b = tempfile::tempdir().expect("b");
    let c = tempfile::tempdir().expect("c");
    let spec = NetworkSpec {
        engine: EngineKind::Pow,
        validators: 3,
        seed: Some(42),
        ..NetworkSpec::default()
    };
    generate(&spec, a.path()).expect("a");
    generate(&spec, b.path()).expect("b");
    assert_eq!(files(a.path()), files(b.path()));
    let other = NetworkSpec {
        seed: Some(43),
        ..spec
    };
    generate(&other, c.path()).expect("c");
    assert_ne!(files(a.path()), files(c.path()));
}

#[test]
fn refuses_to_overwrite_and_bad_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    generate(&NetworkSpec::default(), dir.path()).expect("first");
    assert!(generate(&NetworkSpec::default(), dir.path()).is_err());
    let zero = NetworkSpec {
        validators: 0,
        ..NetworkSpec::default()
    };
    assert!(generate(&zero, &dir.path().join("z")).is_err());
    let ports = NetworkSpec {
        base_port: 65530,
        validators: 4,
        ..NetworkSpec::default()
    };
    assert!(generate(&ports, &dir.path().join("p")).is_err());
}

#[test]
fn hosts_put_one_node_per_address_and_listen_any_binds_every_interface() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts: Vec<std::net::Ipv4Addr> = ["10.7.0.1", "10.7.0.2", "10.7.0.3"]
        .iter()
        .map(|h| h.parse().expect("address"))
        .collect();
    let spec = NetworkSpec {
        hosts: hosts.clone(),
        listen_any: true,
        ..NetworkSpec::default()
    };
    let net = generate(&spec, dir.path()).expect("generate");
    for (i, n) in net.nodes.iter().enumerate() {
        let host = hosts[i];
        assert!(
            n.p2p_address.starts_with(&format!("/ip4/{host}/tcp/")),
            "{n:?}"
        );
        assert!(n.rpc_url.starts_with(&format!("http://{host}:")), "{n:?}");
        assert_eq!(net.genesis.validators[i].p2p_address, n.p2p_address);
        let cfg = NodeConfig::load(&n.home).expect("node.toml");
        assert!(cfg.p2p.listen.starts_with("/ip4/0.0.0.0/tcp/"), "{cfg:?}");
        assert!(cfg.rpc.listen.ip().is_unspecified(), "{cfg:?}");
        // Peers dial the others' own addresses.
        assert!(cfg
            .p2p
            .bootstrap
            .iter()
            .all(|b| hosts.iter().any(|h| b.starts_with(&format!("/ip4/{h}/")))));
    }
    let err = generate(
        &NetworkSpec {
            hosts: hosts[..2].to_vec(),
            ..NetworkSpec::default()
        },
        &dir.path().join("other"),
    )
    .expect_err("two addresses for three nodes");
    assert!(err.to_string().contains("one per node"), "{err}");
}
