//! One ingest: find what is new (the space's stored ranges, the agent's
//! content keys), then write the new events, their rollups, addresses and
//! the space's row, and last the ranges and keys that mark them stored.
//!
//! Every row written is keyed by what it counts, so a batch written twice
//! (by two collectors, or again after a collector died half-way) replaces
//! its own rows; the markers go last, so a batch whose markers are missing
//! is simply written again. See the module docs of [`super`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use clickhouse::{Client, Row, RowOwned, RowWrite};
use connscope_event::{ConnectionEvent, Timestamp};
use serde::Serialize;

use super::rows;
use crate::checks::check_origin;
use crate::{
    check_event, hour_start, is_host_address, AgentId, EventKey, IngestReport, KeyedEvent, Origin,
    RollupBatch, SequenceRanges, StoreError,
};

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The events of one ingest call, owned (they go to the backend's runtime).
pub(super) struct Batch {
    agent: String,
    origin: Origin,
    events: Vec<ConnectionEvent>,
    /// Per event: its content key (0 when numbered) and the hour it is filed under.
    keys: Vec<(u64, i64)>,
}

impl Batch {
    pub(super) fn plain(
        agent: &AgentId,
        origin: &Origin,
        events: &[ConnectionEvent],
    ) -> Result<Batch, StoreError> {
        let keys = events
            .iter()
            .map(|e| {
                let key = if e.sequence == 0 {
                    EventKey::of_event(e).0
                } else {
                    0
                };
                (key, hour_start(e.timestamp).as_nanos())
            })
            .collect();
        Batch::checked(agent, origin, events.to_vec(), keys)
    }

    pub(super) fn keyed(agent: &AgentId, events: &[KeyedEvent]) -> Result<Batch, StoreError> {
        let keys = events
            .iter()
            .map(|k| {
                if k.event.sequence == 0 {
                    (k.key.0, hour_start(k.key_time).as_nanos())
                } else {
                    (0, hour_start(k.event.timestamp).as_nanos())
                }
            })
            .collect();
        let events = events.iter().map(|k| k.event.clone()).collect();
        Batch::checked(agent, &Origin::legacy(), events, keys)
    }

    fn checked(
        agent: &AgentId,
        origin: &Origin,
        events: Vec<ConnectionEvent>,
        keys: Vec<(u64, i64)>,
    ) -> Result<Batch, StoreError> {
        for (i, event) in events.iter().enumerate() {
            check_event(i, event)?;
        }
        check_origin(origin)?;
        Ok(Batch {
            agent: agent.0.clone(),
            origin: origin.clone(),
            events,
            keys,
        })
    }
}

/// Writes `rows` to `table` in one INSERT (nothing for no rows).
pub(super) async fn insert_rows<T>(
    client: &Client,
    table: &str,
    rows: &[T],
) -> Result<(), StoreError>
where
    T: Row + RowOwned + RowWrite + for<'a> Row<Value<'a> = T> + Serialize,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

/// Stores the new events of `batch`.
pub(super) async fn ingest(client: &Client, batch: Batch) -> Result<IngestReport, StoreError> {
    let fresh = new_events(client, &batch).await?;
    let mut report = IngestReport {
        stored: fresh.iter().filter(|&&f| f).count() as u64,
        duplicates: fresh.iter().filter(|&&f| !f).count() as u64,
        conflicts: 0,
    };
    if report.stored == 0 {
        return Ok(report);
    }
    let agent = &batch.agent;
    let origin = &batch.origin;
    // The batch's identity: who numbered it and which events it stores.
    let mut identity: Vec<u8> = Vec::with_capacity(16 * batch.events.len());
    let mut events = Vec::with_capacity(report.stored as usize);
    let mut rollups = RollupBatch::new();
    let mut addresses: HashMap<(&str, IpAddr), (i64, i64)> = HashMap::new();
    let mut numbers = SequenceRanges::new();
    let mut keys = Vec::new();
    let mut span = (i64::MAX, i64::MIN);
    let mut last_host = "";
    for (i, event) in batch.events.iter().enumerate() {
        if !fresh[i] {
            continue;
        }
        let (content_key, hour) = batch.keys[i];
        identity.extend_from_slice(&event.sequence.to_le_bytes());
        identity.extend_from_slice(&content_key.to_le_bytes());
        identity.extend_from_slice(&hour.to_le_bytes());
        events.push(event_row(agent, origin, event, content_key, hour));
        rollups.add(event);
        let ts = event.timestamp.as_nanos();
        if is_host_address(event.local.ip()) {
            let seen = addresses
                .entry((event.host.as_str(), event.local.ip()))
                .or_insert((ts, ts));
            seen.0 = seen.0.min(ts);
            seen.1 = seen.1.max(ts);
        }
        if event.sequence != 0 {
            numbers.insert(event.sequence);
        } else {
            keys.push(rows::Key {
                agent: agent.clone(),
                hour,
                content_key,
            });
        }
        span = (span.0.min(ts), span.1.max(ts));
        last_host = &event.host;
    }
    let batch_key = EventKey::of_bytes(&[
        agent.as_bytes(),
        b"\0",
        origin.instance.as_bytes(),
        b"\0",
        origin.boot.as_bytes(),
        b"\0",
        &identity,
    ])
    .0;
    let rollups: Vec<rows::Rollup> = rollups
        .rows()
        .iter()
        .map(|(key, counts)| rows::Rollup {
            day: day_of(key.hour.as_nanos()),
            hour: key.hour.as_nanos(),
            host: key.host.clone(),
            direction: key.direction.as_str().to_owned(),
            local_ip: key.local_ip.to_string(),
            remote_ip: key.remote_ip.to_string(),
            service_port: key.service_port,
            protocol: key.protocol.as_str().to_owned(),
            executable: key.executable.clone(),
            user_name: key.user.clone(),
            batch_key,
            connections: counts.connections,
            failures: counts.failures,
            bytes_sent: counts.bytes_sent,
            bytes_received: counts.bytes_received,
            first_seen: counts.first_seen.as_nanos(),
            last_seen: counts.last_seen.as_nanos(),
        })
        .collect();
    let addresses: Vec<rows::Address> = addresses
        .into_iter()
        .map(|((host, ip), (first, last))| rows::Address {
            host: host.to_owned(),
            ip: ip.to_string(),
            first_seen: first,
            last_seen: last,
        })
        .collect();
    let space = rows::Space {
        agent: agent.clone(),
        instance: origin.instance.clone(),
        boot: origin.boot.clone(),
        batch_key,
        first_sequence: origin.first_sequence,
        host: last_host.to_owned(),
        events: report.stored,
        first_ts: span.0,
        last_ts: span.1,
        stored_at: Timestamp::now().as_nanos(),
    };
    let ranges: Vec<rows::Range> = numbers
        .ranges()
        .iter()
        .map(|&(first, last)| rows::Range {
            agent: agent.clone(),
            instance: origin.instance.clone(),
            boot: origin.boot.clone(),
            first_seq: first,
            last_seq: last,
        })
        .collect();
    insert_rows(client, "events", &events).await?;
    insert_rows(client, "edge_rollups", &rollups).await?;
    insert_rows(client, "host_addresses", &addresses).await?;
    insert_rows(client, "spaces", &[space]).await?;
    // The markers: from here on the batch counts as stored.
    insert_rows(client, "event_keys", &keys).await?;
    insert_rows(client, "sequence_ranges", &ranges).await?;
    report.conflicts = 0;
    tracing::debug!(agent = %agent, stored = report.stored, duplicates = report.duplicates, "ingested");
    Ok(report)
}

/// Which events of `batch` are not stored yet: numbered ones by their
/// space's stored ranges, the others by the agent's content keys of their
/// hour. Of equal events within the batch, the first is new.
async fn new_events(client: &Client, batch: &Batch) -> Result<Vec<bool>, StoreError> {
    let mut fresh = vec![false; batch.events.len()];
    let numbers = batch.events.iter().map(|e| e.sequence).filter(|&n| n != 0);
    let (low, high) = numbers.fold((u64::MAX, 0), |(l, h), n| (l.min(n), h.max(n)));
    let mut stored = if high > 0 {
        // Only the ranges the batch's numbers fall in: a space has a row
        // per batch, and a batch must not cost more as its agent ages.
        let rows = client
            .query(
                "SELECT ?fields FROM sequence_ranges
                 WHERE agent = ? AND instance = ? AND boot = ?
                   AND last_seq >= ? AND first_seq <= ?",
            )
            .bind(&batch.agent)
            .bind(&batch.origin.instance)
            .bind(&batch.origin.boot)
            .bind(low)
            .bind(high)
            .fetch_all::<rows::Range>()
            .await?;
        SequenceRanges::from_ranges(rows.into_iter().map(|r| (r.first_seq, r.last_seq)))
    } else {
        SequenceRanges::new()
    };
    let mut by_hour: HashMap<i64, Vec<usize>> = HashMap::new();
    for (i, event) in batch.events.iter().enumerate() {
        if event.sequence != 0 {
            fresh[i] = stored.insert(event.sequence);
        } else {
            by_hour.entry(batch.keys[i].1).or_default().push(i);
        }
    }
    for (hour, indexes) in by_hour {
        let known: HashSet<u64> = client
            .query("SELECT content_key FROM event_keys WHERE agent = ? AND hour = ?")
            .bind(&batch.agent)
            .bind(hour)
            .fetch_all::<u64>()
            .await?
            .into_iter()
            .collect();
        let mut seen = HashSet::new();
        for i in indexes {
            let key = batch.keys[i].0;
            fresh[i] = !known.contains(&key) && seen.insert(key);
        }
    }
    Ok(fresh)
}

/// Days since the epoch of the time `nanos` (a `Date` column).
pub(super) fn day_of(nanos: i64) -> u16 {
    nanos
        .div_euclid(NANOS_PER_DAY)
        .clamp(0, i64::from(u16::MAX)) as u16
}

fn event_row(
    agent: &str,
    origin: &Origin,
    event: &ConnectionEvent,
    content_key: u64,
    hour: i64,
) -> rows::Event {
    let process = event.process.as_deref();
    let close = event.close.unwrap_or_default();
    rows::Event {
        day: day_of(hour),
        hour,
        host: event.host.clone(),
        ts: event.timestamp.as_nanos(),
        agent: agent.to_owned(),
        instance: origin.instance.clone(),
        boot: origin.boot.clone(),
        sequence: event.sequence,
        content_key,
        kind: event.kind.as_str().to_owned(),
        protocol: event.protocol.as_str().to_owned(),
        direction: event.direction.as_str().to_owned(),
        netns: event.netns,
        local_ip: event.local.ip().to_string(),
        local_port: event.local.port(),
        remote_ip: event.remote.ip().to_string(),
        remote_port: event.remote.port(),
        pid: process.map(|p| p.pid),
        executable: process.and_then(|p| p.executable.clone()),
        comm: process.and_then(|p| p.comm.clone()),
        command_line: process.and_then(|p| p.command_line.clone()),
        cgroup: process.and_then(|p| p.cgroup.clone()),
        uid: event.uid,
        user_name: event.user_name.clone(),
        closed: u8::from(event.close.is_some()),
        duration_ns: close.duration_ns,
        bytes_sent: close.bytes_sent,
        bytes_received: close.bytes_received,
        packets_sent: close.packets_sent,
        packets_received: close.packets_received,
        failure: event.failure.map(|f| f.as_str().to_owned()),
        preexisting: u8::from(event.preexisting),
        remote_name: event.remote_name.as_ref().map(|n| n.name.clone()),
        remote_name_source: event
            .remote_name
            .as_ref()
            .map(|n| name_source(n.source).to_owned()),
    }
}

pub(super) fn name_source(source: connscope_event::NameSource) -> &'static str {
    match source {
        connscope_event::NameSource::Dns => "dns",
        connscope_event::NameSource::Sni => "sni",
    }
}
