//! Names on the read side, on a real SQLite store: `report edges --by name`
//! groups external servers by the name the client host learned, the graph's
//! external nodes carry `name` and `domain`, and connections logged without
//! names (an imported tcpspy log) are named from the same host's named
//! connections near them in time, and only then.

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, Direction, NameSource};
use connscope_query::graph::Node;
use connscope_query::join::load_edges;
use connscope_query::naming::RemoteNames;
use connscope_query::report::{edges_report_named, name_edges_report, Format};
use connscope_query::{build_graph, GraphFilter};
use connscope_store::{AgentId, SqliteStore, Store, TimeRange};

const T0: i64 = 1_795_548_137 * 1_000_000_000; // 2026-11-24T19:22:17Z
const MIN: i64 = 60 * 1_000_000_000;

const HOSTILE: &str = "<img src=x onerror=alert(1)>\n.example.com";

fn connect(seq: u64, minutes: i64, port: u16, remote: &str, name: Option<&str>) -> ConnectionEvent {
    let mut b = EventBuilder::connect(format!("10.0.0.1:{port}"), remote)
        .at_nanos(T0 + minutes * MIN)
        .sequence(seq)
        .host("ws1")
        .process(7, "/usr/bin/curl");
    if let Some(name) = name {
        b = b.named(name);
    }
    b.build()
}

/// What an imported tcpspy line becomes: unnumbered, direction unknown, no name.
fn imported(minutes: i64, port: u16, remote: &str) -> ConnectionEvent {
    EventBuilder::connect(format!("10.0.0.1:{port}"), remote)
        .at_nanos(T0 + minutes * MIN)
        .direction(Direction::Unknown)
        .host("ws1")
        .build()
}

fn store(dir: &std::path::Path) -> SqliteStore {
    let store = SqliteStore::open(dir.join("store.db")).unwrap();
    store
        .ingest(
            &AgentId("ws1".into()),
            &[
                connect(1, 0, 40001, "203.0.113.7:443", Some("www.example.co.uk")),
                connect(2, 1, 40002, "203.0.113.8:443", Some("www.example.co.uk")),
                connect(3, 2, 40003, "203.0.113.7:443", Some("www.example.co.uk")),
                connect(4, 3, 40004, "198.51.100.9:443", Some(HOSTILE)),
                connect(5, 4, 40005, "192.0.2.99:443", None),
                {
                    let mut sni = connect(6, 5, 40006, "198.51.100.20:8443", None);
                    sni.remote_name = Some(connscope_event::RemoteName {
                        name: "api.example.org".into(),
                        source: NameSource::Sni,
                    });
                    sni
                },
            ],
        )
        .unwrap();
    // The host's older tcpspy log: a connection to the name's address 30
    // minutes after the named one (named at read time), one to another
    // address its agent learned a name for only 5 hours later (too far:
    // stays unnamed).
    store
        .ingest(
            &AgentId("ws1-import".into()),
            &[
                imported(30, 40100, "203.0.113.7:443"),
                imported(-300, 40101, "198.51.100.30:443"),
            ],
        )
        .unwrap();
    store
        .ingest(
            &AgentId("ws1".into()),
            &[connect(
                7,
                0,
                40007,
                "198.51.100.30:443",
                Some("late.example.net"),
            )],
        )
        .unwrap();
    store
}

/// (server name, domain, port, addresses, connections) of a `--by name` row.
type NameRow<'a> = (Option<&'a str>, Option<&'a str>, u64, Vec<&'a str>, u64);

#[test]
fn report_edges_by_name_groups_external_servers_by_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let edges = load_edges(&store, TimeRange::ALL).unwrap();
    let names = RemoteNames::load(&store, TimeRange::ALL).unwrap();
    let report = name_edges_report(&edges, &names);
    let json: serde_json::Value = serde_json::from_str(&report.render(Format::Json)).unwrap();
    let rows: Vec<NameRow<'_>> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["server_name"].as_str(),
                r["server_domain"].as_str(),
                r["server_port"].as_u64().unwrap(),
                r["addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect(),
                r["connections"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                Some(HOSTILE),
                Some("example.com"),
                443,
                vec!["198.51.100.9"],
                1
            ),
            (
                Some("api.example.org"),
                Some("example.org"),
                8443,
                vec!["198.51.100.20"],
                1
            ),
            // Over the whole range, one edge: named, both connections in it.
            (
                Some("late.example.net"),
                Some("example.net"),
                443,
                vec!["198.51.100.30"],
                2
            ),
            // Two addresses, one name; the imported connection counts too.
            (
                Some("www.example.co.uk"),
                Some("example.co.uk"),
                443,
                vec!["203.0.113.7", "203.0.113.8"],
                4
            ),
            (None, None, 443, vec!["192.0.2.99"], 1),
        ]
    );
    // The table shows the hostile name escaped, on one line.
    let table = report.render(Format::Table);
    assert!(
        table.contains("<img src=x onerror=alert(1)>\\n.example.com  example.com"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 6, "{table}");
}

#[test]
fn an_imported_connection_far_from_any_named_one_stays_unnamed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let around = |minutes: i64| TimeRange {
        from: connscope_event::Timestamp::from_nanos(T0 + (minutes - 10) * MIN),
        to: connscope_event::Timestamp::from_nanos(T0 + (minutes + 10) * MIN),
    };
    let name_in = |range: TimeRange, ip: &str| -> Option<String> {
        let edges = load_edges(&store, range).unwrap();
        let names = RemoteNames::load(&store, range).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&edges_report_named(&edges, &names).render(Format::Json)).unwrap();
        let edge = json
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["server_ip"] == ip)
            .unwrap_or_else(|| panic!("no edge to {ip} in {json}"))
            .clone();
        edge["server_name"].as_str().map(str::to_owned)
    };
    // 30 minutes after a named connection: within the name's lifetime.
    assert_eq!(
        name_in(around(30), "203.0.113.7").as_deref(),
        Some("www.example.co.uk")
    );
    // 5 hours before the host learned the name: no name.
    assert_eq!(name_in(around(-300), "198.51.100.30"), None);
}

#[test]
fn report_edges_names_external_servers_and_imported_connections_near_named_ones() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let edges = load_edges(&store, TimeRange::ALL).unwrap();
    let names = RemoteNames::load(&store, TimeRange::ALL).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&edges_report_named(&edges, &names).render(Format::Json)).unwrap();
    let named: Vec<(&str, Option<&str>)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["server_ip"].as_str().unwrap(), r["server_name"].as_str()))
        .collect();
    assert!(
        named.contains(&("203.0.113.7", Some("www.example.co.uk"))),
        "{named:?}"
    );
    assert!(named.contains(&("192.0.2.99", None)), "{named:?}");
}

#[test]
fn external_nodes_carry_name_and_registered_domain() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let graph = build_graph(&store, TimeRange::ALL, &GraphFilter::default()).unwrap();
    let externals: Vec<(String, String, Option<String>, Option<String>)> = graph
        .nodes
        .iter()
        .filter_map(|n| match n {
            Node::External {
                ip,
                label,
                name,
                domain,
                ..
            } => Some((ip.to_string(), label.clone(), name.clone(), domain.clone())),
            _ => None,
        })
        .collect();
    let get = |ip: &str| externals.iter().find(|e| e.0 == ip).cloned().unwrap();
    assert_eq!(
        get("203.0.113.8"),
        (
            "203.0.113.8".into(),
            "www.example.co.uk".into(),
            Some("www.example.co.uk".into()),
            Some("example.co.uk".into())
        )
    );
    assert_eq!(get("192.0.2.99").2, None);
    let hostile = get("198.51.100.9");
    assert_eq!(hostile.2.as_deref(), Some(HOSTILE), "kept byte for byte");
    assert!(!hostile.1.contains('\n'), "the label is escaped");
    let json = serde_json::to_string(&graph).unwrap();
    assert!(
        json.contains(r#""name":"www.example.co.uk","domain":"example.co.uk""#),
        "{json}"
    );
}
