//! Retention: raw events go after a while, rollups and content keys
//! (optionally) much later. ClickHouse 18.16 has no table TTL, so this is
//! `ALTER TABLE ... DELETE` (a mutation), waited for so the call returns
//! with the data gone, as in SQLite.

use std::time::Duration;

use clickhouse::{Client, Row};
use connscope_event::Timestamp;
use serde::Deserialize;

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
        rollups_deleted: 0,
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
