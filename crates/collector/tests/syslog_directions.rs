//! One tcpspy log, two paths: imported from a file, and streamed line by line
//! to a running collector's syslog listener over TCP. tcpspy does not log who
//! connected; both paths must infer the same directions, so the stores give
//! the same `report edges` and the same firewall plans. Traffic stays on
//! 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use common::{wait_for, Running};
use connscope_collector::CollectorConfig;
use connscope_event::Direction;
use connscope_firewall::{from_store::observed_flows, plan, render, PlanOptions};
use connscope_import::{import_files, ImportOptions};
use connscope_query::{load_edges, report};
use connscope_store::{EventQuery, SqliteStore, Store, TimeRange};

/// Three hosts of an office as rsyslog writes them with exact times: a
/// workstation (192.168.77.10) using ssh and the web, a server
/// (192.168.77.20) running sshd and using a database host (192.168.77.30).
/// Both ends of a connection between two of them log it.
const LOG: &str = "\
2026-11-24T09:00:00+00:00 srv tcpspy[200]: connect: proc /usr/sbin/sshd, user root, local 192.168.77.20:ssh, remote 192.168.77.10:50001
2026-11-24T09:00:00+00:00 ws1 tcpspy[100]: connect: proc /usr/bin/ssh, user joe, local 192.168.77.10:50001, remote 192.168.77.20:ssh
2026-11-24T09:00:05+00:00 srv tcpspy[200]: connect: proc /usr/bin/psql, user app, local 192.168.77.20:41000, remote 192.168.77.30:postgresql
2026-11-24T09:00:05+00:00 db tcpspy[300]: connect: proc /usr/lib/postgresql/15/bin/postgres, user postgres, local 192.168.77.30:5432, remote 192.168.77.20:41000
2026-11-24T09:00:09+00:00 srv tcpspy[200]: disconnect: proc /usr/bin/psql, user app, local 192.168.77.20:41000, remote 192.168.77.30:5432
2026-11-24T09:00:09+00:00 db tcpspy[300]: disconnect: proc /usr/lib/postgresql/15/bin/postgres, user postgres, local 192.168.77.30:5432, remote 192.168.77.20:41000
2026-11-24T09:10:00+00:00 ws1 tcpspy[100]: connect: proc /usr/bin/curl, user joe, local 192.168.77.10:50100, remote 192.0.2.10:https
2026-11-24T09:10:01+00:00 ws1 tcpspy[100]: disconnect: proc /usr/bin/curl, user joe, local 192.168.77.10:50100, remote 192.0.2.10:https
2026-11-24T09:20:00+00:00 ws1 tcpspy[100]: connect: proc /usr/bin/ssh, user joe, local 192.168.77.10:50002, remote 192.168.77.20:22
2026-11-24T09:20:00+00:00 srv tcpspy[200]: connect: proc /usr/sbin/sshd, user root, local 192.168.77.20:22, remote 192.168.77.10:50002
2026-11-24T09:30:00+00:00 srv tcpspy[200]: disconnect: proc /usr/sbin/sshd, user root, local 192.168.77.20:ssh, remote 192.168.77.10:50001
2026-11-24T09:30:00+00:00 ws1 tcpspy[100]: disconnect: proc /usr/bin/ssh, user joe, local 192.168.77.10:50001, remote 192.168.77.20:ssh
2026-11-24T10:05:00+00:00 srv tcpspy[200]: connect: proc /usr/bin/psql, user app, local 192.168.77.20:41001, remote 192.168.77.30:5432
2026-11-24T10:05:00+00:00 db tcpspy[300]: connect: proc /usr/lib/postgresql/15/bin/postgres, user postgres, local 192.168.77.30:postgresql, remote 192.168.77.20:41001
2026-11-24T10:06:00+00:00 db tcpspy[300]: connect: proc /usr/bin/rsync, user backup, local 192.168.77.30:51000, remote 192.0.2.20:873
";

const HOSTS: [&str; 3] = ["ws1", "srv", "db"];

fn imported(dir: &Path) -> SqliteStore {
    let path = dir.join("messages");
    std::fs::write(&path, LOG).unwrap();
    let store = SqliteStore::open(dir.join("imported.db")).unwrap();
    let options = ImportOptions {
        time_zone: Some(jiff::tz::TimeZone::UTC),
        ..ImportOptions::default()
    };
    let summary = import_files(&store, &[path], &options, &mut |e| panic!("{e}")).unwrap();
    assert_eq!(summary.imported, LOG.lines().count() as u64);
    store
}

fn streamed(dir: &Path) -> Arc<SqliteStore> {
    let store = Arc::new(SqliteStore::open(dir.join("streamed.db")).unwrap());
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("streamed.db"));
    config.syslog_listen = Some("127.0.0.1:0".parse().unwrap());
    config
        .tokens
        .insert("unused", "token-nobody-uses-here")
        .unwrap();
    let collector = Running::start(config, store.clone());
    let mut tcp = std::net::TcpStream::connect(collector.syslog.unwrap()).unwrap();
    for line in LOG.lines() {
        // RFC 3164 with an RFC 3339 time, as rsyslog forwards with a
        // high-precision template, newline-framed.
        writeln!(tcp, "<86>{line}").unwrap();
    }
    drop(tcp);
    let lines = LOG.lines().count();
    wait_for("every line stored", || events(&store).len() == lines);
    store
}

fn events(store: &SqliteStore) -> Vec<connscope_event::ConnectionEvent> {
    store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: 1_000,
        })
        .unwrap()
}

/// (host, kind, local, remote) -> direction, for every stored event.
fn directions(store: &SqliteStore) -> BTreeMap<String, Direction> {
    events(store)
        .into_iter()
        .map(|e| {
            let line = format!("{} {} {} {}", e.host, e.kind.as_str(), e.local, e.remote);
            (line, e.direction)
        })
        .collect()
}

fn edges_json(store: &SqliteStore) -> String {
    let edges = load_edges(store, TimeRange::ALL).unwrap();
    report::edges_report(&edges).render(report::Format::Json)
}

fn nft_plan(store: &SqliteStore, host: &str) -> String {
    let stored = observed_flows(store, host, TimeRange::ALL).unwrap();
    assert_eq!(stored.unknown_direction_edges, 0, "{host}");
    render::nft(&plan(host, &stored.flows, PlanOptions::default()))
}

#[test]
fn imported_and_streamed_lines_get_the_same_directions_edges_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    let imported = imported(dir.path());
    let streamed = streamed(dir.path());

    let from_file = directions(&imported);
    assert_eq!(directions(&streamed), from_file);
    let direction_of = |line: &str| from_file[line];
    assert_eq!(
        direction_of("srv connect 192.168.77.20:22 192.168.77.10:50001"),
        Direction::Incoming,
        "the sshd host serves port 22"
    );
    assert_eq!(
        direction_of("ws1 connect 192.168.77.10:50001 192.168.77.20:22"),
        Direction::Outgoing
    );
    assert_eq!(
        direction_of("db connect 192.168.77.30:5432 192.168.77.20:41001"),
        Direction::Incoming
    );
    assert_eq!(
        direction_of("db connect 192.168.77.30:51000 192.0.2.20:873"),
        Direction::Outgoing
    );

    let edges = edges_json(&imported);
    assert_eq!(edges_json(&streamed), edges);
    let report: serde_json::Value = serde_json::from_str(&edges).unwrap();
    let ssh = report
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["server_port"] == 22)
        .unwrap_or_else(|| panic!("an ssh edge in {edges}"));
    assert_eq!(
        (ssh["client_host"].as_str(), ssh["server_host"].as_str()),
        (Some("ws1"), Some("srv")),
        "{ssh}"
    );

    for host in HOSTS {
        let plan = nft_plan(&imported, host);
        assert_eq!(nft_plan(&streamed, host), plan, "{host}");
    }
    assert!(
        nft_plan(&imported, "srv").contains("dport 22 accept"),
        "{}",
        nft_plan(&imported, "srv")
    );
}

/// A service on a port above its clients' is told apart only by endpoint
/// counts. A line streamed once to it is read with what the store already
/// holds (here an imported history), not by port numbers alone.
#[test]
fn a_streamed_line_uses_the_store_s_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let now = jiff::Timestamp::now();
    let line = |ago: i64, port: u16| {
        let at = now - jiff::SignedDuration::from_hours(ago);
        format!("{at} ws1 tcpspy[100]: connect: proc /usr/bin/client, user joe, local 192.168.77.10:{port}, remote 192.168.77.30:61000\n")
    };
    let text: String = (0..3).map(|i| line(3 - i, 40_000 + i as u16)).collect();
    std::fs::write(&history, text).unwrap();
    let path = dir.path().join("store.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        import_files(&store, &[history], &ImportOptions::default(), &mut |e| {
            panic!("{e}")
        })
        .unwrap();
    }

    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), path.clone());
    config.syslog_listen = Some("127.0.0.1:0".parse().unwrap());
    config
        .tokens
        .insert("unused", "token-nobody-uses-here")
        .unwrap();
    let collector = Running::start(config, store.clone());
    let mut tcp = std::net::TcpStream::connect(collector.syslog.unwrap()).unwrap();
    write!(tcp, "<86>{}", line(0, 40_100)).unwrap();
    drop(tcp);
    wait_for("the streamed line", || events(&store).len() == 4);
    let streamed = events(&store)
        .into_iter()
        .find(|e| e.local.port() == 40_100)
        .unwrap();
    assert_eq!(
        streamed.direction,
        Direction::Outgoing,
        "192.168.77.30:61000 served the three imported connections"
    );
}

/// A store kept from before directions were inferred holds the listener's
/// events with direction `unknown`, identified by a hash of their content.
/// The same message resent (rsyslog after a reconnect) is still recognised:
/// the identity is that of the line as read, before its direction.
#[test]
fn a_line_stored_before_directions_is_recognised_when_resent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let message = "connect: proc /usr/sbin/sshd, user root, local 192.168.77.20:ssh, remote 192.168.77.10:50001";
    let time: connscope_event::Timestamp = "2026-11-24T19:22:17Z".parse().unwrap();
    {
        // What the listener stored before: the parsed line, as it is.
        let mut parser = connscope_tcpspy_log::Parser::default();
        let connscope_tcpspy_log::Message::Connection(c) = parser
            .parse_message(connscope_tcpspy_log::Origin::Tcpspy, message.as_bytes())
            .unwrap()
        else {
            panic!("a connection line")
        };
        let old = c.to_event(time, "srv");
        assert_eq!(old.direction, Direction::Unknown);
        let store = SqliteStore::open(&path).unwrap();
        store
            .ingest(&connscope_store::AgentId("syslog@srv".into()), &[old])
            .unwrap();
    }

    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), path.clone());
    config.syslog_listen = Some("127.0.0.1:0".parse().unwrap());
    config
        .tokens
        .insert("unused", "token-nobody-uses-here")
        .unwrap();
    let collector = Running::start(config, store.clone());
    let mut tcp = std::net::TcpStream::connect(collector.syslog.unwrap()).unwrap();
    writeln!(
        tcp,
        "<86>1 2026-11-24T19:22:17Z srv tcpspy 200 - - {message}"
    )
    .unwrap();
    drop(tcp);
    wait_for("the resent line to be processed", || {
        collector
            .counters
            .syslog_events_duplicate
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    });
    assert_eq!(events(&store).len(), 1);
}
