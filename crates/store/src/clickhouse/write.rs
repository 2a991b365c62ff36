//! Ingest: find what is new (the space's stored ranges, the agent's
//! content keys), then write the new events, their rollups, addresses and
//! the space's row, then the ranges and keys that mark them stored, and
//! last the batch's hours (what the fold job may take, see [`super::fold`]).
//!
//! Batches go through one writer per store that writes every batch queued
//! since its last write together (a group commit): one INSERT per table
//! for many requests instead of seven each, each a new part on the server.
//! A caller is answered only after its group's markers are stored, so an
//! answered batch is stored and an unanswered one is re-sent and found.
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
    pub(super) agent: String,
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

/// A batch waiting for the writer, and where its answer goes.
pub(super) struct Pending {
    pub batch: Batch,
    pub answer: std::sync::mpsc::SyncSender<Result<IngestReport, StoreError>>,
}

/// At most this many events go into one group's inserts; more waits for
/// the next group.
const GROUP_EVENTS: usize = 200_000;
/// A group's lookups of what its batches already have run this many at a
/// time (the server limits concurrent queries).
const LOOKUPS_AT_ONCE: usize = 8;

/// The store's one writer: takes every batch queued since its last write
/// (a group commit: no waiting when idle, larger groups under load) and
/// stores the group with one INSERT per table, then answers each batch.
pub(super) async fn writer(
    client: Client,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    while let Some(first) = queue.recv().await {
        let mut size = first.batch.events.len();
        let mut group = vec![first];
        while size < GROUP_EVENTS {
            match queue.try_recv() {
                Ok(next) => {
                    size += next.batch.events.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let (batches, answers): (Vec<Batch>, Vec<_>) =
            group.into_iter().map(|p| (p.batch, p.answer)).unzip();
        match ingest_group(&client, &batches).await {
            Ok(reports) => {
                for (answer, report) in answers.into_iter().zip(reports) {
                    // Gone only if its caller panicked.
                    let _ = answer.send(Ok(report));
                }
            }
            Err(e) if answers.len() == 1 => {
                let _ = answers[0].send(Err(e));
            }
            Err(e) => {
                let message = e.to_string();
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Backend(message.clone().into())));
                }
            }
        }
    }
}

/// What earlier batches of a group stored: the later ones must see it as
/// stored although its markers are not written yet.
#[derive(Default)]
struct GroupSeen {
    numbers: HashMap<(String, String, String), Vec<u64>>,
    keys: HashMap<(String, i64), HashSet<u64>>,
}

/// Stores the new events of each batch of a group and tells each what
/// was new. Every table gets one INSERT for the whole group, in the order
/// that keeps a half-written group harmless (markers last).
async fn ingest_group(client: &Client, batches: &[Batch]) -> Result<Vec<IngestReport>, StoreError> {
    let mut states = Vec::with_capacity(batches.len());
    for some in batches.chunks(LOOKUPS_AT_ONCE) {
        let lookups = some.iter().map(|batch| stored_state(client, batch));
        states.extend(futures_util::future::try_join_all(lookups).await?);
    }
    let mut seen = GroupSeen::default();
    let mut rows = GroupRows::default();
    let mut reports = Vec::with_capacity(batches.len());
    for (batch, state) in batches.iter().zip(states) {
        let fresh = fresh_events(batch, state, &mut seen);
        let stored = fresh.iter().filter(|&&f| f).count() as u64;
        let report = IngestReport {
            stored,
            duplicates: batch.events.len() as u64 - stored,
            conflicts: 0,
        };
        if stored > 0 {
            rows.add(batch, &fresh, stored);
        }
        tracing::debug!(agent = %batch.agent, stored, duplicates = report.duplicates, "ingested");
        reports.push(report);
    }
    rows.write(client).await?;
    Ok(reports)
}

/// The rows a group writes, table by table.
#[derive(Default)]
struct GroupRows {
    events: Vec<rows::Event>,
    rollups: Vec<rows::Rollup>,
    addresses: Vec<rows::Address>,
    spaces: Vec<rows::Space>,
    keys: Vec<rows::Key>,
    ranges: Vec<rows::Range>,
    done: Vec<rows::BatchHour>,
}

impl GroupRows {
    /// Adds the rows of `batch`'s new events (`fresh`, `stored` of them).
    fn add(&mut self, batch: &Batch, fresh: &[bool], stored: u64) {
        let agent = &batch.agent;
        let origin = &batch.origin;
        // The batch's identity: who numbered it and which events it stores.
        let mut identity: Vec<u8> = Vec::with_capacity(24 * batch.events.len());
        let mut rollups = RollupBatch::new();
        let mut addresses: HashMap<(&str, IpAddr), (i64, i64)> = HashMap::new();
        let mut numbers = SequenceRanges::new();
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
            self.events
                .push(event_row(agent, origin, event, content_key, hour));
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
                self.keys.push(rows::Key {
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
        let mut hours = Vec::new();
        for (key, counts) in rollups.rows() {
            hours.push(key.hour.as_nanos());
            self.rollups.push(rows::Rollup {
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
            });
        }
        hours.sort_unstable();
        hours.dedup();
        self.done.extend(
            hours
                .into_iter()
                .map(|hour| rows::BatchHour { hour, batch_key }),
        );
        self.addresses
            .extend(
                addresses
                    .into_iter()
                    .map(|((host, ip), (first, last))| rows::Address {
                        host: host.to_owned(),
                        ip: ip.to_string(),
                        first_seen: first,
                        last_seen: last,
                    }),
            );
        self.spaces.push(rows::Space {
            agent: agent.clone(),
            instance: origin.instance.clone(),
            boot: origin.boot.clone(),
            batch_key,
            first_sequence: origin.first_sequence,
            host: last_host.to_owned(),
            events: stored,
            first_ts: span.0,
            last_ts: span.1,
            stored_at: Timestamp::now().as_nanos(),
        });
        self.ranges
            .extend(numbers.ranges().iter().map(|&(first, last)| rows::Range {
                agent: agent.clone(),
                instance: origin.instance.clone(),
                boot: origin.boot.clone(),
                first_seq: first,
                last_seq: last,
            }));
    }

    async fn write(self, client: &Client) -> Result<(), StoreError> {
        insert_rows(client, "events", &self.events).await?;
        insert_rows(client, "edge_rollups", &self.rollups).await?;
        insert_rows(client, "host_addresses", &self.addresses).await?;
        insert_rows(client, "spaces", &self.spaces).await?;
        // The markers: from here on the batches count as stored.
        insert_rows(client, "event_keys", &self.keys).await?;
        insert_rows(client, "sequence_ranges", &self.ranges).await?;
        // Last, what lets the fold job take the batches' rollup rows: a
        // batch with all its markers can never be written again.
        insert_rows(client, "batch_hours", &self.done).await?;
        Ok(())
    }
}

/// What the store holds of the numbers and keys a batch carries.
struct StoredState {
    numbers: SequenceRanges,
    keys_by_hour: HashMap<i64, HashSet<u64>>,
}

/// Reads the space's stored ranges the batch's numbers fall in, and the
/// agent's content keys of the hours of its unnumbered events.
async fn stored_state(client: &Client, batch: &Batch) -> Result<StoredState, StoreError> {
    let numbers = batch.events.iter().map(|e| e.sequence).filter(|&n| n != 0);
    let (low, high) = numbers.fold((u64::MAX, 0), |(l, h), n| (l.min(n), h.max(n)));
    let numbers = if high > 0 {
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
    let mut hours: Vec<i64> = batch
        .events
        .iter()
        .zip(&batch.keys)
        .filter(|(e, _)| e.sequence == 0)
        .map(|(_, &(_, hour))| hour)
        .collect();
    hours.sort_unstable();
    hours.dedup();
    let mut keys_by_hour = HashMap::new();
    for hour in hours {
        let known: HashSet<u64> = client
            .query("SELECT content_key FROM event_keys WHERE agent = ? AND hour = ?")
            .bind(&batch.agent)
            .bind(hour)
            .fetch_all::<u64>()
            .await?
            .into_iter()
            .collect();
        keys_by_hour.insert(hour, known);
    }
    Ok(StoredState {
        numbers,
        keys_by_hour,
    })
}

/// Which events of `batch` are new: not in `state`, not stored by an
/// earlier batch of the group (`seen`, which this extends). Of equal events
/// within the batch, the first is new.
fn fresh_events(batch: &Batch, state: StoredState, seen: &mut GroupSeen) -> Vec<bool> {
    let mut fresh = vec![false; batch.events.len()];
    let space = (
        batch.agent.clone(),
        batch.origin.instance.clone(),
        batch.origin.boot.clone(),
    );
    let mut stored = state.numbers;
    let earlier = seen.numbers.entry(space).or_default();
    for &n in earlier.iter() {
        stored.insert(n);
    }
    let mut keys_by_hour = state.keys_by_hour;
    for (i, event) in batch.events.iter().enumerate() {
        if event.sequence != 0 {
            fresh[i] = stored.insert(event.sequence);
            if fresh[i] {
                earlier.push(event.sequence);
            }
        } else {
            let (key, hour) = batch.keys[i];
            let group_keys = seen.keys.entry((batch.agent.clone(), hour)).or_default();
            let known = keys_by_hour.entry(hour).or_default();
            fresh[i] = !known.contains(&key) && group_keys.insert(key);
        }
    }
    fresh
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
