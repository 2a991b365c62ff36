//! Retention: raw events go after a while, rollups and content keys
//! (optionally) much later. ClickHouse 18.16 has no table TTL, so this is
//! `ALTER TABLE ... DELETE` (a mutation), waited for so the call returns
//! with the data gone, as in SQLite. The policy loop's records age with
//! the raw events as in SQLite; policy versions and assignments stay.

use std::time::Duration;

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use serde::Deserialize;

use super::policies;
use crate::policy::notice_expired;
use crate::{hour_start, Retention, RetentionReport, StoreError};

#[derive(Row, Deserialize)]
struct Pending {
    pending: u64,
}

/// Waits until no mutation of `table` is left to do.
async fn settle(client: &Client, table: &str) -> Result<(), StoreError> {
    for _ in 0..600 {
        let left = client
            .query(
                "SELECT count() AS pending FROM system.mutations
                 WHERE database = currentDatabase() AND table = ? AND is_done = 0",
            )
            .bind(table)
            .fetch_one::<Pending>()
            .await?
            .pending;
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(StoreError::Backend(
        format!("deleting from {table} has not finished after 30 s").into(),
    ))
}

pub(super) async fn apply(
    client: &Client,
    retention: &Retention,
    now: Timestamp,
) -> Result<RetentionReport, StoreError> {
    let before = |age: Duration| {
        let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
        Timestamp::from_nanos(now.as_nanos().saturating_sub(age))
    };
    let cutoff = before(retention.raw_events).as_nanos();
    let events_deleted = client
        .query("SELECT count() AS pending FROM events FINAL WHERE ts < ?")
        .bind(cutoff)
        .fetch_one::<Pending>()
        .await?
        .pending;
    if events_deleted > 0 {
        client
            .query("ALTER TABLE events DELETE WHERE ts < ?")
            .bind(cutoff)
            .execute()
            .await?;
        settle(client, "events").await?;
    }
    let mut report = RetentionReport {
        events_deleted,
        ..policy_loop(client, cutoff).await?
    };
    if let Some(age) = retention.rollups {
        let cutoff = hour_start(before(age)).as_nanos();
        report.rollups_deleted = client
            .query(
                "SELECT count() AS pending FROM (
                    SELECT 1 FROM (
                        SELECT hour, host, direction, local_ip, remote_ip, service_port,
                               protocol, executable, user_name
                        FROM edge_rollups WHERE hour < ?
                        UNION ALL
                        SELECT hour, host, direction, local_ip, remote_ip, service_port,
                               protocol, executable, user_name
                        FROM folded_hours WHERE hour < ?)
                    GROUP BY hour, host, direction, local_ip, remote_ip, service_port,
                             protocol, executable, user_name)",
            )
            .bind(cutoff)
            .bind(cutoff)
            .fetch_one::<Pending>()
            .await?
            .pending;
        if report.rollups_deleted > 0 {
            // The folded hours and days and the fold's bookkeeping go
            // with the rollups they stand for (a day's row by its start).
            for table in [
                "edge_rollups",
                "folded_hours",
                "folded_days",
                "fold_marks",
                "fold_deletions",
                "batch_hours",
            ] {
                client
                    .query(&format!("ALTER TABLE {table} DELETE WHERE hour < ?"))
                    .bind(cutoff)
                    .execute()
                    .await?;
                settle(client, table).await?;
            }
        }
        // A key's hour may be its event's wall-clock hour, up to 14 hours
        // off the rollup's: keys go a day after their rollups.
        let keys_cutoff = cutoff.saturating_sub(86_400 * 1_000_000_000);
        client
            .query("ALTER TABLE event_keys DELETE WHERE hour < ?")
            .bind(keys_cutoff)
            .execute()
            .await?;
        settle(client, "event_keys").await?;
    }
    Ok(report)
}

#[derive(Row, Deserialize)]
struct Edge {
    edge: u64,
}

#[derive(Row, Deserialize)]
struct Date {
    at: String,
}

#[derive(Row, Deserialize)]
struct CountedVersion {
    policy: String,
    policy_version: u32,
    rows: u64,
}

/// Deletes the policy loop's records older than the raw-event `cutoff`
/// (nanoseconds), as SQLite does; the report counts them.
async fn policy_loop(client: &Client, cutoff: i64) -> Result<RetentionReport, StoreError> {
    let mut report = RetentionReport::default();
    // An edge goes whole (its first sighting holds what it showed), and
    // only when its newest sighting is old; one recorded meanwhile stays.
    let edges: Vec<u64> = client
        .query(
            "SELECT cityHash64(host, direction, protocol, port, remote) AS edge
             FROM drift_sightings GROUP BY host, direction, protocol, port, remote
             HAVING max(last_seen) < ?",
        )
        .bind(cutoff)
        .fetch_all::<Edge>()
        .await?
        .into_iter()
        .map(|e| e.edge)
        .collect();
    if !edges.is_empty() {
        report.drift_deleted = edges.len() as u64;
        client
            .query(
                "ALTER TABLE drift_sightings DELETE
                 WHERE has(?, cityHash64(host, direction, protocol, port, remote))
                   AND last_seen < ?",
            )
            .bind(edges)
            .bind(cutoff)
            .execute()
            .await?;
        settle(client, "drift_sightings").await?;
    }

    let expired: Vec<String> = client
        .query("SELECT DISTINCT at FROM firewall_notices")
        .fetch_all::<Date>()
        .await?
        .into_iter()
        .map(|d| d.at)
        .filter(|at| notice_expired(at, Timestamp::from_nanos(cutoff)))
        .collect();
    if !expired.is_empty() {
        report.notices_deleted = client
            .query("SELECT count() AS pending FROM firewall_notices FINAL WHERE has(?, at)")
            .bind(&expired)
            .fetch_one::<Pending>()
            .await?
            .pending;
        client
            .query("ALTER TABLE firewall_notices DELETE WHERE has(?, at)")
            .bind(&expired)
            .execute()
            .await?;
        settle(client, "firewall_notices").await?;
    }

    let assigned: Vec<(String, u32)> = policies::assignments(client, None)
        .await?
        .into_iter()
        .filter_map(|a| a.assigned.map(|v| (v.policy, v.version)))
        .collect();
    let stale = client
        .query(
            "SELECT policy, policy_version, count() AS rows FROM rule_counters FINAL
             GROUP BY policy, policy_version HAVING max(last_reported) < ?",
        )
        .bind(cutoff)
        .fetch_all::<CountedVersion>()
        .await?;
    for version in stale {
        if assigned.contains(&(version.policy.clone(), version.policy_version)) {
            continue;
        }
        client
            .query("ALTER TABLE rule_counters DELETE WHERE policy = ? AND policy_version = ?")
            .bind(&version.policy)
            .bind(version.policy_version)
            .execute()
            .await?;
        settle(client, "rule_counters").await?;
        report.rule_counters_deleted += version.rows;
    }
    Ok(report)
}
