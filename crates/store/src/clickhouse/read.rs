//! Reading back: rollups summed over their batches and then per edge,
//! host addresses, raw events and connections. Every read of a table
//! whose rows may repeat uses `FINAL` (or aggregates that a repeat does not
//! change: min, max, union).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use clickhouse::Client;
use connscope_event::{
    CloseStats, ConnectionEvent, NameSource, ProcessInfo, RemoteName, Timestamp,
};

use super::{fold, rows};
use crate::{
    hour_start, AgentId, ConnectionQuery, ConnectionRecord, EdgeCounts, EdgeTotal, EventQuery,
    HostAddress, HourlyEdgeTotal, Origin, RollupQuery, StoreError,
};

/// A value read back that does not parse: the store holds something this
/// build did not write.
fn corrupt(column: &str, value: &str) -> StoreError {
    StoreError::Backend(format!("column {column} holds {value:?}, which does not parse").into())
}

pub(super) fn parse<T: FromStr>(column: &str, value: &str) -> Result<T, StoreError> {
    value.parse().map_err(|_| corrupt(column, value))
}

/// A time range's hours widened by a day each side: an unnumbered event is
/// filed under its key's hour, which may be up to 14 hours off its own.
pub(super) fn filing_hours(from: Timestamp, to: Timestamp) -> (i64, i64) {
    const DAY: i64 = 86_400 * 1_000_000_000;
    (
        hour_start(from).as_nanos().saturating_sub(DAY),
        to.as_nanos().saturating_add(DAY),
    )
}

/// The parts of `[from, to)` outside the days starting at `days` (sorted).
fn outside_days(from: i64, to: i64, days: &[i64]) -> Vec<(i64, i64)> {
    let mut rest = Vec::new();
    let mut at = from;
    for &day in days {
        if day > at {
            rest.push((at, day));
        }
        at = at.max(day.saturating_add(fold::DAY_NS));
    }
    if at < to {
        rest.push((at, to));
    }
    rest
}

/// Sums the rollups of `query` per edge, keeping each edge's connections
/// per hour when `hourly`: the whole days with a current day row (when not
/// `hourly`), the other folded hours, and the batch rows no current fold
/// counts (see [`super::fold`]).
pub(super) async fn rollups(
    client: &Client,
    query: &RollupQuery,
    hourly: bool,
) -> Result<Vec<HourlyEdgeTotal>, StoreError> {
    let (from, to) = (
        hour_start(query.range.from).as_nanos(),
        query.range.to.as_nanos(),
    );
    let host = if query.host.is_some() {
        "AND host = ?"
    } else {
        ""
    };
    let versions = fold::hour_versions(client, from, to).await?;
    let days = if hourly || versions.is_empty() {
        Vec::new()
    } else {
        fold::current_days(client, from, to, &versions).await?
    };
    let select = |table: &str, filter: &str| {
        format!(
            "SELECT hour, host, direction, local_ip, remote_ip, service_port, protocol,
                    executable, user_name, sum(connections) AS connections,
                    sum(failures) AS failures, sum(bytes_sent) AS bytes_sent,
                    sum(bytes_received) AS bytes_received, min(first_seen) AS first_seen,
                    max(last_seen) AS last_seen
             FROM {table} FINAL
             WHERE hour >= ? AND hour < ? {host} {filter}
             GROUP BY hour, host, direction, local_ip, remote_ip, service_port, protocol,
                      executable, user_name"
        )
    };
    let bound = |sql: String| {
        let mut q = client.query(&sql).bind(from).bind(to);
        if let Some(host) = &query.host {
            q = q.bind(host);
        }
        q
    };
    let whole_days = async {
        if days.is_empty() {
            return Ok(Vec::new());
        }
        bound(select("folded_days", "AND has(?, hour)"))
            .bind(&days)
            .fetch_all::<rows::RollupSum>()
            .await
    };
    // The hours outside those days, as ranges of the sorting key: a filter
    // on each row would have the server read and merge (`FINAL`) every
    // folded hour of the range, a month's worth for nothing.
    let rest = outside_days(from, to, &days);
    let folded_hours = async {
        if versions.is_empty() || rest.is_empty() {
            return Ok(Vec::new());
        }
        let ranges = vec!["(hour >= ? AND hour < ?)"; rest.len()].join(" OR ");
        let mut q = bound(select("folded_hours", &format!("AND ({ranges})")));
        for (start, end) in &rest {
            q = q.bind(start).bind(end);
        }
        q.fetch_all::<rows::RollupSum>().await
    };
    let batch_rows = async {
        if versions.is_empty() {
            // Nothing folded here: no batch row to leave out.
            bound(select("edge_rollups", ""))
                .fetch_all::<rows::RollupSum>()
                .await
        } else {
            let covered = format!("AND (hour, batch_key) NOT IN ({})", fold::COVERED_REMAINING);
            bound(select("edge_rollups", &covered))
                .bind(from)
                .bind(to)
                .bind(from)
                .bind(to)
                .bind(from)
                .bind(to)
                .fetch_all::<rows::RollupSum>()
                .await
        }
    };
    let (whole_days, folded_hours, batch_rows) =
        futures_util::future::try_join3(whole_days, folded_hours, batch_rows).await?;
    type Key = (String, String, String, String, u16, String, String, String);
    let mut sums: HashMap<Key, (EdgeCounts, BTreeMap<i64, u64>)> = HashMap::new();
    for r in whole_days.into_iter().chain(folded_hours).chain(batch_rows) {
        let key = (
            r.host,
            r.direction,
            r.local_ip,
            r.remote_ip,
            r.service_port,
            r.protocol,
            r.executable,
            r.user_name,
        );
        let (sum, hours) = sums.entry(key).or_insert_with(|| {
            (
                EdgeCounts {
                    connections: 0,
                    failures: 0,
                    bytes_sent: 0,
                    bytes_received: 0,
                    first_seen: Timestamp::from_nanos(i64::MAX),
                    last_seen: Timestamp::from_nanos(i64::MIN),
                },
                BTreeMap::new(),
            )
        });
        sum.connections = sum.connections.saturating_add(r.connections);
        sum.failures = sum.failures.saturating_add(r.failures);
        sum.bytes_sent = sum.bytes_sent.saturating_add(r.bytes_sent);
        sum.bytes_received = sum.bytes_received.saturating_add(r.bytes_received);
        sum.first_seen = sum.first_seen.min(Timestamp::from_nanos(r.first_seen));
        sum.last_seen = sum.last_seen.max(Timestamp::from_nanos(r.last_seen));
        if hourly && r.connections > 0 {
            *hours.entry(r.hour).or_default() += r.connections;
        }
    }
    let mut rows: Vec<_> = sums.into_iter().collect();
    // The order of the text, as the SQLite backend gives it.
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut totals = Vec::with_capacity(rows.len());
    for (
        (host, direction, local_ip, remote_ip, port, protocol, executable, user),
        (counts, hours),
    ) in rows
    {
        totals.push(HourlyEdgeTotal {
            total: EdgeTotal {
                host,
                direction: parse("direction", &direction)?,
                local_ip: parse("local_ip", &local_ip)?,
                remote_ip: parse("remote_ip", &remote_ip)?,
                service_port: port,
                protocol: parse("protocol", &protocol)?,
                executable,
                user,
                counts,
            },
            hours: hours
                .into_iter()
                .map(|(hour, n)| (Timestamp::from_nanos(hour), n))
                .collect(),
        });
    }
    Ok(totals)
}

/// Every host's addresses, by host and address.
pub(super) async fn host_addresses(client: &Client) -> Result<Vec<HostAddress>, StoreError> {
    let rows = client
        .query(
            "SELECT host, ip, min(first_seen) AS first_seen, max(last_seen) AS last_seen
             FROM host_addresses GROUP BY host, ip ORDER BY host, ip",
        )
        .fetch_all::<rows::Address>()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(HostAddress {
                ip: parse("ip", &r.ip)?,
                host: r.host,
                first_seen: Timestamp::from_nanos(r.first_seen),
                last_seen: Timestamp::from_nanos(r.last_seen),
            })
        })
        .collect()
}

/// The oldest `query.limit` raw events of `query`.
pub(super) async fn events(
    client: &Client,
    query: &EventQuery,
) -> Result<Vec<ConnectionEvent>, StoreError> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let (from_hour, to_hour) = filing_hours(query.range.from, query.range.to);
    let sql = format!(
        "SELECT ?fields FROM events FINAL
         WHERE hour >= ? AND hour < ? AND ts >= ? AND ts < ? {}
         ORDER BY ts, agent, instance, boot, sequence, content_key
         LIMIT ?",
        if query.host.is_some() {
            "AND host = ?"
        } else {
            ""
        }
    );
    let mut select = client
        .query(&sql)
        .bind(from_hour)
        .bind(to_hour)
        .bind(query.range.from.as_nanos())
        .bind(query.range.to.as_nanos());
    if let Some(host) = &query.host {
        select = select.bind(host);
    }
    let rows = select
        .bind(query.limit as u64)
        .fetch_all::<rows::Event>()
        .await?;
    let mut processes: HashMap<ProcessKey, Arc<ProcessInfo>> = HashMap::new();
    rows.into_iter()
        .map(|r| event_of(r, &mut processes))
        .collect()
}

type ProcessKey = (
    u32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn event_of(
    r: rows::Event,
    processes: &mut HashMap<ProcessKey, Arc<ProcessInfo>>,
) -> Result<ConnectionEvent, StoreError> {
    let process = r.pid.map(|pid| {
        let key = (pid, r.executable, r.comm, r.command_line, r.cgroup);
        processes
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(ProcessInfo {
                    pid,
                    executable: key.1,
                    comm: key.2,
                    command_line: key.3,
                    cgroup: key.4,
                })
            })
            .clone()
    });
    let remote_name = match (r.remote_name, r.remote_name_source.as_deref()) {
        (Some(name), Some("dns")) => Some(RemoteName {
            name,
            source: NameSource::Dns,
        }),
        (Some(name), Some("sni")) => Some(RemoteName {
            name,
            source: NameSource::Sni,
        }),
        (None, None) => None,
        (_, source) => return Err(corrupt("remote_name_source", source.unwrap_or("NULL"))),
    };
    Ok(ConnectionEvent {
        kind: parse("kind", &r.kind)?,
        timestamp: Timestamp::from_nanos(r.ts),
        sequence: r.sequence,
        host: r.host,
        netns: r.netns,
        protocol: parse("protocol", &r.protocol)?,
        direction: parse("direction", &r.direction)?,
        local: socket("local_ip", &r.local_ip, r.local_port)?,
        remote: socket("remote_ip", &r.remote_ip, r.remote_port)?,
        process,
        uid: r.uid,
        user_name: r.user_name,
        close: (r.closed != 0).then_some(CloseStats {
            duration_ns: r.duration_ns,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            packets_sent: r.packets_sent,
            packets_received: r.packets_received,
        }),
        failure: r
            .failure
            .as_deref()
            .map(|f| parse("failure", f))
            .transpose()?,
        preexisting: r.preexisting != 0,
        remote_name,
    })
}

fn socket(column: &str, ip: &str, port: u16) -> Result<SocketAddr, StoreError> {
    Ok(SocketAddr::new(parse(column, ip)?, port))
}

/// One batch of [`export`]: the agent, its space, and events of it.
pub(super) type Exported = (AgentId, Origin, Vec<ConnectionEvent>);

#[derive(clickhouse::Row, serde::Deserialize)]
struct SpaceStart {
    agent: String,
    instance: String,
    boot: String,
    first_sequence: u64,
}

/// Sends every raw event to `batches`, grouped by agent and space.
pub(super) async fn export(
    client: &Client,
    batches: &SyncSender<Result<Exported, StoreError>>,
) -> Result<(), StoreError> {
    let starts: HashMap<(String, String, String), u64> = client
        .query(
            "SELECT agent, instance, boot, any(first_sequence) AS first_sequence
             FROM spaces GROUP BY agent, instance, boot",
        )
        .fetch_all::<SpaceStart>()
        .await?
        .into_iter()
        .map(|s| ((s.agent, s.instance, s.boot), s.first_sequence))
        .collect();
    let mut cursor = client
        .query(
            "SELECT ?fields FROM events FINAL
             ORDER BY agent, instance, boot, sequence, ts, content_key",
        )
        .fetch::<rows::Event>()?;
    let mut processes = HashMap::new();
    let mut current: Option<Exported> = None;
    while let Some(row) = cursor.next().await? {
        let space = (row.agent.clone(), row.instance.clone(), row.boot.clone());
        let same = current.as_ref().is_some_and(|(agent, origin, events)| {
            agent.0 == space.0
                && origin.instance == space.1
                && origin.boot == space.2
                && events.len() < CHUNK
        });
        if !same {
            if let Some(done) = current.take() {
                if batches.send(Ok(done)).is_err() {
                    return Ok(());
                }
            }
            let first_sequence = starts.get(&space).copied().unwrap_or(1);
            current = Some((
                AgentId(space.0),
                Origin {
                    instance: space.1,
                    boot: space.2,
                    first_sequence,
                },
                Vec::with_capacity(CHUNK),
            ));
        }
        let event = event_of(row, &mut processes)?;
        current.as_mut().expect("begun above").2.push(event);
    }
    if let Some(done) = current {
        let _ = batches.send(Ok(done));
    }
    Ok(())
}

/// How many connections go to the caller at a time.
const CHUNK: usize = 8192;

/// Sends each connection of `query`'s hosts in its range to `chunks`.
pub(super) async fn connections(
    client: &Client,
    query: &ConnectionQuery,
    chunks: &SyncSender<Result<Vec<(String, ConnectionRecord)>, StoreError>>,
) -> Result<(), StoreError> {
    if query.hosts.is_empty() {
        return Ok(());
    }
    let (from_hour, to_hour) = filing_hours(query.range.from, query.range.to);
    let mut cursor = client
        .query(
            "SELECT ?fields FROM events FINAL
             WHERE hour >= ? AND hour < ? AND ts >= ? AND ts < ? AND kind = 'connect'
               AND has(?, host)",
        )
        .bind(from_hour)
        .bind(to_hour)
        .bind(query.range.from.as_nanos())
        .bind(query.range.to.as_nanos())
        .bind(&query.hosts)
        .fetch::<rows::Connection>()?;
    let mut chunk = Vec::with_capacity(CHUNK);
    while let Some(r) = cursor.next().await? {
        chunk.push((
            r.host,
            ConnectionRecord {
                timestamp: Timestamp::from_nanos(r.ts),
                direction: parse("direction", &r.direction)?,
                protocol: parse("protocol", &r.protocol)?,
                local: socket("local_ip", &r.local_ip, r.local_port)?,
                remote: socket("remote_ip", &r.remote_ip, r.remote_port)?,
            },
        ));
        if chunk.len() == CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if chunks.send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = chunks.send(Ok(chunk));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::outside_days;
    use crate::clickhouse::fold::DAY_NS;

    #[test]
    fn the_hours_outside_whole_days_are_the_gaps_and_both_ends() {
        const H: i64 = DAY_NS / 24;
        let (from, to) = (5 * H, 4 * DAY_NS + 3 * H);
        assert_eq!(outside_days(from, to, &[]), vec![(from, to)]);
        assert_eq!(
            outside_days(from, to, &[DAY_NS, 3 * DAY_NS]),
            vec![(from, DAY_NS), (2 * DAY_NS, 3 * DAY_NS), (4 * DAY_NS, to)]
        );
        // Days covering the range to its end leave nothing after them.
        assert_eq!(
            outside_days(DAY_NS, 3 * DAY_NS, &[DAY_NS, 2 * DAY_NS]),
            vec![]
        );
    }
}
