//! Getting an agent's events to the collector without losing any.
//!
//! [`ShippingOutput`] is the agent's shipping output. [`ShippingOutput::send`]
//! writes a batch durably to the disk [`spool`] and returns: capture never
//! waits for the network. A [`shipper`] thread sends the oldest spooled batch
//! over HTTPS ([`client`], [`tls`]) and deletes it once the collector answered
//! that it is stored. Delivery is at least once; the collector deduplicates by
//! (agent, instance, boot, sequence), which makes it exactly once in the store. The wire
//! contract both sides share is in [`protocol`] and `docs/API.md`.

pub mod client;
pub mod protocol;
pub mod shipper;
pub mod spool;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use connscope_event::{ConnectionEvent, Timestamp};

pub use client::{ClientError, CollectorClient};
pub use protocol::{drop_reason, BatchOrigin};
pub use shipper::{Shipper, ShipperCounters};
pub use spool::{PushOutcome, Spool, SpoolError, SpoolStats};
pub use tls::{CollectorTrust, Fingerprint, TlsError};

/// Default bound of the spool on disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Everything the shipping output needs, as the agent's flags give it.
#[derive(Debug, Clone)]
pub struct ShippingConfig {
    /// `https://HOST:PORT` of the collector.
    pub url: String,
    /// This agent's bearer token; the collector maps it to the agent's id.
    pub token: String,
    pub trust: CollectorTrust,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
}

/// Why the shipping output could not start or spool a batch.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the shipper thread: {0}")]
    Thread(std::io::Error),
    #[error("token file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
}

/// Reads a token file: the token is its content without surrounding white
/// space; an empty file is an error rather than an empty token.
pub fn read_token_file(path: &Path) -> Result<String, TransportError> {
    let err = |reason: String| TransportError::TokenFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("the file is empty".into()));
    }
    Ok(token.to_owned())
}

/// Counters for the agent's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShippingStats {
    pub spool: SpoolStats,
    pub batches_sent: u64,
    pub events_stored: u64,
    pub events_duplicate: u64,
    pub failures: u64,
    /// Events deleted from a full spool since start (also reported to the collector).
    pub events_dropped: u64,
}

/// The agent's shipping output: durable spool in front, shipper thread behind.
pub struct ShippingOutput {
    spool: Arc<Spool>,
    shipper: Option<Shipper>,
    events_dropped: u64,
}

impl ShippingOutput {
    /// Opens the spool (recovering what a previous run left) and starts the
    /// shipper thread.
    pub fn start(config: &ShippingConfig) -> Result<ShippingOutput, TransportError> {
        let client = CollectorClient::new(&config.url, &config.token, &config.trust)?;
        let spool = Arc::new(Spool::open(&config.spool_dir, config.spool_max_bytes)?);
        let recovered = spool.stats();
        if recovered.batches > 0 {
            tracing::info!(
                batches = recovered.batches,
                events = recovered.events,
                "resuming shipping of spooled batches"
            );
        }
        let shipper = Shipper::start(spool.clone(), client).map_err(TransportError::Thread)?;
        Ok(ShippingOutput {
            spool,
            shipper: Some(shipper),
            events_dropped: 0,
        })
    }

    /// Who numbers the events from now on (stamped on every batch), what
    /// the crash of the previous run may have lost (reported as dropped, so
    /// its gap is explained), and when the agent was not running.
    pub fn begin(
        &mut self,
        origin: BatchOrigin,
        crashed: Option<(u64, u64)>,
        down: Option<(Timestamp, Timestamp)>,
    ) -> Result<(), TransportError> {
        let instance = origin.instance.clone();
        // First: whatever fails below, batches must not go out unlabelled.
        self.spool.set_origin(origin);
        // Both are kept in memory (and reported) even if not on disk.
        let down = down.map_or(Ok(()), |(from, to)| {
            self.spool.record_downtime(&instance, from, to)
        });
        let crashed = crashed.map_or(Ok(()), |(first, last)| {
            let numbers = last - first + 1;
            let crash = protocol::drop_reason::CRASH;
            self.spool
                .record_lost(&instance, crash, first, last, numbers)
        });
        down.and(crashed).map_err(TransportError::from)
    }

    /// Spools a batch. When this returns `Ok`, the events survive a crash and
    /// will reach the collector unless the spool overflows (which is counted
    /// and reported). When it fails, the events are lost, and reported so.
    pub fn send(&mut self, events: &[ConnectionEvent]) -> Result<(), TransportError> {
        match self.spool.push(events) {
            Ok(outcome) => {
                self.events_dropped = self.events_dropped.saturating_add(outcome.dropped_events);
                Ok(())
            }
            Err(e) => {
                self.events_dropped = self.events_dropped.saturating_add(events.len() as u64);
                Err(e.into())
            }
        }
    }

    pub fn stats(&self) -> ShippingStats {
        let counters = self.shipper.as_ref().map(Shipper::counters);
        let read = |f: fn(&ShipperCounters) -> &std::sync::atomic::AtomicU64| {
            counters.map_or(0, |c| f(c).load(std::sync::atomic::Ordering::Relaxed))
        };
        ShippingStats {
            spool: self.spool.stats(),
            batches_sent: read(|c| &c.batches_sent),
            events_stored: read(|c| &c.events_stored),
            events_duplicate: read(|c| &c.events_duplicate),
            failures: read(|c| &c.failures),
            events_dropped: self.events_dropped,
        }
    }

    /// Stops shipping, trying for at most `flush_for` to send what is spooled;
    /// the rest stays in the spool for the next start. Later [`Self::send`]s
    /// still spool.
    pub fn close(&mut self, flush_for: Duration) {
        if let Some(shipper) = self.shipper.take() {
            shipper.stop(flush_for);
        }
    }

    /// [`Self::close`], consuming the output.
    pub fn shutdown(mut self, flush_for: Duration) {
        self.close(flush_for);
    }
}
