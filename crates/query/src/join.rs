//! Joining the two records of one connection into one edge.
//!
//! A host knows itself by name and by the addresses it was seen with as the
//! local end of its own events (the store's host addresses). A rollup record
//! whose remote address belongs to a monitored host therefore names both ends;
//! the record the other host logged about the same connections names the same
//! (client address, server address, service port, protocol), and the two fold
//! into one [`JoinedEdge`].
//!
//! Counting, connection by connection: each end logs only the connections it
//! saw, and a polling logger (tcpspy, one poll a second) misses short ones —
//! each end *different* ones. So neither end's count nor the larger of the two
//! is the edge's count, the union is: where the raw events of both ends are
//! still kept ([`Store::connections`]), a client's and a server's record of
//! the same 4-tuple whose times are at most [`MATCH_TOLERANCE`] apart are one
//! connection, and every record without a partner is one more. An hour whose
//! raw events of either end are incomplete (retention deleted them; only the
//! rollups remain) falls back to the larger of the two ends' counts for that
//! hour, and the edge says so ([`CountRule::MaxRule`]). An edge only one end
//! logged needs no join: its count is that end's.
//!
//! Failures and bytes stay the larger of the two ends' sums (only clients see
//! failures; only the disconnects carry bytes). Loopback addresses belong to
//! the host that logged them only.
//!
//! Records of unknown direction (neither the agent nor the importer could
//! tell) are taken as logged by the client.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use connscope_event::{Direction, Protocol, Timestamp};
use connscope_store::{
    hour_start, is_host_address, ConnectionQuery, ConnectionRecord, EdgeCounts, HostAddress,
    HourlyEdgeTotal, RollupQuery, Store, StoreError, TimeRange,
};
use serde::Serialize;

/// How far apart the two ends' times of one connection may be: each end of
/// a one-second poller logs a connection up to a second after it was made.
pub const MATCH_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(2);

const HOUR_NS: i64 = 3_600_000_000_000;

/// How an edge's connections were counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountRule {
    /// Both ends logged; their records were matched connection by
    /// connection, and the count is the union of what they saw.
    Joined,
    /// Only the client logged the edge: its count.
    ClientOnly,
    /// Only the server logged the edge: its count.
    ServerOnly,
    /// Both ends logged, and in at least one hour the raw events of one end
    /// were gone (only rollups remain): that hour counts the larger side,
    /// which is low where each end missed different connections.
    MaxRule,
}

impl CountRule {
    /// The rule of a sum of two edges' counts: the max rule if either used
    /// it, else exact.
    pub fn and(self, other: CountRule) -> CountRule {
        match (self, other) {
            (a, b) if a == b => a,
            (CountRule::MaxRule, _) | (_, CountRule::MaxRule) => CountRule::MaxRule,
            _ => CountRule::Joined,
        }
    }
}

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

    /// The monitored host at the other end of what `logger` logged with
    /// `remote`: the host that has the address, or `logger` itself for a
    /// loopback address (which only ever means the host that logged it).
    pub fn peer_host<'a>(&'a self, logger: &'a str, remote: IpAddr) -> Option<&'a str> {
        if is_host_address(remote) {
            self.host_of(remote)
        } else {
            Some(logger)
        }
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
    pub count_rule: CountRule,
    /// `connections` by hour: (hour start, connections), oldest first,
    /// hours without any left out.
    pub hours: Vec<(Timestamp, u64)>,
}

/// Which joined edge a record belongs to: (server address, service port,
/// protocol, client address, server host, client host).
type PairKey<'a> = (
    IpAddr,
    u16,
    Protocol,
    IpAddr,
    Option<&'a str>,
    Option<&'a str>,
);

/// The joined edge of what `host` logged as a `direction` connection from
/// `local_ip` to `remote_ip` on `service_port`, and whether its server
/// logged it.
fn pair_key<'a>(
    host: &'a str,
    direction: Direction,
    (local_ip, remote_ip): (IpAddr, IpAddr),
    service_port: u16,
    protocol: Protocol,
    hosts: &'a HostDirectory,
) -> (PairKey<'a>, bool) {
    let remote_host = hosts.peer_host(host, remote_ip);
    let logged_by_server = direction == Direction::Incoming;
    let key = if logged_by_server {
        (
            local_ip,
            service_port,
            protocol,
            remote_ip,
            Some(host),
            remote_host,
        )
    } else {
        (
            remote_ip,
            service_port,
            protocol,
            local_ip,
            remote_host,
            Some(host),
        )
    };
    (key, logged_by_server)
}

/// One end's connection records of an edge: (client port, server port,
/// time in ns).
type Records = Vec<(u16, u16, i64)>;

#[derive(Default)]
struct Side {
    counts: Option<EdgeCounts>,
    processes: BTreeMap<(String, String, String), u64>,
    /// Connections per hour start, as the rollups count them.
    hours: BTreeMap<i64, u64>,
    records: Records,
}

impl Side {
    fn add(&mut self, hourly: &HourlyEdgeTotal) {
        let total = &hourly.total;
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
        for &(hour, n) in &hourly.hours {
            *self.hours.entry(hour.as_nanos()).or_default() += n;
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

type Pairs<'a> = BTreeMap<PairKey<'a>, (Side, Side)>;

/// Groups rollup records by the edge they belong to, client's and server's
/// apart.
fn pair_up<'a>(totals: &'a [HourlyEdgeTotal], hosts: &'a HostDirectory) -> Pairs<'a> {
    let mut pairs = Pairs::new();
    for hourly in totals {
        let t = &hourly.total;
        let (key, logged_by_server) = pair_key(
            &t.host,
            t.direction,
            (t.local_ip, t.remote_ip),
            t.service_port,
            t.protocol,
            hosts,
        );
        let (client, server) = pairs.entry(key).or_default();
        if logged_by_server {
            server.add(hourly);
        } else {
            client.add(hourly);
        }
    }
    pairs
}

/// Whether both ends of the edge logged connections.
fn both_ends_logged((client, server): &(Side, Side)) -> bool {
    [client, server]
        .iter()
        .all(|side| side.hours.values().any(|&n| n > 0))
}

/// The hasher of the join's per-record maps: much cheaper than std's
/// SipHash on the millions of records of a day.
type FastHash = foldhash::fast::RandomState;

/// The hosts whose connection records a join needs: those of edges both
/// ends logged.
fn hosts_logging_both_ends(pairs: &Pairs<'_>) -> Vec<String> {
    let hosts: BTreeSet<&str> = pairs
        .iter()
        .filter(|(_, sides)| both_ends_logged(sides))
        .flat_map(|((_, _, _, _, server, client), _)| [*server, *client])
        .flatten()
        .collect();
    hosts.into_iter().map(str::to_owned).collect()
}

/// Files connection records with their edge's side, for the edges both ends
/// logged.
struct RecordFiler<'p, 'a> {
    sides: Vec<&'p mut (Side, Side)>,
    wanted: HashMap<PairKey<'a>, usize, FastHash>,
    hosts: &'a HostDirectory,
    /// Per host: what a record is about (see [`RecordFiler::file`]) -> its
    /// edge, if wanted; looked up once per rollup key, not once per record.
    edge_of: Vec<(String, EdgeOf)>,
    /// The host of the previous record, an index into `edge_of`: records
    /// come a host's block at a time.
    current: usize,
}

/// What a record is about: (logged by the server, local address, remote
/// address, service port, protocol).
type About = (bool, IpAddr, IpAddr, u16, Protocol);

/// One host's [`About`] -> index of the wanted edge, if wanted.
type EdgeOf = HashMap<About, Option<usize>, FastHash>;

impl<'p, 'a> RecordFiler<'p, 'a> {
    fn new(pairs: &'p mut Pairs<'a>, hosts: &'a HostDirectory) -> Self {
        let mut sides: Vec<&'p mut (Side, Side)> = Vec::new();
        let mut wanted: HashMap<PairKey<'a>, usize, FastHash> = HashMap::default();
        for (key, pair) in pairs.iter_mut().filter(|(_, pair)| both_ends_logged(pair)) {
            for side in [&mut pair.0, &mut pair.1] {
                let expected = side.hours.values().sum::<u64>();
                side.records.reserve(usize::try_from(expected).unwrap_or(0));
            }
            wanted.insert(*key, sides.len());
            sides.push(pair);
        }
        RecordFiler {
            sides,
            wanted,
            hosts,
            edge_of: Vec::new(),
            current: 0,
        }
    }

    fn file(&mut self, host: &str, c: &ConnectionRecord) {
        if self
            .edge_of
            .get(self.current)
            .is_none_or(|(h, _)| h != host)
        {
            self.current = match self.edge_of.iter().position(|(h, _)| h == host) {
                Some(i) => i,
                None => {
                    self.edge_of.push((host.to_owned(), HashMap::default()));
                    self.edge_of.len() - 1
                }
            };
        }
        let about: About = (
            c.direction == Direction::Incoming,
            c.local.ip(),
            c.remote.ip(),
            c.service_port(),
            c.protocol,
        );
        let (wanted, hosts) = (&self.wanted, self.hosts);
        let (host, edge_of) = &mut self.edge_of[self.current];
        let edge = *edge_of.entry(about).or_insert_with(|| {
            let (key, _) = pair_key(
                host,
                c.direction,
                (about.1, about.2),
                about.3,
                about.4,
                hosts,
            );
            wanted.get(&key).copied()
        });
        let Some(edge) = edge else { return };
        let (client, server) = &mut *self.sides[edge];
        let at = c.timestamp.as_nanos();
        if about.0 {
            server.records.push((c.remote.port(), c.local.port(), at));
        } else {
            client.records.push((c.local.port(), c.remote.port(), at));
        }
    }
}

/// The connections of an edge per hour, and how they were counted.
fn count(client: &mut Side, server: &mut Side) -> (Vec<(Timestamp, u64)>, CountRule) {
    let hour_of = |at: i64| hour_start(Timestamp::from_nanos(at)).as_nanos();
    // An hour is exact when each end's records are all the connections its
    // rollups counted in that hour.
    let mut records_by_hour: BTreeMap<i64, [u64; 2]> = BTreeMap::new();
    for (end, side) in [&*client, &*server].into_iter().enumerate() {
        for &(_, _, at) in &side.records {
            records_by_hour.entry(hour_of(at)).or_default()[end] += 1;
        }
    }
    let exact = |hour: i64| {
        let records = records_by_hour.get(&hour).copied().unwrap_or_default();
        [&*client, &*server]
            .iter()
            .zip(records)
            .all(|(side, n)| side.hours.get(&hour).copied().unwrap_or(0) == n)
    };
    let exact_hours: BTreeSet<i64> = client
        .hours
        .keys()
        .chain(server.hours.keys())
        .copied()
        .filter(|&h| exact(h))
        .collect();
    for side in [&mut *client, &mut *server] {
        side.records
            .retain(|&(_, _, at)| exact_hours.contains(&hour_of(at)));
        side.records.sort_unstable();
    }
    // The server's records no client record accounts for, by hour. Both
    // lists are in (ports, time) order: pairing each server record with the
    // first client record of its ports in reach matches as many as can be.
    let tolerance = MATCH_TOLERANCE.as_nanos() as u64;
    let mut unmatched: BTreeMap<i64, u64> = BTreeMap::new();
    let (at_client, at_server) = (&client.records, &server.records);
    let mut i = 0;
    for &(client_port, server_port, at) in at_server {
        while i < at_client.len() {
            let (cp, sp, c_at) = at_client[i];
            if (cp, sp) < (client_port, server_port)
                || ((cp, sp) == (client_port, server_port)
                    && c_at < at
                    && c_at.abs_diff(at) > tolerance)
            {
                i += 1;
            } else {
                break;
            }
        }
        match at_client.get(i) {
            Some(&(cp, sp, c_at))
                if (cp, sp) == (client_port, server_port) && c_at.abs_diff(at) <= tolerance =>
            {
                i += 1;
            }
            _ => *unmatched.entry(hour_of(at)).or_default() += 1,
        }
    }
    let hours: BTreeSet<i64> = client
        .hours
        .keys()
        .chain(server.hours.keys())
        .copied()
        .collect();
    let mut max_rule = false;
    let counts = hours
        .into_iter()
        .map(|hour| {
            let c = client.hours.get(&hour).copied().unwrap_or(0);
            let s = server.hours.get(&hour).copied().unwrap_or(0);
            let n = if exact_hours.contains(&hour) {
                c + unmatched.get(&hour).copied().unwrap_or(0)
            } else {
                max_rule |= c > 0 && s > 0;
                c.max(s)
            };
            (Timestamp::from_nanos(hour), n)
        })
        .filter(|&(_, n)| n > 0)
        .collect();
    let rule = match (client.counts.is_some(), server.counts.is_some()) {
        _ if max_rule => CountRule::MaxRule,
        (true, true) => CountRule::Joined,
        (false, true) => CountRule::ServerOnly,
        _ => CountRule::ClientOnly,
    };
    (counts, rule)
}

/// Reads the rollups of `range`, the host addresses and, for the edges both
/// ends logged, the raw connection records, and joins them.
pub fn load_edges(store: &dyn Store, range: TimeRange) -> Result<Vec<JoinedEdge>, StoreError> {
    Ok(load_joined(store, range)?.0)
}

/// [`load_edges`], with the host directory it used.
pub(crate) fn load_joined(
    store: &dyn Store,
    range: TimeRange,
) -> Result<(Vec<JoinedEdge>, HostDirectory), StoreError> {
    let totals = store.edge_totals_by_hour(&RollupQuery { range, host: None })?;
    let hosts = HostDirectory::new(&store.host_addresses()?);
    let mut pairs = pair_up(&totals, &hosts);
    let query = ConnectionQuery {
        range: rollup_span(range),
        hosts: hosts_logging_both_ends(&pairs),
    };
    let mut filer = RecordFiler::new(&mut pairs, &hosts);
    store.connections(&query, &mut |host, c| filer.file(host, c))?;
    let edges = finish(pairs);
    Ok((edges, hosts))
}

/// The whole hours whose rollups a [`RollupQuery`] of `range` reads.
fn rollup_span(range: TimeRange) -> TimeRange {
    let last_hour = hour_start(Timestamp::from_nanos(range.to.as_nanos().saturating_sub(1)));
    TimeRange {
        from: hour_start(range.from),
        to: Timestamp::from_nanos(last_hour.as_nanos().saturating_add(HOUR_NS)),
    }
}

/// Folds rollup records into edges, one per (client address and host, server
/// address and host, service port, protocol), ordered by server then client;
/// `connections` are (host, record) of the raw connection records that join
/// the edges both ends logged connection by connection (without them, the
/// max rule counts).
pub fn join_edges(
    totals: &[HourlyEdgeTotal],
    connections: &[(&str, ConnectionRecord)],
    hosts: &HostDirectory,
) -> Vec<JoinedEdge> {
    let mut pairs = pair_up(totals, hosts);
    let mut filer = RecordFiler::new(&mut pairs, hosts);
    for (host, c) in connections {
        filer.file(host, c);
    }
    finish(pairs)
}

fn finish(pairs: Pairs<'_>) -> Vec<JoinedEdge> {
    pairs
        .into_iter()
        .map(
            |(
                (server_ip, server_port, protocol, client_ip, server_host, client_host),
                (mut client, mut server),
            )| {
                let (hours, count_rule) = count(&mut client, &mut server);
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
                    connections: hours.iter().map(|&(_, n)| n).sum(),
                    failures: cc.failures.max(sc.failures),
                    bytes_to_server: cc.bytes_sent.max(sc.bytes_received),
                    bytes_to_client: cc.bytes_received.max(sc.bytes_sent),
                    first_seen: cc.first_seen.min(sc.first_seen),
                    last_seen: cc.last_seen.max(sc.last_seen),
                    logged_by_client: c.is_some(),
                    logged_by_server: s.is_some(),
                    count_rule,
                    hours,
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
    use crate::test_fixtures::{edge_total, hosts_a_and_b, join_rollups};

    #[test]
    fn both_ends_of_a_connection_join_and_count_once() {
        let totals = [
            edge_total("a", Direction::Outgoing, "10.0.0.1", "10.0.0.2", 22, 3),
            edge_total("b", Direction::Incoming, "10.0.0.2", "10.0.0.1", 22, 2),
        ];
        let edges = join_rollups(&totals, &hosts_a_and_b());
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
        let edges = join_rollups(&totals, &hosts_a_and_b());
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

    /// `a`'s connections to `b`'s port 22 as both log them: one record each
    /// per (client port, second) given.
    fn records(
        client: &[(u16, i64)],
        server: &[(u16, i64)],
    ) -> Vec<(&'static str, ConnectionRecord)> {
        let record = |direction, local: String, remote: String, secs: i64| ConnectionRecord {
            timestamp: Timestamp::from_nanos(secs * 1_000_000_000),
            direction,
            protocol: Protocol::Tcp,
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
        };
        let a = client.iter().map(|&(port, secs)| {
            let c = format!("10.0.0.1:{port}");
            (
                "a",
                record(Direction::Outgoing, c, "10.0.0.2:22".into(), secs),
            )
        });
        let b = server.iter().map(|&(port, secs)| {
            let c = format!("10.0.0.1:{port}");
            (
                "b",
                record(Direction::Incoming, "10.0.0.2:22".into(), c, secs),
            )
        });
        a.chain(b).collect()
    }

    #[test]
    fn an_hour_without_the_raw_events_of_one_end_falls_back_to_the_max_rule() {
        let hourly = |host, direction, local, remote, hours: &[(i64, u64)]| {
            let n = hours.iter().map(|&(_, n)| n).sum();
            HourlyEdgeTotal {
                total: edge_total(host, direction, local, remote, 22, n),
                hours: hours
                    .iter()
                    .map(|&(hour, n)| (Timestamp::from_nanos(hour * HOUR_NS), n))
                    .collect(),
            }
        };
        // Hour 0: a saw 40000 and 40001, b saw 40001 and 40002 (three in
        // all). Hour 1: both counted two, but b's raw events are gone.
        let totals = [
            hourly(
                "a",
                Direction::Outgoing,
                "10.0.0.1",
                "10.0.0.2",
                &[(0, 2), (1, 2)],
            ),
            hourly(
                "b",
                Direction::Incoming,
                "10.0.0.2",
                "10.0.0.1",
                &[(0, 2), (1, 2)],
            ),
        ];
        let raw = records(
            &[(40000, 10), (40001, 20), (40003, 3_610), (40004, 3_620)],
            &[(40001, 21), (40002, 30)],
        );
        let edges = join_edges(&totals, &raw, &hosts_a_and_b());
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].count_rule, CountRule::MaxRule);
        let hours: Vec<(i64, u64)> = edges[0]
            .hours
            .iter()
            .map(|&(t, n)| (t.as_nanos() / HOUR_NS, n))
            .collect();
        assert_eq!(hours, [(0, 3), (1, 2)]);
        assert_eq!(edges[0].connections, 5);

        // With b's records of hour 1 back, it joins exactly.
        let raw = records(
            &[(40000, 10), (40001, 20), (40003, 3_610), (40004, 3_620)],
            &[(40001, 21), (40002, 30), (40003, 3_611), (40005, 3_630)],
        );
        let edges = join_edges(&totals, &raw, &hosts_a_and_b());
        assert_eq!(edges[0].count_rule, CountRule::Joined);
        assert_eq!(edges[0].connections, 6);
    }

    #[test]
    fn a_sum_of_edges_is_exact_unless_one_used_the_max_rule() {
        use CountRule::*;
        assert_eq!(Joined.and(Joined), Joined);
        assert_eq!(ClientOnly.and(ClientOnly), ClientOnly);
        assert_eq!(ClientOnly.and(ServerOnly), Joined);
        assert_eq!(Joined.and(MaxRule), MaxRule);
        assert_eq!(MaxRule.and(ServerOnly), MaxRule);
    }
}
