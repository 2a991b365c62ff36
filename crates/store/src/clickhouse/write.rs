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

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use clickhouse::{Client, Row, RowOwned, RowWrite};
use connscope_event::{ConnectionEvent, Timestamp};
use serde::Serialize;

use super::rows;
use crate::checks::check_origin;
use crate::hash::FastHash;
use crate::{
    check_event, hour_start, is_host_address, AgentId, EventKey, IngestReport, KeyedEvent, Origin,
    RollupBatch, SequenceRanges, StoreError,
};

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// The events of one ingest call, shared with the caller (they go to the
/// backend's runtime; a copy of every event cost more than building its row).
pub(super) struct Batch {
    pub(super) agent: String,
    origin: Origin,
    events: Arc<Vec<ConnectionEvent>>,
    /// Per event: its content key (0 when numbered) and the hour it is filed under.
    keys: Vec<(u64, i64)>,
}

impl Batch {
    pub(super) fn plain(
        agent: &AgentId,
        origin: &Origin,
        events: Arc<Vec<ConnectionEvent>>,
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
        Batch::checked(agent, origin, events, keys)
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
        Batch::checked(agent, &Origin::legacy(), Arc::new(events), keys)
    }

    fn checked(
        agent: &AgentId,
        origin: &Origin,
        events: Arc<Vec<ConnectionEvent>>,
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
/// A group's lookups of the content keys its batches already have run this
/// many at a time (the server limits concurrent queries).
const LOOKUPS_AT_ONCE: usize = 8;
/// Batches whose stored numbers one query looks up (bounds its text).
const SPACES_PER_LOOKUP: usize = 100;

/// The store's one writer: takes every batch queued since its last write
/// (a group commit: no waiting when idle, larger groups under load) and
/// stores the group with one INSERT per table, then answers each batch.
///
/// Two stages, so the client's work on the next group (lookups, rows)
/// runs while the server takes the previous one's inserts: this task
/// prepares groups, [`write_stage`] writes them in order. A group prepared
/// while an earlier one was still being written takes that one's events as
/// stored; if the earlier one's write fails, a group that found some of its
/// events there fails too (its callers re-send them).
pub(super) async fn writer(
    client: Client,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Pending>,
) {
    // One prepared group waits while another is written: the client is at
    // most a group ahead of the server.
    let (prepared_tx, prepared_rx) = tokio::sync::mpsc::channel::<Prepared>(1);
    let (written_tx, mut written_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    tokio::spawn(write_stage(client.clone(), prepared_rx, written_tx));
    // What the groups handed to the write stage and not yet written store.
    let mut in_flight: VecDeque<(u64, GroupSeen)> = VecDeque::new();
    let mut next_id = 0u64;
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
        while let Ok(written) = written_rx.try_recv() {
            in_flight.retain(|(id, _)| *id != written);
        }
        let (batches, answers): (Vec<Batch>, Vec<_>) =
            group.into_iter().map(|p| (p.batch, p.answer)).unzip();
        let earlier: Vec<(u64, &GroupSeen)> =
            in_flight.iter().map(|(id, seen)| (*id, seen)).collect();
        let prepared = prepare_group(&client, &batches, &earlier).await;
        let id = next_id;
        next_id += 1;
        let work = prepared.map(|p| {
            in_flight.push_back((id, p.seen));
            (p.rows, p.reports, p.relies_on)
        });
        let sent = prepared_tx
            .send(Prepared {
                id,
                batches,
                work,
                answers,
            })
            .await;
        if sent.is_err() {
            // The write stage is gone only if it panicked.
            return;
        }
    }
}

/// A group ready to write (or the error that stopped its preparation),
/// and where its answers go.
struct Prepared {
    id: u64,
    /// What the rows are built from as they are sent.
    batches: Vec<Batch>,
    /// The rows, the reports, and the earlier groups relied on.
    work: Result<(GroupRows, Vec<IngestReport>, Vec<u64>), StoreError>,
    answers: Vec<std::sync::mpsc::SyncSender<Result<IngestReport, StoreError>>>,
}

/// Writes prepared groups in order and answers their callers; tells the
/// preparing stage each group it is done with.
async fn write_stage(
    client: Client,
    mut prepared: tokio::sync::mpsc::Receiver<Prepared>,
    written: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    // Recent groups not written: a group can rely only on the few written
    // while it was prepared.
    let mut unwritten: VecDeque<u64> = VecDeque::new();
    while let Some(group) = prepared.recv().await {
        let result = match group.work {
            Ok((_, _, relies_on)) if relies_on.iter().any(|id| unwritten.contains(id)) => {
                Err(StoreError::Backend(
                    "a batch this group took as stored was in a group whose write failed".into(),
                ))
            }
            Ok((rows, reports, _)) => rows.write(&client, &group.batches).await.map(|()| reports),
            Err(e) => Err(e),
        };
        if result.is_err() {
            unwritten.push_back(group.id);
            if unwritten.len() > 8 {
                unwritten.pop_front();
            }
        }
        // Sent before the answers: a caller answered may send its next
        // batch at once, which must not be judged against this group.
        let _ = written.send(group.id);
        answer(group.answers, result);
    }
}

/// Answers each caller of a group with its report, or all with the error.
fn answer(
    answers: Vec<std::sync::mpsc::SyncSender<Result<IngestReport, StoreError>>>,
    result: Result<Vec<IngestReport>, StoreError>,
) {
    match result {
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

/// What earlier batches of a group stored: the later ones must see it as
/// stored although its markers are not written yet.
#[derive(Default)]
struct GroupSeen {
    numbers: HashMap<(String, String, String), SequenceRanges>,
    keys: HashMap<(String, i64), HashSet<u64>>,
}

/// Finds the new events of each batch of a group (against the store, the
/// groups still being written, `earlier`, and the group's own earlier
/// batches) and builds the rows that store them; with each batch's report
/// and what the group stores.
async fn prepare_group(
    client: &Client,
    batches: &[Batch],
    earlier: &[(u64, &GroupSeen)],
) -> Result<PreparedRows, StoreError> {
    let numbers = stored_numbers(client, batches).await?;
    let mut keys = Vec::with_capacity(batches.len());
    for some in batches.chunks(LOOKUPS_AT_ONCE) {
        let lookups = some.iter().map(|batch| stored_keys(client, batch));
        keys.extend(futures_util::future::try_join_all(lookups).await?);
    }
    let states = numbers
        .into_iter()
        .zip(keys)
        .map(|(numbers, keys_by_hour)| StoredState {
            numbers,
            keys_by_hour,
        });
    let mut seen = GroupSeen::default();
    let mut rows = GroupRows::default();
    let mut reports = Vec::with_capacity(batches.len());
    let mut relies_on = Vec::new();
    for (index, (batch, state)) in batches.iter().zip(states).enumerate() {
        let fresh = fresh_events(batch, state, earlier, &mut seen, &mut relies_on);
        let stored = fresh.iter().filter(|&&f| f).count() as u64;
        let report = IngestReport {
            stored,
            duplicates: batch.events.len() as u64 - stored,
            conflicts: 0,
        };
        if stored > 0 {
            rows.add(index, batch, &fresh, stored);
        }
        tracing::debug!(agent = %batch.agent, stored, duplicates = report.duplicates, "ingested");
        reports.push(report);
    }
    // In the table's sort order: the server then finds the block sorted
    // and neither sorts nor permutes its columns (a tenth of its CPU in a
    // profile of the collector's ingest).
    sort_events(batches, &mut rows.events);
    Ok(PreparedRows {
        rows,
        reports,
        seen,
        relies_on,
    })
}

/// A group's rows, each batch's report, what the group stores, and the
/// groups still being written that it found some of its events in.
struct PreparedRows {
    rows: GroupRows,
    reports: Vec<IngestReport>,
    seen: GroupSeen,
    relies_on: Vec<u64>,
}

/// The rows a group writes, table by table.
#[derive(Default)]
struct GroupRows {
    /// The new events, by batch and index in it.
    events: Vec<(u32, u32)>,
    rollups: Vec<rows::Rollup>,
    addresses: Vec<rows::Address>,
    spaces: Vec<rows::Space>,
    keys: Vec<rows::Key>,
    ranges: Vec<rows::Range>,
    done: Vec<rows::BatchHour>,
}

impl GroupRows {
    /// Adds the rows of the new events (`fresh`, `stored` of them) of
    /// `batch`, the group's `index`th.
    fn add(&mut self, index: usize, batch: &Batch, fresh: &[bool], stored: u64) {
        let agent = &batch.agent;
        let origin = &batch.origin;
        // The batch's identity: who numbered it and which events it stores.
        let mut identity: Vec<u8> = Vec::with_capacity(24 * batch.events.len());
        let mut rollups = RollupBatch::new();
        let mut addresses: HashMap<(&str, IpAddr), (i64, i64), FastHash> = HashMap::default();
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
            self.events.push((index as u32, i as u32));
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

    /// Each step's tables are written at once (the server takes each
    /// INSERT on a thread of its own); the steps in order.
    async fn write(self, client: &Client, batches: &[Batch]) -> Result<(), StoreError> {
        tokio::try_join!(
            insert_events(client, batches, &self.events),
            insert_rows(client, "edge_rollups", &self.rollups),
            insert_rows(client, "host_addresses", &self.addresses),
            insert_rows(client, "spaces", &self.spaces),
        )?;
        // The markers: from here on the batches count as stored.
        tokio::try_join!(
            insert_rows(client, "event_keys", &self.keys),
            insert_rows(client, "sequence_ranges", &self.ranges),
        )?;
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

/// Reads, for each batch, its space's stored ranges that its numbers fall
/// in: one query for up to [`SPACES_PER_LOOKUP`] batches (a query per batch
/// cost the server more than the inserts of small batches). Only the
/// ranges the numbers fall in: a space has a row per batch, and a batch
/// must not cost more as its agent ages.
async fn stored_numbers(
    client: &Client,
    batches: &[Batch],
) -> Result<Vec<SequenceRanges>, StoreError> {
    let spans: Vec<Option<(u64, u64)>> = batches
        .iter()
        .map(|batch| {
            let numbers = batch.events.iter().map(|e| e.sequence).filter(|&n| n != 0);
            let (low, high) = numbers.fold((u64::MAX, 0), |(l, h), n| (l.min(n), h.max(n)));
            (high > 0).then_some((low, high))
        })
        .collect();
    let wanted: Vec<(usize, u64, u64)> = spans
        .iter()
        .enumerate()
        .filter_map(|(i, span)| span.map(|(low, high)| (i, low, high)))
        .collect();
    let mut found: Vec<rows::Range> = Vec::new();
    for some in wanted.chunks(SPACES_PER_LOOKUP) {
        let condition = vec![
            "(agent = ? AND instance = ? AND boot = ? AND last_seq >= ? AND first_seq <= ?)";
            some.len()
        ]
        .join(" OR ");
        let mut query = client.query(&format!(
            "SELECT ?fields FROM sequence_ranges WHERE {condition}"
        ));
        for &(i, low, high) in some {
            let batch = &batches[i];
            query = query
                .bind(&batch.agent)
                .bind(&batch.origin.instance)
                .bind(&batch.origin.boot)
                .bind(low)
                .bind(high);
        }
        found.extend(query.fetch_all::<rows::Range>().await?);
    }
    Ok(batches
        .iter()
        .zip(spans)
        .map(|(batch, span)| match span {
            Some((low, high)) => SequenceRanges::from_ranges(
                found
                    .iter()
                    .filter(|r| {
                        r.agent == batch.agent
                            && r.instance == batch.origin.instance
                            && r.boot == batch.origin.boot
                            && r.last_seq >= low
                            && r.first_seq <= high
                    })
                    .map(|r| (r.first_seq, r.last_seq)),
            ),
            None => SequenceRanges::new(),
        })
        .collect())
}

/// Reads the agent's content keys of the hours of the batch's unnumbered
/// events (none for a batch of numbered ones).
async fn stored_keys(
    client: &Client,
    batch: &Batch,
) -> Result<HashMap<i64, HashSet<u64>>, StoreError> {
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
    Ok(keys_by_hour)
}

/// Which events of `batch` are new: not in `state`, not stored by a group
/// still being written (`earlier`, by id; the ids of those it found events
/// in go to `relies_on`) nor by an earlier batch of this group (`seen`,
/// which this extends). Of equal events within the batch, the first is new.
fn fresh_events(
    batch: &Batch,
    state: StoredState,
    earlier: &[(u64, &GroupSeen)],
    seen: &mut GroupSeen,
    relies_on: &mut Vec<u64>,
) -> Vec<bool> {
    let mut fresh = vec![false; batch.events.len()];
    let space = (
        batch.agent.clone(),
        batch.origin.instance.clone(),
        batch.origin.boot.clone(),
    );
    let theirs: Vec<(u64, &SequenceRanges)> = earlier
        .iter()
        .filter_map(|(id, group)| group.numbers.get(&space).map(|r| (*id, r)))
        .collect();
    let stored = state.numbers;
    let mine = seen.numbers.entry(space).or_default();
    let mut keys_by_hour = state.keys_by_hour;
    for (i, event) in batch.events.iter().enumerate() {
        if event.sequence != 0 {
            let n = event.sequence;
            if stored.contains(n) || mine.contains(n) {
                continue;
            }
            if let Some((id, _)) = theirs.iter().find(|(_, r)| r.contains(n)) {
                relies_on.push(*id);
                continue;
            }
            fresh[i] = mine.insert(n);
        } else {
            let (key, hour) = batch.keys[i];
            let at = (batch.agent.clone(), hour);
            if keys_by_hour.entry(hour).or_default().contains(&key) {
                continue;
            }
            if let Some((id, _)) = earlier
                .iter()
                .find(|(_, group)| group.keys.get(&at).is_some_and(|keys| keys.contains(&key)))
            {
                relies_on.push(*id);
                continue;
            }
            fresh[i] = seen.keys.entry(at).or_default().insert(key);
        }
    }
    relies_on.sort_unstable();
    relies_on.dedup();
    fresh
}

/// Days since the epoch of the time `nanos` (a `Date` column).
pub(super) fn day_of(nanos: i64) -> u16 {
    nanos
        .div_euclid(NANOS_PER_DAY)
        .clamp(0, i64::from(u16::MAX)) as u16
}

/// Puts a group's new events (batch, index) in the `events` table's
/// ORDER BY order: host, hour, agent, instance, boot, sequence, content
/// key. The strings are ranked first, so the sort compares integers
/// (comparing the strings themselves cost the client more than the
/// server's sort it saves).
fn sort_events(batches: &[Batch], picks: &mut Vec<(u32, u32)>) {
    let mut host_ids: HashMap<&str, u32, FastHash> = HashMap::default();
    let mut hosts: Vec<&str> = Vec::new();
    let ids: Vec<u32> = picks
        .iter()
        .map(|&(batch, index)| {
            let host = batches[batch as usize].events[index as usize].host.as_str();
            *host_ids.entry(host).or_insert_with(|| {
                hosts.push(host);
                hosts.len() as u32 - 1
            })
        })
        .collect();
    let host_rank = ranks(&hosts);
    let spaces: Vec<(&str, &str, &str)> = batches
        .iter()
        .map(|b| {
            (
                b.agent.as_str(),
                b.origin.instance.as_str(),
                b.origin.boot.as_str(),
            )
        })
        .collect();
    let space_rank = ranks(&spaces);
    let mut keyed: Vec<(SortRank, (u32, u32))> = picks
        .iter()
        .zip(ids)
        .map(|(&(batch, index), host)| {
            let b = &batches[batch as usize];
            let (content_key, hour) = b.keys[index as usize];
            let sequence = b.events[index as usize].sequence;
            let key = (
                host_rank[host as usize],
                hour,
                space_rank[batch as usize],
                sequence,
                content_key,
            );
            (key, (batch, index))
        })
        .collect();
    keyed.sort_unstable();
    *picks = keyed.into_iter().map(|(_, pick)| pick).collect();
}

/// An event's ORDER BY key with the strings as ranks: host, hour, space
/// (agent, instance, boot), sequence, content key.
type SortRank = (u32, i64, u32, u64, u64);

/// Each item's rank in sorted order (equal items share one).
fn ranks<T: Ord>(items: &[T]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_unstable_by(|&a, &b| items[a].cmp(&items[b]));
    let mut rank = vec![0; items.len()];
    let mut current = 0;
    for (i, &at) in order.iter().enumerate() {
        if i > 0 && items[order[i - 1]] != items[at] {
            current += 1;
        }
        rank[at] = current;
    }
    rank
}

/// The `events` row of event `index` of `batch`.
fn event_row(batch: &Batch, index: usize) -> rows::EventRow<'_> {
    let event = &batch.events[index];
    let (content_key, hour) = batch.keys[index];
    let process = event.process.as_deref();
    let close = event.close.unwrap_or_default();
    rows::EventRow {
        day: day_of(hour),
        hour,
        host: &event.host,
        ts: event.timestamp.as_nanos(),
        agent: &batch.agent,
        instance: &batch.origin.instance,
        boot: &batch.origin.boot,
        sequence: event.sequence,
        content_key,
        kind: event.kind.as_str(),
        protocol: event.protocol.as_str(),
        direction: event.direction.as_str(),
        netns: event.netns,
        local_ip: rows::IpText::new(event.local.ip()),
        local_port: event.local.port(),
        remote_ip: rows::IpText::new(event.remote.ip()),
        remote_port: event.remote.port(),
        pid: process.map(|p| p.pid),
        executable: process.and_then(|p| p.executable.as_deref()),
        comm: process.and_then(|p| p.comm.as_deref()),
        command_line: process.and_then(|p| p.command_line.as_deref()),
        cgroup: process.and_then(|p| p.cgroup.as_deref()),
        uid: event.uid,
        user_name: event.user_name.as_deref(),
        closed: u8::from(event.close.is_some()),
        duration_ns: close.duration_ns,
        bytes_sent: close.bytes_sent,
        bytes_received: close.bytes_received,
        packets_sent: close.packets_sent,
        packets_received: close.packets_received,
        failure: event.failure.map(|f| f.as_str()),
        preexisting: u8::from(event.preexisting),
        remote_name: event.remote_name.as_ref().map(|n| n.name.as_str()),
        remote_name_source: event.remote_name.as_ref().map(|n| name_source(n.source)),
    }
}

/// Writes the `events` rows of the group's new events (`picks`: batch and
/// event index) in one INSERT, each row built as it is sent.
async fn insert_events(
    client: &Client,
    batches: &[Batch],
    picks: &[(u32, u32)],
) -> Result<(), StoreError> {
    if picks.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<rows::EventRow<'static>>("events").await?;
    for &(batch, index) in picks {
        insert
            .write(&event_row(&batches[batch as usize], index as usize))
            .await?;
    }
    insert.end().await?;
    Ok(())
}

pub(super) fn name_source(source: connscope_event::NameSource) -> &'static str {
    match source {
        connscope_event::NameSource::Dns => "dns",
        connscope_event::NameSource::Sni => "sni",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use proptest::prelude::*;

    /// A batch of `agent` (space `instance`) with events (host, hour, sequence).
    fn batch(agent: &str, instance: &str, events: &[(u8, i64, u64)]) -> Batch {
        let events = events
            .iter()
            .map(|&(host, hour, sequence)| {
                EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
                    .at_nanos(1_700_000_000_000_000_000 + hour * 3_600_000_000_000)
                    .host(format!("h{host}"))
                    .sequence(sequence)
                    .build()
            })
            .collect();
        let origin = Origin {
            instance: instance.to_owned(),
            ..Origin::legacy()
        };
        Batch::plain(&AgentId(agent.to_owned()), &origin, Arc::new(events)).unwrap()
    }

    proptest! {
        #[test]
        fn events_are_sent_in_the_tables_order(
            specs in prop::collection::vec(
                (0u8..3, 0u8..2, prop::collection::vec((0u8..4, 0i64..3, 0u64..5), 1..20)),
                1..6,
            )
        ) {
            let batches: Vec<Batch> = specs
                .iter()
                .map(|(agent, instance, events)| {
                    batch(&format!("a{agent}"), &format!("i{instance}"), events)
                })
                .collect();
            let mut picks: Vec<(u32, u32)> = batches
                .iter()
                .enumerate()
                .flat_map(|(b, batch)| (0..batch.events.len()).map(move |i| (b as u32, i as u32)))
                .collect();
            // What the server sorts by, compared as it compares them.
            let key = |&(b, i): &(u32, u32)| {
                let batch = &batches[b as usize];
                let (content_key, hour) = batch.keys[i as usize];
                let event = &batch.events[i as usize];
                (
                    event.host.clone(),
                    hour,
                    batch.agent.clone(),
                    batch.origin.instance.clone(),
                    batch.origin.boot.clone(),
                    event.sequence,
                    content_key,
                )
            };
            let mut expected: Vec<_> = picks.iter().map(key).collect();
            expected.sort();
            let all = picks.clone();
            sort_events(&batches, &mut picks);
            prop_assert_eq!(picks.iter().map(key).collect::<Vec<_>>(), expected);
            // Each event once.
            let mut sent = picks.clone();
            sent.sort_unstable();
            prop_assert_eq!(sent, all);
        }
    }
}
