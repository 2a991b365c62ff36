#![cfg(feature = "system-tests")] // root: network namespaces and nftables

//! A policy staged and then enforced on a host, with real nftables in a
//! network namespace: in audit mode the flow the policy misses still works and
//! is logged as a would-block; in enforce mode it is blocked and logged; the
//! flows it was drafted from work in both; another table of the host's
//! ruleset is never touched.

#[path = "../../firewall/tests/common/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::process::Command;

use connscope_event::test_support::EventBuilder;
use connscope_event::Direction;
use connscope_policy::{draft, render, DraftOptions, Mode, Policy, Target};
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};
use lab::{listen, ok, try_connect, Netns};

/// The packets the chain's last rule (the would-block or blocked log) counted.
fn logged_packets(ns: &Netns, chain: &str) -> u64 {
    let json = ns.exec(&["nft", "-j", "list", "chain", "inet", "connscope", chain]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| {
            rule["expr"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.get("log").is_some())
        })
        .flat_map(|rule| rule["expr"].as_array().unwrap().clone())
        .filter_map(|e| e.get("counter").map(|c| c["packets"].as_u64().unwrap()))
        .sum()
}

fn load(ns: &Netns, dir: &std::path::Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    ns.exec(&["nft", "-f", path.to_str().unwrap()]);
}

#[test]
fn audit_logs_the_missed_flow_and_lets_it_through_enforce_blocks_it() {
    let dir = tempfile::tempdir().unwrap();
    let ws = Netns::new("pol-ws");
    let srv = Netns::new("pol-srv");
    let (a, b) = (
        format!("pw{}", std::process::id()),
        format!("ps{}", std::process::id()),
    );
    ok(Command::new("ip").args([
        "link", "add", &a, "netns", &ws.name, "type", "veth", "peer", "name", &b, "netns",
        &srv.name,
    ]));
    ws.exec(&["ip", "addr", "add", "10.77.0.2/24", "dev", &a]);
    ws.exec(&["ip", "link", "set", &a, "up"]);
    srv.exec(&["ip", "addr", "add", "10.77.0.1/24", "dev", &b]);
    srv.exec(&["ip", "link", "set", &b, "up"]);
    let share = listen(&srv, "10.77.0.1:445");
    let backup = listen(&srv, "10.77.0.1:5432");

    // The history: ws3 used the file share; the backup job never ran.
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let events: Vec<_> = (1..=5u64)
        .map(|seq| {
            EventBuilder::connect(format!("10.77.0.2:{}", 40000 + seq), "10.77.0.1:445")
                .at_nanos(1_795_548_137_000_000_000 + seq as i64 * 60_000_000_000)
                .direction(Direction::Outgoing)
                .sequence(seq)
                .host("ws3")
                .process(9, "/usr/bin/smbclient")
                .user("alice")
                .build()
        })
        .collect();
    store.ingest(&AgentId("ws3".into()), &events).unwrap();
    let policy = draft(
        &store,
        &Target::Host("ws3".into()),
        TimeRange::ALL,
        &DraftOptions::default(),
    )
    .unwrap();
    let policy = Policy::parse(&policy.to_toml()).unwrap();

    // A table of the host's own, which no step may change.
    load(
        &ws,
        dir.path(),
        "own.nft",
        "table inet site {\n\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n\t\ttcp dport 9 counter accept comment \"site rule\"\n\t}\n}\n",
    );
    let site = || ws.exec(&["nft", "list", "table", "inet", "site"]);
    let site_before = site();

    let reach = |to: SocketAddr| try_connect(&ws, to).is_ok();
    load(
        &ws,
        dir.path(),
        "audit.nft",
        &render(&policy, "ws3", Mode::Audit { log_group: 6464 }),
    );
    assert!(reach(share), "the drafted flow works in audit mode");
    assert!(reach(backup), "the missed flow still works in audit mode");
    assert!(
        logged_packets(&ws, "output") >= 1,
        "the missed flow is logged as a would-block"
    );
    assert_eq!(site(), site_before);

    load(
        &ws,
        dir.path(),
        "enforce.nft",
        &render(&policy, "ws3", Mode::Enforce { log_group: 6464 }),
    );
    assert_eq!(
        logged_packets(&ws, "output"),
        0,
        "a fresh table counts from zero"
    );
    assert!(reach(share), "the drafted flow works when enforced");
    assert!(!reach(backup), "the missed flow is blocked when enforced");
    assert!(logged_packets(&ws, "output") >= 1, "the block is logged");
    assert_eq!(site(), site_before);
}
