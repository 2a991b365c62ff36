//! The collector: the one place events from every host arrive.
//!
//! Agents POST batches over HTTPS with a per-agent bearer token; hosts that
//! still run tcpspy send syslog. Both end in the same [`Store`], under an agent
//! id (the token's, or `syslog@HOST`), so deduplication and gap detection work
//! the same for both. The API is documented in `docs/API.md`.
//!
//! Starting is split into [`Collector::bind`] (sockets, TLS identity: every
//! configuration error shows here) and [`Collector::run`], so a caller can
//! print the address and the certificate fingerprint before serving.
//!
//! Agent tokens come from the settings (flags, a tokens file) or from the
//! store, where enrollment puts them as digests ([`enrolled`]). A collector
//! without any still starts: it serves the map and the queries of its store
//! (an imported one, say) and receives syslog, and refuses ingest requests
//! with `403` until tokens are configured or an agent enrolls.
//!
//! One job per file: this file starts and stops the parts. HTTPS is
//! `accept` (the TLS accept loop) -> `router` -> `handlers` (ingest, read,
//! firewall, map) -> `kit` (state, errors, access, body reading); `syslog`
//! is the listener (pure framing and envelope parsing below its serving);
//! `counters` (shown by `metrics`), `retention` and `open_files` are the
//! collector's own upkeep; `drift` checks stored batches against the hosts'
//! policies and alerts on new drift edges.

mod accept;
pub mod auth;
mod binding;
pub mod config;
mod counters;
mod drift;
pub mod enrolled;
mod error;
mod handlers;
pub mod ingest;
mod kit;
pub mod live;
mod metrics;
mod open_files;
mod retention;
mod router;
pub mod syslog;
pub mod tls;

use connscope_protocol::Fingerprint;
use connscope_store::{Store, StoreLocation};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use config::{CollectorConfig, ConfigFile, SyslogLimits, TlsSettings};
pub use counters::Counters;
pub use error::CollectorError;

/// A collector with its sockets bound, ready to [`Collector::run`].
pub struct Collector {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    syslog: Option<syslog::SyslogSockets>,
    store: Arc<dyn Store>,
    config: CollectorConfig,
    identity: tls::TlsIdentity,
    counters: Arc<Counters>,
}

impl Collector {
    /// Loads (or makes) the TLS identity and binds the HTTPS and syslog sockets.
    pub async fn bind(
        config: CollectorConfig,
        store: Arc<dyn Store>,
    ) -> Result<Collector, CollectorError> {
        if config.tokens.is_empty() {
            tracing::info!(
                "no agent tokens in the settings: only agents enrolled in the store may send"
            );
        }
        let open_files = open_files::raise_open_file_limit();
        let identity = match &config.store {
            StoreLocation::Sqlite(db) => tls::load_or_generate(&config.tls, db)?,
            // Collectors on a shared store are interchangeable: they serve
            // one certificate the agents trust, never one generated each.
            StoreLocation::ClickHouse(_) if config.tls.cert.is_none() => {
                return Err(CollectorError::Tls {
                    path: config.store.to_string().into(),
                    reason: "a collector on a ClickHouse store needs --tls-cert and --tls-key \
                             (the certificate every collector of the store serves)"
                        .into(),
                })
            }
            StoreLocation::ClickHouse(_) => tls::load_or_generate(&config.tls, Path::new("."))?,
        };
        let listen_err = |addr| move |source| CollectorError::Listen { addr, source };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(listen_err(config.listen))?;
        let syslog = match config.syslog_listen {
            Some(addr) => Some(
                syslog::SyslogSockets::bind(
                    addr,
                    open_files::reserve_for_https(config.syslog_limits, open_files),
                )
                .await
                .map_err(listen_err(addr))?,
            ),
            None => None,
        };
        Ok(Collector {
            listener,
            acceptor: TlsAcceptor::from(identity.server_config.clone()),
            syslog,
            store,
            config,
            identity,
            counters: Arc::new(Counters::default()),
        })
    }

    /// Where HTTPS is served (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where syslog is received (TCP and UDP), when enabled.
    pub fn syslog_addr(&self) -> Option<SocketAddr> {
        self.syslog
            .as_ref()
            .map(|s| s.local_addr().expect("a bound socket has an address"))
    }

    /// SHA-256 fingerprint of the served certificate, for `--collector-fingerprint`.
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint
    }

    /// The served certificate (PEM), usable as an agent's `--collector-ca`.
    pub fn certificate_path(&self) -> &std::path::Path {
        &self.identity.cert_path
    }

    /// The certificate was generated during this start.
    pub fn generated_certificate(&self) -> bool {
        self.identity.generated
    }

    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Serves until `shutdown` resolves; syslog messages already received are
    /// stored before this returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let notices = live::Notices::default();
        let metrics = Arc::new(metrics::Metrics::new(
            self.counters.clone(),
            self.store.clone(),
            match &self.config.store {
                StoreLocation::Sqlite(path) => Some(path.clone()),
                StoreLocation::ClickHouse(_) => None,
            },
        ));
        let drift = drift::DriftCheck::new(self.config.alerts.clone());
        let state = kit::AppState {
            store: self.store.clone(),
            tokens: Arc::new(self.config.tokens.clone()),
            stored_tokens: Arc::new(enrolled::StoreTokens::new(self.store.clone())),
            metrics,
            readers: Arc::new(self.config.read_tokens.clone()),
            open_reads: self.config.read_tokens.is_empty() && self.config.listen.ip().is_loopback(),
            body_limit: usize::try_from(self.config.body_limit).unwrap_or(usize::MAX),
            decompressed_limit: self.config.decompressed_limit,
            ingest_memory: Arc::new(tokio::sync::Semaphore::new(
                self.config.concurrent_decompressions.max(1)
                    * kit::decode_slot(self.config.decompressed_limit) as usize,
            )),
            bindings: Arc::default(),
            request_deadline: self.config.request_deadline,
            counters: self.counters.clone(),
            notices: notices.clone(),
            stop: stop_rx.clone(),
            drift: drift.clone(),
        };
        let https = tokio::spawn(accept::serve(
            self.listener,
            self.acceptor,
            router::router(state),
            stop_rx.clone(),
        ));
        let syslog = self.syslog.map(|sockets| {
            tokio::spawn(syslog::serve(
                sockets,
                self.store.clone(),
                self.counters.clone(),
                notices.clone(),
                drift,
                stop_rx.clone(),
            ))
        });
        let retention = self.config.retention_days.map(|days| {
            tokio::spawn(retention::apply_retention(
                self.store.clone(),
                days,
                stop_rx.clone(),
            ))
        });
        let fold = tokio::spawn(retention::fold_rollups(self.store.clone(), stop_rx.clone()));
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = https.await;
        let _ = fold.await;
        if let Some(syslog) = syslog {
            let _ = syslog.await;
        }
        if let Some(retention) = retention {
            let _ = retention.await;
        }
    }
}
