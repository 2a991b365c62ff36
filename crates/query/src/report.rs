//! The `connscope report` outputs: aligned tables for people, JSON and CSV for
//! scripts. `report edges --format json` is a stable interface, documented in
//! `docs/API.md` ("report edges JSON"): fields are only ever added.
//!
//! Times are RFC 3339 in UTC with a numeric offset (`2026-11-24T19:22:17+00:00`,
//! with a fraction only when the store has one).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::str::FromStr;

use connscope_event::{Protocol, Timestamp};
use connscope_store::{AgentStatus, RefusalCount};
use serde::Serialize;

use crate::join::{CountRule, JoinedEdge, ProcessUse};
use crate::naming::{domain_of, shown, RemoteNames};

/// How a report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown format {s:?}; expected table, json or csv")),
        }
    }
}

/// RFC 3339, UTC, numeric offset.
pub fn rfc3339(t: Timestamp) -> String {
    t.to_jiff()
        .display_with_offset(jiff::tz::Offset::UTC)
        .to_string()
}

pub(crate) fn serialize_protocol<S: serde::Serializer>(
    p: &Protocol,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

pub(crate) fn serialize_time<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// Rows of one report, ready to be written in any [`Format`].
pub struct Report {
    columns: Vec<&'static str>,
    /// Right-aligned in tables.
    numeric: Vec<bool>,
    rows: Vec<Vec<String>>,
    json: serde_json::Value,
}

impl Report {
    pub(crate) fn new(
        columns: Vec<&'static str>,
        numeric: Vec<bool>,
        rows: Vec<Vec<String>>,
        json: serde_json::Value,
    ) -> Report {
        Report {
            columns,
            numeric,
            rows,
            json,
        }
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(),
            Format::Csv => self.csv(),
            Format::Json => {
                let mut out =
                    serde_json::to_string_pretty(&self.json).expect("JSON values serialise");
                out.push('\n');
                out
            }
        }
    }

    fn table(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, cell) in cells.enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                if self.numeric[i] {
                    text.extend(std::iter::repeat_n(' ', pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        let headers: Vec<String> = self.columns.iter().map(|c| c.to_uppercase()).collect();
        line(&mut headers.iter().map(String::as_str));
        for row in &self.rows {
            line(&mut row.iter().map(String::as_str));
        }
        out
    }

    fn csv(&self) -> String {
        let mut out = String::new();
        let field = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_owned()
            }
        };
        let _ = writeln!(out, "{}", self.columns.join(","));
        for row in &self.rows {
            let cells: Vec<String> = row.iter().map(|c| field(c)).collect();
            let _ = writeln!(out, "{}", cells.join(","));
        }
        out
    }
}

/// One object of `report edges --format json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeRecord {
    pub client_ip: String,
    pub client_host: Option<String>,
    pub server_ip: String,
    pub server_host: Option<String>,
    pub server_port: u16,
    #[serde(serialize_with = "serialize_protocol")]
    pub protocol: Protocol,
    pub connections: u64,
    pub failures: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub client_processes: Vec<ProcessUse>,
    pub server_processes: Vec<ProcessUse>,
    /// `client`, `server` or `both`.
    pub logged_by: &'static str,
    /// How `connections` was counted: `joined`, `client_only`,
    /// `server_only` or `max_rule`.
    pub count_rule: CountRule,
    /// The name the client host knew an external server by (its DNS answer
    /// or TLS server name, see [`crate::naming`]), byte for byte; absent
    /// when none is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The registered domain of `server_name` (Public Suffix List).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_domain: Option<String>,
}

fn process_list(processes: &[ProcessUse]) -> String {
    let names: BTreeSet<String> = processes
        .iter()
        .map(|p| match (p.executable.as_str(), p.user.as_str()) {
            ("", "") => "?".to_owned(),
            (exe, "") => exe.to_owned(),
            ("", user) => format!("?({user})"),
            (exe, user) => format!("{exe}({user})"),
        })
        .collect();
    names.into_iter().collect::<Vec<_>>().join(" ")
}

/// The name an edge's external server end is known by: the one its
/// monitored client host learned (see [`crate::naming`]).
fn server_name<'a>(e: &JoinedEdge, names: &'a RemoteNames) -> Option<&'a str> {
    match (&e.client_host, &e.server_host) {
        (Some(client), None) => names.name_during(client, e.server_ip, &e.hours),
        _ => None,
    }
}

/// `report edges`: one row per joined edge (client address, server address,
/// port, protocol).
pub fn edges_report(edges: &[JoinedEdge]) -> Report {
    edges_report_named(edges, &RemoteNames::default())
}

/// [`edges_report`] with external servers named from `names`: a
/// `server_name` column when any is named, `server_name` and
/// `server_domain` fields in JSON.
pub fn edges_report_named(edges: &[JoinedEdge], names: &RemoteNames) -> Report {
    let records: Vec<EdgeRecord> = edges
        .iter()
        .map(|e| EdgeRecord {
            server_name: server_name(e, names).map(str::to_owned),
            server_domain: server_name(e, names).map(domain_of),
            client_ip: e.client_ip.to_string(),
            client_host: e.client_host.clone(),
            server_ip: e.server_ip.to_string(),
            server_host: e.server_host.clone(),
            server_port: e.server_port,
            protocol: e.protocol,
            connections: e.connections,
            failures: e.failures,
            bytes_to_server: e.bytes_to_server,
            bytes_to_client: e.bytes_to_client,
            first_seen: rfc3339(e.first_seen),
            last_seen: rfc3339(e.last_seen),
            client_processes: e.client_processes.clone(),
            server_processes: e.server_processes.clone(),
            logged_by: match (e.logged_by_client, e.logged_by_server) {
                (true, true) => "both",
                (false, true) => "server",
                _ => "client",
            },
            count_rule: e.count_rule,
        })
        .collect();
    let rows = records
        .iter()
        .map(|r| {
            vec![
                r.client_host.clone().unwrap_or_default(),
                r.client_ip.clone(),
                r.server_host.clone().unwrap_or_default(),
                r.server_ip.clone(),
                r.server_port.to_string(),
                r.protocol.to_string(),
                r.connections.to_string(),
                r.failures.to_string(),
                r.first_seen.clone(),
                r.last_seen.clone(),
                process_list(&r.client_processes),
                process_list(&r.server_processes),
            ]
        })
        .collect();
    let mut report = Report {
        columns: vec![
            "client_host",
            "client_ip",
            "server_host",
            "server_ip",
            "server_port",
            "protocol",
            "connections",
            "failures",
            "first_seen",
            "last_seen",
            "client_processes",
            "server_processes",
        ],
        numeric: vec![
            false, false, false, false, true, false, true, true, false, false, false, false,
        ],
        rows,
        json: serde_json::to_value(&records).expect("edge records serialise"),
    };
    if records.iter().any(|r| r.server_name.is_some()) {
        report.columns.insert(4, "server_name");
        report.numeric.insert(4, false);
        for (row, record) in report.rows.iter_mut().zip(&records) {
            row.insert(
                4,
                record.server_name.as_deref().map(shown).unwrap_or_default(),
            );
        }
    }
    report
}

#[derive(Serialize)]
struct NameEdgeRecord {
    /// `None`: an address no host learned a name for (one row per address).
    server_name: Option<String>,
    server_domain: Option<String>,
    server_port: u16,
    #[serde(serialize_with = "serialize_protocol")]
    protocol: Protocol,
    /// The server addresses the name stood for, sorted.
    addresses: Vec<String>,
    /// The monitored client hosts, sorted.
    clients: Vec<String>,
    edges: u64,
    connections: u64,
    failures: u64,
    first_seen: String,
    last_seen: String,
}

/// `report edges --by name`: the edges of monitored hosts to external
/// servers, summed per server name (as the client host knew it), port and
/// protocol; an address without a name is a row of its own. Edges to
/// monitored hosts are left out: they have host names (`report edges`).
pub fn name_edges_report(edges: &[JoinedEdge], names: &RemoteNames) -> Report {
    struct Acc {
        addresses: BTreeSet<String>,
        clients: BTreeSet<String>,
        edges: u64,
        connections: u64,
        failures: u64,
        first: Timestamp,
        last: Timestamp,
    }
    // Keyed by (named?, name or address, port, protocol): named rows first.
    let mut sums: BTreeMap<(bool, String, u16, Protocol), Acc> = BTreeMap::new();
    for e in edges {
        let (Some(client), None) = (&e.client_host, &e.server_host) else {
            continue;
        };
        let key = match names.name_during(client, e.server_ip, &e.hours) {
            Some(name) => (false, name.to_owned(), e.server_port, e.protocol),
            None => (true, e.server_ip.to_string(), e.server_port, e.protocol),
        };
        let acc = sums.entry(key).or_insert(Acc {
            addresses: BTreeSet::new(),
            clients: BTreeSet::new(),
            edges: 0,
            connections: 0,
            failures: 0,
            first: e.first_seen,
            last: e.last_seen,
        });
        acc.addresses.insert(e.server_ip.to_string());
        acc.clients.insert(client.clone());
        acc.edges += 1;
        acc.connections += e.connections;
        acc.failures += e.failures;
        acc.first = acc.first.min(e.first_seen);
        acc.last = acc.last.max(e.last_seen);
    }
    let records: Vec<NameEdgeRecord> = sums
        .into_iter()
        .map(|((unnamed, name, port, protocol), acc)| NameEdgeRecord {
            server_domain: (!unnamed).then(|| domain_of(&name)),
            server_name: (!unnamed).then_some(name),
            server_port: port,
            protocol,
            addresses: acc.addresses.into_iter().collect(),
            clients: acc.clients.into_iter().collect(),
            edges: acc.edges,
            connections: acc.connections,
            failures: acc.failures,
            first_seen: rfc3339(acc.first),
            last_seen: rfc3339(acc.last),
        })
        .collect();
    let rows = records
        .iter()
        .map(|r| {
            vec![
                r.server_name.as_deref().map(shown).unwrap_or_default(),
                r.server_domain.as_deref().map(shown).unwrap_or_default(),
                r.server_port.to_string(),
                r.protocol.to_string(),
                r.addresses.join(" "),
                r.clients.join(" "),
                r.connections.to_string(),
                r.failures.to_string(),
                r.first_seen.clone(),
                r.last_seen.clone(),
            ]
        })
        .collect();
    Report {
        columns: vec![
            "server_name",
            "domain",
            "server_port",
            "protocol",
            "addresses",
            "clients",
            "connections",
            "failures",
            "first_seen",
            "last_seen",
        ],
        numeric: vec![
            false, false, true, false, false, false, true, true, false, false,
        ],
        rows,
        json: serde_json::to_value(records).expect("name edge records serialise"),
    }
}

#[derive(Serialize)]
struct HostRecord {
    host: String,
    /// The host's groups, in the order they were added.
    groups: Vec<String>,
    agent: String,
    /// The agent state's instance id; empty for senders without one.
    instance: String,
    /// Another state of this agent came first: it started again without
    /// its state (wiped, or its token copied to another host).
    lost_state: bool,
    /// Runs of this state seen, and the numbers more than one of them used
    /// (the state was restored from a snapshot; all those events are stored).
    boots: u64,
    reused: u64,
    /// Numbers resent with other content than stored (the sender numbered
    /// two events alike; the first is kept).
    conflicts: u64,
    events: u64,
    first_seen: String,
    last_seen: String,
    /// Sequence ranges held, `[first, last]` pairs; empty for imported data.
    sequences: Vec<(u64, u64)>,
    missing: u64,
    /// Of `missing`, the numbers the agent reported deleting unsent (its
    /// spool was full): known losses, not unexplained ones.
    dropped: u64,
    /// `dropped` by the reason the agent gave (spool-full, refused,
    /// spool-write-failed, crash, ...).
    dropped_by_reason: BTreeMap<String, u64>,
    /// `missing - dropped`: lost without an explanation.
    unexplained: u64,
    /// When the agent was not running (from, to): it saw no connections.
    downtime: Vec<(String, String)>,
    gaps: Vec<(u64, u64)>,
}

impl HostRecord {
    /// The agent cell: its id, and which state when it has several.
    fn agent_text(&self) -> String {
        match (self.instance.as_str(), self.lost_state) {
            ("", _) => self.agent.clone(),
            (instance, lost) => {
                let short: String = instance.chars().take(8).collect();
                let note = if lost { " (state lost)" } else { "" };
                format!("{}/{short}{note}", self.agent)
            }
        }
    }

    /// The dropped cell: the count, with the reasons when any is not a full spool.
    fn dropped_text(&self) -> String {
        if self.dropped_by_reason.keys().all(|r| r == "spool-full") {
            return self.dropped.to_string();
        }
        let reasons: Vec<String> = self
            .dropped_by_reason
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        format!("{} ({})", self.dropped, reasons.join(", "))
    }
}

fn ranges_text(ranges: &[(u64, u64)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(f, l)| {
            if f == l {
                f.to_string()
            } else {
                format!("{f}-{l}")
            }
        })
        .collect();
    parts.join(" ")
}

/// `report hosts`: every sender, when it was last heard of, and its gaps.
pub fn hosts_report(agents: &[AgentStatus]) -> Report {
    hosts_report_with_groups(agents, &BTreeMap::new())
}

/// [`hosts_report`] with each host's groups (host -> group names, as
/// `groups::groups_by_host` gives them): a `groups` column when any host has
/// one, and a `groups` field in JSON.
pub fn hosts_report_with_groups(
    agents: &[AgentStatus],
    groups: &BTreeMap<String, Vec<String>>,
) -> Report {
    let records: Vec<HostRecord> = agents
        .iter()
        .map(|a| {
            let gaps = a.gaps();
            HostRecord {
                groups: groups.get(&a.host).cloned().unwrap_or_default(),
                host: a.host.clone(),
                agent: a.agent.0.clone(),
                instance: a.instance.clone(),
                lost_state: a.lost_state,
                boots: a.boots,
                reused: a.reused,
                conflicts: a.conflicts,
                events: a.events,
                first_seen: rfc3339(a.first_seen),
                last_seen: rfc3339(a.last_seen),
                sequences: a.sequences.ranges().to_vec(),
                missing: gaps.missing,
                dropped: gaps.dropped,
                dropped_by_reason: gaps.dropped_by_reason.into_iter().collect(),
                unexplained: gaps.unexplained,
                downtime: a
                    .downtime
                    .iter()
                    .map(|&(from, to)| (rfc3339(from), rfc3339(to)))
                    .collect(),
                gaps: gaps.ranges,
            }
        })
        .collect();
    let rows = records
        .iter()
        .map(|r| {
            vec![
                r.host.clone(),
                r.agent_text(),
                r.events.to_string(),
                r.last_seen.clone(),
                ranges_text(&r.sequences),
                r.missing.to_string(),
                r.dropped_text(),
                ranges_text(&r.gaps),
            ]
        })
        .collect();
    let mut report = Report {
        columns: vec![
            "host",
            "agent",
            "events",
            "last_seen",
            "sequences",
            "missing",
            "dropped",
            "gaps",
        ],
        numeric: vec![false, false, true, false, false, true, true, false],
        rows,
        json: serde_json::to_value(&records).expect("host records serialise"),
    };
    if records.iter().any(|r| !r.groups.is_empty()) {
        report.columns.insert(1, "groups");
        report.numeric.insert(1, false);
        for (row, record) in report.rows.iter_mut().zip(&records) {
            row.insert(1, record.groups.join(","));
        }
    }
    report
}

#[derive(Serialize)]
struct GroupEdgeRecord {
    client_group: String,
    server_group: String,
    server_port: u16,
    #[serde(serialize_with = "serialize_protocol")]
    protocol: Protocol,
    edges: u64,
    connections: u64,
    failures: u64,
}

/// Where a group edge report puts a monitored host in no group.
pub const UNGROUPED: &str = "(ungrouped)";
/// Where it puts an address no monitored host has.
pub const OUTSIDE: &str = "(outside)";

/// `report edges --by group`: edges summed per client group, server group,
/// port and protocol. A host in several groups counts in its first (the
/// earliest added, as a planner picks), so every connection counts once.
pub fn group_edges_report(edges: &[JoinedEdge], groups: &BTreeMap<String, Vec<String>>) -> Report {
    let group_of = |host: &Option<String>| match host {
        None => OUTSIDE.to_string(),
        Some(host) => groups
            .get(host)
            .and_then(|g| g.first())
            .map_or_else(|| UNGROUPED.to_string(), Clone::clone),
    };
    let mut sums: BTreeMap<(String, String, u16, Protocol), GroupEdgeRecord> = BTreeMap::new();
    for e in edges {
        let (client_group, server_group) = (group_of(&e.client_host), group_of(&e.server_host));
        let key = (
            client_group.clone(),
            server_group.clone(),
            e.server_port,
            e.protocol,
        );
        let sum = sums.entry(key).or_insert_with(|| GroupEdgeRecord {
            client_group,
            server_group,
            server_port: e.server_port,
            protocol: e.protocol,
            edges: 0,
            connections: 0,
            failures: 0,
        });
        sum.edges += 1;
        sum.connections += e.connections;
        sum.failures += e.failures;
    }
    let records: Vec<GroupEdgeRecord> = sums.into_values().collect();
    let rows = records
        .iter()
        .map(|r| {
            vec![
                r.client_group.clone(),
                r.server_group.clone(),
                r.server_port.to_string(),
                r.protocol.to_string(),
                r.edges.to_string(),
                r.connections.to_string(),
                r.failures.to_string(),
            ]
        })
        .collect();
    Report {
        columns: vec![
            "client_group",
            "server_group",
            "server_port",
            "protocol",
            "edges",
            "connections",
            "failures",
        ],
        numeric: vec![false, false, true, false, true, true, true],
        rows,
        json: serde_json::to_value(records).expect("group edge records serialise"),
    }
}

#[derive(Serialize)]
struct PortRecord {
    server_host: Option<String>,
    server_ip: Option<String>,
    port: u16,
    #[serde(serialize_with = "serialize_protocol")]
    protocol: Protocol,
    connections: u64,
    clients: usize,
    first_seen: String,
    last_seen: String,
    processes: Vec<String>,
}

/// `report ports`: per server (a monitored host, else an address) and port,
/// the connections, distinct client addresses and serving processes.
pub fn ports_report(edges: &[JoinedEdge]) -> Report {
    struct Acc {
        connections: u64,
        clients: BTreeSet<String>,
        first: Timestamp,
        last: Timestamp,
        processes: BTreeSet<String>,
    }
    let mut by_port: BTreeMap<(String, bool, u16, Protocol), Acc> = BTreeMap::new();
    for e in edges {
        let (server, is_host) = match &e.server_host {
            Some(h) => (h.clone(), true),
            None => (e.server_ip.to_string(), false),
        };
        let acc = by_port
            .entry((server, is_host, e.server_port, e.protocol))
            .or_insert(Acc {
                connections: 0,
                clients: BTreeSet::new(),
                first: e.first_seen,
                last: e.last_seen,
                processes: BTreeSet::new(),
            });
        acc.connections += e.connections;
        acc.clients.insert(format!(
            "{}/{}",
            e.client_host.as_deref().unwrap_or(""),
            e.client_ip
        ));
        acc.first = acc.first.min(e.first_seen);
        acc.last = acc.last.max(e.last_seen);
        acc.processes.extend(
            e.server_processes
                .iter()
                .filter(|p| !p.executable.is_empty())
                .map(|p| p.executable.clone()),
        );
    }
    let records: Vec<PortRecord> = by_port
        .into_iter()
        .map(|((server, is_host, port, protocol), acc)| PortRecord {
            server_host: is_host.then(|| server.clone()),
            server_ip: (!is_host).then_some(server),
            port,
            protocol,
            connections: acc.connections,
            clients: acc.clients.len(),
            first_seen: rfc3339(acc.first),
            last_seen: rfc3339(acc.last),
            processes: acc.processes.into_iter().collect(),
        })
        .collect();
    let rows = records
        .iter()
        .map(|r| {
            vec![
                r.server_host
                    .clone()
                    .or(r.server_ip.clone())
                    .unwrap_or_default(),
                r.port.to_string(),
                r.protocol.to_string(),
                r.connections.to_string(),
                r.clients.to_string(),
                r.first_seen.clone(),
                r.last_seen.clone(),
                r.processes.join(" "),
            ]
        })
        .collect();
    Report {
        columns: vec![
            "server",
            "port",
            "protocol",
            "connections",
            "clients",
            "first_seen",
            "last_seen",
            "processes",
        ],
        numeric: vec![false, true, false, true, true, false, false, false],
        rows,
        json: serde_json::to_value(records).expect("port records serialise"),
    }
}

/// `report refusals`: the batches the collector refused, per agent and
/// reason. Nothing of a refused batch is stored, so this is where it shows.
pub fn refusals_report(refusals: &[RefusalCount]) -> Report {
    #[derive(Serialize)]
    struct RefusalRecord<'a> {
        agent: &'a str,
        reason: &'a str,
        batches: u64,
        last_at: String,
    }
    let records: Vec<RefusalRecord<'_>> = refusals
        .iter()
        .map(|r| RefusalRecord {
            agent: &r.agent.0,
            reason: &r.reason,
            batches: r.batches,
            last_at: rfc3339(r.last_at),
        })
        .collect();
    Report {
        columns: vec!["agent", "reason", "batches", "last_at"],
        numeric: vec![false, false, true, false],
        rows: records
            .iter()
            .map(|r| {
                vec![
                    r.agent.to_owned(),
                    r.reason.to_owned(),
                    r.batches.to_string(),
                    r.last_at.clone(),
                ]
            })
            .collect(),
        json: serde_json::to_value(&records).expect("refusal records serialise"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_a_numeric_offset() {
        assert_eq!(
            rfc3339(Timestamp::from_nanos(0)),
            "1970-01-01T00:00:00+00:00"
        );
        assert_eq!(
            rfc3339(Timestamp::from_nanos(1_500_000_000)),
            "1970-01-01T00:00:01.5+00:00"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let r = Report {
            columns: vec!["a", "b"],
            numeric: vec![false, true],
            rows: vec![
                vec!["x,y".into(), "1".into()],
                vec!["say \"hi\"".into(), "22".into()],
            ],
            json: serde_json::Value::Null,
        };
        assert_eq!(
            r.render(Format::Csv),
            "a,b\n\"x,y\",1\n\"say \"\"hi\"\"\",22\n"
        );
        assert_eq!(
            r.render(Format::Table),
            "A          B\nx,y        1\nsay \"hi\"  22\n"
        );
    }
}
