//! `connscope collector`: run the collector (HTTPS ingest and query API,
//! optional syslog listener) on a SQLite store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use connscope_collector::{Collector, CollectorConfig, ConfigFile};
use connscope_store::SqliteStore;

#[derive(Args)]
pub struct CollectorArgs {
    /// Settings file (TOML, see docs/API.md); flags override its values.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SQLite database (created if missing).
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
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
}

impl CollectorArgs {
    fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let mut config = match &self.config {
            Some(path) => {
                CollectorConfig::from_file(ConfigFile::load(path)?, self.listen, self.db, path)?
            }
            None => {
                let (Some(listen), Some(db)) = (self.listen, self.db) else {
                    bail!("give --listen and --db, or a --config file that sets them");
                };
                CollectorConfig::new(listen, db)
            }
        };
        if self.syslog_listen.is_some() {
            config.syslog_listen = self.syslog_listen;
        }
        for pair in &self.tokens {
            let (agent, token) = pair
                .split_once('=')
                .with_context(|| format!("--token {pair:?}: expected AGENT-ID=TOKEN"))?;
            config
                .tokens
                .insert(agent, token)
                .map_err(|reason| anyhow::anyhow!("--token: {reason}"))?;
        }
        for pair in &self.read_tokens {
            let (name, token) = pair
                .split_once('=')
                .with_context(|| format!("--read-token {pair:?}: expected NAME=TOKEN"))?;
            config
                .read_tokens
                .insert(name, token)
                .map_err(|reason| anyhow::anyhow!("--read-token: {reason}"))?;
        }
        if let Some(path) = &self.tokens_file {
            config.tokens.load_file(path)?;
        }
        for pair in &self.token_hosts {
            let (agent, hosts) = pair
                .split_once('=')
                .with_context(|| format!("--token-hosts {pair:?}: expected AGENT-ID=HOST,HOST"))?;
            config
                .tokens
                .bind_hosts(agent, hosts.split(','))
                .map_err(|reason| anyhow::anyhow!("--token-hosts: {reason}"))?;
        }
        if let Some(n) = self.concurrent_decompressions {
            config.concurrent_decompressions = n;
        }
        if let Some(secs) = self.request_deadline_seconds {
            config.request_deadline = std::time::Duration::from_secs(secs);
        }
        let limits = &mut config.syslog_limits;
        limits.max_connections = self
            .syslog_max_connections
            .unwrap_or(limits.max_connections);
        limits.max_per_source = self.syslog_max_per_source.unwrap_or(limits.max_per_source);
        if let Some(secs) = self.syslog_idle_timeout_seconds {
            limits.idle_timeout = std::time::Duration::from_secs(secs);
        }
        if self.tls_cert.is_some() {
            config.tls.cert = self.tls_cert;
            config.tls.key = self.tls_key;
        }
        config.tls.names.extend(self.tls_name);
        if let Some(limit) = self.body_limit {
            config.body_limit = limit;
        }
        if let Some(limit) = self.decompressed_limit {
            config.decompressed_limit = limit;
        }
        if let Some(days) = self.retention_days {
            config.retention_days = (days > 0).then_some(days);
        }
        Ok(config)
    }
}

pub fn run(args: CollectorArgs) -> anyhow::Result<ExitCode> {
    let config = args.into_config()?;
    let store = SqliteStore::open(&config.db)
        .with_context(|| format!("opening the store {}", config.db.display()))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let ingest_off = config.tokens.is_empty();
    runtime.block_on(async move {
        let collector = Collector::bind(config, Arc::new(store)).await?;
        // On stdout, one fact per line, so scripts (and the tests) can read them.
        println!("listening: https://{}", collector.local_addr());
        if let Some(addr) = collector.syslog_addr() {
            println!("syslog: {addr} (udp, tcp)");
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
            println!("ingest: off until agent tokens are configured");
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
