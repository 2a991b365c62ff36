//! The collector's counters: what `/api/v1/stats` shows and the exit log
//! prints. Handlers and the syslog listener add to them; only the stats
//! answer and the caller of [`crate::Collector::counters`] read them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use connscope_store::AgentId;
use serde::{Deserialize, Serialize};

/// Counters shown at `/api/v1/stats` and in the collector's exit log.
#[derive(Debug, Default)]
pub struct Counters {
    pub batches: AtomicU64,
    /// Bytes of ingest bodies read, as sent (compressed).
    pub ingest_bytes: AtomicU64,
    pub events_stored: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub batches_refused: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Events agents reported deleted from a full spool.
    pub events_dropped_by_agents: AtomicU64,
    pub syslog_events_stored: AtomicU64,
    pub syslog_events_duplicate: AtomicU64,
    /// Syslog messages of other programs, ignored.
    pub syslog_ignored: AtomicU64,
    /// tcpspy/connscope syslog messages that could not be read.
    pub syslog_unreadable: AtomicU64,
    /// Syslog TCP connections closed at once: over the total or per-source cap.
    pub syslog_connections_refused: AtomicU64,
    /// Syslog TCP connections closed for idling or for a frame sent too slowly.
    pub syslog_connections_timed_out: AtomicU64,
    /// Refused ingest batches by (agent, reason); their sum is `batches_refused`.
    pub refusals: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Counters {
    /// Counts one batch of `agent` refused for `reason`.
    pub fn refuse(&self, agent: &AgentId, reason: &'static str) {
        self.batches_refused.fetch_add(1, Ordering::Relaxed);
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((agent.0.clone(), reason))
            .or_default() += 1;
    }

    /// Refused batches by reason, all agents together.
    pub(crate) fn refusals_by_reason(&self) -> BTreeMap<&'static str, u64> {
        let mut by_reason = BTreeMap::new();
        for ((_, reason), n) in self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            *by_reason.entry(*reason).or_default() += n;
        }
        by_reason
    }

    /// The counters as `/api/v1/stats` answers them.
    pub(crate) fn snapshot(&self) -> StatsBody {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsBody {
            batches: load(&self.batches),
            events_stored: load(&self.events_stored),
            events_duplicate: load(&self.events_duplicate),
            batches_refused: load(&self.batches_refused),
            unauthorized: load(&self.unauthorized),
            events_dropped_by_agents: load(&self.events_dropped_by_agents),
            syslog_events_stored: load(&self.syslog_events_stored),
            syslog_events_duplicate: load(&self.syslog_events_duplicate),
            syslog_ignored: load(&self.syslog_ignored),
            syslog_unreadable: load(&self.syslog_unreadable),
            syslog_connections_refused: load(&self.syslog_connections_refused),
            syslog_connections_timed_out: load(&self.syslog_connections_timed_out),
            refusals: self
                .refusals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|((agent, reason), batches)| RefusalCount {
                    agent: agent.clone(),
                    reason: (*reason).to_owned(),
                    batches: *batches,
                })
                .collect(),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StatsBody {
    batches: u64,
    events_stored: u64,
    events_duplicate: u64,
    batches_refused: u64,
    unauthorized: u64,
    events_dropped_by_agents: u64,
    syslog_events_stored: u64,
    syslog_events_duplicate: u64,
    syslog_ignored: u64,
    syslog_unreadable: u64,
    syslog_connections_refused: u64,
    syslog_connections_timed_out: u64,
    /// Refused batches by agent and reason.
    refusals: Vec<RefusalCount>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RefusalCount {
    agent: String,
    reason: String,
    batches: u64,
}
