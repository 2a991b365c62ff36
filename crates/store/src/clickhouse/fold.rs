//! Folding closed hours: an hour's rollup rows, one per edge *and batch*
//! (the batch key is what makes a re-sent batch replace its rows), summed
//! into one row per edge and hour (`folded_hours`), and whole days into one
//! row per edge and day (`folded_days`), so a month's graph reads thousands
//! of rows instead of one per batch.
//!
//! Several collectors may fold at once, a fold may die half-way, and a
//! batch may arrive for an hour already folded; the rules that keep every
//! count exact (docs/STORE.md, "Folding closed hours"):
//! - only a batch with all its markers (its `batch_hours` row, written last
//!   by an ingest) is folded: such a batch is a duplicate if re-sent and is
//!   never written again; a batch a collector died on keeps its own rows,
//!   which its retry replaces, until a later fold takes them;
//! - an hour's fold counts *every* batch folded so far, and its version is
//!   their number: the batches finished at any moment include those
//!   finished earlier, so a higher version always counts a superset, and
//!   the table keeps the highest (`ReplacingMergeTree(version)`);
//! - the batches a fold counts are marked (`fold_marks`, with the fold's
//!   version) *before* its rows are written; a read leaves out the rows of
//!   a batch marked at or below the hour's current version, so a fold that
//!   died between the two writes leaves nothing counted twice or missed;
//! - folded batch rows are deleted only `DELETE_AFTER` after their mark,
//!   and a fold that took longer than `FOLD_LIMIT` writes nothing, so no
//!   fold still running can have missed rows deleted under it;
//! - a day's row has the sum of its hours' versions as its version and is
//!   read only while that sum is still the hours' current one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use clickhouse::Client;
use connscope_event::Timestamp;
use serde::Deserialize;

use super::rows;
use super::write::{day_of, insert_rows};
use crate::{FoldReport, StoreError};

const HOUR_NS: i64 = 3_600 * 1_000_000_000;
pub(super) const DAY_NS: i64 = 24 * HOUR_NS;
/// An hour is folded once it ended this long ago: most of its batches are in.
const GRACE: Duration = Duration::from_secs(15 * 60);
/// A fold that took longer writes nothing (see `DELETE_AFTER`).
const FOLD_LIMIT: Duration = Duration::from_secs(5 * 60);
/// Folded batch rows are deleted this long after their fold marked them.
const DELETE_AFTER: Duration = Duration::from_secs(10 * 60);

/// The batch rows of hours in `[?, ?)` that the hours' current folds
/// count (two bound values: the range).
pub(super) const COVERED: &str = "SELECT hour, batch_key FROM fold_marks
    ANY INNER JOIN (
        SELECT hour, max(version) AS current FROM folded_hours
        WHERE hour >= ? AND hour < ? GROUP BY hour
    ) USING hour
    WHERE version <= current";

/// [`COVERED`] for a read: only the marks of batch rows still there (most
/// are deleted a while after their fold), of hours in `[?, ?)` (six bound
/// values: the range, three times).
pub(super) const COVERED_REMAINING: &str = "SELECT hour, batch_key FROM fold_marks
    ANY INNER JOIN (
        SELECT hour, max(version) AS current FROM folded_hours
        WHERE hour >= ? AND hour < ? GROUP BY hour
    ) USING hour
    WHERE hour >= ? AND hour < ? AND version <= current
      AND (hour, batch_key) IN (SELECT hour, batch_key FROM edge_rollups
                                WHERE hour >= ? AND hour < ?)";

/// An hour's (or a day's, by its start) current fold version.
#[derive(clickhouse::Row, Deserialize)]
pub(super) struct HourVersion {
    pub hour: i64,
    pub version: u64,
}

/// Folds every closed hour with finished batches not folded yet, deletes
/// batch rows folded long enough ago, and builds the closed days whose
/// hours changed.
pub(super) async fn fold(client: &Client, now: Timestamp) -> Result<FoldReport, StoreError> {
    let started = Instant::now();
    let closed = now.as_nanos() - nanos(GRACE) - HOUR_NS;
    let mut report = FoldReport::default();
    let hours: Vec<i64> = client
        .query(&format!(
            "SELECT DISTINCT hour FROM batch_hours
             WHERE hour <= ? AND (hour, batch_key) NOT IN ({COVERED}) ORDER BY hour"
        ))
        .bind(closed)
        .bind(i64::MIN)
        .bind(i64::MAX)
        .fetch_all::<i64>()
        .await?;
    for hour in hours {
        let folded = fold_hour(client, hour, now, started).await?;
        if folded > 0 {
            report.hours_folded += 1;
            report.batches_folded += folded;
        }
    }
    report.days_built = build_days(client, closed).await?;
    delete_folded_rows(client, now).await?;
    Ok(report)
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

type EdgeKey = (String, String, String, String, u16, String, String, String);

/// Adds `row`'s counts to its edge's sum in `sums`.
fn add(sums: &mut HashMap<EdgeKey, rows::Folded>, row: rows::Folded) {
    let key = (
        row.host.clone(),
        row.direction.clone(),
        row.local_ip.clone(),
        row.remote_ip.clone(),
        row.service_port,
        row.protocol.clone(),
        row.executable.clone(),
        row.user_name.clone(),
    );
    match sums.get_mut(&key) {
        Some(sum) => {
            sum.connections = sum.connections.saturating_add(row.connections);
            sum.failures = sum.failures.saturating_add(row.failures);
            sum.bytes_sent = sum.bytes_sent.saturating_add(row.bytes_sent);
            sum.bytes_received = sum.bytes_received.saturating_add(row.bytes_received);
            sum.first_seen = sum.first_seen.min(row.first_seen);
            sum.last_seen = sum.last_seen.max(row.last_seen);
        }
        None => {
            sums.insert(key, row);
        }
    }
}

/// The rows summed per edge of `table` (`FINAL`) where `filter` holds.
const SUMS: &str = "SELECT toUInt16(0) AS day, toInt64(0) AS start, host, direction, local_ip,
        remote_ip, service_port, protocol, executable, user_name,
        sum(connections) AS connections, sum(failures) AS failures,
        sum(bytes_sent) AS bytes_sent, sum(bytes_received) AS bytes_received,
        min(first_seen) AS first_seen, max(last_seen) AS last_seen,
        toUInt64(0) AS version
    FROM {table} FINAL WHERE {filter}
    GROUP BY host, direction, local_ip, remote_ip, service_port, protocol, executable,
             user_name";

fn sums_sql(table: &str, filter: &str) -> String {
    SUMS.replace("{table}", table).replace("{filter}", filter)
}

/// Folds the finished batches of `hour` not counted by its current fold;
/// returns how many.
async fn fold_hour(
    client: &Client,
    hour: i64,
    now: Timestamp,
    started: Instant,
) -> Result<u64, StoreError> {
    let previous = client
        .query("SELECT ?fields FROM folded_hours FINAL WHERE hour = ?")
        .bind(hour)
        .fetch_all::<rows::Folded>()
        .await?;
    let version = previous.iter().map(|r| r.version).max().unwrap_or(0);
    let covered: HashSet<u64> = client
        .query("SELECT batch_key FROM fold_marks WHERE hour = ? AND version <= ?")
        .bind(hour)
        .bind(version)
        .fetch_all::<u64>()
        .await?
        .into_iter()
        .collect();
    let mut batches: Vec<u64> = client
        .query("SELECT DISTINCT batch_key FROM batch_hours WHERE hour = ?")
        .bind(hour)
        .fetch_all::<u64>()
        .await?
        .into_iter()
        .filter(|key| !covered.contains(key))
        .collect();
    if batches.is_empty() {
        return Ok(0);
    }
    batches.sort_unstable();
    let added = client
        .query(&sums_sql("edge_rollups", "hour = ? AND has(?, batch_key)"))
        .bind(hour)
        .bind(&batches)
        .fetch_all::<rows::Folded>()
        .await?;
    let version = version + batches.len() as u64;
    let mut edges = HashMap::new();
    for row in previous.into_iter().chain(added) {
        add(&mut edges, row);
    }
    let folded: Vec<rows::Folded> = edges
        .into_values()
        .map(|mut row| {
            row.day = day_of(hour);
            row.hour = hour;
            row.version = version;
            row
        })
        .collect();
    if started.elapsed() > FOLD_LIMIT {
        return Err(StoreError::Backend(
            format!(
                "folding took longer than {} s: stopped before hour {hour} (run it again)",
                FOLD_LIMIT.as_secs()
            )
            .into(),
        ));
    }
    let marks: Vec<rows::FoldMark> = batches
        .iter()
        .map(|&batch_key| rows::FoldMark {
            hour,
            batch_key,
            version,
            folded_at: now.as_nanos(),
        })
        .collect();
    // Marks first: without its rows they mark nothing (their version is
    // above the hour's), with them the batch rows are left out of reads.
    insert_rows(client, "fold_marks", &marks).await?;
    insert_rows(client, "folded_hours", &folded).await?;
    Ok(batches.len() as u64)
}

/// Builds the closed days (all hours at or before `closed`) whose hours'
/// versions add up to other than the day's; returns how many.
async fn build_days(client: &Client, closed: i64) -> Result<u64, StoreError> {
    let last_day = (closed + HOUR_NS).div_euclid(DAY_NS) * DAY_NS;
    let hours = hour_versions(client, i64::MIN, last_day).await?;
    let mut sums: HashMap<i64, u64> = HashMap::new();
    for h in &hours {
        *sums.entry(h.hour.div_euclid(DAY_NS) * DAY_NS).or_default() += h.version;
    }
    let built: HashMap<i64, u64> = day_versions(client, i64::MIN, last_day)
        .await?
        .into_iter()
        .map(|d| (d.hour, d.version))
        .collect();
    let mut count = 0;
    for (day, version) in sums {
        if built.get(&day) == Some(&version) {
            continue;
        }
        // The version was read before the rows: a fold in between makes the
        // rows newer than the version, which a read then just does not use.
        let rows: Vec<rows::Folded> = client
            .query(&sums_sql("folded_hours", "hour >= ? AND hour < ?"))
            .bind(day)
            .bind(day + DAY_NS)
            .fetch_all::<rows::Folded>()
            .await?
            .into_iter()
            .map(|mut row| {
                row.day = day_of(day);
                row.hour = day;
                row.version = version;
                row
            })
            .collect();
        insert_rows(client, "folded_days", &rows).await?;
        count += 1;
    }
    Ok(count)
}

/// The current version of each folded hour in `[from, to)`.
pub(super) async fn hour_versions(
    client: &Client,
    from: i64,
    to: i64,
) -> Result<Vec<HourVersion>, StoreError> {
    Ok(client
        .query(
            "SELECT hour, max(version) AS version FROM folded_hours
             WHERE hour >= ? AND hour < ? GROUP BY hour",
        )
        .bind(from)
        .bind(to)
        .fetch_all::<HourVersion>()
        .await?)
}

/// The latest version of each built day starting in `[from, to)`.
async fn day_versions(client: &Client, from: i64, to: i64) -> Result<Vec<HourVersion>, StoreError> {
    Ok(client
        .query(
            "SELECT hour, max(version) AS version FROM folded_days
             WHERE hour >= ? AND hour < ? GROUP BY hour",
        )
        .bind(from)
        .bind(to)
        .fetch_all::<HourVersion>()
        .await?)
}

/// The whole days in `[from, to)` whose built rows are current: read from
/// `folded_days` instead of their hours.
pub(super) async fn current_days(
    client: &Client,
    from: i64,
    to: i64,
    hours: &[HourVersion],
) -> Result<Vec<i64>, StoreError> {
    let mut first = from.div_euclid(DAY_NS).saturating_mul(DAY_NS);
    if first < from {
        first = first.saturating_add(DAY_NS);
    }
    let end = to.saturating_sub(DAY_NS - HOUR_NS);
    if first >= end {
        return Ok(Vec::new());
    }
    let mut sums: HashMap<i64, u64> = HashMap::new();
    for h in hours {
        *sums.entry(h.hour.div_euclid(DAY_NS) * DAY_NS).or_default() += h.version;
    }
    let mut days: Vec<i64> = day_versions(client, first, end)
        .await?
        .into_iter()
        .filter(|d| d.version > 0 && sums.get(&d.hour) == Some(&d.version))
        .map(|d| d.hour)
        .collect();
    days.sort_unstable();
    Ok(days)
}

/// Deletes the batch rows that current folds count and marked more than
/// `DELETE_AFTER` ago (not on a sharded store: a `Distributed` table takes
/// no mutation; its batch rows stay, left out of reads).
async fn delete_folded_rows(client: &Client, now: Timestamp) -> Result<(), StoreError> {
    let engine = client
        .query("SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'edge_rollups'")
        .fetch_one::<String>()
        .await?;
    if engine == "Distributed" {
        return Ok(());
    }
    let before = now.as_nanos() - nanos(DELETE_AFTER);
    client
        .query(
            "INSERT INTO fold_deletions
             SELECT hour, batch_key FROM fold_marks ANY INNER JOIN (
                 SELECT hour, max(version) AS current FROM folded_hours GROUP BY hour
             ) USING hour
             WHERE version <= current AND folded_at < ?
               AND (hour, batch_key) IN (SELECT hour, batch_key FROM edge_rollups)",
        )
        .bind(before)
        .execute()
        .await?;
    const DUE: &str = "(hour, batch_key) IN (SELECT hour, batch_key FROM fold_deletions)";
    let pending = client
        .query(&format!("SELECT count() FROM edge_rollups WHERE {DUE}"))
        .fetch_one::<u64>()
        .await?;
    if pending > 0 {
        // Not waited for: until the mutation is done the rows are left out.
        client
            .query(&format!("ALTER TABLE edge_rollups DELETE WHERE {DUE}"))
            .execute()
            .await?;
    }
    Ok(())
}
