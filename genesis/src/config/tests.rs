use super::*;
use crate::generate::{generate, NetworkSpec};

fn sample() -> Genesis {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        validators: 4,
        seed: Some(7),
        ..NetworkSpec::default()
    };
    generate(&spec, dir.path()).expect("generate").genesis
}

fn refused(json: serde_json::Value) -> GenesisError {
    Genesis::from_json(&json.to_string()).expect_err("must be refused")
}

#[test]
fn json_round_trip_keeps_the_hash() {
    let g = sample();
    let back = Genesis::from_json(&g.to_json()).expect("parse");
    assert_eq!(back, g);
    assert_eq!(back.hash(), g.hash());
    // Whitespace and key order do not change the hash.
    let compact = serde_json::to_string(&serde_json::to_value(&g).expect("v")).expect("s");
    assert_eq!(
        Genesis::from_json(&compact).expect("parse").hash(),
        g.hash()
    );
}

#[test]
fn any_change_changes_the_hash() {
    let g = sample();
    let mut other = g.clone();
    other.block_reward += 1;
    assert_ne!(other.hash(), g.hash());
    let mut other = g.clone();
    other.consensus = ConsensusConfig::default_for(EngineKind::Pbft);
    assert_ne!(other.hash(), g.hash());
    let mut other = g.clone();
    other.allocations[0].balance -= 1;
    assert_ne!(other.hash(), g.hash());
}

#[test]
fn unknown_engine_names_the_field() {
    let mut v = serde_json::to_value(sample()).expect("v");
    v["consensus"]["engine"] = "tendermint".into();
    let e = refused(v);
    assert!(e.field.starts_with("consensus"), "{e}");
    assert!(e.message.contains("tendermint"), "{e}");
}

#[test]
fn zero_validators_is_refused() {
    let mut v = serde_json::to_value(sample()).expect("v");
    v["validators"] = serde_json::json!([]);
    let e = refused(v);
    assert_eq!(e.field, "validators");
}

#[test]
fn duplicate_validator_is_refused() {
    let mut v = serde_json::to_value(sample()).expect("v");
    v["validators"][2]["public_key"] = v["validators"][0]["public_key"].clone();
    let e = refused(v);
    assert_eq!(e.field, "validators[2].public_key");
    assert!(e.message.contains("duplicate"), "{e}");
}

#[test]
fn malformed_key_names_the_field() {
    let mut v = serde_json::to_value(sample()).expect("v");
    v["validators"][1]["public_key"] = "abc".into();
    let e = refused(v);
    assert_eq!(e.field, "validators[1].public_key");
    // A well-formed hex string that is not a usable curve point.
    let mut v = serde_json::to_value(sample()).expect("v");
    v["validators"][1]["public_key"] = format!("01{}", "00".repeat(31)).into();
    let e = refused(v);
    assert_eq!(e.field, "validators[1].public_key");
}

#[test]
fn bad_address_and_unknown_field_are_named() {
    let mut v = serde_json::to_value(sample()).expect("v");
    v["allocations"][0]["address"] = "cairn1qqqq".into();
    assert_eq!(refused(v).field, "allocations[0].address");
    let mut v = serde_json::to_value(sample()).expect("v");
    v["consensus"]["block_intervall_ms"] = 5.into();
    assert!(refused(v).field.starts_with("consensus"));
}

#[test]
fn duplicate_allocation_and_overflow_are_refused() {
    let mut v = serde_json::to_value(sample()).expect("v");
    let first = v["allocations"][0].clone();
    v["allocations"].as_array_mut().expect("array").push(first);
    assert_eq!(refused(v).field, "allocations[1].address");
    let mut v = serde_json::to_value(sample()).expect("v");
    let mut extra = v["allocations"][0].clone();
    extra["address"] = cairn_chain::SecretKey::from_label("x")
        .address()
        .to_string()
        .into();
    extra["balance"] = u64::MAX.into();
    v["allocations"].as_array_mut().expect("array").push(extra);
    assert_eq!(refused(v).field, "allocations[1].balance");
}

#[test]
fn engine_parameters_are_checked() {
    let mut v = serde_json::to_value(sample()).expect("v");
    v["consensus"]["block_interval_ms"] = 0.into();
    assert_eq!(refused(v).field, "consensus.block_interval_ms");
}

#[test]
fn a_p2p_address_must_parse_as_a_multiaddr_with_a_peer_id() {
    for bad in [
        "/ip4/127.0.0.1/tcp/26600/p2p/not-a-peer-id",
        "/ip4/300.0.0.1/tcp/26600/p2p/12D3KooWKBDry1yugVaycjvG3TXd6RGxpEBoCw17ER1ELjik8MAx",
        "/ip4/127.0.0.1/tcp/26600",
        "/ip4/127.0.0.1/tcp/26600/p2p/12D3KooWKBDry1yugVaycjvG3TXd6RGxpEBoCw17ER1ELjik8MAx/tcp/1",
    ] {
        let mut v = serde_json::to_value(sample()).expect("v");
        v["validators"][2]["p2p_address"] = bad.into();
        let e = refused(v);
        assert_eq!(e.field, "validators[2].p2p_address", "{bad}");
        assert!(e.to_string().contains(bad), "{e}");
    }
}

#[test]
fn timeouts_and_windows_have_upper_bounds() {
    let too_long = MAX_DURATION_MS + 1;
    for (engine, field) in [
        ("raft", "election_timeout_ms"),
        ("raft", "heartbeat_ms"),
        ("raft", "block_interval_ms"),
        ("pbft", "view_timeout_ms"),
        ("pbft", "block_interval_ms"),
        ("pow", "target_block_time_ms"),
    ] {
        let mut v = serde_json::to_value(sample()).expect("v");
        v["consensus"] = consensus_json(engine);
        v["consensus"][field] = u64::MAX.into();
        assert_eq!(refused(v).field, format!("consensus.{field}"), "{engine}");
        let mut v = serde_json::to_value(sample()).expect("v");
        v["consensus"] = consensus_json(engine);
        v["consensus"][field] = too_long.into();
        if field == "heartbeat_ms" {
            v["consensus"]["election_timeout_ms"] = (too_long + 1).into();
        }
        assert_eq!(refused(v).field, format!("consensus.{field}"), "{engine}");
    }
    let mut v = serde_json::to_value(sample()).expect("v");
    v["consensus"] = consensus_json("pow");
    v["consensus"]["retarget_window"] = (MAX_RETARGET_WINDOW + 1).into();
    assert_eq!(refused(v).field, "consensus.retarget_window");
}

/// The default consensus section of an engine, as JSON.
fn consensus_json(engine: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = NetworkSpec {
        engine: engine.parse().expect("engine"),
        seed: Some(7),
        ..NetworkSpec::default()
    };
    let g = generate(&spec, dir.path()).expect("generate").genesis;
    serde_json::to_value(g).expect("v")["consensus"].clone()
}

#[test]
fn a_zero_minimum_fee_leaves_the_genesis_hash_as_it_was() {
    // A genesis written before `min_fee` existed reads as 0 and keeps its
    // hash; any other value changes it.
    let mut g = sample();
    g.min_fee = 0;
    let json = g.to_json();
    assert!(!json.contains("min_fee"), "{json}");
    let back = Genesis::from_json(&json).expect("parse");
    assert_eq!(back.hash(), g.hash());
    let mut with_fee = g.clone();
    with_fee.min_fee = 1;
    assert_ne!(with_fee.hash(), g.hash());
    assert!(with_fee.to_json().contains("\"min_fee\": 1"));
}

fn upgrade(height: u64, engine: EngineKind) -> Upgrade {
    Upgrade {
        height,
        consensus: ConsensusConfig::default_for(engine),
        validators: None,
    }
}

#[test]
fn appending_an_upgrade_keeps_the_genesis_hash() {
    let g = sample();
    let mut upgraded = g.clone();
    upgraded.upgrades.push(upgrade(200, EngineKind::Pbft));
    assert_eq!(upgraded.hash(), g.hash());
    let back = Genesis::from_json(&upgraded.to_json()).expect("parse");
    assert_eq!(back, upgraded);
    assert!(!g.to_json().contains("upgrades"), "no empty list written");
}

#[test]
fn segments_split_the_chain_at_each_upgrade() {
    let mut g = sample();
    let mut others = g.validators.clone();
    others.truncate(3);
    g.upgrades.push(upgrade(200, EngineKind::Pbft));
    g.upgrades.push(Upgrade {
        validators: Some(others.clone()),
        ..upgrade(400, EngineKind::Pow)
    });
    let s = g.segments();
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].index, s[0].start, s[0].end), (0, 0, Some(200)));
    assert_eq!((s[1].index, s[1].start, s[1].end), (1, 200, Some(400)));
    assert_eq!((s[2].index, s[2].start, s[2].end), (2, 400, None));
    assert_eq!(s[0].consensus.kind(), EngineKind::Raft);
    assert_eq!(s[1].consensus.kind(), EngineKind::Pbft);
    assert_eq!(s[1].validators, &g.validators[..], "the set carries over");
    assert_eq!(s[2].validators, &others[..]);
    for (h, i) in [
        (0, 0),
        (1, 0),
        (199, 0),
        (200, 1),
        (399, 1),
        (400, 2),
        (u64::MAX, 2),
    ] {
        assert_eq!(g.segment_at(h).index, i, "height {h}");
        assert_eq!(g.segment_at(h), s[i], "the whole segment at height {h}");
        assert!(g.segment_at(h).contains(h));
    }
    let hashes: std::collections::HashSet<_> = s.iter().map(|s| s.config_hash()).collect();
    assert_eq!(hashes.len(), 3, "every segment has its own hash");
    // The same engine again from another height is another segment.
    let mut again = sample();
    again.upgrades.push(upgrade(300, EngineKind::Raft));
    assert_ne!(
        again.segments()[1].config_hash(),
        again.segments()[0].config_hash()
    );
}

#[test]
fn upgrades_out_of_order_or_at_genesis_are_refused() {
    let mut v = serde_json::to_value(sample()).expect("v");
    v["upgrades"] = serde_json::json!([{ "height": 0, "consensus": { "engine": "pbft" } }]);
    let e = refused(v.clone());
    assert_eq!(e.field, "upgrades[0].height");
    v["upgrades"] = serde_json::json!([
        { "height": 300, "consensus": { "engine": "pbft" } },
        { "height": 300, "consensus": { "engine": "pow" } },
    ]);
    let e = refused(v.clone());
    assert_eq!(e.field, "upgrades[1].height");
    assert!(e.message.contains("height order"), "{e}");
    v["upgrades"] = serde_json::json!([
        { "height": 300, "consensus": { "engine": "raft", "heartbeat_ms": 0 } },
    ]);
    assert_eq!(
        refused(v.clone()).field,
        "upgrades[0].consensus.heartbeat_ms"
    );
    v["upgrades"] = serde_json::json!([
        { "height": 300, "consensus": { "engine": "pbft" }, "validators": [] },
    ]);
    assert_eq!(refused(v.clone()).field, "upgrades[0].validators");
    v["upgrades"] = serde_json::json!([
        { "height": 300, "consensus": { "engine": "pbft" }, "when": "soon" },
    ]);
    assert!(refused(v).message.contains("when"));
}
