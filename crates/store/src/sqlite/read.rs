//! Reading back: rollups summed per edge (names resolved once per edge),
//! host addresses, and raw events and connections decoded from blocks.

use std::collections::HashMap;
use std::sync::Mutex;

use connscope_event::{ConnectionEvent, Timestamp};
use rusqlite::{params, OptionalExtension};

use super::column::{block_corrupt, block_data, block_events, parse_column, Corrupt};
use super::connection::{lock, Reader};
use crate::block;
use crate::hash::FastHash;
use crate::{
    hour_start, AgentId, ConnectionQuery, ConnectionRecord, EdgeCounts, EdgeTotal, EventQuery,
    ExportSink, HostAddress, HourlyEdgeTotal, NameSighting, Origin, RollupQuery, StoreError,
};

/// Sums the rollups of `query` per edge, keeping each edge's connections
/// per hour when `hourly`.
pub(super) fn rollups(
    reader: &Mutex<Reader>,
    query: &RollupQuery,
    hourly: bool,
) -> Result<Vec<HourlyEdgeTotal>, StoreError> {
    let mut guard = lock(reader);
    let reader = &mut *guard;
    let host = match &query.host {
        None => None,
        Some(host) => {
            let id: Option<i64> = reader
                .conn
                .prepare_cached("SELECT name_id FROM names WHERE name = ?1")?
                .query_row([host], |r| r.get(0))
                .optional()?;
            match id {
                Some(id) => Some(id),
                None => return Ok(Vec::new()),
            }
        }
    };
    // Summed here rather than by GROUP BY: hashing integer keys beats
    // SQLite's sort of the whole range.
    // Name ids of the key -> (connections, failures, bytes sent and
    // received, first and last seen), and (hour, connections).
    type Sums = ([i64; 6], Vec<(i64, u64)>);
    let mut sums: HashMap<[i64; 8], Sums, FastHash> = HashMap::default();
    {
        let mut stmt = reader.conn.prepare_cached(
            "SELECT host, direction, local_ip, remote_ip, service_port, protocol, executable,
                        user_name, connections, failures, bytes_sent, bytes_received, first_seen,
                        last_seen, hour
                 FROM edge_rollups
                 WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR host = ?3)",
        )?;
        let mut rows = stmt.query(params![
            hour_start(query.range.from).as_nanos(),
            query.range.to.as_nanos(),
            host
        ])?;
        while let Some(r) = rows.next()? {
            let mut key = [0i64; 8];
            for (i, k) in key.iter_mut().enumerate() {
                *k = r.get(i)?;
            }
            let mut n = [0i64; 6];
            for (i, v) in n.iter_mut().enumerate() {
                *v = r.get(8 + i)?;
            }
            let (sum, hours) = sums
                .entry(key)
                .or_insert_with(|| ([0, 0, 0, 0, i64::MAX, i64::MIN], Vec::new()));
            for i in 0..4 {
                sum[i] = sum[i].saturating_add(n[i]);
            }
            sum[4] = sum[4].min(n[4]);
            sum[5] = sum[5].max(n[5]);
            if hourly && n[0] > 0 {
                hours.push((r.get(14)?, n[0] as u64));
            }
        }
    }
    // Every id the result names, resolved once.
    for key in sums.keys() {
        for (i, &id) in key.iter().enumerate() {
            if i != 4 {
                reader.names.name(&reader.conn, id)?;
            }
        }
    }
    let names = &reader.names;
    let name = |id: &i64| names.known(*id);
    let mut rows: Vec<_> = sums
        .into_iter()
        .map(|(k, (n, hours))| {
            let text = (
                name(&k[0]),
                name(&k[1]),
                name(&k[2]),
                name(&k[3]),
                k[4],
                name(&k[5]),
                name(&k[6]),
                name(&k[7]),
            );
            (text, n, hours)
        })
        .collect();
    // The order of the text, as the trait promised when it was SQL.
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut totals = Vec::with_capacity(rows.len());
    for ((host, direction, local_ip, remote_ip, port, protocol, executable, user), n, mut hours) in
        rows
    {
        hours.sort_unstable();
        let total = EdgeTotal {
            host: host.to_owned(),
            direction: parse_column("direction", direction)?,
            local_ip: parse_column("local_ip", local_ip)?,
            remote_ip: parse_column("remote_ip", remote_ip)?,
            service_port: u16::try_from(port).map_err(|_| Corrupt {
                column: "service_port",
                value: port.to_string(),
            })?,
            protocol: parse_column("protocol", protocol)?,
            executable: executable.to_owned(),
            user: user.to_owned(),
            counts: EdgeCounts {
                connections: n[0] as u64,
                failures: n[1] as u64,
                bytes_sent: n[2] as u64,
                bytes_received: n[3] as u64,
                first_seen: Timestamp::from_nanos(n[4]),
                last_seen: Timestamp::from_nanos(n[5]),
            },
        };
        let hours = hours
            .into_iter()
            .map(|(hour, connections)| (Timestamp::from_nanos(hour), connections))
            .collect();
        totals.push(HourlyEdgeTotal { total, hours });
    }
    Ok(totals)
}

/// Every host's addresses, by host and address.
pub(super) fn host_addresses(reader: &Mutex<Reader>) -> Result<Vec<HostAddress>, StoreError> {
    let guard = lock(reader);
    let conn = &guard.conn;
    let mut stmt = conn.prepare_cached(
        "SELECT host, ip, first_seen, last_seen FROM host_addresses ORDER BY host, ip",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (host, ip, first, last) = row?;
        out.push(HostAddress {
            host,
            ip: parse_column("ip", &ip)?,
            first_seen: Timestamp::from_nanos(first),
            last_seen: Timestamp::from_nanos(last),
        });
    }
    Ok(out)
}

/// The `remote_names` rows of the query's hours, ordered by host, address,
/// name and hour.
pub(super) fn remote_names(
    reader: &Mutex<Reader>,
    query: &RollupQuery,
) -> Result<Vec<NameSighting>, StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT hour, host, remote_ip, name, source, connections, first_seen, last_seen
         FROM remote_names
         WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR host = ?3)
         ORDER BY host, remote_ip, name, source, hour",
    )?;
    let rows = stmt.query_map(
        params![
            hour_start(query.range.from).as_nanos(),
            query.range.to.as_nanos(),
            query.host
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (hour, host, ip, name, source, connections, first, last) = row?;
        out.push(NameSighting {
            hour: Timestamp::from_nanos(hour),
            host,
            remote_ip: parse_column("remote_names.remote_ip", &ip)?,
            name,
            source: parse_column("remote_names.source", &source)?,
            connections: connections.max(0) as u64,
            first_seen: Timestamp::from_nanos(first),
            last_seen: Timestamp::from_nanos(last),
        });
    }
    Ok(out)
}

/// The oldest `query.limit` raw events of `query`, decoded from their blocks.
pub(super) fn events(
    reader: &Mutex<Reader>,
    query: &EventQuery,
) -> Result<Vec<ConnectionEvent>, StoreError> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT block_id, host, first_ts, data FROM event_blocks
             WHERE first_ts < ?2 AND last_ts >= ?1 AND (?3 IS NULL OR host = ?3)
             ORDER BY first_ts, block_id",
    )?;
    let mut rows = stmt.query(params![
        query.range.from.as_nanos(),
        query.range.to.as_nanos(),
        query.host,
    ])?;
    // (time, block, position): the order events were stored in breaks ties.
    let mut found: Vec<((i64, i64, usize), ConnectionEvent)> = Vec::new();
    let oldest_first = |found: &mut Vec<((i64, i64, usize), ConnectionEvent)>| {
        found.sort_unstable_by_key(|(order, _)| *order);
        found.truncate(query.limit);
    };
    // The time of the limit-th oldest event found so far: blocks that
    // start after it cannot contribute.
    let mut enough: Option<i64> = None;
    while let Some(row) = rows.next()? {
        let (id, host, first_ts): (i64, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        if enough.is_some_and(|t| first_ts > t) {
            break;
        }
        let events = block_events(row, id, &host, 3)?;
        found.extend(
            events
                .into_iter()
                .enumerate()
                .filter(|(_, e)| query.range.contains(e.timestamp))
                .map(|(i, e)| ((e.timestamp.as_nanos(), id, i), e)),
        );
        if found.len() >= query.limit && (enough.is_none() || found.len() >= 2 * query.limit) {
            oldest_first(&mut found);
            enough = found.last().map(|((t, _, _), _)| *t);
        }
    }
    oldest_first(&mut found);
    Ok(found.into_iter().map(|(_, e)| e).collect())
}

/// Each block's events with the agent and space they were stored under
/// (blocks from before sequence spaces are the agent's legacy space's).
pub(super) fn export(reader: &Mutex<Reader>, each: &mut ExportSink<'_>) -> Result<(), StoreError> {
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT b.block_id, b.host, b.data, a.name, coalesce(s.instance, ''),
                coalesce(s.boot, ''), coalesce(s.first_seq, 1)
         FROM event_blocks b JOIN agents a ON a.agent_id = b.agent_id
         LEFT JOIN sequence_spaces s ON s.space_id = b.space_id
         ORDER BY b.block_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (id, host): (i64, String) = (row.get(0)?, row.get(1)?);
        let events = block_events(row, id, &host, 2)?;
        let origin = Origin {
            instance: row.get(4)?,
            boot: row.get(5)?,
            first_sequence: row.get::<_, i64>(6)? as u64,
        };
        each(&AgentId(row.get(3)?), &origin, &events)?;
    }
    Ok(())
}

/// Each connection of `query`'s hosts in its range, read from the blocks.
pub(super) fn connections(
    reader: &Mutex<Reader>,
    query: &ConnectionQuery,
    each: &mut dyn FnMut(&str, &ConnectionRecord),
) -> Result<(), StoreError> {
    if query.hosts.is_empty() {
        return Ok(());
    }
    let guard = lock(reader);
    let mut stmt = guard.conn.prepare_cached(
        "SELECT block_id, host, data FROM event_blocks WHERE first_ts < ?2 AND last_ts >= ?1",
    )?;
    let mut rows = stmt.query(params![
        query.range.from.as_nanos(),
        query.range.to.as_nanos()
    ])?;
    while let Some(row) = rows.next()? {
        let host = row.get_ref(1)?.as_str().map_err(|_| Corrupt {
            column: "event_blocks.host",
            value: "not text".into(),
        })?;
        if !query.hosts.iter().any(|h| h == host) {
            continue;
        }
        let id: i64 = row.get(0)?;
        block::connects(block_data(row, id, 2)?, query.range, &mut |c| each(host, c))
            .map_err(|e| block_corrupt(id, e))?;
    }
    Ok(())
}
