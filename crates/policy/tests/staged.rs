#![cfg(feature = "system-tests")] // root: network namespaces and nftables

//! A policy staged and then enforced on a host, with real nftables in a
//! network namespace: in audit mode the flow the policy misses still works and
//! is logged as a would-block; in enforce mode it is blocked and logged; the
//! flows it was drafted from work in both; another table of the host's
//! ruleset is never touched. Staged per port, an enforced port is refused
//! while the rest of its direction only logs; the golden collector rule
//! keeps the agent's own connection open under a policy allowing nothing.

#[path = "../../firewall/tests/common/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::process::Command;

use connscope_event::test_support::EventBuilder;
use connscope_event::Direction;
use connscope_event::Protocol;
use connscope_policy::{
    draft, render, render_staged, DraftOptions, GoldenRules, Mode, Policy, Target,
};
use connscope_protocol::policy::{DirectionStage, StageMode, StagedPort, Staging};
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
    let (ws, srv) = pair("pol", "10.77.0");
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

/// A workstation and a server joined by a veth pair, `{net}.2` ->
/// `{net}.1` (a /24).
fn pair(tag: &str, net: &str) -> (Netns, Netns) {
    let ws = Netns::new(&format!("{tag}-ws"));
    let srv = Netns::new(&format!("{tag}-srv"));
    let (a, b) = (
        format!("{tag}w{}", std::process::id()),
        format!("{tag}s{}", std::process::id()),
    );
    ok(Command::new("ip").args([
        "link", "add", &a, "netns", &ws.name, "type", "veth", "peer", "name", &b, "netns",
        &srv.name,
    ]));
    ws.exec(&["ip", "addr", "add", &format!("{net}.2/24"), "dev", &a]);
    ws.exec(&["ip", "link", "set", &a, "up"]);
    srv.exec(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", &b]);
    srv.exec(&["ip", "link", "set", &b, "up"]);
    (ws, srv)
}

/// The packets counted by the rule commented `comment`.
fn counted(ns: &Netns, comment: &str) -> u64 {
    let json = ns.exec(&["nft", "-j", "list", "table", "inet", "connscope"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    doc["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule["comment"].as_str() == Some(comment))
        .flat_map(|rule| rule["expr"].as_array().unwrap().clone())
        .filter_map(|e| e.get("counter").map(|c| c["packets"].as_u64().unwrap()))
        .sum()
}

const SHARE_ONLY: &str = r#"
format = 1
name = "ws"
target = { host = "ws3" }

[[outbound]]
protocol = "tcp"
ports = [445]
peers = ["10.78.0.1"]
"#;

#[test]
fn a_port_enforced_ahead_of_its_direction_is_refused_while_the_rest_only_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, srv) = pair("pp", "10.78.0");
    let share = listen(&srv, "10.78.0.1:445");
    let backup = listen(&srv, "10.78.0.1:5432");
    let web = listen(&srv, "10.78.0.1:8080");
    let policy = Policy::parse(SHARE_ONLY).unwrap();
    let staging = Staging {
        inbound: DirectionStage::default(),
        outbound: DirectionStage {
            mode: StageMode::Audit,
            except_ports: vec![StagedPort {
                protocol: Protocol::Tcp,
                port: 5432,
            }],
        },
    };
    let text = render_staged(&policy, "ws3", &staging, &GoldenRules::default(), 6465);
    load(&ws, dir.path(), "staged.nft", &text);

    assert!(try_connect(&ws, share).is_ok(), "the allowed flow works");
    assert!(
        counted(&ws, "connscope rule outbound[0]") >= 1,
        "and is counted"
    );
    assert!(try_connect(&ws, web).is_ok(), "an audited port still works");
    assert!(counted(&ws, "connscope end:output") >= 1, "and is logged");
    assert!(
        try_connect(&ws, backup).is_err(),
        "the port enforced ahead of its direction is refused"
    );
    assert!(
        counted(&ws, "connscope end:output:tcp/5432") >= 1,
        "and is logged"
    );
}

#[test]
fn the_golden_collector_rule_passes_a_policy_that_allows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ws, srv) = pair("gc", "10.78.0");
    let collector = listen(&srv, "10.78.0.1:7443");
    let other = listen(&srv, "10.78.0.1:7444");
    let nothing =
        Policy::parse("format = 1\nname = \"none\"\ntarget = { host = \"ws3\" }\n").unwrap();
    let enforce = DirectionStage {
        mode: StageMode::Enforce,
        except_ports: vec![],
    };
    let staging = Staging {
        inbound: enforce.clone(),
        outbound: enforce,
    };
    let golden = GoldenRules {
        collectors: vec![collector],
        ..GoldenRules::default()
    };
    load(
        &ws,
        dir.path(),
        "enforce.nft",
        &render_staged(&nothing, "ws3", &staging, &golden, 6466),
    );
    assert!(
        try_connect(&ws, collector).is_ok(),
        "the collector is reachable"
    );
    assert!(counted(&ws, "connscope golden:collector") >= 1);
    assert!(try_connect(&ws, other).is_err(), "nothing else is");
    assert!(counted(&ws, "connscope end:output") >= 1);
}
