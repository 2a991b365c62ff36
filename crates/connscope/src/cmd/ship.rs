//! The agent's shipping flags (`--collector ...`) and building the shipping
//! [`Sink`] of `connscope-transport` from them.
//!
//! Kept apart from `cmd/agent.rs` so the agent's own flags stay tcpspy's.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use connscope_agent::Sink;
use connscope_transport::{
    read_token_file, CollectorTrust, Fingerprint, ShippingConfig, ShippingMonitor, ShippingOutput,
    DEFAULT_SPOOL_MAX_BYTES,
};

#[derive(Args, Debug)]
pub struct ShipArgs {
    /// Ship events to the collector at this URL (https://HOST:PORT). Repeat it
    /// (or give a comma-separated list) for collectors sharing one store: the
    /// agent stays with one and fails over to the next when it cannot reach it.
    #[arg(long, value_name = "URL")]
    pub(crate) collector: Vec<String>,
    /// This agent's token for the collector (visible in `ps`: prefer
    /// --collector-token-file).
    #[arg(long, value_name = "TOKEN", group = "collector_token_source")]
    pub(crate) collector_token: Option<String>,
    /// File holding this agent's token.
    #[arg(long, value_name = "FILE", group = "collector_token_source")]
    pub(crate) collector_token_file: Option<PathBuf>,
    /// Trust the collector's certificate if it chains to a certificate in this
    /// PEM file (a CA, or the collector's own certificate).
    #[arg(long, value_name = "FILE", group = "collector_trust")]
    pub(crate) collector_ca: Option<PathBuf>,
    /// Trust the collector's certificate by its SHA-256 fingerprint, as the
    /// collector prints it at start.
    #[arg(long, value_name = "SHA256", group = "collector_trust")]
    pub(crate) collector_fingerprint: Option<Fingerprint>,
    /// Where batches wait until the collector has them (default: STATE-DIR/spool).
    #[arg(long, value_name = "DIR")]
    pub(crate) spool_dir: Option<PathBuf>,
    /// Largest size of the spool; when full, the oldest batches are deleted
    /// (counted and reported to the collector) [default: 268435456].
    #[arg(long, value_name = "BYTES")]
    pub(crate) spool_max_bytes: Option<u64>,
}

/// The collectors' URL (comma-separated), the agent's token and how the
/// collector's certificate is trusted, when `--collector` is given: what
/// every client of the agent's (shipping, the firewall's fetches) uses.
pub fn collector_access(
    args: &ShipArgs,
) -> anyhow::Result<Option<(String, String, CollectorTrust)>> {
    if args.collector.is_empty() {
        return Ok(None);
    }
    let url = args.collector.join(",");
    let token = match (&args.collector_token, &args.collector_token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => read_token_file(file)?,
        (None, None) => {
            anyhow::bail!("--collector needs --collector-token or --collector-token-file (or collector_token_file in the config file)")
        }
    };
    let trust = match (&args.collector_ca, args.collector_fingerprint) {
        (Some(ca), _) => CollectorTrust::CaFile(ca.clone()),
        (None, Some(fingerprint)) => CollectorTrust::Fingerprint(fingerprint),
        (None, None) => {
            anyhow::bail!("--collector needs --collector-ca or --collector-fingerprint (or collector_ca or collector_fingerprint in the config file)")
        }
    };
    Ok(Some((url, token, trust)))
}

/// The shipping output, when `--collector` is given, and a monitor of it
/// for the agent's `/metrics`.
pub fn open(
    args: &ShipArgs,
    state_dir: &Path,
) -> anyhow::Result<Option<(Box<dyn Sink>, ShippingMonitor)>> {
    let Some((url, token, trust)) = collector_access(args)? else {
        return Ok(None);
    };
    let url = &url;
    let config = ShippingConfig {
        url: url.clone(),
        token,
        trust,
        spool_dir: args
            .spool_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("spool")),
        spool_max_bytes: args.spool_max_bytes.unwrap_or(DEFAULT_SPOOL_MAX_BYTES),
    };
    let output = ShippingOutput::start(&config).with_context(|| format!("shipping to {url}"))?;
    let monitor = output.monitor();
    Ok(Some((Box::new(output), monitor)))
}
