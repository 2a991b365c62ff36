//! Drift at ingest: after an agent's batch is stored, its connections are
//! checked against the policies assigned to their hosts
//! ([`connscope_policy::DriftDetector`]); each edge a policy does not allow
//! is recorded in the store, and the store's answer "this edge is new" is
//! what sends the one alert of that edge. Which collector alerts is thereby
//! the store's decision (docs/POLICY.md, "Drift"), not a per-process memory.
//!
//! Nothing here can refuse a batch: it is stored already, and a drift
//! check that fails is logged and the batch acknowledged, or the agent
//! would send it again and again.

use std::sync::{Arc, Mutex};

use connscope_alert::{AlertSink, DriftAlert};
use connscope_event::ConnectionEvent;
use connscope_policy::DriftDetector;
use connscope_protocol::policy::StageMode;
use connscope_store::{DriftRecord, Store};

/// The collector's drift check, shared by the HTTPS ingest and the syslog
/// listener: one detector (its caches) and the optional alert sink.
#[derive(Clone, Default)]
pub(crate) struct DriftCheck {
    detector: Arc<Mutex<DriftDetector>>,
    sink: Option<Arc<dyn AlertSink>>,
}

impl DriftCheck {
    pub(crate) fn new(sink: Option<Arc<dyn AlertSink>>) -> DriftCheck {
        DriftCheck {
            detector: Arc::default(),
            sink,
        }
    }

    /// Checks `events` (stored just now) for drift, records it, and alerts
    /// on each new edge.
    pub(crate) fn check_batch(&self, store: &dyn Store, events: &[ConnectionEvent]) {
        let found = self
            .detector
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .check(store, events);
        let drift = match found {
            Ok(drift) => drift,
            Err(e) => {
                tracing::error!(error = %e, "cannot check a batch for drift");
                return;
            }
        };
        for record in drift {
            match store.record_drift(&record) {
                Ok(true) => {
                    tracing::warn!(
                        host = %record.host,
                        direction = record.direction.as_str(),
                        protocol = record.protocol.as_str(),
                        port = record.port,
                        remote = %record.remote,
                        executable = record.executable.as_deref().unwrap_or(""),
                        policy = %record.policy,
                        version = record.version,
                        "drift: a new edge the host's policy does not allow"
                    );
                    if let Some(sink) = &self.sink {
                        sink.send(&alert_of(&record, events));
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, host = %record.host, "cannot record drift"),
            }
        }
    }
}

/// The alert of a new drift edge, with the pid and uid of the first
/// connection of the batch on it (the record keeps names, not ids).
fn alert_of(record: &DriftRecord, events: &[ConnectionEvent]) -> DriftAlert {
    let first = events.iter().find(|e| {
        e.host == record.host
            && e.direction == record.direction
            && e.protocol == record.protocol
            && e.remote.ip() == record.remote
            && e.timestamp == record.first_seen
    });
    DriftAlert {
        host: record.host.clone(),
        direction: record.direction,
        protocol: record.protocol,
        port: record.port,
        local: record.local,
        remote: record.remote,
        remote_name: record.remote_name.clone(),
        executable: record.executable.clone(),
        pid: first.and_then(|e| e.process.as_ref().map(|p| p.pid)),
        user: record.user.clone(),
        uid: first.and_then(|e| e.uid),
        policy: record.policy.clone(),
        version: record.version,
        mode: match record.mode {
            StageMode::Audit => "audit",
            StageMode::Enforce => "enforce",
        }
        .to_owned(),
        at: record.first_seen,
    }
}
