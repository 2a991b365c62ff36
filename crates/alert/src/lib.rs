//! Alerts: what the collector must tell an administrator as it happens,
//! rather than wait for someone to run a report. Today that is drift: a
//! connection on an edge that the policy active or staged on its host does
//! not allow.
//!
//! The collector's ingest decides *that* something is drift; this crate
//! decides *how it is told*: sinks (a webhook with a JSON body, syslog),
//! deduplicated per edge and rate-limited, so a flood of one new edge is
//! one alert and a storm of new edges cannot flood the receiver.

use connscope_event::{Direction, Protocol, Timestamp};
use std::net::IpAddr;

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
}

/// Where alerts go. `send` must not block the caller (the collector's ingest):
/// a sink queues and delivers on its own thread.
pub trait AlertSink: Send + Sync {
    fn send(&self, alert: &DriftAlert);
}
