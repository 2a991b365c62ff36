//! What one host did, as the firewall planner needs it: the services it
//! offered (and to whom), and the destinations it reached.
//!
//! Built from joined edges, so a service shows even where only its clients
//! (other monitored hosts) logged the connections.

use std::collections::BTreeMap;
use std::net::IpAddr;

use connscope_event::{Protocol, Timestamp};
use connscope_store::{Store, StoreError, TimeRange};
use serde::Serialize;

use crate::join::{add_processes, load_edges, users_of, JoinedEdge, ProcessUse};
use crate::report::serialize_time;

/// A peer of a service and how many connections it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub ip: IpAddr,
    pub host: Option<String>,
    pub connections: u64,
}

/// A port the host accepted connections on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InboundService {
    pub local_port: u16,
    #[serde(serialize_with = "crate::report::serialize_protocol")]
    pub protocol: Protocol,
    /// The host's addresses the connections came to.
    pub local_ips: Vec<IpAddr>,
    pub connections: u64,
    #[serde(serialize_with = "serialize_time")]
    pub first_seen: Timestamp,
    #[serde(serialize_with = "serialize_time")]
    pub last_seen: Timestamp,
    /// Clients, by address.
    pub remotes: Vec<Peer>,
    /// The serving processes (as logged by the host itself).
    pub processes: Vec<ProcessUse>,
    pub users: Vec<String>,
}

/// A destination the host connected to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboundDestination {
    pub remote_ip: IpAddr,
    pub remote_host: Option<String>,
    pub port: u16,
    #[serde(serialize_with = "crate::report::serialize_protocol")]
    pub protocol: Protocol,
    pub connections: u64,
    pub failures: u64,
    #[serde(serialize_with = "serialize_time")]
    pub first_seen: Timestamp,
    #[serde(serialize_with = "serialize_time")]
    pub last_seen: Timestamp,
    pub processes: Vec<ProcessUse>,
    pub users: Vec<String>,
}

/// One host's observed flows over a time range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostFlows {
    pub host: String,
    /// Sorted by (port, protocol).
    pub inbound: Vec<InboundService>,
    /// Sorted by (address, port, protocol).
    pub outbound: Vec<OutboundDestination>,
}

/// The flows of `host` during `range`.
pub fn host_flows(
    store: &dyn Store,
    host: &str,
    range: TimeRange,
) -> Result<HostFlows, StoreError> {
    Ok(flows_of(host, &load_edges(store, range)?))
}

fn flows_of(host: &str, edges: &[JoinedEdge]) -> HostFlows {
    let is_host = |h: &Option<String>| h.as_deref() == Some(host);
    let mut inbound: BTreeMap<(u16, Protocol), InboundService> = BTreeMap::new();
    let mut outbound: BTreeMap<(IpAddr, u16, Protocol), OutboundDestination> = BTreeMap::new();
    for e in edges {
        // A loopback connection is both; the planner sees it on both sides.
        if is_host(&e.server_host) {
            let s = inbound
                .entry((e.server_port, e.protocol))
                .or_insert_with(|| InboundService {
                    local_port: e.server_port,
                    protocol: e.protocol,
                    local_ips: Vec::new(),
                    connections: 0,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    remotes: Vec::new(),
                    processes: Vec::new(),
                    users: Vec::new(),
                });
            if !s.local_ips.contains(&e.server_ip) {
                s.local_ips.push(e.server_ip);
            }
            s.connections += e.connections;
            s.first_seen = s.first_seen.min(e.first_seen);
            s.last_seen = s.last_seen.max(e.last_seen);
            match s
                .remotes
                .iter_mut()
                .find(|p| p.ip == e.client_ip && p.host == e.client_host)
            {
                Some(p) => p.connections += e.connections,
                None => s.remotes.push(Peer {
                    ip: e.client_ip,
                    host: e.client_host.clone(),
                    connections: e.connections,
                }),
            }
            merge_processes(&mut s.processes, &e.server_processes);
        }
        if is_host(&e.client_host) {
            let d = outbound
                .entry((e.server_ip, e.server_port, e.protocol))
                .or_insert_with(|| OutboundDestination {
                    remote_ip: e.server_ip,
                    remote_host: e.server_host.clone(),
                    port: e.server_port,
                    protocol: e.protocol,
                    connections: 0,
                    failures: 0,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    processes: Vec::new(),
                    users: Vec::new(),
                });
            d.connections += e.connections;
            d.failures += e.failures;
            d.first_seen = d.first_seen.min(e.first_seen);
            d.last_seen = d.last_seen.max(e.last_seen);
            merge_processes(&mut d.processes, &e.client_processes);
        }
    }
    HostFlows {
        host: host.to_owned(),
        inbound: inbound
            .into_values()
            .map(|mut s| {
                s.local_ips.sort();
                s.remotes
                    .sort_by(|a, b| (a.ip, &a.host).cmp(&(b.ip, &b.host)));
                s.users = users_of(&s.processes);
                s
            })
            .collect(),
        outbound: outbound
            .into_values()
            .map(|mut d| {
                d.users = users_of(&d.processes);
                d
            })
            .collect(),
    }
}

/// Like [`add_processes`], keeping `into` sorted by (host, executable, user).
fn merge_processes(into: &mut Vec<ProcessUse>, from: &[ProcessUse]) {
    add_processes(into, from);
    into.sort_by(|a, b| (&a.host, &a.executable, &a.user).cmp(&(&b.host, &b.executable, &b.user)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{edge_total, hosts_a_and_b, join_rollups};
    use connscope_event::Direction;

    #[test]
    fn inbound_and_outbound_of_one_host() {
        let hosts = hosts_a_and_b();
        let edges = join_rollups(
            &[
                // Only the client logged this one: b still offers port 80.
                edge_total("a", Direction::Outgoing, "10.0.0.1", "10.0.0.2", 80, 4),
                edge_total("b", Direction::Incoming, "10.0.0.2", "192.0.2.9", 22, 1),
                edge_total("b", Direction::Outgoing, "10.0.0.2", "192.0.2.53", 53, 7),
            ],
            &hosts,
        );
        let f = flows_of("b", &edges);
        assert_eq!(f.inbound.len(), 2);
        assert_eq!(f.inbound[0].local_port, 22);
        assert_eq!(f.inbound[0].remotes[0].ip.to_string(), "192.0.2.9");
        assert_eq!(f.inbound[1].local_port, 80);
        assert_eq!(f.inbound[1].remotes[0].host.as_deref(), Some("a"));
        assert!(
            f.inbound[1].processes.is_empty(),
            "b logged nothing for port 80"
        );
        assert_eq!(f.outbound.len(), 1);
        assert_eq!((f.outbound[0].port, f.outbound[0].connections), (53, 7));
        assert_eq!(f.outbound[0].users, ["root"]);
    }
}
