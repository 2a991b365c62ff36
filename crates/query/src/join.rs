//! Joining the two records of one connection into one edge.
//!
//! A host knows itself by name and by the addresses it was seen with as the
//! local end of its own events (the store's host addresses). A rollup record
//! whose remote address belongs to a monitored host therefore names both ends;
//! the record the other host logged about the same connections names the same
//! (client address, server address, service port, protocol), and the two fold
//! into one [`JoinedEdge`].
//!
//! Counting: both sides see every connection they log, so the joined count is
//! the larger of the two sides' counts, not their sum (a connection logged by
//! both its client and its server counts once; where one side missed some,
//! e.g. a polling tcpspy missing short connections, the other side's count
//! wins). Loopback addresses belong to the host that logged them only.
//!
//! Records of unknown direction (neither the agent nor the importer could
//! tell) are taken as logged by the client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_store::{
    is_host_address, EdgeCounts, EdgeTotal, HostAddress, RollupQuery, Store, StoreError, TimeRange,
};
use serde::Serialize;

/// Which host an address belongs to.
#[derive(Debug, Default, Clone)]
pub struct HostDirectory {
    by_ip: HashMap<IpAddr, (String, Timestamp)>,
}

impl HostDirectory {
    /// When an address was seen on several hosts (reassigned, or behind the
    /// same NAT), the host that used it most recently has it.
    pub fn new(addresses: &[HostAddress]) -> Self {
        let mut by_ip: HashMap<IpAddr, (String, Timestamp)> = HashMap::new();
        for a in addresses.iter().filter(|a| is_host_address(a.ip)) {
            let entry = by_ip
                .entry(a.ip)
                .or_insert_with(|| (a.host.clone(), a.last_seen));
            if a.last_seen > entry.1 {
                *entry = (a.host.clone(), a.last_seen);
            }
        }
        HostDirectory { by_ip }
    }

    pub fn host_of(&self, ip: IpAddr) -> Option<&str> {
        self.by_ip.get(&ip).map(|(host, _)| host.as_str())
    }

    pub fn is_monitored(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip)
    }
}

/// A process on one end of an edge, and how many of the edge's connections it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessUse {
    pub host: String,
    /// Empty when not known.
    pub executable: String,
    /// Empty when not known.
    pub user: String,
    pub connections: u64,
}

/// Adds the processes of `from` to `into`, summing the connections of a
/// process (same host, executable and user) already there; new ones go last.
pub(crate) fn add_processes(into: &mut Vec<ProcessUse>, from: &[ProcessUse]) {
    for p in from {
        match into
            .iter_mut()
            .find(|q| q.host == p.host && q.executable == p.executable && q.user == p.user)
        {
            Some(q) => q.connections += p.connections,
            None => into.push(p.clone()),
        }
    }
}

/// The known users of `processes`, each once, sorted.
pub(crate) fn users_of<'a>(processes: impl IntoIterator<Item = &'a ProcessUse>) -> Vec<String> {
    let users: BTreeSet<&str> = processes
        .into_iter()
        .map(|p| p.user.as_str())
        .filter(|u| !u.is_empty())
        .collect();
    users.into_iter().map(str::to_owned).collect()
}

/// The connections from one client address to one server address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedEdge {
    pub client_ip: IpAddr,
    /// The monitored host the client address belongs to.
    pub client_host: Option<String>,
    pub server_ip: IpAddr,
    pub server_host: Option<String>,
    pub server_port: u16,
    pub protocol: Protocol,
    pub connections: u64,
    pub failures: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub client_processes: Vec<ProcessUse>,
    pub server_processes: Vec<ProcessUse>,
    /// Which ends logged the connections.
    pub logged_by_client: bool,
    pub logged_by_server: bool,
}

/// Which joined edge a record belongs to: (server address, service port,
/// protocol, client address, server host, client host).
pub(crate) type PairKey<'a> = (
    IpAddr,
    u16,
    Protocol,
    IpAddr,
    Option<&'a str>,
    Option<&'a str>,
);

impl JoinedEdge {
    pub(crate) fn pair_key(&self) -> PairKey<'_> {
        (
            self.server_ip,
            self.server_port,
            self.protocol,
            self.client_ip,
            self.server_host.as_deref(),
            self.client_host.as_deref(),
        )
    }
}

/// The joined edge `t` belongs to, and whether its server logged it.
pub(crate) fn pair_of<'a>(t: &'a EdgeTotal, hosts: &'a HostDirectory) -> (PairKey<'a>, bool) {
    let remote_host = if is_host_address(t.remote_ip) {
        hosts.host_of(t.remote_ip)
    } else {
        Some(t.host.as_str())
    };
    let logged_by_server = t.direction == Direction::Incoming;
    let key = if logged_by_server {
        (
            t.local_ip,
            t.service_port,
            t.protocol,
            t.remote_ip,
            Some(t.host.as_str()),
            remote_host,
        )
    } else {
        (
            t.remote_ip,
            t.service_port,
            t.protocol,
            t.local_ip,
            remote_host,
            Some(t.host.as_str()),
        )
    };
    (key, logged_by_server)
}

#[derive(Default)]
struct Side {
    counts: Option<EdgeCounts>,
    processes: BTreeMap<(String, String, String), u64>,
}

impl Side {
    fn add(&mut self, total: &EdgeTotal) {
        match &mut self.counts {
            Some(c) => c.merge(&total.counts),
            None => self.counts = Some(total.counts),
        }
        let connections = total.counts.connections + total.counts.failures;
        // A disconnect-only record of an unknown process says nothing about who connected.
        if connections > 0 || !total.executable.is_empty() {
            *self
                .processes
                .entry((
                    total.host.clone(),
                    total.executable.clone(),
                    total.user.clone(),
                ))
                .or_default() += connections;
        }
    }

    fn processes(self) -> Vec<ProcessUse> {
        self.processes
            .into_iter()
            .map(|((host, executable, user), connections)| ProcessUse {
                host,
                executable,
                user,
                connections,
            })
            .collect()
    }
}

/// Reads the rollups of `range` and the host addresses, and joins them.
pub fn load_edges(store: &dyn Store, range: TimeRange) -> Result<Vec<JoinedEdge>, StoreError> {
    let totals = store.edge_totals(&RollupQuery { range, host: None })?;
    let hosts = HostDirectory::new(&store.host_addresses()?);
    Ok(join_edges(&totals, &hosts))
}

/// Folds rollup records into edges, one per (client address and host, server
/// address and host, service port, protocol), ordered by server then client.
pub fn join_edges(totals: &[EdgeTotal], hosts: &HostDirectory) -> Vec<JoinedEdge> {
    let mut pairs: BTreeMap<PairKey<'_>, (Side, Side)> = BTreeMap::new();
    for t in totals {
        let (key, logged_by_server) = pair_of(t, hosts);
        let (client, server) = pairs.entry(key).or_default();
        if logged_by_server {
            server.add(t);
        } else {
            client.add(t);
        }
    }
    pairs
        .into_iter()
        .map(
            |(
                (server_ip, server_port, protocol, client_ip, server_host, client_host),
                (client, server),
            )| {
                let (c, s) = (client.counts, server.counts);
                let zero = EdgeCounts {
                    connections: 0,
                    failures: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    first_seen: Timestamp::from_nanos(i64::MAX),
                    last_seen: Timestamp::from_nanos(i64::MIN),
                };
                let (cc, sc) = (c.unwrap_or(zero), s.unwrap_or(zero));
                JoinedEdge {
                    client_ip,
                    client_host: client_host.map(str::to_owned),
                    server_ip,
                    server_host: server_host.map(str::to_owned),
                    server_port,
                    protocol,
                    connections: cc.connections.max(sc.connections),
                    failures: cc.failures.max(sc.failures),
                    bytes_to_server: cc.bytes_sent.max(sc.bytes_received),
                    bytes_to_client: cc.bytes_received.max(sc.bytes_sent),
                    first_seen: cc.first_seen.min(sc.first_seen),
                    last_seen: cc.last_seen.max(sc.last_seen),
                    logged_by_client: c.is_some(),
                    logged_by_server: s.is_some(),
                    client_processes: client.processes(),
                    server_processes: server.processes(),
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{edge_total, hosts_a_and_b};

    #[test]
    fn both_ends_of_a_connection_join_and_count_once() {
        let totals = [
            edge_total("a", Direction::Outgoing, "10.0.0.1", "10.0.0.2", 22, 3),
            edge_total("b", Direction::Incoming, "10.0.0.2", "10.0.0.1", 22, 2),
        ];
        let edges = join_edges(&totals, &hosts_a_and_b());
        assert_eq!(edges.len(), 1);
        let e = &edges[0];
        assert_eq!(
            (e.client_host.as_deref(), e.server_host.as_deref()),
            (Some("a"), Some("b"))
        );
        assert_eq!(e.connections, 3);
        assert_eq!(e.bytes_to_server, 40, "max(a sent 30, b received 40)");
        assert!(e.logged_by_client && e.logged_by_server);
        assert_eq!(e.client_processes[0].executable, "/usr/bin/a-exe");
        assert_eq!(e.server_processes[0].executable, "/usr/bin/b-exe");
        assert_eq!(e.last_seen.as_nanos(), 203);
    }

    #[test]
    fn unmonitored_ends_stay_addresses_and_loopback_stays_home() {
        let totals = [
            edge_total("a", Direction::Outgoing, "10.0.0.1", "192.0.2.7", 443, 1),
            edge_total("b", Direction::Outgoing, "127.0.0.1", "127.0.0.1", 5432, 1),
            edge_total("a", Direction::Outgoing, "127.0.0.1", "127.0.0.1", 5432, 1),
        ];
        let edges = join_edges(&totals, &hosts_a_and_b());
        assert_eq!(edges.len(), 3);
        let external = edges.iter().find(|e| e.server_port == 443).unwrap();
        assert_eq!(external.server_host, None);
        assert!(!external.logged_by_server);
        let loopback: Vec<_> = edges.iter().filter(|e| e.server_port == 5432).collect();
        assert_eq!(
            loopback.len(),
            2,
            "a's and b's loopback connections stay apart"
        );
        assert!(loopback.iter().all(|e| e.client_host == e.server_host));
    }
}
