//! The agent's shipping flags (`--collector ...`) and the [`Sink`] that hands
//! batches to `connscope-transport`'s spool and shipper.
//!
//! Kept apart from `cmd/agent.rs` so the agent's own flags stay tcpspy's, and
//! in the binary so neither library crate has to depend on the other.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use connscope_agent::{LossCause, OutputError, RunStart, Sink};
use connscope_event::{ConnectionEvent, Timestamp};
use connscope_transport::{
    drop_reason, read_token_file, BatchOrigin, CollectorTrust, Fingerprint, ShippingConfig,
    ShippingOutput, DEFAULT_SPOOL_MAX_BYTES,
};

/// How long a stopping agent keeps trying to send what is spooled; the rest
/// stays on disk for the next start.
const FLUSH_ON_EXIT: Duration = Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct ShipArgs {
    /// Ship events to the collector at this URL (https://HOST:PORT).
    #[arg(
        long,
        value_name = "URL",
        requires = "collector_token_source",
        requires = "collector_trust"
    )]
    collector: Option<String>,
    /// This agent's token for the collector (visible in `ps`: prefer
    /// --collector-token-file).
    #[arg(long, value_name = "TOKEN", group = "collector_token_source")]
    collector_token: Option<String>,
    /// File holding this agent's token.
    #[arg(long, value_name = "FILE", group = "collector_token_source")]
    collector_token_file: Option<PathBuf>,
    /// Trust the collector's certificate if it chains to a certificate in this
    /// PEM file (a CA, or the collector's own certificate).
    #[arg(long, value_name = "FILE", group = "collector_trust")]
    collector_ca: Option<PathBuf>,
    /// Trust the collector's certificate by its SHA-256 fingerprint, as the
    /// collector prints it at start.
    #[arg(long, value_name = "SHA256", group = "collector_trust")]
    collector_fingerprint: Option<Fingerprint>,
    /// Where batches wait until the collector has them (default: STATE-DIR/spool).
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// Largest size of the spool; when full, the oldest batches are deleted
    /// (counted and reported to the collector).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_SPOOL_MAX_BYTES)]
    spool_max_bytes: u64,
}

/// The shipping output, when `--collector` is given.
pub fn open(args: &ShipArgs, state_dir: &Path) -> anyhow::Result<Option<Box<dyn Sink>>> {
    let Some(url) = &args.collector else {
        return Ok(None);
    };
    let token = match (&args.collector_token, &args.collector_token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => read_token_file(file)?,
        (None, None) => {
            anyhow::bail!("--collector needs --collector-token or --collector-token-file")
        }
    };
    let trust = match (&args.collector_ca, args.collector_fingerprint) {
        (Some(ca), _) => CollectorTrust::CaFile(ca.clone()),
        (None, Some(fingerprint)) => CollectorTrust::Fingerprint(fingerprint),
        (None, None) => {
            anyhow::bail!("--collector needs --collector-ca or --collector-fingerprint")
        }
    };
    let config = ShippingConfig {
        url: url.clone(),
        token,
        trust,
        spool_dir: args
            .spool_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("spool")),
        spool_max_bytes: args.spool_max_bytes,
    };
    let output = ShippingOutput::start(&config).with_context(|| format!("shipping to {url}"))?;
    Ok(Some(Box::new(Shipping {
        output,
        name: format!("collector {url}"),
    })))
}

fn timestamp(time: std::time::SystemTime) -> Timestamp {
    let nanos = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Timestamp::from_nanos(nanos)
}

struct Shipping {
    output: ShippingOutput,
    name: String,
}

impl Sink for Shipping {
    fn name(&self) -> &str {
        &self.name
    }

    fn begin(&mut self, run: &RunStart) -> Result<(), OutputError> {
        let origin = BatchOrigin {
            instance: run.instance.clone(),
            boot: run.boot.clone(),
            first_sequence: run.first_sequence,
        };
        let down = run.down.map(|(from, to)| (timestamp(from), timestamp(to)));
        self.output
            .begin(origin, run.crashed, down)
            .map_err(|e| OutputError::Other(Box::new(e)))
    }

    fn lost(&mut self, first: u64, last: u64, cause: LossCause) -> Result<(), OutputError> {
        let reason = match cause {
            LossCause::Kernel => drop_reason::CAPTURE_KERNEL,
            LossCause::Queue => drop_reason::CAPTURE_QUEUE,
            LossCause::StateWrite => drop_reason::STATE_WRITE,
        };
        self.output
            .record_lost(first, last, reason)
            .map_err(|e| OutputError::Other(Box::new(e)))
    }

    /// Durable in the spool when this returns; the network is the shipper
    /// thread's business.
    fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError> {
        self.output
            .send(events)
            .map_err(|e| OutputError::Other(Box::new(e)))?;
        Ok(0)
    }

    /// Every batch is on disk as soon as it is written: nothing to flush.
    fn flush(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), OutputError> {
        let stats = self.output.stats();
        self.output.close(FLUSH_ON_EXIT);
        let left = self.output.stats().spool;
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
