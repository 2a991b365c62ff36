//! What the agent learns from one logged connection attempt.

use std::net::SocketAddr;
use std::sync::Arc;

use connscope_event::{ProcessInfo, Protocol, Timestamp};

/// Whether the policy only reported the packet or dropped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HitKind {
    /// Audit mode: the policy would drop it, and let it through.
    WouldBlock,
    /// Enforce mode: the policy dropped it.
    Blocked,
}

/// The chain that logged the packet, so the direction of the attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// A packet arriving for this host: someone connecting to it.
    Input,
    /// A packet this host sends: a local process connecting out.
    Output,
}

/// One connection attempt a policy would block or blocked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallHit {
    /// When its first packet was read.
    pub at: Timestamp,
    pub kind: HitKind,
    pub chain: Chain,
    pub protocol: Protocol,
    /// This host's end, normalised like the events'.
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Inode of the network namespace whose firewall logged it.
    pub netns: u64,
    /// The process holding the socket: the connecting one for an outgoing
    /// attempt, the listener for an incoming one. `None` when no socket of
    /// the namespace matches any more, or its holder cannot be read.
    pub process: Option<Arc<ProcessInfo>>,
    /// The socket's owner (its `/proc/net` uid), when the socket was found.
    pub uid: Option<u32>,
    /// Packets of the attempt so far (1 when it is first reported).
    pub packets: u64,
}

/// What the capture hands on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HitReport {
    /// The first packet of an attempt, reported at once.
    Hit(FirewallHit),
    /// An attempt that sent more than one packet (a retransmitted SYN, a
    /// repeated datagram) and has ended: the same hit with its final count.
    Repeated(FirewallHit),
}

impl HitReport {
    /// The attempt, whichever report it is.
    pub fn hit(&self) -> &FirewallHit {
        match self {
            HitReport::Hit(hit) | HitReport::Repeated(hit) => hit,
        }
    }
}
