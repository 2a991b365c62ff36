//! A store written by the code before address normalisation (schema 3, a
//! checked-in file) opens, and reads back with the addresses the packets
//! carried: no IPv4-mapped address and no `::` pair in rollups, host
//! addresses or raw events.

use std::net::IpAddr;
use std::path::Path;

use connscope_event::{is_ipv4_mapped, Direction};
use connscope_store::{EventQuery, RollupQuery, SqliteStore, Store, TimeRange};

fn copy_of_fixture(dir: &Path) -> std::path::PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3-dual-stack.db");
    let path = dir.join("v3.db");
    std::fs::copy(fixture, &path).unwrap();
    path
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn written(ip: IpAddr) -> bool {
    is_ipv4_mapped(ip) || ip.is_unspecified()
}

#[test]
fn a_v3_store_reads_back_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_of_fixture(dir.path());
    let store = SqliteStore::open(&path).unwrap();

    let totals = store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: None,
        })
        .unwrap();
    assert_eq!(totals.len(), 5, "{totals:#?}");
    for t in &totals {
        assert!(!written(t.local_ip) && !written(t.remote_ip), "{t:?}");
    }
    let edge = |host: &str, port: u16| {
        totals
            .iter()
            .find(|t| t.host == host && t.service_port == port && !t.remote_ip.is_loopback())
            .unwrap_or_else(|| panic!("no {host} edge on {port}: {totals:#?}"))
    };
    let served = edge("app1", 8443);
    assert_eq!(
        (served.direction, served.local_ip, served.remote_ip),
        (Direction::Incoming, ip("192.0.2.10"), ip("192.0.2.20"))
    );
    // The client's own record names the very same pair of addresses.
    let client = edge("ws1", 8443);
    assert_eq!(
        (client.local_ip, client.remote_ip),
        (served.remote_ip, served.local_ip)
    );
    let ldap = edge("app1", 636);
    assert_eq!(
        (ldap.direction, ldap.local_ip, ldap.remote_ip),
        (Direction::Outgoing, ip("192.0.2.10"), ip("192.0.2.30"))
    );
    // Both ends of the loopback connection tcpspy printed as `::`/`::`.
    let mut loopback: Vec<_> = totals
        .iter()
        .filter(|t| t.remote_ip.is_loopback())
        .map(|t| (t.direction, t.local_ip, t.remote_ip, t.counts.connections))
        .collect();
    loopback.sort();
    assert_eq!(
        loopback,
        [
            (Direction::Outgoing, ip("::1"), ip("::1"), 1),
            (Direction::Incoming, ip("::1"), ip("::1"), 1)
        ]
    );

    let addresses: Vec<(String, IpAddr)> = store
        .host_addresses()
        .unwrap()
        .into_iter()
        .map(|a| (a.host, a.ip))
        .collect();
    assert_eq!(
        addresses,
        [
            ("app1".to_owned(), ip("192.0.2.10")),
            ("ws1".to_owned(), ip("192.0.2.20"))
        ]
    );

    let events = store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: 100,
        })
        .unwrap();
    assert_eq!(events.len(), 10);
    for e in &events {
        assert!(!written(e.local.ip()) && !written(e.remote.ip()), "{e:?}");
        e.validate().unwrap();
    }
    drop(store);

    // Upgraded once: opening again finds the current version and changes nothing.
    let store = SqliteStore::open(&path).unwrap();
    let again = store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: None,
        })
        .unwrap();
    assert_eq!(again, totals);
}
