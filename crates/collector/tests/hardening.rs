//! A running collector against misbehaving clients, over real HTTPS (curl)
//! and real sockets: issues 13 (6, 7) and 14 (2, 3, 5, 6, 8). Each test was
//! written against the collector before its fix and failed there.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Running;
use connscope_collector::CollectorConfig;
use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Timestamp};
use connscope_store::{SqliteStore, Store};

const WEB1: &str = "token-of-agent-web1";
const WS1: &str = "token-of-workstation-ws1";

fn config(dir: &std::path::Path) -> CollectorConfig {
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("c.db"));
    config.tokens.insert("web1", WEB1).unwrap();
    config.tokens.insert("ws1", WS1).unwrap();
    config
}

fn start(dir: &std::path::Path, config: CollectorConfig) -> (Running, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(dir.join("c.db")).unwrap());
    (Running::start(config, store.clone()), store)
}

fn event(host: &str, seq: u64) -> ConnectionEvent {
    EventBuilder::connect(format!("10.1.0.1:{}", 30000 + seq), "10.1.0.2:22")
        .at(Timestamp::now())
        .sequence(seq)
        .host(host)
        .build()
}

fn body_of(events: &[ConnectionEvent]) -> Vec<u8> {
    let lines: Vec<String> = events
        .iter()
        .map(connscope_event::json::to_json_line)
        .collect();
    lines.join("\n").into_bytes()
}

/// POSTs `body` (identity encoding) to `path` with curl, `authorization` as
/// the whole header value; returns (status, body).
fn post(
    collector: &Running,
    dir: &std::path::Path,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (u16, String) {
    let file = dir.join(format!("body-{}", std::process::id()));
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    let authorization = authorization.map(|value| format!("Authorization: {value}"));
    let mut extra = vec![
        "--header",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        &data,
    ];
    if let Some(header) = &authorization {
        extra.extend(["--header", header.as_str()]);
    }
    collector.curl(path, None, &extra)
}

fn ingest(collector: &Running, dir: &std::path::Path, token: &str, body: &[u8]) -> (u16, String) {
    post(
        collector,
        dir,
        "/api/v1/ingest",
        Some(&format!("Bearer {token}")),
        body,
    )
}

fn get(collector: &Running, path: &str) -> (u16, String) {
    collector.curl(path, None, &[])
}

fn stored_events(store: &SqliteStore) -> u64 {
    store.agents().unwrap().iter().map(|a| a.events).sum()
}

#[test]
fn a_collector_without_agent_tokens_serves_reads_and_refuses_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("c.db"));
    let (collector, store) = start(dir.path(), config);
    let (status, body) = get(&collector, "/api/v1/hosts");
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, body) = ingest(
        &collector,
        dir.path(),
        "some-token-0123456789",
        &body_of(&[event("web1", 1)]),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("no agent tokens"), "{body}");
    assert_eq!(stored_events(&store), 0);
}

#[test]
fn an_agent_cannot_speak_for_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "# agent token hosts\nws2 token-of-workstation-ws2 ws2,ws2.lan\n",
    )
    .unwrap();
    let mut config = config(dir.path());
    config.tokens.load_file(&tokens).unwrap();
    let (collector, store) = start(dir.path(), config);

    let (status, body) = ingest(&collector, dir.path(), WEB1, &body_of(&[event("web1", 1)]));
    assert_eq!(status, 200, "{body}");
    // ws1's first batch binds it to ws1 ...
    let (status, body) = ingest(&collector, dir.path(), WS1, &body_of(&[event("ws1", 1)]));
    assert_eq!(status, 200, "{body}");
    // ... so it cannot write under web1's name, not even mixed into its own.
    for batch in [
        vec![event("web1", 2)],
        vec![event("ws1", 2), event("web1", 3)],
    ] {
        let (status, body) = ingest(&collector, dir.path(), WS1, &body_of(&batch));
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("may not write events of host"), "{body}");
    }
    // An agent whose first batch claims a host another agent speaks for is refused too.
    let mut other = config_with_tokens_file(dir.path());
    drop(collector);
    other
        .tokens
        .insert("ws3", "token-of-workstation-ws3")
        .unwrap();
    let collector = Running::start(other, store.clone());
    let (status, body) = ingest(
        &collector,
        dir.path(),
        "token-of-workstation-ws3",
        &body_of(&[event("web1", 1)]),
    );
    assert_eq!(status, 403, "{body}");
    // Bindings from the tokens file: any of its hosts, nothing else.
    let ws2 = "token-of-workstation-ws2";
    let (status, body) = ingest(
        &collector,
        dir.path(),
        ws2,
        &body_of(&[event("ws2.lan", 1)]),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = ingest(&collector, dir.path(), ws2, &body_of(&[event("ws1", 2)]));
    assert_eq!(status, 403, "{body}");

    let hosts: Vec<(String, String, u64)> = store
        .agents()
        .unwrap()
        .into_iter()
        .map(|a| (a.agent.0, a.host, a.events))
        .collect();
    assert_eq!(
        hosts,
        [
            ("web1".to_owned(), "web1".to_owned(), 1),
            ("ws1".to_owned(), "ws1".to_owned(), 1),
            ("ws2".to_owned(), "ws2.lan".to_owned(), 1),
        ]
    );
    let (_, stats) = get(&collector, "/api/v1/stats");
    for refused in ["ws2", "ws3"] {
        let counted =
            format!("{{\"agent\":\"{refused}\",\"reason\":\"host-mismatch\",\"batches\":1}}");
        assert!(stats.contains(&counted), "{stats}");
    }
}

/// The test's tokens again, for a restarted collector.
fn config_with_tokens_file(dir: &std::path::Path) -> CollectorConfig {
    let mut config = config(dir);
    let tokens = dir.join("tokens");
    config.tokens.load_file(&tokens).unwrap();
    config
}

#[test]
fn absurd_timestamps_are_refused_and_never_break_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, store) = start(dir.path(), config(dir.path()));
    let good = connscope_event::json::to_json_line(&event("web1", 1));
    for absurd in [
        "0001-01-01T00:00:00Z",
        "9000-01-01T00:00:00Z",
        "1989-12-31T23:59:59Z",
    ] {
        let at = good.find("\"@timestamp\":\"").unwrap() + 14;
        let end = at + good[at..].find('"').unwrap();
        let line = format!("{}{absurd}{}", &good[..at], &good[end..]);
        let (status, body) = ingest(&collector, dir.path(), WEB1, line.as_bytes());
        assert_eq!(status, 400, "{absurd}: {body}");
        assert!(body.contains("@timestamp"), "{body}");
    }
    let mut tomorrow = event("web1", 2);
    tomorrow.timestamp =
        Timestamp::from_nanos(Timestamp::now().as_nanos() + 2 * 86_400_000_000_000);
    let (status, body) = ingest(&collector, dir.path(), WEB1, &body_of(&[tomorrow]));
    assert_eq!(status, 400, "{body}");
    assert_eq!(stored_events(&store), 0);

    // Stored times at the ends of the range (an old store, an import) and
    // query ranges at the ends of the range answer, never panic.
    let mut extremes = vec![event("web1", 10), event("web1", 11)];
    extremes[0].timestamp = Timestamp::from_nanos(i64::MIN);
    extremes[1].timestamp = Timestamp::from_nanos(i64::MAX);
    store
        .ingest(&connscope_store::AgentId("web1".into()), &extremes)
        .unwrap();
    for query in [
        "/api/v1/graph?from=1600-01-01T00:00:00Z",
        "/api/v1/graph?from=1600-01-01T00:00:00Z&to=3000-01-01T00:00:00Z",
        "/api/v1/graph?from=-36500d",
    ] {
        let (status, body) = get(&collector, query);
        assert_eq!(status, 200, "{query}: {body}");
    }
}

#[test]
fn echoed_input_in_errors_is_cut_short() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, _store) = start(dir.path(), config(dir.path()));
    let line = connscope_event::json::to_json_line(&event("web1", 1));
    let at = line.find("\"@timestamp\":\"").unwrap() + 14;
    let long = format!("{}{}{}", &line[..at], "9".repeat(1 << 20), &line[at..]);
    let (status, body) = ingest(&collector, dir.path(), WEB1, long.as_bytes());
    assert_eq!(status, 400);
    assert!(body.len() < 1024, "{} bytes of answer", body.len());
    assert!(body.contains("@timestamp"), "{body}");
}

#[test]
fn small_mistakes_of_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, store) = start(dir.path(), config(dir.path()));
    // RFC 7235: the scheme is case-insensitive.
    let (status, body) = post(
        &collector,
        dir.path(),
        "/api/v1/ingest",
        Some(&format!("bearer {WEB1}")),
        &body_of(&[event("web1", 1)]),
    );
    assert_eq!(status, 200, "{body}");
    // Host names are DNS names: at most 253 bytes.
    let long = "a".repeat(254);
    let tokens = dir.path().join("long");
    std::fs::write(&tokens, format!("long token-of-long-host-0123 {long}\n")).unwrap();
    assert!(config(dir.path()).tokens.load_file(&tokens).is_err());
    let (status, body) = ingest(&collector, dir.path(), WEB1, &body_of(&[event(&long, 2)]));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("host.name"), "{body}");
    assert_eq!(stored_events(&store), 1);
}

#[test]
fn a_slow_upload_is_cut_at_the_request_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.request_deadline = Duration::from_secs(2);
    let (collector, _store) = start(dir.path(), config);
    let file = dir.path().join("slow");
    std::fs::write(&file, body_of(&[event("web1", 1), event("web1", 2)])).unwrap();
    let started = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["--silent", "--max-time", "30", "--limit-rate", "20"])
        .args(["--write-out", "%{http_code}", "--output", "/dev/null"])
        .arg("--cacert")
        .arg(&collector.cert)
        .args(["--header", &format!("Authorization: Bearer {WEB1}")])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/api/v1/ingest", collector.url()))
        .output()
        .unwrap();
    let took = started.elapsed();
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        took < Duration::from_secs(10),
        "the upload ran {took:?} (status {status})"
    );
    assert!(status == "408" || status == "000", "status {status}");
}

#[test]
fn refused_batches_are_counted_by_agent_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, store) = start(dir.path(), config_with_limit(dir.path(), 200));
    let batch = body_of(&[event("web1", 1), event("web1", 2)]);
    assert!(batch.len() > 200);
    let (status, _) = ingest(&collector, dir.path(), WEB1, &batch);
    assert_eq!(status, 413);
    let (status, _) = ingest(&collector, dir.path(), WS1, b"{}");
    assert_eq!(status, 400);
    let (_, stats) = get(&collector, "/api/v1/stats");
    assert!(stats.contains("\"batches_refused\":2"), "{stats}");
    assert!(
        stats.contains("\"refusals\":[{\"agent\":\"web1\",\"reason\":\"too-large\",\"batches\":1},{\"agent\":\"ws1\",\"reason\":\"bad-event\",\"batches\":1}]"),
        "{stats}"
    );
    // Kept in the store: the hosts listing shows them, after a restart too.
    drop(collector);
    let collector = Running::start(config_with_limit(dir.path(), 200), store);
    let (status, hosts) = get(&collector, "/api/v1/hosts");
    assert_eq!(status, 200);
    let hosts: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    let refused: Vec<(String, serde_json::Value, u64)> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["agent"].as_str().unwrap().to_owned(),
                row["refused"].clone(),
                row["events"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("web1".into(), serde_json::json!({"too-large": 1}), 0),
            ("ws1".into(), serde_json::json!({"bad-event": 1}), 0),
        ]
    );
}

fn config_with_limit(dir: &std::path::Path, body_limit: u64) -> CollectorConfig {
    let mut config = config(dir);
    config.body_limit = body_limit;
    config
}

/// Counts how many of `streams` the collector has closed (read gives EOF or
/// an error) within `wait`.
fn closed_by_peer(streams: &mut [TcpStream], wait: Duration) -> usize {
    let mut closed = 0;
    for stream in streams {
        stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => closed += 1,
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut =>
            {
                closed += 1
            }
            _ => {}
        }
    }
    closed
}

#[test]
fn idle_syslog_connections_are_capped_and_agents_still_get_through() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.syslog_listen = Some("127.0.0.1:0".parse().unwrap());
    config.syslog_limits.idle_timeout = Duration::from_secs(3);
    let (collector, store) = start(dir.path(), config);
    let syslog = collector.syslog.unwrap();
    let per_source = connscope_collector::config::DEFAULT_SYSLOG_LIMITS.max_per_source;
    // A sender that keeps sending, then idle connections from the same
    // address: only as many as the cap allows stay.
    let mut sender = TcpStream::connect(syslog).unwrap();
    let mut idle: Vec<TcpStream> = (0..per_source + 40)
        .map(|_| TcpStream::connect(syslog).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let closed = closed_by_peer(&mut idle[..], Duration::from_millis(5));
    assert_eq!(closed, 41, "connections over the per-source cap are closed");
    // Agents are served meanwhile.
    let (status, body) = ingest(&collector, dir.path(), WEB1, &body_of(&[event("web1", 1)]));
    assert_eq!(status, 200, "{body}");
    assert_eq!(stored_events(&store), 1);
    // The idle ones are closed after the idle timeout; a working sender is not.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        sender
            .write_all(b"<13>Nov 24 19:22:17 h1 other: hi\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        closed_by_peer(&mut idle[..], Duration::from_millis(5)),
        idle.len()
    );
    sender
        .write_all(b"<13>Nov 24 19:22:17 h1 other: hi\n")
        .unwrap();
    assert_eq!(
        closed_by_peer(
            std::slice::from_mut(&mut sender),
            Duration::from_millis(100)
        ),
        0
    );
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_collector, _store) = start(dir.path(), config(dir.path()));
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "{line}");
}
