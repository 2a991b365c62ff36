//! `connscope policy hygiene` through the real binary and a real SQLite
//! store: counters arrive as the collector keeps them (`record_counters` of
//! agents' firewall reports), traffic as ingested events, and the command
//! names the unused and the over-broad rules, keeping approved ones.

use std::path::Path;
use std::process::{Command, Output};

use connscope_event::test_support::EventBuilder;
use connscope_event::{Direction, Timestamp};
use connscope_policy::record_counters;
use connscope_protocol::policy::{FirewallReport, FirewallState, RuleCounter, Staging};
use connscope_store::{AgentId, GroupKind, HostGroup, SqliteStore, Store};

const DAY: i64 = 86_400_000_000_000;

const POLICY: &str = r#"
format = 1
name = "ws"
target = { group = "ws" }

[[inbound]]
protocol = "tcp"
ports = [22]
peers = ["10.0.0.0/8"]

[[outbound]]
protocol = "tcp"
ports = [443]
peers = ["192.0.2.10"]

[[outbound]]
protocol = "tcp"
ports = [3306]
peers = ["192.0.2.20"]

[[outbound]]
protocol = "udp"
ports = [514]
peers = ["192.0.2.30"]
approved = true
"#;

/// Two workstations running version 2 for 20 days: ssh from one admin host
/// and HTTPS are counted daily; the database and syslog rules never.
fn store(dir: &Path) -> String {
    let path = dir.join("store.db");
    let store = SqliteStore::open(&path).unwrap();
    let now = Timestamp::now().as_nanos();
    store
        .put_group(&HostGroup {
            name: "ws".into(),
            kind: GroupKind::Names,
            patterns: vec!["ws*".into()],
            labels: Vec::new(),
        })
        .unwrap();
    let mut seq = 0;
    for (host, local) in [("ws1", "10.1.0.1"), ("ws2", "10.1.0.2")] {
        let mut ingest = |direction, local: String, remote: &str, days_ago: i64| {
            seq += 1;
            let event = EventBuilder::connect(local.as_str(), remote)
                .at_nanos(now - days_ago * DAY)
                .direction(direction)
                .sequence(seq)
                .host(host)
                .process(7, "/usr/bin/curl")
                .user("alice")
                .build();
            store.ingest(&AgentId(host.into()), &[event]).unwrap();
        };
        ingest(
            Direction::Incoming,
            format!("{local}:22"),
            "10.200.0.5:50000",
            2,
        );
        ingest(
            Direction::Outgoing,
            format!("{local}:40000"),
            "192.0.2.10:443",
            1,
        );
        for day in (0..=20).rev() {
            let report = FirewallReport {
                host: host.into(),
                at: Timestamp::from_nanos(now - day * DAY).to_string(),
                state: FirewallState::Loaded {
                    name: "ws".into(),
                    version: 2,
                    revision: 5,
                    staging: Staging::default(),
                },
                notices: vec![],
                counters: ["inbound[0]", "outbound[0]", "outbound[1]", "outbound[2]"]
                    .iter()
                    .enumerate()
                    .map(|(i, rule)| RuleCounter {
                        rule: (*rule).into(),
                        packets: if i < 2 { (20 - day) as u64 * 10 } else { 0 },
                        bytes: 0,
                    })
                    .collect(),
            };
            assert_eq!(record_counters(&store, &report).unwrap(), 4);
        }
    }
    path.display().to_string()
}

fn connscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn unused_and_over_broad_rules_are_named_and_approved_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let document = dir.path().join("ws-v2.toml");
    std::fs::write(&document, POLICY).unwrap();
    let doc = document.to_str().unwrap();

    let out = connscope(&["policy", "hygiene", "ws", "--document", doc, "--db", &db]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("policy ws version 2: 4 rules; hits over the last 14 days"),
        "{shown}"
    );
    // A rule's line and the indented lines under it.
    let block = |place: &str| -> String {
        let mut lines = shown
            .lines()
            .skip_while(|l| !l.starts_with(&format!("{place} ")));
        let head = lines.next().unwrap_or_else(|| panic!("{place}: {shown}"));
        std::iter::once(head)
            .chain(lines.take_while(|l| l.starts_with("    ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ssh = block("inbound[0]");
    assert!(
        ssh.contains("tcp/22 from 10.0.0.0/8  [400 packets on 2 host(s)]"),
        "{ssh}"
    );
    assert!(
        ssh.contains("over-broad: 10.0.0.0/8 allowed, 1 peer(s) seen in it: 10.200.0.5"),
        "{ssh}"
    );
    assert!(ssh.contains("-> narrow"), "{ssh}");
    let https = block("outbound[0]");
    assert!(!https.contains("->"), "{https}");
    let db_rule = block("outbound[1]");
    assert!(
        db_rule.contains("unused: never hit") && db_rule.contains("-> remove"),
        "{db_rule}"
    );
    let syslog = block("outbound[2]");
    assert!(
        syslog.contains("(approved)") && syslog.contains("-> keep (approved)"),
        "{syslog}"
    );
    assert!(shown.contains("2 rule(s) to remove or narrow"), "{shown}");

    let out = connscope(&[
        "policy",
        "hygiene",
        "ws",
        "--document",
        doc,
        "--store",
        &format!("sqlite:{db}"),
        "--version",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (json["policy"].as_str(), json["version"].as_u64()),
        (Some("ws"), Some(2))
    );
    let rules = json["rules"].as_array().unwrap();
    let kinds: Vec<(&str, Vec<&str>, Option<&str>)> = rules
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap(),
                r["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f["kind"].as_str().unwrap())
                    .collect(),
                r["suggestion"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("inbound[0]", vec!["wide-network"], Some("narrow")),
            ("outbound[0]", vec![], None),
            ("outbound[1]", vec!["unused"], Some("remove")),
            ("outbound[2]", vec!["unused"], Some("keep (approved)")),
        ]
    );
    assert_eq!(rules[0]["counters"]["packets"], 400);
    assert!(rules[1]["counters"]["last_hit"].is_string());
    assert!(rules[2]["counters"]["last_hit"].is_null());

    // Thirty days back, version 2 has not been counted long enough.
    let out = connscope(&[
        "policy",
        "hygiene",
        "ws",
        "--document",
        doc,
        "--db",
        &db,
        "--unused-days",
        "30",
    ]);
    let shown = text(&out);
    assert!(shown.contains("too new to judge: counted since"), "{shown}");
    assert!(!shown.contains("-> remove"), "{shown}");
}

#[test]
fn wrong_names_and_unknown_versions_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let db = store(dir.path());
    let document = dir.path().join("ws.toml");
    std::fs::write(&document, POLICY).unwrap();
    let doc = document.to_str().unwrap();
    let out = connscope(&[
        "policy",
        "hygiene",
        "servers",
        "--document",
        doc,
        "--db",
        &db,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("the document is policy \"ws\", not \"servers\""),
        "{}",
        text(&out)
    );

    let empty = dir.path().join("empty.db");
    SqliteStore::open(&empty).unwrap();
    let out = connscope(&[
        "policy",
        "hygiene",
        "ws",
        "--document",
        doc,
        "--db",
        empty.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no host reported rule counters of policy \"ws\": pass --version"),
        "{}",
        text(&out)
    );
}
