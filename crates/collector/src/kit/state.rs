//! What every handler is given: the store, the tokens, the limits, the
//! counters and metrics, and the live notices.

use std::sync::Arc;
use std::time::Duration;

use connscope_store::Store;

use crate::auth::Tokens;
use crate::binding::HostBindings;
use crate::counters::Counters;
use crate::drift::DriftCheck;
use crate::enrolled::StoreTokens;
use crate::live::Notices;
use crate::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    /// Agent tokens of the settings (flags, tokens file).
    pub tokens: Arc<Tokens>,
    /// Agent tokens of the store (enrolled agents).
    pub stored_tokens: Arc<StoreTokens>,
    /// Tokens that may use the query endpoints.
    pub readers: Arc<Tokens>,
    /// Queries need no token (loopback listener without reader tokens).
    pub open_reads: bool,
    pub body_limit: usize,
    pub decompressed_limit: u64,
    /// Ingest memory, in bytes of decompressed bodies: decoding a body takes
    /// a whole `decompressed_limit` of it (so `concurrent-decompressions`
    /// bodies decode at once), a decoded batch waiting for the store keeps
    /// only its own size. The bound of ingest memory whatever the number of
    /// requests, and room for the many small batches a ClickHouse store
    /// writes together.
    pub ingest_memory: Arc<tokio::sync::Semaphore>,
    /// The host names each agent may write events for.
    pub bindings: Arc<HostBindings>,
    /// How long one request may take, body included.
    pub request_deadline: Duration,
    pub counters: Arc<Counters>,
    /// What `/metrics` shows; request latencies are recorded into it.
    pub metrics: Arc<Metrics>,
    /// Told after every stored batch; followed by `/api/v1/events/stream`.
    pub notices: Notices,
    /// Becomes true when the collector stops (ends the event streams).
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Checks every stored batch for drift and alerts on new edges (one
    /// per collector: it caches the hosts' rendered policies).
    pub drift: DriftCheck,
}

/// The share of [`AppState::ingest_memory`] one decoding body takes: the
/// decompressed limit (at most what one acquire can take).
pub(crate) fn decode_slot(decompressed_limit: u64) -> u32 {
    u32::try_from(decompressed_limit).unwrap_or(u32::MAX).max(1)
}
