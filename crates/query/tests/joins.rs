//! The join of a connection's two records, on a real SQLite store: two
//! tcpspy-like pollers that each miss a different subset of short
//! connections. The joined count must be the union, and every edge must say
//! which rule produced its count.

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Direction, Timestamp};
use connscope_query::join::load_edges;
use connscope_query::report::{edges_report, Format};
use connscope_query::{build_graph, GraphFilter};
use connscope_store::{AgentId, Retention, SqliteStore, Store, TimeRange};

const T0: i64 = 1_795_548_029_500_000_000; // 2026-11-24T19:20:29.5Z
const SECOND: i64 = 1_000_000_000;
/// Short DNS-over-TCP connections from the workstation to the name server.
const CONNECTIONS: u16 = 100;

fn connect(host: &str, at_ns: i64, dir: Direction, local: &str, remote: &str) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .at_nanos(at_ns)
        .direction(dir)
        .host(host)
        .build()
}

/// `ws1` (10.0.0.1) makes `CONNECTIONS` connections to `ns1` (10.0.0.2:53),
/// 30 s apart over 50 minutes, each from its own port. Both log with
/// one-second polling: `ns1` sees each connection 1.9 s after `ws1` did, or
/// 0.4 s before (so one at 19:59:59.5 is 20:00:01.4 to `ns1`, another hour). `ws1` misses every fourth
/// connection, `ns1` every fourth shifted by two: each logs 75 of 100, and
/// together they saw 100 — the max rule says 75, 25% low.
///
/// Besides: `ws1` to an outside web server (only its client logs it) and an
/// outside client of `ns1` (only its server logs it).
fn two_pollers(store: &SqliteStore) {
    let (mut client, mut server) = (Vec::new(), Vec::new());
    for i in 0..CONNECTIONS {
        let at = T0 + i64::from(i) * 30 * SECOND;
        let port = 40_000 + i;
        if i % 4 != 0 {
            client.push(connect(
                "ws1",
                at,
                Direction::Outgoing,
                &format!("10.0.0.1:{port}"),
                "10.0.0.2:53",
            ));
        }
        if i % 4 != 2 {
            let lag = if i % 2 == 1 {
                1_900_000_000
            } else {
                -400_000_000
            };
            server.push(connect(
                "ns1",
                at + lag,
                Direction::Incoming,
                "10.0.0.2:53",
                &format!("10.0.0.1:{port}"),
            ));
        }
    }
    client.push(connect(
        "ws1",
        T0,
        Direction::Outgoing,
        "10.0.0.1:50000",
        "192.0.2.80:443",
    ));
    server.push(connect(
        "ns1",
        T0,
        Direction::Incoming,
        "10.0.0.2:53",
        "203.0.113.9:50001",
    ));
    store.ingest(&AgentId("ws1".into()), &client).unwrap();
    store.ingest(&AgentId("ns1".into()), &server).unwrap();
}

fn edges_json(store: &SqliteStore) -> Vec<serde_json::Value> {
    let report = edges_report(&load_edges(store, TimeRange::ALL).unwrap());
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    json.as_array().unwrap().clone()
}

fn edge<'a>(
    edges: &'a [serde_json::Value],
    server_ip: &str,
    client_ip: &str,
) -> &'a serde_json::Value {
    edges
        .iter()
        .find(|e| e["server_ip"] == server_ip && e["client_ip"] == client_ip)
        .unwrap_or_else(|| panic!("no edge {client_ip} -> {server_ip} in {edges:#?}"))
}

#[test]
fn records_missed_by_different_pollers_join_into_their_union() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    two_pollers(&store);

    let edges = edges_json(&store);
    assert_eq!(edges.len(), 3);
    let dns = edge(&edges, "10.0.0.2", "10.0.0.1");
    assert_eq!(dns["connections"], u64::from(CONNECTIONS), "{dns:#}");
    assert_eq!(dns["count_rule"], "joined");
    assert_eq!(dns["logged_by"], "both");
    assert_eq!(dns["client_processes"][0]["connections"], 75);
    assert_eq!(dns["server_processes"][0]["connections"], 75);
    assert_eq!(
        edge(&edges, "192.0.2.80", "10.0.0.1")["count_rule"],
        "client_only"
    );
    let outside = edge(&edges, "10.0.0.2", "203.0.113.9");
    assert_eq!(outside["count_rule"], "server_only");
    assert_eq!(outside["connections"], 1);

    // The map counts the same, its timeline too.
    let graph = build_graph(&store, TimeRange::ALL, &GraphFilter::default()).unwrap();
    let json = serde_json::to_value(&graph).unwrap();
    let dns = json["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "host:ws1" && e["target"] == "service:ns1:53/tcp")
        .unwrap();
    assert_eq!(dns["connections"], u64::from(CONNECTIONS));
    assert_eq!(dns["count_rule"], "joined");
    let on_timeline: u64 = graph.timeline.iter().map(|b| b.connections).sum();
    let on_edges: u64 = graph.edges.iter().map(|e| e.connections).sum();
    assert_eq!(on_timeline, on_edges);
    assert_eq!(on_edges, u64::from(CONNECTIONS) + 2);
}

#[test]
fn the_same_port_again_later_is_another_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    // Port 40000 used twice, a minute apart; each side saw one use only, and
    // a third record of the server's is 2.5 s off any of the client's.
    let client = [connect(
        "ws1",
        T0,
        Direction::Outgoing,
        "10.0.0.1:40000",
        "10.0.0.2:53",
    )];
    let server = [
        connect(
            "ns1",
            T0 + 60 * SECOND,
            Direction::Incoming,
            "10.0.0.2:53",
            "10.0.0.1:40000",
        ),
        connect(
            "ns1",
            T0 + 2_500_000_000,
            Direction::Incoming,
            "10.0.0.2:53",
            "10.0.0.1:40000",
        ),
    ];
    store.ingest(&AgentId("ws1".into()), &client).unwrap();
    store.ingest(&AgentId("ns1".into()), &server).unwrap();
    let edges = edges_json(&store);
    assert_eq!(edges[0]["connections"], 3, "{:#}", edges[0]);
    assert_eq!(edges[0]["count_rule"], "joined");
}

#[test]
fn where_only_rollups_remain_the_max_rule_counts_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    two_pollers(&store);
    // Raw events expire, rollups stay.
    let report = store
        .apply_retention(
            &Retention {
                raw_events: std::time::Duration::ZERO,
                rollups: None,
            },
            Timestamp::from_nanos(T0 + 86_400 * SECOND),
        )
        .unwrap();
    assert_eq!(report.events_deleted, 152);

    let edges = edges_json(&store);
    let dns = edge(&edges, "10.0.0.2", "10.0.0.1");
    // The larger side per hour: ws1's 60 before 20:00, ns1's 16 after.
    assert_eq!(dns["connections"], 76);
    assert_eq!(dns["count_rule"], "max_rule");
    // Edges logged by one side only are exact with rollups alone.
    assert_eq!(
        edge(&edges, "192.0.2.80", "10.0.0.1")["count_rule"],
        "client_only"
    );
    assert_eq!(
        edge(&edges, "10.0.0.2", "203.0.113.9")["count_rule"],
        "server_only"
    );
}
