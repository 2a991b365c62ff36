//! Alerts: what the collector must tell an administrator as it happens,
//! rather than wait for someone to run a report. Today that is drift: a
//! connection on an edge that the policy active or staged on its host does
//! not allow.
//!
//! The collector's ingest decides *that* something is drift; this crate
//! decides *how it is told*: sinks (a webhook with a JSON body, syslog),
//! deduplicated per edge and rate-limited, so a flood of one new edge is
//! one alert and a storm of new edges cannot flood the receiver.
//!
//! [`Alerts`] is the one sink the collector holds: it decides what is told
//! (dedup per edge, rate limit with a summary of the rest) and hands each
//! [`Alert`] to its channels ([`WebhookChannel`], [`SyslogChannel`]), each
//! of which delivers on its own thread from a bounded queue, so ingest never
//! waits for a slow receiver.

mod alerts;
mod config;
mod gate;
mod message;
mod queue;
mod syslog;
mod webhook;

pub use alerts::{AlertSettings, Alerts, DEFAULT_DEDUP_WINDOW, DEFAULT_RATE_PER_MINUTE};
pub use config::AlertConfig;
pub use message::{Alert, MoreDrift};
pub use syslog::{SyslogChannel, SyslogTarget};
pub use webhook::{WebhookChannel, WebhookRetry};

use connscope_event::{Direction, Protocol, Timestamp};
use std::net::IpAddr;

/// Why a channel could not be set up (delivery errors are logged, never
/// returned: `send` does not wait for them).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("invalid webhook URL {url:?}: {reason}")]
    WebhookUrl { url: String, reason: String },
    #[error("webhook TLS: {0}")]
    Tls(String),
    #[error("invalid syslog address {address:?}: {reason}")]
    SyslogAddress { address: String, reason: String },
    #[error("cannot reach syslog at {target}: {source}")]
    Syslog {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("alert setting {key}: {reason}")]
    Setting { key: &'static str, reason: String },
    #[error("cannot start the alert thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A new edge that the host's policy does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftAlert {
    /// The host that logged the connection.
    pub host: String,
    pub direction: Direction,
    pub protocol: Protocol,
    /// The service port (the local port of an incoming connection, the
    /// remote port of an outgoing one).
    pub port: u16,
    pub local: IpAddr,
    pub remote: IpAddr,
    /// The remote end's name, when the host learned one.
    pub remote_name: Option<String>,
    pub executable: Option<String>,
    pub pid: Option<u32>,
    pub user: Option<String>,
    pub uid: Option<u32>,
    /// The policy (name and version) and its mode on that direction and port.
    pub policy: String,
    pub version: u32,
    /// `audit` or `enforce`.
    pub mode: String,
    /// When the connection that revealed the drift happened.
    pub at: Timestamp,
}

impl DriftAlert {
    /// What makes two alerts the same edge: host, direction, protocol, port
    /// and the peer's address.
    pub fn edge_key(&self) -> (String, Direction, Protocol, u16, IpAddr) {
        (
            self.host.clone(),
            self.direction,
            self.protocol,
            self.port,
            self.remote,
        )
    }

    /// A stable name for the edge (the same in every alert of it and across
    /// collector restarts and versions): the first 16 hex digits of the
    /// SHA-256 of host, direction, protocol, port and peer address, so a
    /// receiver can group and deduplicate on its side too.
    pub fn edge_id(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}\n{}",
            self.host,
            self.direction.as_str(),
            self.protocol.as_str(),
            self.port,
            self.remote
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Where alerts go. `send` must not block the caller (the collector's ingest):
/// a sink queues and delivers on its own thread.
pub trait AlertSink: Send + Sync {
    fn send(&self, alert: &DriftAlert);
}

/// So settings holding a sink can be printed (the collector's are).
impl std::fmt::Debug for dyn AlertSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertSink")
    }
}

/// One way of delivering alerts that [`Alerts`] already decided to tell.
/// Like [`AlertSink::send`], `deliver` only queues.
pub trait Channel: Send + Sync {
    fn deliver(&self, alert: Alert);
}
