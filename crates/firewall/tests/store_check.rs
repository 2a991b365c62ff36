//! `check` on data read back from a real SQLite store: a hand-written ruleset
//! that blocks one known service lists exactly that service's connections.

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Direction, Timestamp};
use connscope_firewall::from_store::observed_flows;
use connscope_firewall::{check, nft, FlowDirection, Outcome};
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};

fn event(
    seq: u64,
    dir: Direction,
    local: &str,
    remote: &str,
    exe: &str,
    t: i64,
) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .at_nanos(1_795_548_137_000_000_000 + t * 1_000_000_000)
        .direction(dir)
        .sequence(seq)
        .host("web1")
        .process(100, exe)
        .user("www-data")
        .build()
}

/// A bounded range: `TimeRange::ALL` overflows the store's hour rounding.
fn since_1970() -> TimeRange {
    TimeRange {
        from: Timestamp::from_nanos(0),
        to: Timestamp::from_nanos(i64::MAX / 2),
    }
}

#[test]
fn a_ruleset_blocking_http_lists_exactly_the_http_connections() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let events = vec![
        event(
            1,
            Direction::Incoming,
            "192.0.2.10:22",
            "198.51.100.1:40001",
            "/usr/sbin/sshd",
            0,
        ),
        event(
            2,
            Direction::Incoming,
            "192.0.2.10:22",
            "198.51.100.2:40002",
            "/usr/sbin/sshd",
            10,
        ),
        event(
            3,
            Direction::Incoming,
            "192.0.2.10:80",
            "198.51.100.1:40003",
            "/usr/sbin/nginx",
            20,
        ),
        event(
            4,
            Direction::Incoming,
            "192.0.2.10:80",
            "198.51.100.1:40004",
            "/usr/sbin/nginx",
            30,
        ),
        event(
            5,
            Direction::Incoming,
            "192.0.2.10:80",
            "198.51.100.3:40005",
            "/usr/sbin/nginx",
            40,
        ),
        event(
            6,
            Direction::Outgoing,
            "192.0.2.10:40006",
            "203.0.113.9:80",
            "/usr/bin/curl",
            50,
        ),
        event(
            7,
            Direction::Outgoing,
            "192.0.2.10:40007",
            "203.0.113.9:443",
            "/usr/bin/curl",
            60,
        ),
    ];
    store
        .ingest(&AgentId("web1-agent".into()), &events)
        .unwrap();

    let stored = observed_flows(&store, "web1", since_1970()).unwrap();
    assert_eq!(stored.flows.len(), 6, "{:?}", stored.flows);
    let ruleset = nft::parse_str(
        "block-http.nft",
        "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp dport 80 drop\n\t}\n}\n",
    )
    .unwrap();
    let verdicts = check(&ruleset, &stored.flows);
    let blocked: Vec<_> = stored
        .flows
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| v.outcome != Outcome::Allowed)
        .map(|(f, _)| {
            (
                f.direction,
                f.remote.to_string(),
                f.service_port,
                f.connections,
            )
        })
        .collect();
    assert_eq!(
        blocked,
        [
            (FlowDirection::Inbound, "198.51.100.1".to_owned(), 80, 2),
            (FlowDirection::Inbound, "198.51.100.3".to_owned(), 80, 1),
        ]
    );
    // The outbound connection to port 80 crosses the output hook: untouched.
    let http_flow = stored
        .flows
        .iter()
        .find(|f| f.service_port == 80 && f.connections == 2)
        .unwrap();
    assert_eq!(http_flow.processes, ["/usr/sbin/nginx"]);
    assert_eq!(http_flow.users, ["www-data"]);
}

/// The map's firewall mode colours graph edges: every verdict carries the id
/// of an edge `build_graph` draws, with the same ends, and a flow to another
/// monitored host lands on that host's service node.
#[test]
fn the_map_check_keys_verdicts_by_the_graphs_edge_ids() {
    use connscope_firewall::map_check::check_edges;
    use connscope_query::{build_graph, GraphFilter};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let web1 = vec![
        event(
            1,
            Direction::Outgoing,
            "192.0.2.10:40001",
            "192.0.2.20:5432",
            "/usr/bin/app",
            0,
        ),
        event(
            2,
            Direction::Outgoing,
            "192.0.2.10:40002",
            "203.0.113.9:443",
            "/usr/bin/curl",
            10,
        ),
        event(
            3,
            Direction::Incoming,
            "192.0.2.10:22",
            "198.51.100.1:40003",
            "/usr/sbin/sshd",
            20,
        ),
    ];
    let mut db1 = event(
        1,
        Direction::Incoming,
        "192.0.2.20:5432",
        "192.0.2.10:40001",
        "/usr/sbin/postgres",
        0,
    );
    db1.host = "db1".into();
    store.ingest(&AgentId("web1-agent".into()), &web1).unwrap();
    store.ingest(&AgentId("db1-agent".into()), &[db1]).unwrap();

    let ruleset = nft::read_ruleset(
        "block-pg.nft",
        "table inet filter {\n\tchain output {\n\t\ttype filter hook output priority 0; policy accept;\n\t\ttcp dport 5432 drop\n\t}\n}\n",
    )
    .unwrap();
    let checks = check_edges(&store, "web1", since_1970(), &ruleset).unwrap();
    let graph = build_graph(&store, since_1970(), &GraphFilter::default()).unwrap();
    assert_eq!(checks.edges.len(), 3, "{checks:?}");
    for verdict in &checks.edges {
        let edge = graph.edges.iter().find(|e| e.id == verdict.id);
        let edge = edge.unwrap_or_else(|| panic!("{} is no graph edge", verdict.id));
        assert_eq!(
            (&edge.source, &edge.target),
            (&verdict.source, &verdict.target)
        );
    }
    let blocked: Vec<&str> = checks
        .edges
        .iter()
        .filter(|e| e.verdict == "blocked")
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        blocked,
        ["host:web1->service:db1:5432/tcp:5432/tcp"],
        "{checks:?}"
    );
    // The answer to the inbound ssh leaves through `output` towards the
    // client's unknown port, which might be 5432: maybe blocked.
    assert_eq!(
        (checks.allowed, checks.blocked, checks.maybe_blocked),
        (1, 1, 1),
        "{checks:?}"
    );
}
