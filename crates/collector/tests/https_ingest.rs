//! Agent -> collector over real TLS on loopback, into a real SQLite file:
//! the shipping output against a running collector, through an outage, with
//! wrong credentials, and with batches the collector must refuse.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_for, Running};
use connscope_collector::CollectorConfig;
use connscope_event::{ConnectionEvent, Direction, EventKind, Protocol, Timestamp};
use connscope_store::{SqliteStore, Store};
use connscope_transport::{
    ClientError, CollectorClient, CollectorTrust, Fingerprint, ShippingConfig, ShippingOutput,
};

const TOKEN: &str = "token-of-agent-web1";

fn config(dir: &std::path::Path, listen: &str) -> CollectorConfig {
    let mut config = CollectorConfig::new(listen.parse().unwrap(), dir.join("connscope.db"));
    config.tokens.insert("web1", TOKEN).unwrap();
    config
}

fn events(first: u64, count: u64) -> Vec<ConnectionEvent> {
    (first..first + count)
        .map(|seq| {
            let mut ev = ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(1_790_000_000_000_000_000 + seq as i64 * 1000),
                Protocol::Tcp,
                Direction::Outgoing,
                format!("10.1.0.1:{}", 30000 + seq % 30000).parse().unwrap(),
                "10.1.0.2:22".parse().unwrap(),
            );
            ev.sequence = seq;
            ev.host = "web1".into();
            ev
        })
        .collect()
}

/// The agent's shipping output, pinned to `collector`'s fingerprint.
fn shipping_to(collector: &Running, spool_dir: &std::path::Path) -> ShippingOutput {
    ShippingOutput::start(&ShippingConfig {
        url: collector.url(),
        token: TOKEN.into(),
        trust: CollectorTrust::Fingerprint(collector.fingerprint),
        spool_dir: spool_dir.to_owned(),
        spool_max_bytes: 64 << 20,
    })
    .unwrap()
}

/// This test's agent, talking to `collector` with its certificate pinned.
fn agent_client(collector: &Running) -> CollectorClient {
    CollectorClient::new(
        &collector.url(),
        TOKEN,
        &CollectorTrust::Fingerprint(collector.fingerprint),
    )
    .unwrap()
}

fn stored(store: &SqliteStore) -> (u64, Vec<(u64, u64)>) {
    store
        .agents()
        .unwrap()
        .into_iter()
        .find(|a| a.agent.0 == "web1")
        .map(|a| (a.events, a.sequences.ranges().to_vec()))
        .unwrap_or_default()
}

#[test]
fn batches_arrive_exactly_once_through_a_collector_outage() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    let collector = Running::start(config(dir.path(), "127.0.0.1:0"), store.clone());
    let addr = collector.addr;
    let mut output = shipping_to(&collector, &dir.path().join("spool"));
    for i in 0..10 {
        output.send(&events(1 + i * 100, 100)).unwrap();
    }
    wait_for("the first 1000 events", || stored(&store).0 == 1000);

    // Outage: the collector is gone, the agent keeps spooling.
    drop(collector);
    for i in 10..30 {
        output.send(&events(1 + i * 100, 100)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stored(&store).0, 1000);
    assert!(output.stats().spool.events > 0);

    let collector = Running::start(config(dir.path(), &addr.to_string()), store.clone());
    wait_for("all 3000 events", || stored(&store).0 == 3000);
    assert_eq!(stored(&store).1, vec![(1, 3000)], "gap-free, nothing twice");
    wait_for("an empty spool", || output.stats().spool.batches == 0);
    assert_eq!(
        collector.counters.events_duplicate.load(Ordering::Relaxed),
        0
    );
    output.shutdown(Duration::from_secs(5));
}

#[test]
fn an_agent_restart_resends_nothing_twice_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    let spool_dir = dir.path().join("spool");
    // Spooled while no collector runs, then the agent stops.
    let unreachable = ShippingConfig {
        url: "https://127.0.0.1:9".into(),
        token: TOKEN.into(),
        trust: CollectorTrust::Fingerprint(Fingerprint::of(b"nothing")),
        spool_dir: spool_dir.clone(),
        spool_max_bytes: 64 << 20,
    };
    let mut output = ShippingOutput::start(&unreachable).unwrap();
    output.send(&events(1, 50)).unwrap();
    output.send(&events(51, 50)).unwrap();
    output.shutdown(Duration::ZERO);

    let collector = Running::start(config(dir.path(), "127.0.0.1:0"), store.clone());
    // The same batch again, as a retry after a lost answer would send it.
    let mut client = CollectorClient::new(
        &collector.url(),
        TOKEN,
        &CollectorTrust::CaFile(collector.cert.clone()),
    )
    .unwrap();
    let answer = client
        .post_batch(connscope_protocol::batch::encode_body(&events(1, 50)))
        .unwrap();
    assert_eq!((answer.stored, answer.duplicates), (50, 0));

    let output = ShippingOutput::start(&ShippingConfig {
        url: collector.url(),
        trust: CollectorTrust::CaFile(collector.cert.clone()),
        ..unreachable
    })
    .unwrap();
    wait_for("100 events", || stored(&store).0 == 100);
    wait_for("an empty spool", || output.stats().spool.batches == 0);
    assert_eq!(output.stats().events_duplicate, 50);
    assert_eq!(stored(&store).1, vec![(1, 100)]);
}

#[test]
fn wrong_credentials_are_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    let collector = Running::start(config(dir.path(), "127.0.0.1:0"), store.clone());

    let mut client = CollectorClient::new(
        &collector.url(),
        "not-the-token-of-anyone",
        &CollectorTrust::Fingerprint(collector.fingerprint),
    )
    .unwrap();
    let err = client
        .post_batch(connscope_protocol::batch::encode_body(&events(1, 1)))
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Status { status, .. } if status.as_u16() == 401),
        "{err}"
    );
    assert!(
        !err.is_permanent(),
        "a token problem is fixed by config, so it is retried"
    );

    let mut client = CollectorClient::new(
        &collector.url(),
        TOKEN,
        &CollectorTrust::Fingerprint(Fingerprint::of(b"another certificate")),
    )
    .unwrap();
    let err = client
        .post_batch(connscope_protocol::batch::encode_body(&events(1, 1)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match the pinned"), "{err}");
    assert_eq!(stored(&store).0, 0);
    assert_eq!(collector.counters.unauthorized.load(Ordering::Relaxed), 1);
}

#[test]
fn bad_batches_are_refused_whole_with_the_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    let mut config = config(dir.path(), "127.0.0.1:0");
    config.decompressed_limit = 1 << 20;
    let collector = Running::start(config, store.clone());
    let mut client = agent_client(&collector);

    let mut lines: Vec<String> = events(1, 3)
        .iter()
        .map(connscope_event::json::to_json_line)
        .collect();
    lines[1] = lines[1].replace("\"tcp\"", "\"sctp\"");
    let body = gzip(lines.join("\n").as_bytes());
    let err = client.post_batch(body).unwrap_err();
    assert!(err.is_permanent());
    let message = err.to_string();
    assert!(message.contains("400"), "{message}");
    assert!(
        message.contains("line 2: field network.transport: unknown protocol \"sctp\""),
        "{message}"
    );
    assert_eq!(stored(&store).0, 0, "nothing of a refused batch is stored");

    // A zip bomb: 100 MiB of spaces in a body of about 100 KiB.
    let err = client.post_batch(gzip(&vec![b' '; 100 << 20])).unwrap_err();
    assert!(err.is_permanent());
    assert!(err.to_string().contains("413"), "{err}");

    // A spool that refused batches keeps them aside and goes on with the next.
    let mut output = shipping_to(&collector, &dir.path().join("spool"));
    let mut bad = events(10, 1);
    bad[0].host = String::new(); // the store refuses an event without a host
    output.send(&bad).unwrap();
    output.send(&events(11, 5)).unwrap();
    wait_for("the good batch", || stored(&store).0 == 5);
    assert_eq!(
        std::fs::read_dir(dir.path().join("spool/rejected"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(
        collector.counters.batches_refused.load(Ordering::Relaxed),
        3
    );
}

#[test]
fn a_full_spool_reports_what_it_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    let spool_dir = dir.path().join("spool");
    let one_batch = connscope_protocol::batch::encode_body(&events(1, 100)).len() as u64 + 48;
    let offline = ShippingConfig {
        url: "https://127.0.0.1:9".into(),
        token: TOKEN.into(),
        trust: CollectorTrust::Fingerprint(Fingerprint::of(b"nothing")),
        spool_dir: spool_dir.clone(),
        spool_max_bytes: one_batch * 3,
    };
    let mut output = ShippingOutput::start(&offline).unwrap();
    for i in 0..5 {
        output.send(&events(1 + i * 100, 100)).unwrap();
    }
    assert!(output.stats().events_dropped >= 200);
    output.shutdown(Duration::ZERO);

    let collector = Running::start(config(dir.path(), "127.0.0.1:0"), store.clone());
    let output = ShippingOutput::start(&ShippingConfig {
        url: collector.url(),
        trust: CollectorTrust::Fingerprint(collector.fingerprint),
        ..offline
    })
    .unwrap();
    wait_for("the kept batches", || output.stats().spool.batches == 0);
    let (events_stored, ranges) = stored(&store);
    let dropped = collector
        .counters
        .events_dropped_by_agents
        .load(Ordering::Relaxed);
    assert_eq!(
        events_stored + dropped,
        500,
        "every event is stored or reported dropped"
    );
    assert_eq!(ranges.last().unwrap().1, 500, "the newest events are kept");
    // The oldest batches went first; the one the shipper was trying to send
    // at the time may have been spared.
    assert!(
        events_stored >= 200 && dropped >= 200,
        "{events_stored} stored, {dropped} dropped"
    );
    // The store knows which numbers were dropped: the whole gap is explained.
    let agents = store.agents().unwrap();
    let gaps = agents[0].gaps();
    assert_eq!(gaps.missing, dropped);
    assert_eq!(gaps.dropped, dropped);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// GETs an API path with curl (a real, independent client), verifying the
/// collector's certificate; returns (status, body).
fn curl(collector: &Running, path: &str, token: Option<&str>) -> (u16, String) {
    collector.curl(path, token, &[])
}

/// As [`curl`], with more curl arguments (a method, a body).
fn curl_with(
    collector: &Running,
    path: &str,
    token: Option<&str>,
    extra: &[&str],
) -> (u16, String) {
    collector.curl(path, token, extra)
}

#[test]
fn queries_need_a_reader_token_and_answer_json() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("connscope.db")).unwrap());
    let mut config = config(dir.path(), "127.0.0.1:0");
    config
        .read_tokens
        .insert("map", "reader-token-0123456789")
        .unwrap();
    let collector = Running::start(config, store.clone());
    let mut client = agent_client(&collector);
    let mut batch = events(1, 4);
    for e in &mut batch {
        e.timestamp = Timestamp::now();
    }
    client
        .post_batch(connscope_protocol::batch::encode_body(&batch))
        .unwrap();

    assert_eq!(curl(&collector, "/api/v1/hosts", None).0, 401);
    assert_eq!(
        curl(&collector, "/api/v1/hosts", Some(TOKEN)).0,
        401,
        "agent tokens only write"
    );
    let (status, body) = curl(&collector, "/api/v1/hosts", Some("reader-token-0123456789"));
    assert_eq!(status, 200, "{body}");
    let hosts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(hosts[0]["agent"], "web1");
    assert_eq!(hosts[0]["events"], 4);
    assert_eq!(hosts[0]["sequences"], serde_json::json!([[1, 4]]));

    let (status, body) = curl(
        &collector,
        "/api/v1/graph?from=-1h&to=now&port=22",
        Some("reader-token-0123456789"),
    );
    assert_eq!(status, 200, "{body}");
    let graph: serde_json::Value = serde_json::from_str(&body).unwrap();
    let edges = graph["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{body}");
    assert_eq!(edges[0]["source"], "host:web1");
    assert_eq!(edges[0]["target"], "external:10.1.0.2");
    assert_eq!(edges[0]["connections"], 4);

    let (status, body) = curl(
        &collector,
        "/api/v1/graph?from=yesterday",
        Some("reader-token-0123456789"),
    );
    assert_eq!(status, 400);
    assert!(body.contains("query parameter from"), "{body}");
}

const READER: &str = "reader-token-0123456789";

fn reader_collector(dir: &std::path::Path) -> (Running, CollectorClient) {
    let store = Arc::new(SqliteStore::open(dir.join("connscope.db")).unwrap());
    let mut config = config(dir, "127.0.0.1:0");
    config.read_tokens.insert("map", READER).unwrap();
    let collector = Running::start(config, store);
    let client = agent_client(&collector);
    (collector, client)
}

fn recent(first: u64, count: u64) -> Vec<ConnectionEvent> {
    let mut batch = events(first, count);
    for e in &mut batch {
        e.timestamp = Timestamp::now();
    }
    batch
}

/// POSTs a ruleset to the firewall check of web1 in the last hour.
fn check_ruleset(collector: &Running, dir: &std::path::Path, ruleset: &[u8]) -> (u16, String) {
    let file = dir.join("ruleset.nft");
    std::fs::write(&file, ruleset).unwrap();
    let data = format!("@{}", file.display());
    curl_with(
        collector,
        "/api/v1/firewall/check?host=web1&from=-1h&to=now",
        Some(READER),
        &["--data-binary", &data],
    )
}

#[test]
fn the_firewall_check_names_the_edges_a_ruleset_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (collector, mut client) = reader_collector(dir.path());
    client
        .post_batch(connscope_protocol::batch::encode_body(&recent(1, 3)))
        .unwrap();
    let mut http = recent(4, 2);
    for e in &mut http {
        e.remote = "10.1.0.3:80".parse().unwrap();
    }
    client
        .post_batch(connscope_protocol::batch::encode_body(&http))
        .unwrap();

    let ruleset = b"table inet filter {\n  chain output {\n    type filter hook output priority filter; policy accept;\n    tcp dport 22 drop\n  }\n}\n";
    let (status, body) = check_ruleset(&collector, dir.path(), ruleset);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (answer["blocked"].as_u64(), answer["allowed"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    let edges = answer["edges"].as_array().unwrap();
    let ssh = edges.iter().find(|e| e["port"] == 22).unwrap();
    assert_eq!(ssh["source"], "host:web1");
    assert_eq!(ssh["target"], "external:10.1.0.2");
    assert_eq!(ssh["verdict"], "blocked");
    assert_eq!(ssh["connections"], 3);
    assert!(
        ssh["dropped_by"][0]
            .as_str()
            .unwrap()
            .starts_with("ruleset:4:5: "),
        "{body}"
    );
    let web = edges.iter().find(|e| e["port"] == 80).unwrap();
    assert_eq!(
        (web["target"].as_str(), web["verdict"].as_str()),
        (Some("external:10.1.0.3"), Some("allowed"))
    );

    // A match on the (unknown) interface: may be blocked, and says why.
    let maybe = b"table inet filter {\n  chain output {\n    type filter hook output priority 0; policy accept;\n    oifname \"eth9\" tcp dport 80 drop\n  }\n}\n";
    let (status, body) = check_ruleset(&collector, dir.path(), maybe);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["maybe_blocked"], 1, "{body}");
    let web = answer["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["port"] == 80)
        .unwrap()
        .clone();
    assert_eq!(web["verdict"], "maybe-blocked");
    assert!(!web["unknowns"].as_array().unwrap().is_empty(), "{body}");

    let (status, body) = check_ruleset(
        &collector,
        dir.path(),
        b"table inet filter {\n  chain output {\n    tcp dport 70000 drop\n  }\n}\n",
    );
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["line"], 3, "{body}");
    assert!(error["column"].as_u64().is_some(), "{body}");
    assert!(
        error["error"].as_str().unwrap().starts_with("ruleset:3:"),
        "{body}"
    );

    let (status, body) = check_ruleset(&collector, dir.path(), &vec![b' '; (1 << 20) + 1]);
    assert_eq!(status, 413, "{body}");
    let (status, body) = curl_with(
        &collector,
        "/api/v1/firewall/check",
        Some(READER),
        &["--data-binary", "table inet f {}"],
    );
    assert_eq!(status, 400);
    assert!(body.contains("query parameter host"), "{body}");
    let (status, _) = curl_with(
        &collector,
        "/api/v1/firewall/check?host=web1",
        Some(TOKEN),
        &["--data-binary", "table inet f {}"],
    );
    assert_eq!(status, 401, "agent tokens only write");
}

#[test]
fn the_event_stream_tells_followers_about_each_stored_batch() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let (collector, mut client) = reader_collector(dir.path());
    assert_eq!(curl(&collector, "/api/v1/events/stream", None).0, 401);

    let mut follower = std::process::Command::new("curl")
        .args(["--silent", "--no-buffer", "--max-time", "120", "--cacert"])
        .arg(&collector.cert)
        .args(["--header", &format!("Authorization: Bearer {READER}")])
        .arg(format!("{}/api/v1/events/stream", collector.url()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl is installed");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let next_event = |kind: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut current = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {kind} event"));
            if let Some(name) = line.strip_prefix("event:") {
                current = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                if current == kind {
                    return data.trim().to_owned();
                }
            }
        }
    };
    next_event("ready");
    client
        .post_batch(connscope_protocol::batch::encode_body(&recent(1, 3)))
        .unwrap();
    let notice: serde_json::Value = serde_json::from_str(&next_event("ingest")).unwrap();
    assert_eq!(notice["source"], "agent");
    assert_eq!(notice["agent"], "web1");
    assert_eq!(
        (notice["stored"].as_u64(), notice["duplicates"].as_u64()),
        (Some(3), Some(0))
    );
    assert!(notice["first"].as_str().unwrap() <= notice["last"].as_str().unwrap());
    // A resent batch stores nothing and tells nobody; the next new one does.
    client
        .post_batch(connscope_protocol::batch::encode_body(&recent(1, 3)))
        .unwrap();
    client
        .post_batch(connscope_protocol::batch::encode_body(&recent(4, 1)))
        .unwrap();
    let notice: serde_json::Value = serde_json::from_str(&next_event("ingest")).unwrap();
    assert_eq!(notice["stored"], 1, "{notice}");
    let _ = follower.kill();
    let _ = follower.wait();
}
