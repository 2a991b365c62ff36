//! `connscope collector`: run the collector (HTTPS ingest and query API,
//! optional syslog listener) on a SQLite or ClickHouse store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use connscope_alert::{AlertConfig, AlertSink};
use connscope_collector::{Collector, CollectorConfig, ConfigFile, TlsSettings};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CollectorArgs {
    #[command(subcommand)]
    action: Option<CollectorAction>,
    /// Settings file (TOML, see docs/API.md); flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SQLite database (created if missing); short for --store sqlite:PATH.
    #[arg(long, value_name = "PATH", conflicts_with = "store")]
    db: Option<PathBuf>,
    /// The store: sqlite:PATH or clickhouse://[user[:password]@]host:port/database
    /// (several collectors may share a ClickHouse store).
    #[arg(long, value_name = "LOCATION")]
    store: Option<String>,
    /// Address for the HTTPS API, e.g. 0.0.0.0:8443.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Also receive syslog (UDP and TCP) on this address, e.g. 0.0.0.0:514.
    #[arg(long, value_name = "ADDR")]
    syslog_listen: Option<SocketAddr>,
    /// An agent's token, as AGENT-ID=TOKEN (repeatable). Prefer a tokens file:
    /// command lines are visible to every user.
    #[arg(long = "token", value_name = "AGENT=TOKEN")]
    tokens: Vec<String>,
    /// A reader's token for the query API, as NAME=TOKEN (repeatable).
    #[arg(long = "read-token", value_name = "NAME=TOKEN")]
    read_tokens: Vec<String>,
    /// File of `AGENT-ID TOKEN [HOST,HOST...]` lines.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// The host names an agent's events may carry, as AGENT-ID=HOST,HOST
    /// (repeatable; default: the host of its first batch).
    #[arg(long = "token-hosts", value_name = "AGENT=HOSTS")]
    token_hosts: Vec<String>,
    /// Certificate (PEM) to serve; without it a self-signed one is made next to the database.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Extra DNS name or IP address for a generated certificate (repeatable).
    #[arg(long, value_name = "NAME")]
    tls_name: Vec<String>,
    /// Largest accepted request body, in bytes as sent (compressed).
    #[arg(long, value_name = "BYTES")]
    body_limit: Option<u64>,
    /// Largest accepted ingest body once decompressed, in bytes.
    #[arg(long, value_name = "BYTES")]
    decompressed_limit: Option<u64>,
    /// Ingest bodies decompressed and parsed at once (bounds ingest memory).
    #[arg(long, value_name = "N")]
    concurrent_decompressions: Option<usize>,
    /// Longest time one HTTPS request may take, body included.
    #[arg(long, value_name = "SECONDS")]
    request_deadline_seconds: Option<u64>,
    /// Syslog TCP connections open at once, in total.
    #[arg(long, value_name = "N")]
    syslog_max_connections: Option<usize>,
    /// Syslog TCP connections open at once from one address.
    #[arg(long, value_name = "N")]
    syslog_max_per_source: Option<usize>,
    /// Close a syslog TCP connection idle this long.
    #[arg(long, value_name = "SECONDS")]
    syslog_idle_timeout_seconds: Option<u64>,
    /// Delete raw events older than this many days (checked hourly).
    #[arg(long, value_name = "DAYS")]
    retention_days: Option<u32>,
    /// POST each drift alert (JSON) to this URL (repeatable; http or https).
    #[arg(long = "alert-webhook", value_name = "URL")]
    alert_webhooks: Vec<String>,
    /// CA (PEM) that HTTPS webhooks must chain to, instead of the system's CA store.
    #[arg(long, value_name = "FILE")]
    alert_webhook_ca: Option<PathBuf>,
    /// Send drift alerts to syslog: the local daemon (/dev/log) without a
    /// value, or udp://IP:PORT, tcp://IP:PORT, unix:PATH.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "local")]
    alert_syslog: Option<String>,
    /// Tell an edge again only after this long (default 24h; e.g. 30m, 7d).
    #[arg(long, value_name = "DURATION")]
    alert_dedup_window: Option<String>,
    /// At most this many drift alerts per minute; the rest become one
    /// "N more drift edges" alert (default 10).
    #[arg(long, value_name = "N")]
    alert_rate: Option<u32>,
}

#[derive(Subcommand)]
enum CollectorAction {
    /// Print the one command that enrolls HOST (run on the collector host,
    /// against its store).
    Enroll(super::enroll::CollectorEnrollArgs),
    /// The agent and enrollment tokens in the store: list, revoke.
    #[command(subcommand)]
    Tokens(super::enroll::TokensCommand),
}

impl CollectorArgs {
    /// The settings file (if given) with the flags on top.
    fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let mut file = match &self.config {
            Some(path) => Some((path.as_path(), ConfigFile::load(path)?)),
            None => None,
        };
        let alert_flags = AlertConfig {
            webhooks: self.alert_webhooks,
            webhook_ca: self.alert_webhook_ca,
            syslog: self.alert_syslog,
            dedup_window: self.alert_dedup_window,
            rate: self.alert_rate,
        };
        let alert_file = file
            .as_mut()
            .and_then(|(_, file)| file.alerts.take())
            .unwrap_or_default();
        let alerts = alert_file
            .overlay(alert_flags)
            .build()
            .context("setting up drift alerts")?;
        let flags = ConfigFile {
            listen: self.listen,
            db: self.db,
            store: self.store,
            syslog_listen: self.syslog_listen,
            tokens: pairs("token", "AGENT-ID=TOKEN", &self.tokens)?,
            tokens_file: self.tokens_file,
            token_hosts: pairs("token-hosts", "AGENT-ID=HOST,HOST", &self.token_hosts)?
                .into_iter()
                .map(|(agent, hosts)| (agent, hosts.split(',').map(str::to_owned).collect()))
                .collect(),
            read_tokens: pairs("read-token", "NAME=TOKEN", &self.read_tokens)?,
            tls: Some(TlsSettings {
                cert: self.tls_cert,
                key: self.tls_key,
                names: self.tls_name,
            }),
            body_limit: self.body_limit,
            decompressed_limit: self.decompressed_limit,
            concurrent_decompressions: self.concurrent_decompressions,
            request_deadline_seconds: self.request_deadline_seconds,
            syslog_max_connections: self.syslog_max_connections,
            syslog_max_per_source: self.syslog_max_per_source,
            syslog_idle_timeout_seconds: self.syslog_idle_timeout_seconds,
            retention_days: self.retention_days,
            alerts: None,
        };
        let mut config = CollectorConfig::merge(file, flags)?;
        config.alerts = alerts.map(|a| Arc::new(a) as Arc<dyn AlertSink>);
        Ok(config)
    }
}

/// The `KEY=VALUE` values of a repeatable flag, in order.
fn pairs(flag: &str, form: &str, values: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("--{flag} {pair:?}: expected {form}"))?;
            Ok((key.to_owned(), value.to_owned()))
        })
        .collect()
}

pub fn run(mut args: CollectorArgs) -> anyhow::Result<ExitCode> {
    match args.action.take() {
        Some(CollectorAction::Enroll(enroll)) => return super::enroll::collector_enroll(enroll),
        Some(CollectorAction::Tokens(command)) => return super::enroll::tokens(command),
        None => {}
    }
    let config = args.into_config()?;
    let store = connscope_store::open(&config.store)
        .with_context(|| format!("opening the store {}", config.store))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let ingest_off = config.tokens.is_empty();
    let alerts_line = config.alerts.as_ref().map(|_| "on (drift)");
    runtime.block_on(async move {
        let collector = Collector::bind(config, store).await?;
        // On stdout, one fact per line, so scripts (and the tests) can read them.
        println!("listening: https://{}", collector.local_addr());
        if let Some(addr) = collector.syslog_addr() {
            println!("syslog: {addr} (udp, tcp)");
        }
        if let Some(alerts) = alerts_line {
            println!("alerts: {alerts}");
        }
        println!(
            "certificate: {}{}",
            collector.certificate_path().display(),
            if collector.generated_certificate() {
                " (generated)"
            } else {
                ""
            }
        );
        println!("fingerprint: SHA256:{}", collector.fingerprint());
        if ingest_off {
            println!("ingest: only agents enrolled in the store (no tokens in the settings)");
        }
        let counters = collector.counters();
        collector.run(shutdown_signal()).await;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            batches = load(&counters.batches),
            events_stored = load(&counters.events_stored),
            events_duplicate = load(&counters.events_duplicate),
            syslog_events_stored = load(&counters.syslog_events_stored),
            "collector stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
