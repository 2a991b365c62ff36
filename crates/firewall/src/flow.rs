//! The planner's and checker's input: what one host was seen doing, one record
//! per edge. It is deliberately independent of the store, so planning and
//! checking are pure functions that tests feed directly.

use std::net::{IpAddr, SocketAddr};

use connscope_event::{normalize_endpoints, Protocol, Timestamp};
use serde::{Deserialize, Serialize};

/// Which way a connection was opened, seen from the planned host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowDirection {
    /// A peer connected to a service on this host (hook `input`).
    Inbound,
    /// This host connected out to a peer (hook `output`).
    Outbound,
}

impl FlowDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowDirection::Inbound => "inbound",
            FlowDirection::Outbound => "outbound",
        }
    }
}

/// All connections of one edge: one direction, one peer address, one service
/// port and protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedFlow {
    pub direction: FlowDirection,
    #[serde(serialize_with = "as_display")]
    pub protocol: Protocol,
    /// This host's address on the edge.
    pub local: IpAddr,
    /// The peer's address.
    pub remote: IpAddr,
    /// The server's port: local for inbound, remote for outbound. The client's
    /// port is ephemeral and never part of an edge.
    pub service_port: u16,
    pub connections: u64,
    #[serde(serialize_with = "as_display")]
    pub first_seen: Timestamp,
    #[serde(serialize_with = "as_display")]
    pub last_seen: Timestamp,
    /// Executables (or task names) that owned the local end, untrusted text.
    pub processes: Vec<String>,
    /// User names (or uids) that owned the local end, untrusted text.
    pub users: Vec<String>,
}

/// Serialises through `Display` (protocol names, RFC 3339 timestamps), the
/// spellings the rest of connscope uses.
pub(crate) fn as_display<T: std::fmt::Display, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl ObservedFlow {
    /// The flow never leaves the host: it runs over the loopback interface
    /// (`lo`), which the generated rulesets accept as a whole.
    pub fn is_loopback(&self) -> bool {
        let (local, remote) = self.packet_addresses();
        // `0.0.0.0` on both ends is a peer the log lost, not this host.
        remote.is_loopback() || (remote == local && !remote.is_unspecified())
    }

    /// The packets are IPv4, whatever the socket's family.
    pub fn is_ipv4(&self) -> bool {
        self.packet_addresses().1.is_ipv4()
    }

    /// (local, remote) as the packets carry them
    /// ([`connscope_event::normalize_endpoints`]): events are normalised when
    /// they are made; this keeps flows built by other means (a store of an
    /// older build, a caller's own) from planning or checking a form no
    /// packet has.
    pub fn packet_addresses(&self) -> (IpAddr, IpAddr) {
        let (local, remote) = normalize_endpoints(
            SocketAddr::new(self.local, 0),
            SocketAddr::new(self.remote, 0),
        );
        (local.ip(), remote.ip())
    }

    /// The flow with its [`Self::packet_addresses`].
    pub fn normalized(&self) -> ObservedFlow {
        let (local, remote) = self.packet_addresses();
        ObservedFlow {
            local,
            remote,
            ..self.clone()
        }
    }
}
