//! One ingest: a batch's new events packed into blocks, its rollups and
//! host addresses upserted, its sequence ranges and its space's totals
//! updated, all in one transaction.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use connscope_event::{EventKind, NameSource, Timestamp};
use rusqlite::{params, Connection};

use super::batch::Batch;
use super::column::clamp;
use super::connection::{lock, Ids, Writer};
use super::dedup::{conflicting_repeats, new_events};
use super::spaces::{agent_id, load_ranges, space_id, store_ranges, RangeSet};
use crate::block::BlockEncoder;
use crate::checks::check_origin;
use crate::hash::FastHash;
use crate::{
    check_event, hour_start, is_host_address, AgentId, IngestReport, Origin, RollupBatch,
    SequenceRanges, StoreError,
};

pub(super) const UPSERT_ROLLUP: &str = "INSERT INTO edge_rollups VALUES
    (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
    ON CONFLICT (hour, host, direction, local_ip, remote_ip, service_port, protocol, executable, user_name)
    DO UPDATE SET
        connections = connections + excluded.connections,
        failures = failures + excluded.failures,
        bytes_sent = bytes_sent + excluded.bytes_sent,
        bytes_received = bytes_received + excluded.bytes_received,
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen)";

const UPSERT_REMOTE_NAME: &str = "INSERT INTO remote_names VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
    ON CONFLICT (hour, host, remote_ip, name, source) DO UPDATE SET
        connections = connections + excluded.connections,
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen)";

pub(super) const UPSERT_ADDRESS: &str = "INSERT INTO host_addresses VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (host, ip) DO UPDATE SET
        first_seen = min(first_seen, excluded.first_seen),
        last_seen = max(last_seen, excluded.last_seen)";

/// Stores the new events of `batch` from `agent` (its state `origin`):
/// all of the batch or, if anything is wrong with it, none of it.
pub(super) fn ingest(
    writer: &Mutex<Writer>,
    agent: &AgentId,
    origin: &Origin,
    batch: Batch<'_>,
) -> Result<IngestReport, StoreError> {
    for i in 0..batch.len() {
        check_event(i, batch.event(i))?;
    }
    check_origin(origin)?;
    let report = lock(writer).transaction(|tx, ids| write_batch(tx, ids, agent, origin, batch))?;
    tracing::debug!(agent = %agent, stored = report.stored, duplicates = report.duplicates, "ingested");
    Ok(report)
}

fn write_batch(
    tx: &Connection,
    ids: &mut Ids,
    agent: &AgentId,
    origin: &Origin,
    batch: Batch<'_>,
) -> Result<IngestReport, StoreError> {
    let agent_id = agent_id(tx, &mut ids.agents, agent)?;
    let space = space_id(tx, &mut ids.spaces, agent_id, origin)?;

    let numbered = (0..batch.len()).any(|i| batch.event(i).sequence != 0);
    let old_ranges = if numbered {
        load_ranges(tx, &RangeSet::Stored { space })?
    } else {
        SequenceRanges::new()
    };
    let mut ranges = old_ranges.clone();
    let fresh = new_events(tx, agent_id, batch, &mut ranges)?;

    let mut report = IngestReport::default();
    let conflicts = conflicting_repeats(tx, space, batch, &fresh, &old_ranges)?;
    if !conflicts.is_empty() {
        report.conflicts = conflicts.len() as u64;
        tracing::warn!(
            agent = %agent,
            instance = %origin.instance,
            boot = %origin.boot,
            sequences = ?SequenceRanges::from_ranges(conflicts.iter().map(|&n| (n, n))).ranges(),
            "resent sequence numbers with other content than stored: kept the stored events"
        );
        tx.execute(
            "UPDATE sequence_spaces SET conflicts = conflicts + ?2 WHERE space_id = ?1",
            params![space, clamp(report.conflicts)],
        )?;
    }
    let mut rollups = RollupBatch::new();
    let mut addresses: HashMap<(&str, IpAddr), (Timestamp, Timestamp), FastHash> =
        HashMap::default();
    let mut remote_names: HashMap<RemoteNameKey<'_>, (u64, Timestamp, Timestamp), FastHash> =
        HashMap::default();
    let mut span: Option<(Timestamp, Timestamp)> = None;
    let mut last_host = None;
    // One block per host (an agent's batch names one host, but nothing
    // forces it to).
    let mut blocks: Vec<(&str, BlockEncoder<'_>, Numbers)> = Vec::new();
    for (i, &new) in fresh.iter().enumerate() {
        if !new {
            report.duplicates += 1;
            continue;
        }
        let event = batch.event(i);
        let at = match blocks.iter().position(|(host, _, _)| *host == event.host) {
            Some(at) => at,
            None => {
                blocks.push((&event.host, BlockEncoder::default(), Numbers::default()));
                blocks.len() - 1
            }
        };
        blocks[at].1.push(event);
        blocks[at].2.add(event.sequence);
        if blocks[at].1.len() >= MAX_BLOCK_EVENTS {
            let (host, full, numbers) = blocks.swap_remove(at);
            insert_block(tx, agent_id, space, host, full, numbers)?;
        }
        rollups.add(event);
        if is_host_address(event.local.ip()) {
            let seen = addresses
                .entry((event.host.as_str(), event.local.ip()))
                .or_insert((event.timestamp, event.timestamp));
            seen.0 = seen.0.min(event.timestamp);
            seen.1 = seen.1.max(event.timestamp);
        }
        if let Some(named) = &event.remote_name {
            let key = (
                hour_start(event.timestamp),
                event.host.as_str(),
                event.remote.ip(),
                named.name.as_str(),
                named.source,
            );
            let seen = remote_names
                .entry(key)
                .or_insert((0, event.timestamp, event.timestamp));
            seen.0 += u64::from(event.kind == EventKind::Connect);
            seen.1 = seen.1.min(event.timestamp);
            seen.2 = seen.2.max(event.timestamp);
        }
        span = Some(match span {
            None => (event.timestamp, event.timestamp),
            Some((a, b)) => (a.min(event.timestamp), b.max(event.timestamp)),
        });
        last_host = Some(event.host.as_str());
        report.stored += 1;
    }
    for (host, block, numbers) in blocks {
        insert_block(tx, agent_id, space, host, block, numbers)?;
    }

    if ranges != old_ranges {
        store_ranges(tx, &RangeSet::Stored { space }, &old_ranges, &ranges)?;
    }
    {
        let mut upsert = tx.prepare_cached(UPSERT_ROLLUP)?;
        let names = &mut ids.names;
        for (key, counts) in rollups.rows() {
            upsert.execute(params![
                key.hour.as_nanos(),
                names.id(tx, &key.host)?,
                names.id(tx, key.direction.as_str())?,
                names.ip_id(tx, key.local_ip)?,
                names.ip_id(tx, key.remote_ip)?,
                key.service_port,
                names.id(tx, key.protocol.as_str())?,
                names.id(tx, &key.executable)?,
                names.id(tx, &key.user)?,
                clamp(counts.connections),
                clamp(counts.failures),
                clamp(counts.bytes_sent),
                clamp(counts.bytes_received),
                counts.first_seen.as_nanos(),
                counts.last_seen.as_nanos(),
            ])?;
        }
        let mut upsert = tx.prepare_cached(UPSERT_ADDRESS)?;
        for ((host, ip), (first, last)) in &addresses {
            upsert.execute(params![
                host,
                ip.to_string(),
                first.as_nanos(),
                last.as_nanos()
            ])?;
        }
        let mut upsert = tx.prepare_cached(UPSERT_REMOTE_NAME)?;
        for ((hour, host, ip, name, source), (connections, first, last)) in &remote_names {
            upsert.execute(params![
                hour.as_nanos(),
                host,
                ip.to_string(),
                name,
                source.as_str(),
                clamp(*connections),
                first.as_nanos(),
                last.as_nanos()
            ])?;
        }
    }
    if let (Some((first, last)), Some(host)) = (span, last_host) {
        // The state's space owns the totals: an agent's are summed from its
        // spaces when read (`agents::statuses`); the `agents` table's own
        // total columns are version 3's, read only by the step to version 6.
        tx.prepare_cached(
            "UPDATE sequence_spaces SET host = ?2, events = events + ?3,
                first_seen = min(coalesce(first_seen, ?4), ?4),
                last_seen = max(coalesce(last_seen, ?5), ?5)
             WHERE space_id = ?1",
        )?
        .execute(params![
            space,
            host,
            clamp(report.stored),
            first.as_nanos(),
            last.as_nanos()
        ])?;
    }
    Ok(report)
}

/// (hour, host, remote address, name, source): one `remote_names` row.
type RemoteNameKey<'a> = (Timestamp, &'a str, IpAddr, &'a str, NameSource);

/// A block holds at most this many events, so reading a short time range
/// never decodes a huge one.
const MAX_BLOCK_EVENTS: u64 = 16_384;

/// The lowest and highest sequence number in a block (`None`: unnumbered).
#[derive(Default, Clone, Copy)]
struct Numbers(Option<(u64, u64)>);

impl Numbers {
    fn add(&mut self, sequence: u64) {
        if sequence != 0 {
            let (low, high) = self.0.get_or_insert((sequence, sequence));
            *low = (*low).min(sequence);
            *high = (*high).max(sequence);
        }
    }
}

fn insert_block(
    conn: &Connection,
    agent_id: i64,
    space: i64,
    host: &str,
    block: BlockEncoder<'_>,
    numbers: Numbers,
) -> rusqlite::Result<()> {
    let (first, last) = block.span();
    let events = block.len();
    let hits = block.firewall_hits();
    let (first_seq, last_seq) = numbers.0.map(|(f, l)| (clamp(f), clamp(l))).unzip();
    conn.prepare_cached(
        "INSERT INTO event_blocks
            (agent_id, space_id, host, first_ts, last_ts, events, data, first_seq, last_seq,
             firewall_hits)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        agent_id,
        space,
        host,
        first,
        last,
        clamp(events),
        block.finish(),
        first_seq,
        last_seq,
        clamp(hits)
    ])?;
    Ok(())
}
