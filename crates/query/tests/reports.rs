//! Report outputs for a small known store (real SQLite file): the exact
//! table, JSON and CSV, so a change to the stable formats cannot slip by.

use connscope_event::test_support::EventBuilder;
use connscope_event::{CloseStats, ConnectionEvent, Direction, EventKind};
use connscope_query::join::load_edges;
use connscope_query::report::{edges_report, hosts_report, ports_report, Format};
use connscope_query::{build_graph, GraphFilter};
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};

const T0: i64 = 1_795_548_137 * 1_000_000_000; // 2026-11-24T19:22:17Z

fn ev(
    seq: u64,
    secs: i64,
    host: &str,
    dir: Direction,
    local: &str,
    remote: &str,
    (exe, user): (&str, &str),
) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .at_nanos(T0 + secs * 1_000_000_000)
        .direction(dir)
        .sequence(seq)
        .host(host)
        .user(user)
        .process(7, exe)
        .build()
}

fn known_store(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir.join("store.db")).unwrap();
    let out = Direction::Outgoing;
    let inc = Direction::Incoming;
    let mut close = ev(
        3,
        60,
        "ws1",
        out,
        "10.0.0.1:40000",
        "10.0.0.2:22",
        ("/usr/bin/ssh", "joe"),
    );
    close.kind = EventKind::Disconnect;
    close.close = Some(CloseStats {
        duration_ns: 59_000_000_000,
        bytes_sent: 300,
        bytes_received: 4000,
        ..CloseStats::default()
    });
    store
        .ingest(
            &AgentId("ws1".into()),
            &[
                ev(
                    1,
                    0,
                    "ws1",
                    out,
                    "10.0.0.1:40000",
                    "10.0.0.2:22",
                    ("/usr/bin/ssh", "joe"),
                ),
                ev(
                    2,
                    5,
                    "ws1",
                    out,
                    "10.0.0.1:40001",
                    "192.0.2.10:443",
                    ("/usr/bin/curl", "joe"),
                ),
                close,
                // 4 is missing: a gap.
                ev(
                    5,
                    90,
                    "ws1",
                    out,
                    "10.0.0.1:40002",
                    "10.0.0.2:22",
                    ("/usr/bin/ssh", "joe"),
                ),
            ],
        )
        .unwrap();
    store
        .ingest(
            &AgentId("srv".into()),
            &[
                ev(
                    1,
                    0,
                    "srv",
                    inc,
                    "10.0.0.2:22",
                    "10.0.0.1:40000",
                    ("/usr/sbin/sshd", "root"),
                ),
                ev(
                    2,
                    90,
                    "srv",
                    inc,
                    "10.0.0.2:22",
                    "10.0.0.1:40002",
                    ("/usr/sbin/sshd", "root"),
                ),
                ev(
                    3,
                    100,
                    "srv",
                    inc,
                    "10.0.0.2:22",
                    "203.0.113.5:50000",
                    ("/usr/sbin/sshd", "root"),
                ),
            ],
        )
        .unwrap();
    store
}

#[test]
fn edges_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let store = known_store(dir.path());
    let report = edges_report(&load_edges(&store, TimeRange::ALL).unwrap());
    assert_eq!(
        report.render(Format::Table),
        "\
CLIENT_HOST  CLIENT_IP    SERVER_HOST  SERVER_IP   SERVER_PORT  PROTOCOL  CONNECTIONS  FAILURES  FIRST_SEEN                 LAST_SEEN                  CLIENT_PROCESSES    SERVER_PROCESSES
ws1          10.0.0.1     srv          10.0.0.2             22  tcp                 2         0  2026-11-24T19:22:17+00:00  2026-11-24T19:23:47+00:00  /usr/bin/ssh(joe)   /usr/sbin/sshd(root)
             203.0.113.5  srv          10.0.0.2             22  tcp                 1         0  2026-11-24T19:23:57+00:00  2026-11-24T19:23:57+00:00                      /usr/sbin/sshd(root)
ws1          10.0.0.1                  192.0.2.10          443  tcp                 1         0  2026-11-24T19:22:22+00:00  2026-11-24T19:22:22+00:00  /usr/bin/curl(joe)
"
    );
    assert_eq!(
        report.render(Format::Csv),
        "\
client_host,client_ip,server_host,server_ip,server_port,protocol,connections,failures,first_seen,last_seen,client_processes,server_processes
ws1,10.0.0.1,srv,10.0.0.2,22,tcp,2,0,2026-11-24T19:22:17+00:00,2026-11-24T19:23:47+00:00,/usr/bin/ssh(joe),/usr/sbin/sshd(root)
,203.0.113.5,srv,10.0.0.2,22,tcp,1,0,2026-11-24T19:23:57+00:00,2026-11-24T19:23:57+00:00,,/usr/sbin/sshd(root)
ws1,10.0.0.1,,192.0.2.10,443,tcp,1,0,2026-11-24T19:22:22+00:00,2026-11-24T19:22:22+00:00,/usr/bin/curl(joe),
"
    );
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    assert_eq!(
        json[0],
        serde_json::json!({
            "client_ip": "10.0.0.1", "client_host": "ws1",
            "server_ip": "10.0.0.2", "server_host": "srv",
            "server_port": 22, "protocol": "tcp",
            "connections": 2, "failures": 0,
            "bytes_to_server": 300, "bytes_to_client": 4000,
            "first_seen": "2026-11-24T19:22:17+00:00", "last_seen": "2026-11-24T19:23:47+00:00",
            "client_processes": [{"host": "ws1", "executable": "/usr/bin/ssh", "user": "joe", "connections": 2}],
            "server_processes": [{"host": "srv", "executable": "/usr/sbin/sshd", "user": "root", "connections": 2}],
            "logged_by": "both", "count_rule": "joined"
        })
    );
    assert_eq!(json[1]["client_host"], serde_json::Value::Null);
    assert_eq!(json[1]["logged_by"], "server");
    assert_eq!(json[1]["count_rule"], "server_only");
    assert_eq!(json.as_array().unwrap().len(), 3);
}

#[test]
fn hosts_show_gaps_and_ports_show_services() {
    let dir = tempfile::tempdir().unwrap();
    let store = known_store(dir.path());
    // ws1's agent reports it deleted number 4 from its full spool.
    store
        .record_dropped(&AgentId("ws1".into()), &[(4, 4)])
        .unwrap();
    assert_eq!(
        hosts_report(&store.agents().unwrap()).render(Format::Table),
        "\
HOST  AGENT  EVENTS  LAST_SEEN                  SEQUENCES  MISSING  DROPPED  GAPS
srv   srv         3  2026-11-24T19:23:57+00:00  1-3              0        0
ws1   ws1         4  2026-11-24T19:23:47+00:00  1-3 5            1        1  4
"
    );
    let hosts_json: serde_json::Value =
        serde_json::from_str(&hosts_report(&store.agents().unwrap()).render(Format::Json)).unwrap();
    assert_eq!(hosts_json[1]["gaps"], serde_json::json!([[4, 4]]));
    assert_eq!(
        ports_report(&load_edges(&store, TimeRange::ALL).unwrap()).render(Format::Csv),
        "\
server,port,protocol,connections,clients,first_seen,last_seen,processes
192.0.2.10,443,tcp,1,1,2026-11-24T19:22:22+00:00,2026-11-24T19:22:22+00:00,
srv,22,tcp,3,2,2026-11-24T19:22:17+00:00,2026-11-24T19:23:57+00:00,/usr/sbin/sshd
"
    );
}

#[test]
fn graph_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = known_store(dir.path());
    let graph = build_graph(&store, TimeRange::ALL, &GraphFilter::default()).unwrap();
    let json = serde_json::to_value(&graph).unwrap();
    let ids: Vec<&str> = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "external:192.0.2.10",
            "external:203.0.113.5",
            "host:srv",
            "host:ws1",
            "service:srv:22/tcp"
        ]
    );
    assert_eq!(json["nodes"][1]["internal"], false);
    let edges: Vec<String> = graph
        .edges
        .iter()
        .map(|e| format!("{} -> {} x{}", e.source, e.target, e.connections))
        .collect();
    assert_eq!(
        edges,
        [
            "external:203.0.113.5 -> service:srv:22/tcp x1",
            "host:ws1 -> external:192.0.2.10 x1",
            "host:ws1 -> service:srv:22/tcp x2"
        ]
    );
}

#[test]
fn timeline_counts_each_connection_once_per_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let ssh = ("/usr/bin/ssh", "joe");
    let sshd = ("/usr/sbin/sshd", "root");
    let hour = 3_600;
    // One connection logged by both ends, then two hours later one logged by
    // the client only.
    let client = [
        ev(
            1,
            0,
            "ws1",
            Direction::Outgoing,
            "10.0.0.1:40000",
            "10.0.0.2:22",
            ssh,
        ),
        ev(
            2,
            2 * hour,
            "ws1",
            Direction::Outgoing,
            "10.0.0.1:40001",
            "10.0.0.2:22",
            ssh,
        ),
    ];
    let server = [ev(
        1,
        0,
        "srv",
        Direction::Incoming,
        "10.0.0.2:22",
        "10.0.0.1:40000",
        sshd,
    )];
    store.ingest(&AgentId("ws1".into()), &client).unwrap();
    store.ingest(&AgentId("srv".into()), &server).unwrap();

    let graph = build_graph(&store, TimeRange::ALL, &GraphFilter::default()).unwrap();
    let bars: Vec<(String, u64, u64)> = graph
        .timeline
        .iter()
        .map(|b| (b.start.to_string(), b.width_seconds, b.connections))
        .collect();
    assert_eq!(
        bars,
        [
            ("2026-11-24T19:00:00.000000000Z".to_owned(), 3600, 1),
            ("2026-11-24T20:00:00.000000000Z".to_owned(), 3600, 0),
            ("2026-11-24T21:00:00.000000000Z".to_owned(), 3600, 1),
        ]
    );
    let total: u64 = graph.edges.iter().map(|e| e.connections).sum();
    assert_eq!(total, 2, "the bars add up to the edges");

    // A filter that matches nothing leaves no bars.
    let none = GraphFilter {
        port: Some(80),
        ..GraphFilter::default()
    };
    let graph = build_graph(&store, TimeRange::ALL, &none).unwrap();
    assert!(graph.timeline.is_empty());
}
