//! `/api/v1/firewall/hits` over real TLS: would-block and blocked events
//! posted by an agent come back aggregated per host, remote end, program
//! and user; readers only; bad parameters name themselves.

mod common;

use std::sync::Arc;

use common::Running;
use connscope_collector::CollectorConfig;
use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Direction, EventKind, Timestamp};
use connscope_store::SqliteStore;

const AGENT: &str = "token-of-agent-ws-01";
const READER: &str = "reader-token-0123456789";

fn hit(seq: u64, kind: EventKind, local: &str, remote: &str) -> EventBuilder {
    EventBuilder::connect(local, remote)
        .kind(kind)
        .at(Timestamp::now())
        .sequence(seq)
        .host("ws-01")
        .uid(0)
        .user("root")
        .process(4242, "/usr/local/bin/backup <script>")
}

fn body_of(events: &[ConnectionEvent]) -> String {
    let lines: Vec<String> = events
        .iter()
        .map(connscope_event::json::to_json_line)
        .collect();
    lines.join("\n")
}

#[test]
fn hits_posted_as_events_come_back_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("c.db")).unwrap());
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("c.db"));
    config.tokens.insert("ws-01", AGENT).unwrap();
    config.read_tokens.insert("map", READER).unwrap();
    let c = Running::start(config, store);

    let events = vec![
        hit(1, EventKind::WouldBlock, "10.9.0.1:40000", "10.9.0.3:873").build(),
        hit(2, EventKind::WouldBlock, "10.9.0.1:40001", "10.9.0.3:873").build(),
        hit(3, EventKind::Blocked, "10.9.0.1:40002", "10.9.0.3:873").build(),
        hit(4, EventKind::Blocked, "10.9.0.1:22", "10.9.0.7:51000")
            .direction(Direction::Incoming)
            .process(7, "/usr/sbin/sshd")
            .build(),
        EventBuilder::connect("10.9.0.1:40003", "10.9.0.3:443")
            .at(Timestamp::now())
            .sequence(5)
            .host("ws-01")
            .build(),
    ];
    let body = body_of(&events);
    let (status, answer) = c.curl(
        "/api/v1/ingest",
        Some(AGENT),
        &[
            "--header",
            "Content-Type: application/x-ndjson",
            "--data-binary",
            &body,
        ],
    );
    assert_eq!(status, 200, "{answer}");

    assert_eq!(c.curl("/api/v1/firewall/hits", None, &[]).0, 401);
    assert_eq!(c.curl("/api/v1/firewall/hits", Some(AGENT), &[]).0, 401);

    let (status, body) = c.curl("/api/v1/firewall/hits?from=-1h", Some(READER), &[]);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hits = json["hits"].as_array().unwrap();
    let rows: Vec<(&str, &str, u64, &str, &str, u64)> = hits
        .iter()
        .map(|h| {
            (
                h["kind"].as_str().unwrap(),
                h["direction"].as_str().unwrap(),
                h["port"].as_u64().unwrap(),
                h["remote"].as_str().unwrap(),
                h["executable"].as_str().unwrap(),
                h["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("blocked", "incoming", 22, "10.9.0.7", "/usr/sbin/sshd", 1),
            (
                "blocked",
                "outgoing",
                873,
                "10.9.0.3",
                "/usr/local/bin/backup <script>",
                1
            ),
            (
                "would-block",
                "outgoing",
                873,
                "10.9.0.3",
                "/usr/local/bin/backup <script>",
                2
            ),
        ],
        "{body}"
    );
    assert!(hits.iter().all(|h| h["host"] == "ws-01"
        && h["user"] == "root"
        && h["local"] == "10.9.0.1"
        && h["protocol"] == "tcp"));

    let (status, body) = c.curl("/api/v1/firewall/hits?host=ws-02", Some(READER), &[]);
    assert_eq!((status, body.as_str()), (200, r#"{"hits":[]}"#));
    let (status, body) = c.curl("/api/v1/firewall/hits?from=yesterday", Some(READER), &[]);
    assert_eq!(status, 400);
    assert!(body.contains("query parameter from"), "{body}");
    let (status, body) = c.curl("/api/v1/firewall/hits?kind=blocked", Some(READER), &[]);
    assert_eq!(status, 400);
    assert!(body.contains("unknown field `kind`"), "{body}");
}
