//! Raw events past their age deleted hourly, when configured, so the store
//! stays the size the retention allows while the collector runs.

use std::sync::Arc;
use std::time::Duration;

use connscope_event::Timestamp;
use connscope_store::{Retention, Store};

/// How often retention runs, when configured.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

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
