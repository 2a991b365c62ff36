//! Rollup records and monitored hosts for the unit tests of the modules that
//! read joined edges, built in one place so every test speaks of the same two
//! hosts the same way.

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_store::{hour_start, EdgeCounts, EdgeTotal, HostAddress, HourlyEdgeTotal};

use crate::join::{join_edges, HostDirectory, JoinedEdge};

/// What `host` logged about `n` TCP connections between `local` and `remote`
/// on service `port`: made by `/usr/bin/{host}-exe` as root, 10 bytes sent
/// and 20 received per connection, seen from 100 ns to `200 + n` ns.
pub(crate) fn edge_total(
    host: &str,
    direction: Direction,
    local: &str,
    remote: &str,
    port: u16,
    n: u64,
) -> EdgeTotal {
    EdgeTotal {
        host: host.into(),
        direction,
        local_ip: local.parse().unwrap(),
        remote_ip: remote.parse().unwrap(),
        service_port: port,
        protocol: Protocol::Tcp,
        executable: format!("/usr/bin/{host}-exe"),
        user: "root".into(),
        counts: EdgeCounts {
            connections: n,
            failures: 0,
            bytes_sent: 10 * n,
            bytes_received: 20 * n,
            first_seen: Timestamp::from_nanos(100),
            last_seen: Timestamp::from_nanos(200 + n as i64),
        },
    }
}

/// Two monitored hosts: `a` at 10.0.0.1 and `b` at 10.0.0.2.
pub(crate) fn hosts_a_and_b() -> HostDirectory {
    let address = |host: &str, ip: &str| HostAddress {
        host: host.into(),
        ip: ip.parse().unwrap(),
        first_seen: Timestamp::from_nanos(0),
        last_seen: Timestamp::from_nanos(1),
    };
    HostDirectory::new(&[address("a", "10.0.0.1"), address("b", "10.0.0.2")])
}

/// Joins `totals` as rollups alone (no raw connection records), each
/// total's connections in the hour of its first sight.
pub(crate) fn join_rollups(totals: &[EdgeTotal], hosts: &HostDirectory) -> Vec<JoinedEdge> {
    let hourly: Vec<HourlyEdgeTotal> = totals
        .iter()
        .map(|total| HourlyEdgeTotal {
            total: total.clone(),
            hours: vec![(
                hour_start(total.counts.first_seen),
                total.counts.connections,
            )],
        })
        .collect();
    join_edges(&hourly, &[], hosts)
}
