//! The policy loop over real TLS: agents fetch the policy assigned to their
//! host (by their token, never by a parameter) and report their firewall;
//! readers see the status; batches ingested over HTTP are checked for drift,
//! and a new drift edge makes exactly one record and one alert.

mod common;

use std::sync::{Arc, Mutex};

use common::Running;
use connscope_alert::{AlertSink, DriftAlert};
use connscope_collector::CollectorConfig;
use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Timestamp};
use connscope_protocol::policy::{AssignedPolicy, Staging, AGENT_FIREWALL_PATH, AGENT_POLICY_PATH};
use connscope_protocol::INGEST_PATH;
use connscope_store::{
    AssignedVersion, AssignmentChange, AssignmentTarget, GroupKind, HostGroup, SqliteStore, Store,
    TimeRange,
};

const WS_TOKEN: &str = "token-of-agent-ws-01";
const DB_TOKEN: &str = "token-of-agent-db-01";
const READER: &str = "reader-token-0123456789";

const POLICY: &str = r#"format = 1
name = "workstations"
target = { group = "workstations" }

[[outbound]]
protocol = "tcp"
ports = [443]
peers = ["10.9.0.0/16"]
"#;

/// Keeps what it is sent.
#[derive(Default)]
struct Kept(Mutex<Vec<DriftAlert>>);

impl AlertSink for Kept {
    fn send(&self, alert: &DriftAlert) {
        self.0.lock().unwrap().push(alert.clone());
    }
}

fn collector(dir: &std::path::Path, sink: Option<Arc<Kept>>) -> (Running, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(dir.join("connscope.db")).unwrap());
    store
        .put_group(&HostGroup {
            name: "workstations".into(),
            kind: GroupKind::Names,
            patterns: vec!["ws-*".into()],
            labels: vec![],
        })
        .unwrap();
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("connscope.db"));
    config.tokens.insert("ws-01", WS_TOKEN).unwrap();
    config.tokens.insert("db-01", DB_TOKEN).unwrap();
    config.read_tokens.insert("map", READER).unwrap();
    config.alerts = sink.map(|s| s as Arc<dyn AlertSink>);
    (Running::start(config, store.clone()), store)
}

fn assign(store: &SqliteStore, staging: Staging) -> u64 {
    let v = store
        .put_policy("workstations", POLICY, "ann", "", Timestamp::now())
        .unwrap();
    store
        .assign_policy(&AssignmentChange {
            target: AssignmentTarget::Group("workstations".into()),
            assigned: Some(AssignedVersion {
                policy: v.name,
                version: v.version,
                staging,
            }),
            at: Timestamp::now(),
            by: "ann".into(),
        })
        .unwrap()
        .revision
}

fn post(c: &Running, path: &str, token: &str, body: &str) -> (u16, String) {
    c.curl(
        path,
        Some(token),
        &["--request", "POST", "--data-binary", body],
    )
}

fn connect(seq: u64, local: &str, remote: &str) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .host("ws-01")
        .sequence(seq)
        .at_nanos(Timestamp::now().as_nanos())
        .process(4242, "/usr/bin/rsync")
        .uid(34)
        .user("backup")
        .build()
}

fn batch(events: &[ConnectionEvent]) -> String {
    events
        .iter()
        .map(connscope_event::json::to_json_line)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_new_drift_edge_makes_one_record_and_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Kept::default());
    let (c, store) = collector(dir.path(), Some(sink.clone()));
    // Before any assignment, nothing is drift.
    let early = batch(&[connect(1, "10.1.0.5:40000", "10.7.0.2:873")]);
    assert_eq!(post(&c, INGEST_PATH, WS_TOKEN, &early).0, 200);
    assert!(sink.0.lock().unwrap().is_empty());
    assert!(store.drift(TimeRange::ALL).unwrap().is_empty());

    assign(&store, Staging::default());
    // The collector reads the revision at most every 2 s.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let first = batch(&[
        connect(2, "10.1.0.5:40001", "10.9.0.1:443"),
        connect(3, "10.1.0.5:40002", "10.7.0.2:873"),
    ]);
    assert_eq!(post(&c, INGEST_PATH, WS_TOKEN, &first).0, 200);
    let alerts = sink.0.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(
        (alert.host.as_str(), alert.port, alert.remote.to_string()),
        ("ws-01", 873, "10.7.0.2".to_string())
    );
    assert_eq!(alert.executable.as_deref(), Some("/usr/bin/rsync"));
    assert_eq!((alert.pid, alert.uid), (Some(4242), Some(34)));
    assert_eq!(alert.user.as_deref(), Some("backup"));
    assert_eq!(
        (alert.policy.as_str(), alert.version, alert.mode.as_str()),
        ("workstations", 1, "audit")
    );

    // The same edge again, and the batch re-sent: no second alert.
    let second = batch(&[connect(4, "10.1.0.5:40003", "10.7.0.2:873")]);
    assert_eq!(post(&c, INGEST_PATH, WS_TOKEN, &second).0, 200);
    assert_eq!(post(&c, INGEST_PATH, WS_TOKEN, &second).0, 200);
    assert_eq!(sink.0.lock().unwrap().len(), 1);
    let drift = store.drift(TimeRange::ALL).unwrap();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].connections, 2);

    let (status, body) = c.curl("/api/v1/drift?from=-1h", Some(READER), &[]);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entries = json["drift"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{body}");
    let e = &entries[0];
    assert_eq!(e["host"], "ws-01");
    assert_eq!(e["direction"], "outgoing");
    assert_eq!(e["protocol"], "tcp");
    assert_eq!(e["port"], 873);
    assert_eq!(e["local"], "10.1.0.5");
    assert_eq!(e["remote"], "10.7.0.2");
    assert_eq!(e["remote_name"], serde_json::Value::Null);
    assert_eq!(e["executable"], "/usr/bin/rsync");
    assert_eq!(e["user"], "backup");
    assert_eq!(e["policy"], "workstations");
    assert_eq!(e["version"], 1);
    assert_eq!(e["mode"], "audit");
    assert_eq!(e["connections"], 2);
    assert!(e["first_seen"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c.curl("/api/v1/drift", Some(WS_TOKEN), &[]).0, 401);
    let (status, body) = c.curl("/api/v1/drift?from=yesterday", Some(READER), &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("from"), "{body}");
}

#[test]
fn agents_fetch_their_hosts_policy_and_report_their_firewall() {
    let dir = tempfile::tempdir().unwrap();
    let (c, store) = collector(dir.path(), None);
    assert_eq!(c.curl(AGENT_POLICY_PATH, Some(WS_TOKEN), &[]).0, 204);
    assert_eq!(c.curl(AGENT_POLICY_PATH, None, &[]).0, 401);
    assert_eq!(c.curl(AGENT_POLICY_PATH, Some(READER), &[]).0, 401);

    let revision = assign(&store, Staging::default());
    let (status, body) = c.curl(AGENT_POLICY_PATH, Some(WS_TOKEN), &[]);
    assert_eq!(status, 200, "{body}");
    let assigned: AssignedPolicy = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (assigned.name.as_str(), assigned.version, assigned.revision),
        ("workstations", 1, revision)
    );
    assert_eq!(assigned.document, POLICY);
    // db-01 is in no assigned group; a parameter cannot make it ws-01.
    assert_eq!(
        c.curl(
            &format!("{AGENT_POLICY_PATH}?host=ws-01"),
            Some(DB_TOKEN),
            &[]
        )
        .0,
        204
    );

    let (status, body) = c.curl("/api/v1/policies/status", Some(READER), &[]);
    assert_eq!(status, 200, "{body}");
    // Neither host sent events or reports: only assigned-by-name hosts and
    // seen hosts are listed, so the status is empty until ws-01 reports.
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["hosts"].as_array().unwrap().len(), 0, "{body}");

    let report = format!(
        r#"{{"host":"ws-01","at":"2026-12-04T10:00:00Z","state":{{"state":"loaded","name":"workstations","version":1,"revision":{revision},"staging":{{"inbound":{{"mode":"audit"}},"outbound":{{"mode":"audit"}}}}}},"notices":[{{"at":"2026-12-04T09:59:00Z","kind":"tampered","detail":"table flushed, restored"}}]}}"#
    );
    let other = report.replacen("\"ws-01\"", "\"ws-02\"", 1);
    let (status, body) = post(&c, AGENT_FIREWALL_PATH, WS_TOKEN, &other);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("ws-02"), "{body}");
    let bad_time = report.replacen("2026-12-04T10:00:00Z", "ten o'clock", 1);
    assert_eq!(post(&c, AGENT_FIREWALL_PATH, WS_TOKEN, &bad_time).0, 400);
    assert_eq!(post(&c, AGENT_FIREWALL_PATH, WS_TOKEN, "{").0, 400);
    assert_eq!(post(&c, AGENT_FIREWALL_PATH, WS_TOKEN, &report).0, 204);
    assert_eq!(store.firewall_notices(Some("ws-01")).unwrap().len(), 1);

    let (_, body) = c.curl("/api/v1/policies/status", Some(READER), &[]);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{body}");
    let ws = &hosts[0];
    assert_eq!(ws["host"], "ws-01");
    assert_eq!(ws["policy"], "workstations");
    assert_eq!(ws["version"], 1);
    assert_eq!(ws["revision"], revision);
    assert_eq!(ws["staging"]["outbound"]["mode"], "audit");
    assert_eq!(ws["state"], "loaded");
    assert_eq!(ws["reason"], serde_json::Value::Null);
    assert_eq!(ws["loaded_revision"], revision);
    assert_eq!(ws["assigned_by"], "group workstations");
    assert!(ws["reported_at"]
        .as_str()
        .unwrap()
        .starts_with("2026-12-04T10:00:00"));

    // A new assignment: the host has not loaded it yet.
    let newer = assign(&store, Staging::default());
    assert!(newer > revision);
    let (_, body) = c.curl("/api/v1/policies/status", Some(READER), &[]);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["hosts"][0]["revision"], newer);
    assert_eq!(json["hosts"][0]["loaded_revision"], revision);
}

#[test]
fn two_collectors_on_one_store_alert_a_new_edge_once() {
    let dir = tempfile::tempdir().unwrap();
    let (sink_a, sink_b) = (Arc::new(Kept::default()), Arc::new(Kept::default()));
    let (a, store) = collector(dir.path(), Some(sink_a.clone()));
    assign(&store, Staging::default());
    // A second collector process's view: its own connection to the file.
    let second = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    let mut config = CollectorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("connscope.db"),
    );
    config.tokens.insert("ws-01", WS_TOKEN).unwrap();
    config.alerts = Some(sink_b.clone() as Arc<dyn AlertSink>);
    let b = Running::start(config, second);

    // The agent fails over between them with new connections on one edge.
    for (seq, collector) in [(1, &a), (2, &b), (3, &a), (4, &b)] {
        let body = batch(&[connect(seq, &format!("10.1.0.5:4100{seq}"), "10.7.0.2:873")]);
        assert_eq!(post(collector, INGEST_PATH, WS_TOKEN, &body).0, 200);
    }
    let alerts = sink_a.0.lock().unwrap().len() + sink_b.0.lock().unwrap().len();
    assert_eq!(alerts, 1);
    let drift = store.drift(TimeRange::ALL).unwrap();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].connections, 4);
}

#[test]
fn tcpspy_hosts_streaming_syslog_are_checked_for_drift_too() {
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(Kept::default());
    let store = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    store
        .put_group(&HostGroup {
            name: "workstations".into(),
            kind: GroupKind::Names,
            patterns: vec!["ws-*".into()],
            labels: vec![],
        })
        .unwrap();
    assign(&store, Staging::default());
    let mut config = CollectorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("connscope.db"),
    );
    config.syslog_listen = Some("127.0.0.1:0".parse().unwrap());
    config
        .tokens
        .insert("unused", "token-nobody-uses-here")
        .unwrap();
    config.alerts = Some(sink.clone() as Arc<dyn AlertSink>);
    let c = Running::start(config, store.clone());
    let mut tcp = std::net::TcpStream::connect(c.syslog.unwrap()).unwrap();
    for (second, port) in [(0, 51000), (1, 51001)] {
        writeln!(
            tcp,
            "<86>2026-12-04T09:00:0{second}+00:00 ws-01 tcpspy[100]: connect: proc /usr/bin/rsync, \
             user backup, local 10.1.0.5:{port}, remote 10.7.0.2:873"
        )
        .unwrap();
    }
    drop(tcp);
    common::wait_for("the drift edge", || {
        store
            .drift(TimeRange::ALL)
            .unwrap()
            .first()
            .is_some_and(|d| d.connections == 2)
    });
    let alerts = sink.0.lock().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!((alerts[0].host.as_str(), alerts[0].port), ("ws-01", 873));
    assert_eq!(alerts[0].user.as_deref(), Some("backup"));
}
