//! The store's upkeep while the collector runs: raw events past their age
//! deleted hourly, when configured, so the store stays the size the
//! retention allows; and closed hours' rollups folded every few minutes
//! (`Store::fold_rollups`: on ClickHouse, a month's graph then reads one
//! row per edge and day instead of one per edge, hour and batch). Folding
//! is safe from every collector of a store at once, so each runs it.

use std::sync::Arc;
use std::time::Duration;

use connscope_event::Timestamp;
use connscope_store::{Retention, Store};

/// How often retention runs, when configured.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often closed hours are folded.
const FOLD_EVERY: Duration = Duration::from_secs(600);

pub(crate) async fn fold_rollups(
    store: Arc<dyn Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.fold_rollups(Timestamp::now())).await {
            Ok(Ok(report)) if report.hours_folded > 0 => tracing::info!(
                hours = report.hours_folded,
                batches = report.batches_folded,
                days = report.days_built,
                "rollups folded"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "folding rollups failed"),
            Err(e) => tracing::error!(error = %e, "folding task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLD_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

pub(crate) async fn apply_retention(
    store: Arc<dyn Store>,
    days: u32,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let retention = Retention {
        raw_events: Duration::from_secs(u64::from(days) * 86_400),
        ..Retention::default()
    };
    loop {
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            store.apply_retention(&retention, Timestamp::now())
        })
        .await;
        match result {
            Ok(Ok(report)) => tracing::info!(
                events_deleted = report.events_deleted,
                rollups_deleted = report.rollups_deleted,
                "retention applied"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETENTION_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}
