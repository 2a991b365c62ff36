//! The connection graph for the map: hosts, services and external endpoints,
//! with edges from clients to the services they used.
//!
//! Nodes (their [`NodeId`] is stable across queries, so the map can keep
//! positions):
//! - `host:NAME`, a monitored host;
//! - `service:NAME:PORT/PROTO`, a service on a monitored host (its `host` field
//!   names the host node it belongs to);
//! - `external:IP`, an address that is no monitored host (it may still be
//!   internal, see [`crate::scope`]); with the `name` hosts knew it by and
//!   its registered `domain` when one is known ([`crate::naming`]).
//!
//! An edge goes from the client's node (host or external) to the server's
//! node (service or external) and sums the joined edges between them; its
//! [`EdgeId`] is `SOURCE->TARGET:PORT/PROTO`.
//!
//! Ids are spelled here and nowhere else: the map and the firewall check
//! receive them ready-made ([`logged_edge`] places one host's record on the
//! graph), so a reader never builds or takes apart an id.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_store::{hour_start, Store, StoreError, TimeRange};
use serde::Serialize;

use crate::join::{
    add_processes, load_joined, users_of, CountRule, HostDirectory, JoinedEdge, ProcessUse,
};
use crate::naming::{domain_of, shown as shown_name, RemoteNames};
use crate::report::rfc3339;
use crate::scope::is_internal;

/// Internal or external edges; see [`crate::scope`] for what internal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Both ends internal.
    Internal,
    /// At least one end external.
    External,
}

/// Which edges to keep. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphFilter {
    /// Either end is this monitored host.
    pub host: Option<String>,
    /// The service port.
    pub port: Option<u16>,
    pub protocol: Option<Protocol>,
    /// A process on either end has this executable: its full path, or its
    /// file name.
    pub executable: Option<String>,
    /// A process on either end ran as this user (name, or uid where no name was known).
    pub user: Option<String>,
    /// `Outgoing`: the client is a monitored host (the `host`, if set);
    /// `Incoming`: the server is. `Unknown` matches nothing.
    pub direction: Option<Direction>,
    pub scope: Option<Scope>,
}

impl GraphFilter {
    pub fn matches(&self, edge: &JoinedEdge, hosts: &HostDirectory) -> bool {
        let is_host = |side: &Option<String>| match (&self.host, side) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, side) => side.is_some(),
        };
        if self.host.is_some() && !is_host(&edge.client_host) && !is_host(&edge.server_host) {
            return false;
        }
        match self.direction {
            None => {}
            Some(Direction::Outgoing) if is_host(&edge.client_host) => {}
            Some(Direction::Incoming) if is_host(&edge.server_host) => {}
            Some(_) => return false,
        }
        if self.port.is_some_and(|p| p != edge.server_port)
            || self.protocol.is_some_and(|p| p != edge.protocol)
        {
            return false;
        }
        let processes = || edge.client_processes.iter().chain(&edge.server_processes);
        if let Some(exe) = &self.executable {
            let file_name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
            if !processes().any(|p| p.executable == *exe || file_name(&p.executable) == *exe) {
                return false;
            }
        }
        if let Some(user) = &self.user {
            if !processes().any(|p| p.user == *user) {
                return false;
            }
        }
        match self.scope {
            None => true,
            Some(scope) => {
                let internal =
                    is_internal(edge.client_ip, hosts) && is_internal(edge.server_ip, hosts);
                internal == (scope == Scope::Internal)
            }
        }
    }
}

/// A node's identity: the same node has the same id in every graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// The monitored host `name`.
    fn host(name: &str) -> NodeId {
        NodeId(format!("host:{name}"))
    }

    /// A service on the monitored host `host`.
    fn service(host: &str, port: u16, protocol: Protocol) -> NodeId {
        NodeId(format!("service:{host}:{port}/{protocol}"))
    }

    /// An address that belongs to no monitored host.
    fn external(ip: IpAddr) -> NodeId {
        NodeId(format!("external:{ip}"))
    }

    /// The client's node: its host, else its address.
    fn client(host: Option<&str>, ip: IpAddr) -> NodeId {
        host.map_or_else(|| NodeId::external(ip), NodeId::host)
    }

    /// The server's node: the service on its host, else its address.
    fn server(host: Option<&str>, ip: IpAddr, port: u16, protocol: Protocol) -> NodeId {
        host.map_or_else(
            || NodeId::external(ip),
            |h| NodeId::service(h, port, protocol),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeId {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

/// An edge's identity: its two nodes, port and protocol (an external server
/// node is one address, whatever port it served).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EdgeId(String);

impl EdgeId {
    fn new(source: &NodeId, target: &NodeId, port: u16, protocol: Protocol) -> EdgeId {
        EdgeId(format!("{source}->{target}:{port}/{protocol}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EdgeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a record falls on the graph: the edge and its two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeEnds {
    pub id: EdgeId,
    pub source: NodeId,
    pub target: NodeId,
}

/// The graph edge of what monitored host `host` logged as a `direction`
/// connection with `remote` on `service_port`, as [`build_graph`] places it:
/// a remote address of a monitored host is that host, a loopback one is
/// `host` itself ([`HostDirectory::peer_host`]). `None` for an unknown
/// direction, which says neither end.
pub fn logged_edge(
    host: &str,
    direction: Direction,
    remote: IpAddr,
    service_port: u16,
    protocol: Protocol,
    hosts: &HostDirectory,
) -> Option<EdgeEnds> {
    let peer = hosts.peer_host(host, remote);
    let (source, target) = match direction {
        Direction::Incoming => (
            NodeId::client(peer, remote),
            NodeId::service(host, service_port, protocol),
        ),
        Direction::Outgoing => (
            NodeId::host(host),
            NodeId::server(peer, remote, service_port, protocol),
        ),
        Direction::Unknown => return None,
    };
    Some(EdgeEnds {
        id: EdgeId::new(&source, &target, service_port, protocol),
        source,
        target,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Node {
    Host {
        id: NodeId,
        label: String,
        /// Its addresses seen in the edges of this graph.
        addresses: Vec<IpAddr>,
    },
    Service {
        id: NodeId,
        label: String,
        /// The host node it belongs to.
        host: NodeId,
        port: u16,
        #[serde(serialize_with = "crate::report::serialize_protocol")]
        protocol: Protocol,
    },
    External {
        id: NodeId,
        /// The name when one is known, else the address.
        label: String,
        ip: IpAddr,
        internal: bool,
        /// The name hosts knew the address by (the one they used most, see
        /// [`crate::naming`]), byte for byte; the map escapes it.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The registered domain of `name`: the map folds external nodes by it.
        #[serde(skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
    },
}

impl Node {
    pub fn id(&self) -> &NodeId {
        match self {
            Node::Host { id, .. } | Node::Service { id, .. } | Node::External { id, .. } => id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GraphEdge {
    pub id: EdgeId,
    pub source: NodeId,
    pub target: NodeId,
    pub port: u16,
    #[serde(serialize_with = "crate::report::serialize_protocol")]
    pub protocol: Protocol,
    pub connections: u64,
    pub failures: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub first_seen: Timestamp,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub last_seen: Timestamp,
    pub client_processes: Vec<ProcessUse>,
    pub server_processes: Vec<ProcessUse>,
    /// Users of the processes on either end, sorted.
    pub users: Vec<String>,
    /// How `connections` was counted; see [`CountRule::and`] for an edge
    /// that sums several joined edges.
    pub count_rule: CountRule,
    /// The port's service name in /etc/services (the map labels edges with it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The map's data: nodes sorted by id, edges by (source, target, port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Graph {
    pub from: String,
    pub to: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<GraphEdge>,
    /// Connections over time, for the map's histogram: the edges shown,
    /// counted per bucket (an hour, or several where the range is long).
    pub timeline: Vec<TimelineBucket>,
    /// When the store's data starts and ends, whatever the range: the map
    /// opens on the last day that has data and says so. `None` for an
    /// empty store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_span: Option<DataSpan>,
}

/// The oldest and newest event the store holds (from its senders' first
/// and last events; retention does not move the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DataSpan {
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub first: Timestamp,
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub last: Timestamp,
}

/// The span of the store's data; `None` when nothing is stored.
pub fn data_span(store: &dyn Store) -> Result<Option<DataSpan>, StoreError> {
    Ok(store
        .agents()?
        .into_iter()
        .filter(|a| a.events > 0)
        .fold(None, |span, a| {
            Some(match span {
                None => DataSpan {
                    first: a.first_seen,
                    last: a.last_seen,
                },
                Some(s) => DataSpan {
                    first: s.first.min(a.first_seen),
                    last: s.last.max(a.last_seen),
                },
            })
        }))
}

/// Connections whose rollup hour falls in `[start, start + width)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineBucket {
    #[serde(serialize_with = "crate::report::serialize_time")]
    pub start: Timestamp,
    pub width_seconds: u64,
    pub connections: u64,
}

/// At most this many histogram bars: enough to brush, few enough to query.
const MAX_TIMELINE_BUCKETS: i64 = 240;
const HOUR_NS: i64 = 3_600 * 1_000_000_000;

/// Builds the graph of `range` from the store's rollups, joined as
/// [`crate::join`] says.
pub fn build_graph(
    store: &dyn Store,
    range: TimeRange,
    filter: &GraphFilter,
) -> Result<Graph, StoreError> {
    let (edges, hosts) = load_joined(store, range)?;
    let names = RemoteNames::load(store, range)?;
    let shown: Vec<&JoinedEdge> = edges.iter().filter(|e| filter.matches(e, &hosts)).collect();
    let mut graph = graph_of(shown.iter().copied(), &hosts, &names, range);
    graph.timeline = timeline(range, &shown);
    graph.data_span = data_span(store)?;
    Ok(graph)
}

/// The histogram under the map: the connections of the edges shown, per
/// bucket, counted hour by hour as the edges are (see [`crate::join`]), so
/// the bars add up to what the edges say. Buckets span the data actually in
/// `range`.
fn timeline(range: TimeRange, shown: &[&JoinedEdge]) -> Vec<TimelineBucket> {
    let Some((first, last)) = shown
        .iter()
        .fold(None, |acc: Option<(Timestamp, Timestamp)>, e| {
            Some(match acc {
                None => (e.first_seen, e.last_seen),
                Some((f, l)) => (f.min(e.first_seen), l.max(e.last_seen)),
            })
        })
    else {
        return Vec::new();
    };
    let grid = TimelineGrid::new(first.max(range.from), last.min(range.to));
    let mut counts = vec![0u64; grid.buckets];
    for &(hour, connections) in shown.iter().flat_map(|e| &e.hours) {
        if let Some(bucket) = grid.bucket_of(hour) {
            counts[bucket] += connections;
        }
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, connections)| TimelineBucket {
            start: grid.start_of(i),
            width_seconds: u64::try_from(grid.width / 1_000_000_000).unwrap_or(u64::MAX),
            connections,
        })
        .collect()
}

/// The timeline's buckets over `[hour of first, last]`: whole hours, as many
/// per bucket as keep them at most [`MAX_TIMELINE_BUCKETS`]. Computed in
/// i128, so that any two i64 times (a store may hold any) give a grid
/// without overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimelineGrid {
    start: i128,
    /// One past the last nanosecond covered.
    end: i128,
    width: i128,
    buckets: usize,
}

impl TimelineGrid {
    fn new(first: Timestamp, last: Timestamp) -> TimelineGrid {
        let hour = i128::from(HOUR_NS);
        let start = i128::from(hour_start(first).as_nanos());
        let end = (i128::from(last.as_nanos()) + 1).max(start);
        let hours_spanned = (end - start + hour - 1) / hour;
        let max_buckets = i128::from(MAX_TIMELINE_BUCKETS);
        let width = hour * ((hours_spanned + max_buckets - 1) / max_buckets).max(1);
        let buckets = usize::try_from((end - start + width - 1) / width).unwrap_or(0);
        TimelineGrid {
            start,
            end,
            width,
            buckets,
        }
    }

    /// The bucket of a rollup hour, `None` outside the grid.
    fn bucket_of(&self, hour: Timestamp) -> Option<usize> {
        let at = i128::from(hour.as_nanos());
        if at < self.start || at >= self.end {
            return None;
        }
        usize::try_from((at - self.start) / self.width).ok()
    }

    fn start_of(&self, bucket: usize) -> Timestamp {
        let at = self.start + self.width * bucket as i128;
        Timestamp::from_nanos(i64::try_from(at).unwrap_or(i64::MAX))
    }
}

fn graph_of<'a>(
    edges: impl Iterator<Item = &'a JoinedEdge>,
    hosts: &HostDirectory,
    names: &RemoteNames,
    range: TimeRange,
) -> Graph {
    let mut nodes: BTreeMap<NodeId, Node> = BTreeMap::new();
    let mut host_addrs: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
    let mut merged: BTreeMap<(NodeId, NodeId, u16, Protocol), GraphEdge> = BTreeMap::new();
    for e in edges {
        let mut add_end = |host: &Option<String>, ip: IpAddr, node: NodeId| {
            match host {
                Some(host) => {
                    host_addrs.entry(host.clone()).or_default().insert(ip);
                }
                None => {
                    nodes.entry(node.clone()).or_insert_with(|| {
                        let name = names.name_of_address(ip);
                        Node::External {
                            id: node.clone(),
                            label: name.map_or_else(|| ip.to_string(), shown_name),
                            ip,
                            internal: is_internal(ip, hosts),
                            name: name.map(str::to_owned),
                            domain: name.map(domain_of),
                        }
                    });
                }
            }
            node
        };
        let source = add_end(
            &e.client_host,
            e.client_ip,
            NodeId::client(e.client_host.as_deref(), e.client_ip),
        );
        let target = add_end(
            &e.server_host,
            e.server_ip,
            NodeId::server(
                e.server_host.as_deref(),
                e.server_ip,
                e.server_port,
                e.protocol,
            ),
        );
        if let Some(host) = &e.server_host {
            nodes
                .entry(target.clone())
                .or_insert_with(|| Node::Service {
                    id: target.clone(),
                    label: format!("{host}:{}", e.server_port),
                    host: NodeId::host(host),
                    port: e.server_port,
                    protocol: e.protocol,
                });
        }
        let key = (source.clone(), target.clone(), e.server_port, e.protocol);
        let edge = merged.entry(key).or_insert_with(|| GraphEdge {
            id: EdgeId::new(&source, &target, e.server_port, e.protocol),
            source,
            target,
            port: e.server_port,
            protocol: e.protocol,
            connections: 0,
            failures: 0,
            bytes_to_server: 0,
            bytes_to_client: 0,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            client_processes: Vec::new(),
            server_processes: Vec::new(),
            users: Vec::new(),
            count_rule: e.count_rule,
            service: connscope_names::Services::system()
                .name(e.server_port, e.protocol)
                .map(str::to_owned),
        });
        edge.connections += e.connections;
        edge.count_rule = edge.count_rule.and(e.count_rule);
        edge.failures += e.failures;
        edge.bytes_to_server += e.bytes_to_server;
        edge.bytes_to_client += e.bytes_to_client;
        edge.first_seen = edge.first_seen.min(e.first_seen);
        edge.last_seen = edge.last_seen.max(e.last_seen);
        add_processes(&mut edge.client_processes, &e.client_processes);
        add_processes(&mut edge.server_processes, &e.server_processes);
    }
    for (host, addresses) in host_addrs {
        let id = NodeId::host(&host);
        nodes.insert(
            id.clone(),
            Node::Host {
                id,
                label: host,
                addresses: addresses.into_iter().collect(),
            },
        );
    }
    let edges = merged
        .into_values()
        .map(|mut e| {
            e.users = users_of(e.client_processes.iter().chain(&e.server_processes));
            e
        })
        .collect();
    Graph {
        from: rfc3339(range.from),
        to: rfc3339(range.to),
        nodes: nodes.into_values().collect(),
        edges,
        timeline: Vec::new(),
        data_span: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_fixtures::{edge_total, hosts_a_and_b, join_rollups};
    use connscope_store::EdgeTotal;

    fn setup() -> (Vec<JoinedEdge>, HostDirectory) {
        let t = |host, direction, local, remote, port, exe: &str| EdgeTotal {
            executable: exe.into(),
            user: "joe".into(),
            ..edge_total(host, direction, local, remote, port, 2)
        };
        let hosts = hosts_a_and_b();
        let totals = [
            t(
                "a",
                Direction::Outgoing,
                "10.0.0.1",
                "10.0.0.2",
                22,
                "/usr/bin/ssh",
            ),
            t(
                "b",
                Direction::Incoming,
                "10.0.0.2",
                "10.0.0.1",
                22,
                "/usr/sbin/sshd",
            ),
            t(
                "a",
                Direction::Outgoing,
                "10.0.0.1",
                "192.0.2.1",
                443,
                "/usr/bin/curl",
            ),
        ];
        (join_rollups(&totals, &hosts), hosts)
    }

    #[test]
    fn nodes_and_edges() {
        let (edges, hosts) = setup();
        let g = graph_of(
            edges.iter(),
            &hosts,
            &RemoteNames::default(),
            TimeRange::ALL,
        );
        let ids: Vec<&str> = g.nodes.iter().map(|n| n.id().as_str()).collect();
        assert_eq!(
            ids,
            ["external:192.0.2.1", "host:a", "host:b", "service:b:22/tcp"]
        );
        assert_eq!(g.edges.len(), 2);
        let ssh = g.edges.iter().find(|e| e.port == 22).unwrap();
        assert_eq!(
            (ssh.source.as_str(), ssh.target.as_str()),
            ("host:a", "service:b:22/tcp")
        );
        assert_eq!(ssh.connections, 2);
        assert_eq!(ssh.users, ["joe"]);
        let ids: Vec<&str> = g.edges.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "host:a->external:192.0.2.1:443/tcp",
                "host:a->service:b:22/tcp:22/tcp"
            ]
        );
    }

    /// Moved from the map's unit tests (web/tests/unit/firewall.test.mjs),
    /// which spelled edge ids before the server sent them.
    #[test]
    fn edge_keys_are_the_ids_the_map_gives_graph_edges() {
        let id = EdgeId::new(
            &NodeId::host("a"),
            &NodeId::service("b", 22, Protocol::Tcp),
            22,
            Protocol::Tcp,
        );
        assert_eq!(id.as_str(), "host:a->service:b:22/tcp:22/tcp");
    }

    /// Moved from the collector's firewall check, which placed a host's
    /// flows on the graph itself before [`logged_edge`].
    #[test]
    fn flows_land_on_the_graphs_edge_ids() {
        let hosts = HostDirectory::new(&[connscope_store::HostAddress {
            host: "db1".into(),
            ip: "10.0.0.2".parse().unwrap(),
            first_seen: Timestamp::from_nanos(1),
            last_seen: Timestamp::from_nanos(1),
        }]);
        let ends = |direction, remote: &str, port| {
            let ends = logged_edge(
                "web1",
                direction,
                remote.parse().unwrap(),
                port,
                Protocol::Tcp,
                &hosts,
            )
            .unwrap();
            (ends.source.to_string(), ends.target.to_string())
        };
        assert_eq!(
            ends(Direction::Outgoing, "10.0.0.2", 5432),
            ("host:web1".into(), "service:db1:5432/tcp".into())
        );
        assert_eq!(
            ends(Direction::Outgoing, "192.0.2.9", 443),
            ("host:web1".into(), "external:192.0.2.9".into())
        );
        assert_eq!(
            ends(Direction::Incoming, "192.0.2.9", 22),
            ("external:192.0.2.9".into(), "service:web1:22/tcp".into())
        );
        assert_eq!(
            ends(Direction::Incoming, "10.0.0.2", 80),
            ("host:db1".into(), "service:web1:80/tcp".into())
        );
        assert_eq!(
            ends(Direction::Outgoing, "127.0.0.1", 631),
            ("host:web1".into(), "service:web1:631/tcp".into())
        );
        let unknown = logged_edge(
            "web1",
            Direction::Unknown,
            "10.0.0.2".parse().unwrap(),
            22,
            Protocol::Tcp,
            &hosts,
        );
        assert_eq!(unknown, None);
    }

    /// What `logged_edge` says for each end's record of a joined edge is the
    /// edge `build_graph` draws: the firewall check colours exactly it.
    #[test]
    fn both_ends_records_land_on_the_edge_the_graph_draws() {
        let (edges, hosts) = setup();
        let g = graph_of(
            edges.iter(),
            &hosts,
            &RemoteNames::default(),
            TimeRange::ALL,
        );
        let ssh = g.edges.iter().find(|e| e.port == 22).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let by_client = logged_edge(
            "a",
            Direction::Outgoing,
            ip("10.0.0.2"),
            22,
            Protocol::Tcp,
            &hosts,
        );
        let by_server = logged_edge(
            "b",
            Direction::Incoming,
            ip("10.0.0.1"),
            22,
            Protocol::Tcp,
            &hosts,
        );
        let drawn = Some(EdgeEnds {
            id: ssh.id.clone(),
            source: ssh.source.clone(),
            target: ssh.target.clone(),
        });
        assert_eq!(by_client, drawn);
        assert_eq!(by_server, drawn);
        let curl = g.edges.iter().find(|e| e.port == 443).unwrap();
        let ends = logged_edge(
            "a",
            Direction::Outgoing,
            ip("192.0.2.1"),
            443,
            Protocol::Tcp,
            &hosts,
        )
        .unwrap();
        assert_eq!(ends.id, curl.id);
    }

    #[test]
    fn filters() {
        let (edges, hosts) = setup();
        let count = |f: GraphFilter| edges.iter().filter(|e| f.matches(e, &hosts)).count();
        assert_eq!(count(GraphFilter::default()), 2);
        assert_eq!(
            count(GraphFilter {
                scope: Some(Scope::External),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(GraphFilter {
                scope: Some(Scope::Internal),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(GraphFilter {
                executable: Some("sshd".into()),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(GraphFilter {
                host: Some("b".into()),
                ..Default::default()
            }),
            1
        );
        let incoming_b = GraphFilter {
            host: Some("b".into()),
            direction: Some(Direction::Incoming),
            ..Default::default()
        };
        assert_eq!(count(incoming_b), 1);
        let outgoing_b = GraphFilter {
            host: Some("b".into()),
            direction: Some(Direction::Outgoing),
            ..Default::default()
        };
        assert_eq!(count(outgoing_b), 0);
        assert_eq!(
            count(GraphFilter {
                port: Some(443),
                ..Default::default()
            }),
            1
        );
        assert_eq!(
            count(GraphFilter {
                user: Some("nobody".into()),
                ..Default::default()
            }),
            0
        );
    }
}
