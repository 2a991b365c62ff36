//! Retention: raw events go after a while, rollups (optionally) much later;
//! blocks that straddle the cutoff are rewritten without their older events.
//! The policy loop's records that describe what happened (drift edges,
//! firewall notices, counters of versions no longer assigned) age with the
//! raw events; policy versions and assignments are the audit trail and stay.

use std::sync::Mutex;

use connscope_event::Timestamp;
use rusqlite::{params, Connection};

use super::column::{block_corrupt, clamp};
use super::connection::{lock, Writer};
use crate::block::{self, BlockEncoder};
use crate::policy::notice_expired;
use crate::{hour_start, Retention, RetentionReport, StoreError};

/// Deletes raw events older than `retention.raw_events` (and rollups and
/// content keys as old as `retention.rollups` says) in one transaction.
pub(super) fn apply(
    writer: &Mutex<Writer>,
    retention: &Retention,
    now: Timestamp,
) -> Result<RetentionReport, StoreError> {
    let before = |age: std::time::Duration| {
        Timestamp::from_nanos(now.as_nanos().saturating_sub(clamp(age.as_nanos() as u64)))
    };
    lock(writer).transaction(|tx, _| {
        let cutoff = before(retention.raw_events).as_nanos();
        let whole: i64 = tx.query_row(
            "SELECT coalesce(sum(events), 0) FROM event_blocks WHERE last_ts < ?1",
            [cutoff],
            |r| r.get(0),
        )?;
        tx.execute("DELETE FROM event_blocks WHERE last_ts < ?1", [cutoff])?;
        let mut report = RetentionReport {
            events_deleted: whole as u64 + trim_blocks(tx, cutoff)?,
            ..policy_loop(tx, cutoff)?
        };
        if let Some(age) = retention.rollups {
            // Only whole hours that ended before the cutoff go.
            let cutoff = hour_start(before(age)).as_nanos();
            report.rollups_deleted =
                tx.execute("DELETE FROM edge_rollups WHERE hour < ?1", [cutoff])? as u64;
            // Names go with the rollups they name.
            tx.execute("DELETE FROM remote_names WHERE hour < ?1", [cutoff])?;
            // A key's hour may be its event's wall-clock hour, up to 14
            // hours off the rollup's: keys go a day after their rollups.
            tx.execute(
                "DELETE FROM event_key_sets WHERE hour < ?1",
                [cutoff.saturating_sub(86_400 * 1_000_000_000)],
            )?;
        }
        Ok(report)
    })
}

/// Deletes the policy loop's records older than the raw-event `cutoff`
/// (nanoseconds); the report counts them.
fn policy_loop(conn: &Connection, cutoff: i64) -> Result<RetentionReport, StoreError> {
    let drift_deleted = conn.execute("DELETE FROM drift_edges WHERE last_seen < ?1", [cutoff])?;
    let mut stmt = conn.prepare_cached("SELECT DISTINCT at FROM firewall_notices")?;
    let dates = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut notices_deleted = 0;
    for at in dates {
        if notice_expired(&at, Timestamp::from_nanos(cutoff)) {
            notices_deleted += conn
                .prepare_cached("DELETE FROM firewall_notices WHERE at = ?1")?
                .execute([at])?;
        }
    }
    // A version is assigned while some target's newest assignment names it.
    let rule_counters_deleted = conn.execute(
        "DELETE FROM rule_counters
         WHERE (policy, version) IN (
             SELECT policy, version FROM rule_counters
             GROUP BY policy, version HAVING max(last_reported) < ?1)
           AND (policy, version) NOT IN (
             SELECT policy, version FROM policy_assignments a
             WHERE policy IS NOT NULL AND revision = (
                 SELECT max(revision) FROM policy_assignments b
                 WHERE b.target_kind = a.target_kind AND b.target = a.target))",
        [cutoff],
    )?;
    Ok(RetentionReport {
        drift_deleted: drift_deleted as u64,
        notices_deleted: notices_deleted as u64,
        rule_counters_deleted: rule_counters_deleted as u64,
        ..RetentionReport::default()
    })
}

/// Rewrites the blocks that hold events on both sides of `cutoff` without
/// the older ones; returns how many events that removed.
fn trim_blocks(conn: &Connection, cutoff: i64) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT block_id, host, data FROM event_blocks WHERE first_ts < ?1 AND last_ts >= ?1",
    )?;
    let straddling = stmt
        .query_map([cutoff], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut removed = 0;
    for (id, host, data) in straddling {
        let events = block::decode(&data, &host).map_err(|e| block_corrupt(id, e))?;
        let before = events.len();
        let mut kept = BlockEncoder::default();
        for event in events.iter().filter(|e| e.timestamp.as_nanos() >= cutoff) {
            kept.push(event);
        }
        removed += (before as u64).saturating_sub(kept.len());
        let (first, last) = kept.span();
        let hits = clamp(kept.firewall_hits());
        conn.prepare_cached(
            "UPDATE event_blocks SET first_ts = ?2, last_ts = ?3, events = ?4, data = ?5,
                firewall_hits = ?6
             WHERE block_id = ?1",
        )?
        .execute(params![
            id,
            first,
            last,
            clamp(kept.len()),
            kept.finish(),
            hits
        ])?;
    }
    Ok(removed)
}
