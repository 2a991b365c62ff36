//! Getting an agent's events to the collector without losing any.
//!
//! [`ShippingOutput`] is the agent's shipping output, a [`Sink`] like the
//! local ones. [`ShippingOutput::send`] writes a batch durably to the disk
//! [`spool`] and returns: capture never waits for the network. A [`shipper`]
//! thread sends the oldest spooled batch over HTTPS ([`client`], [`tls`]) and
//! deletes it once the collector answered that it is stored. Delivery is at
//! least once; the collector deduplicates by (agent, instance, boot,
//! sequence), which makes it exactly once in the store. The wire contract
//! both sides share is in `connscope-protocol` and `docs/API.md`.

pub mod client;
pub mod shipper;
pub mod spool;
pub mod tls;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use connscope_event::{ConnectionEvent, Timestamp};
use connscope_protocol::{drop_reason, BatchOrigin};
use connscope_sink::{LossCause, OutputError, RunStart, Sink};

pub use client::{collector_addresses, ClientError, CollectorClient};
pub use connscope_protocol::tls::{Fingerprint, TlsError};
pub use shipper::{Shipper, ShipperCounters};
pub use spool::{PushOutcome, Spool, SpoolError, SpoolStats};
pub use tls::CollectorTrust;

/// Default bound of the spool on disk.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// How long a stopping agent keeps trying to send what is spooled; the rest
/// stays on disk for the next start.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(5);

/// Everything the shipping output needs, as the agent's flags give it.
#[derive(Debug, Clone)]
pub struct ShippingConfig {
    /// `https://HOST:PORT` of the collector, or several comma-separated
    /// (collectors sharing one store, tried in turn; see [`CollectorClient`]).
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

/// What the agent's `/metrics` reads of a running shipping output, from
/// another thread.
#[derive(Clone)]
pub struct ShippingMonitor {
    spool: Arc<Spool>,
    shipper: Arc<ShipperCounters>,
}

/// A reading of a [`ShippingMonitor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippingHealth {
    pub spool: SpoolStats,
    /// When the oldest batch still waiting was written.
    pub oldest_waiting: Option<SystemTime>,
    /// When the collector last took a batch.
    pub last_success: Option<SystemTime>,
    pub batches_sent: u64,
    pub events_stored: u64,
    /// Sends that failed and will be retried (collector down, network).
    pub failures: u64,
    /// Batches the collector refused for good (set aside, reported dropped).
    pub batches_rejected: u64,
}

impl ShippingMonitor {
    pub fn read(&self) -> ShippingHealth {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.shipper;
        let last = c.last_success_unix_nanos.load(Relaxed);
        ShippingHealth {
            spool: self.spool.stats(),
            oldest_waiting: self.spool.oldest_batch_written(),
            last_success: (last > 0).then(|| SystemTime::UNIX_EPOCH + Duration::from_nanos(last)),
            batches_sent: c.batches_sent.load(Relaxed),
            events_stored: c.events_stored.load(Relaxed),
            failures: c.failures.load(Relaxed),
            batches_rejected: c.batches_rejected.load(Relaxed),
        }
    }
}

/// The agent's shipping output: durable spool in front, shipper thread behind.
pub struct ShippingOutput {
    /// `collector URL`, for the agent's statistics and logs.
    name: String,
    spool: Arc<Spool>,
    shipper: Option<Shipper>,
    events_dropped: u64,
    /// The agent state's instance, from [`Self::begin`]: what losses are
    /// reported under.
    instance: String,
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
            name: format!("collector {}", config.url),
            spool,
            shipper: Some(shipper),
            events_dropped: 0,
            instance: String::new(),
        })
    }

    /// Who numbers the events from now on (stamped on every batch), what
    /// the crash of the previous run may have lost (reported as dropped, so
    /// its gap is explained), and when the agent was not running.
    fn begin_run(&mut self, run: &RunStart) -> Result<(), TransportError> {
        let origin = BatchOrigin {
            instance: run.instance.clone(),
            boot: run.boot.clone(),
            first_sequence: run.first_sequence,
        };
        let crashed = run.crashed;
        let down = run.down.map(|(from, to)| (timestamp(from), timestamp(to)));
        let instance = origin.instance.clone();
        self.instance.clone_from(&instance);
        // First: whatever fails below, batches must not go out unlabelled.
        self.spool.set_origin(origin);
        // Both are kept in memory (and reported) even if not on disk.
        let down = down.map_or(Ok(()), |(from, to)| {
            self.spool.record_downtime(&instance, from, to)
        });
        let crashed = crashed.map_or(Ok(()), |(first, last)| {
            let numbers = last - first + 1;
            let crash = drop_reason::CRASH;
            self.spool
                .record_lost(&instance, crash, first, last, numbers)
        });
        down.and(crashed).map_err(TransportError::from)
    }

    /// Reports numbers `first..=last` as lost before they were spooled, for
    /// `reason` ([`drop_reason`]); kept in the spool's dropped report until
    /// the collector has it, across restarts.
    fn record_lost(&mut self, first: u64, last: u64, reason: &str) -> Result<(), TransportError> {
        self.spool
            .record_lost(&self.instance, reason, first, last, last - first + 1)
            .map_err(TransportError::from)
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

    /// A handle for reading the spool and the shipper from another thread;
    /// it keeps reading the last counts once shipping stops.
    pub fn monitor(&self) -> ShippingMonitor {
        ShippingMonitor {
            spool: self.spool.clone(),
            shipper: self
                .shipper
                .as_ref()
                .map_or_else(Arc::default, Shipper::shared_counters),
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
    fn stop_shipping(&mut self, flush_for: Duration) {
        if let Some(shipper) = self.shipper.take() {
            shipper.stop(flush_for);
        }
    }

    /// Stops shipping (at most `flush_for` to send what is spooled; the rest
    /// stays for the next start), consuming the output.
    pub fn shutdown(mut self, flush_for: Duration) {
        self.stop_shipping(flush_for);
    }
}

fn timestamp(time: SystemTime) -> Timestamp {
    let nanos = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Timestamp::from_nanos(nanos)
}

/// The reason a loss before numbering is reported under.
fn loss_reason(cause: LossCause) -> &'static str {
    match cause {
        LossCause::Kernel => drop_reason::CAPTURE_KERNEL,
        LossCause::Queue => drop_reason::CAPTURE_QUEUE,
        LossCause::StateWrite => drop_reason::STATE_WRITE,
    }
}

impl Sink for ShippingOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn begin(&mut self, run: &RunStart) -> Result<(), OutputError> {
        self.begin_run(run)
            .map_err(|e| OutputError::Other(Box::new(e)))
    }

    /// Durable in the spool when this returns; the network is the shipper
    /// thread's business.
    fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError> {
        self.send(events)
            .map_err(|e| OutputError::Other(Box::new(e)))?;
        Ok(0)
    }

    fn lost(&mut self, first: u64, last: u64, cause: LossCause) -> Result<(), OutputError> {
        self.record_lost(first, last, loss_reason(cause))
            .map_err(|e| OutputError::Other(Box::new(e)))
    }

    /// Every batch is on disk as soon as it is written: nothing to flush.
    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), OutputError> {
        let stats = self.stats();
        self.stop_shipping(FLUSH_ON_EXIT);
        let left = self.stats().spool;
        tracing::info!(
            batches_sent = stats.batches_sent,
            events_stored = stats.events_stored,
            events_dropped = stats.events_dropped,
            left_in_spool = left.events,
            "shipping stopped"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use connscope_protocol::DroppedReport;

    use super::*;

    /// A shipping output whose collector never answers: what it keeps for
    /// the collector stays in the spool.
    fn offline(spool_dir: &Path) -> ShippingOutput {
        ShippingOutput::start(&ShippingConfig {
            url: "https://127.0.0.1:1".into(),
            token: "token".into(),
            trust: CollectorTrust::Fingerprint(Fingerprint::of(b"no collector")),
            spool_dir: spool_dir.to_owned(),
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
        })
        .unwrap()
    }

    #[test]
    fn losses_before_numbering_are_kept_as_dropped_with_their_cause_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut output = offline(dir.path());
        let run = RunStart {
            instance: "ab".repeat(16),
            boot: "cd".repeat(16),
            first_sequence: 1,
            crashed: None,
            down: None,
        };
        let sink: &mut dyn Sink = &mut output;
        sink.begin(&run).unwrap();
        sink.lost(1, 3, LossCause::Kernel).unwrap();
        sink.lost(4, 4, LossCause::Queue).unwrap();
        sink.lost(9, 10, LossCause::Kernel).unwrap();
        assert_eq!(output.stats().spool.unreported_dropped, 6);
        output.shutdown(Duration::ZERO);

        let spool = Spool::open(dir.path(), DEFAULT_SPOOL_MAX_BYTES).unwrap();
        let mut reports = spool.dropped_reports();
        reports.sort_by(|a, b| a.reason.cmp(&b.reason));
        let report = |reason: &str, events, ranges: &[(u64, u64)]| DroppedReport {
            instance: run.instance.clone(),
            reason: reason.to_owned(),
            events,
            ranges: ranges.to_vec(),
            down: Vec::new(),
        };
        assert_eq!(
            reports,
            [
                report(drop_reason::CAPTURE_KERNEL, 5, &[(1, 3), (9, 10)]),
                report(drop_reason::CAPTURE_QUEUE, 1, &[(4, 4)]),
            ]
        );
    }
}
