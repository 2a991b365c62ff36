//! `connscope policy hygiene` through the real binary and a real SQLite
//! store: counters arrive as the collector keeps them (`record_counters` of
//! agents' firewall reports; in one test through a running `connscope
//! collector`, posted over HTTPS with each host's agent token), traffic as
//! ingested events, and the command names the unused and the over-broad
//! rules, keeping approved ones. The policy is the version the store keeps
//! and the hosts are assigned, or a document not pushed yet.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use connscope_event::test_support::EventBuilder;
use connscope_event::{Direction, Timestamp};
use connscope_policy::record_counters;
use connscope_protocol::policy::{FirewallReport, FirewallState, RuleCounter, Staging};
use connscope_store::{AgentId, GroupKind, HostGroup, SqliteStore, Store};
use connscope_transport::{CollectorClient, CollectorTrust};

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

/// Two workstations, ssh from one admin host and HTTPS in their history.
fn history(dir: &Path) -> (String, SqliteStore) {
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
    for (host, local) in HOSTS {
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
    }
    (path.display().to_string(), store)
}

const HOSTS: [(&str, &str); 2] = [("ws1", "10.1.0.1"), ("ws2", "10.1.0.2")];

/// `host`'s daily firewall reports of version 2 over the last 20 days,
/// oldest first: ssh and HTTPS counted daily, the database and syslog
/// rules never.
fn reports(host: &str, revision: u64) -> Vec<FirewallReport> {
    let now = Timestamp::now().as_nanos();
    (0..=20)
        .rev()
        .map(|day| FirewallReport {
            host: host.into(),
            at: Timestamp::from_nanos(now - day * DAY).to_string(),
            state: FirewallState::Loaded {
                name: "ws".into(),
                version: 2,
                revision,
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
        })
        .collect()
}

/// The history with the counters recorded as the collector keeps them.
fn store(dir: &Path) -> String {
    let (path, store) = history(dir);
    for (host, _) in HOSTS {
        for report in reports(host, 5) {
            assert_eq!(record_counters(&store, &report).unwrap(), 4);
        }
    }
    path
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

/// `connscope collector` on an ephemeral loopback port with an agent token
/// per workstation; killed when dropped (also when a test fails).
struct Collector {
    child: Child,
    url: String,
    trust: Option<CollectorTrust>,
}

fn agent_token(host: &str) -> String {
    format!("hygiene-test-token-of-{host}-{}", std::process::id())
}

impl Collector {
    fn start(db: &str) -> Collector {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_connscope"));
        cmd.args(["collector", "--listen", "127.0.0.1:0", "--db", db])
            .env("CONNSCOPE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (host, _) in HOSTS {
            cmd.args(["--token", &format!("{host}={}", agent_token(host))]);
        }
        // Dropped, it is killed and waited for, also when an assert fails.
        let mut collector = Collector {
            child: cmd.spawn().unwrap(),
            url: String::new(),
            trust: None,
        };
        let mut lines = BufReader::new(collector.child.stdout.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(listening) = line.strip_prefix("listening: ") {
                collector.url = listening.to_owned();
            }
            if let Some(fingerprint) = line.strip_prefix("fingerprint: ") {
                collector.trust = Some(CollectorTrust::Fingerprint(fingerprint.parse().unwrap()));
                break;
            }
        }
        assert!(
            collector.trust.is_some() && !collector.url.is_empty(),
            "the collector stopped before printing where it listens and its fingerprint"
        );
        // Whatever it prints later must not meet a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        collector
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn refused(args: &[&str], reason: &str) {
    let out = connscope(args);
    assert!(!out.status.success(), "{args:?}");
    assert!(text(&out).contains(reason), "{args:?}: {}", text(&out));
}

#[test]
fn the_assigned_version_is_judged_from_the_store_with_counters_the_agents_posted() {
    let dir = tempfile::tempdir().unwrap();
    let (db, store) = history(dir.path());
    let hygiene = |extra: &[&str]| {
        let mut args = vec!["policy", "hygiene", "ws", "--db", &db];
        args.extend_from_slice(extra);
        connscope(&args)
    };
    refused(
        &["policy", "hygiene", "ws", "--db", &db],
        "no policy \"ws\" in the store: push it",
    );
    // Version 2 is the one of the other tests; 3 adds a rule and stays unassigned.
    let documents = [
        POLICY.replace("ports = [3306]", "ports = [3307]"),
        POLICY.to_owned(),
        format!("{POLICY}\n[[outbound]]\nprotocol = \"tcp\"\nports = [8443]\npeers = [\"192.0.2.40\"]\n"),
    ];
    for (i, document) in documents.iter().enumerate() {
        let file = dir.path().join(format!("ws-v{}.toml", i + 1));
        std::fs::write(&file, document).unwrap();
        let out = connscope(&["policy", "push", file.to_str().unwrap(), "--db", &db]);
        assert!(out.status.success(), "{}", text(&out));
    }
    refused(
        &["policy", "hygiene", "ws", "--db", &db],
        "policy \"ws\" is assigned to no group or host now: pass --version N",
    );
    let out = connscope(&[
        "policy",
        "stage",
        "--group",
        "ws",
        "--version",
        "2",
        "--db",
        &db,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let revision = store.assignment_revision().unwrap();

    let collector = Collector::start(&db);
    for (host, _) in HOSTS {
        let mut agent = CollectorClient::new(
            &collector.url,
            &agent_token(host),
            collector.trust.as_ref().unwrap(),
        )
        .unwrap();
        for report in reports(host, revision) {
            agent.post_firewall(&report).unwrap();
        }
    }
    // Another host's report under this token is refused, not counted.
    let mut agent = CollectorClient::new(
        &collector.url,
        &agent_token("ws1"),
        collector.trust.as_ref().unwrap(),
    )
    .unwrap();
    assert!(agent.post_firewall(&reports("ws2", revision)[0]).is_err());

    let out = hygiene(&[]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("policy ws version 2: 4 rules; hits over the last 14 days"),
        "{shown}"
    );
    assert!(
        shown.contains("tcp/22 from 10.0.0.0/8  [400 packets on 2 host(s)]"),
        "{shown}"
    );
    assert!(shown.contains("unused: never hit"), "{shown}");
    assert!(shown.contains("2 rule(s) to remove or narrow"), "{shown}");

    // Another kept version, by number: its rules were never counted.
    let out = hygiene(&["--version", "3"]);
    let shown = text(&out);
    assert!(shown.contains("policy ws version 3: 5 rules"), "{shown}");
    assert_eq!(shown.matches("[not counted]").count(), 5, "{shown}");
    refused(
        &["policy", "hygiene", "ws", "--db", &db, "--version", "9"],
        "policy \"ws\" has no version 9 in the store (it has 1, 2, 3)",
    );

    // A canary host ahead of its group: which version is meant must be said.
    let out = connscope(&[
        "policy",
        "stage",
        "--host",
        "ws1",
        "--version",
        "3",
        "--db",
        &db,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    refused(
        &["policy", "hygiene", "ws", "--db", &db],
        "policy \"ws\" runs in several versions now (2 on group ws; 3 on host ws1)",
    );
    drop(collector);
}
