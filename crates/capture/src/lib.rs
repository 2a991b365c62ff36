//! The capture stage: where connection events enter connscope.
//!
//! Several backends can observe connections (eBPF tracepoints, sock_diag netlink
//! dumps, /proc/net polling). They differ in what they can see — eBPF sees every
//! state change as it happens, a poller misses what lives shorter than its
//! interval — but they all hand the agent the same thing: [`ConnectionEvent`]s,
//! through the [`CaptureBackend`] trait. This crate holds that trait, the
//! configuration every backend takes, and the process attribution they share
//! ([`process`], [`sockets`] for who holds a socket, [`proc_net`] for the
//! kernel's socket tables), so the backends themselves only deal with the
//! kernel and name the same owners.

pub mod netns;
pub mod proc_net;
pub mod process;
pub mod sockets;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use connscope_event::ConnectionEvent;

/// Which network namespaces an agent reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetnsFilter {
    /// Only the namespace the agent runs in: several agents on one kernel
    /// (containers, test namespaces) then each report their own.
    #[default]
    Own,
    /// Every namespace on the kernel (eBPF only: pollers see their own).
    All,
    /// One namespace, by inode number (as `ls -Li /proc/PID/ns/net` shows it).
    Inode(u64),
}

impl FromStr for NetnsFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "self" => Ok(NetnsFilter::Own),
            "all" => Ok(NetnsFilter::All),
            _ => s.parse().map(NetnsFilter::Inode).map_err(|_| {
                format!("invalid network namespace {s:?}: expected self, all or an inode number")
            }),
        }
    }
}

impl fmt::Display for NetnsFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsFilter::Own => f.write_str("self"),
            NetnsFilter::All => f.write_str("all"),
            NetnsFilter::Inode(inode) => write!(f, "{inode}"),
        }
    }
}

/// What a backend is asked to capture.
#[derive(Debug, Clone)]
pub struct CaptureConfig {
    pub netns: NetnsFilter,
    /// How often polling backends look (tcpspy's `-I`); event-driven ones use it
    /// as their longest wait.
    pub poll_interval: Duration,
    /// Capture UDP flows as well as TCP connections.
    pub udp: bool,
    /// A UDP flow with no datagram for this long is reported closed.
    pub udp_idle_timeout: Duration,
    /// Read each process's command line (costs one /proc read per new process).
    pub command_lines: bool,
    /// TCP connections an event-driven backend can follow at once. The eBPF
    /// backend allocates its table up front (a table that grows as it goes
    /// frees every entry through RCU: about 5 points of a max-rate FIN
    /// burst's rate). Connections past it are counted as lost.
    pub max_tcp_connections: u32,
    /// Hand over what naming needs: the first bytes of outgoing TLS
    /// ClientHellos ([`CaptureBackend::take_client_hellos`]) and received DNS
    /// answers ([`CaptureBackend::take_dns_answers`]); backends that cannot
    /// ignore it.
    pub name_packets: bool,
    /// The cgroup v2 whose sockets the packet hooks of the eBPF backend (UDP
    /// flows, DNS answers, ClientHellos) see, as a path inside the hierarchy
    /// (the form of `/proc/PID/cgroup`, e.g. `/system.slice/web.service`):
    /// sockets made in it or below it. None: the root, every socket. Sockets
    /// elsewhere then pay nothing for those hooks.
    pub packet_cgroup: Option<PathBuf>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            netns: NetnsFilter::Own,
            poll_interval: Duration::from_millis(1000),
            udp: true,
            udp_idle_timeout: Duration::from_secs(60),
            command_lines: true,
            max_tcp_connections: 65_536,
            name_packets: false,
            packet_cgroup: None,
        }
    }
}

/// Counters a backend keeps; the agent reports them on SIGUSR1 and at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Events handed to the agent.
    pub events: u64,
    /// Events the kernel side could not deliver (e.g. ring buffer full). A loss
    /// is never silent: it is counted here.
    pub kernel_lost: u64,
    /// Disconnects of connections whose close the kernel never reported,
    /// inferred because their socket was gone (not a loss: the event is
    /// there, with the time it was found gone by and no byte counts).
    pub closes_inferred: u64,
}

/// Why a backend could not start or stopped working.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The backend cannot run on this machine; the agent falls back to another
    /// and logs this reason.
    #[error("{backend} capture is unavailable: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("{backend} capture failed: {source}")]
    Io {
        backend: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A source of connection events.
///
/// Backends fill in everything the kernel tells them (addresses, direction,
/// protocol, netns, uid, process, close counters) and leave `host`,
/// `sequence` and `user_name` to the agent.
pub trait CaptureBackend: Send {
    /// Short name for logs and `--backend`: `ebpf`, `sockdiag`, `proc`.
    fn name(&self) -> &'static str;

    /// Waits at most `timeout` for events and appends what arrived to `out`.
    /// Returning with nothing appended is normal.
    fn poll(
        &mut self,
        out: &mut Vec<ConnectionEvent>,
        timeout: Duration,
    ) -> Result<(), CaptureError>;

    /// Counters since the backend started.
    fn stats(&self) -> CaptureStats;

    /// The agent is stopping: adds what the backend can still tell (after
    /// the last [`CaptureBackend::poll`]) to `out`.
    fn finish(&mut self, _out: &mut Vec<ConnectionEvent>) -> Result<(), CaptureError> {
        Ok(())
    }

    /// Whether this backend hands over ClientHellos and DNS answers (asked
    /// for with [`CaptureConfig::name_packets`]); if not, whoever names
    /// connections must find them another way.
    fn sees_name_packets(&self) -> bool {
        false
    }

    /// Moves the ClientHellos seen since the last call into `out`; returns
    /// how many the kernel side could not hand over meanwhile.
    fn take_client_hellos(&mut self, _out: &mut Vec<ClientHello>) -> u64 {
        0
    }

    /// Moves the DNS answers received since the last call into `out`;
    /// returns how many the kernel side could not hand over meanwhile.
    fn take_dns_answers(&mut self, _out: &mut Vec<DnsPacket>) -> u64 {
        0
    }
}

/// The start of an outgoing TLS ClientHello: a connection's first TCP
/// payload, from the TLS record header on, possibly cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The connection's network namespace inode.
    pub netns: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub record: Vec<u8>,
}

/// A packet a socket received from port 53 (a DNS answer over UDP, or a TCP
/// segment of a stream of them), from its IP header on, possibly cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPacket {
    /// The receiving socket's network namespace inode.
    pub netns: u64,
    pub packet: Vec<u8>,
    /// The packet's whole length: more than `packet.len()` when it was cut.
    pub wire_len: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_filter_parses_and_prints() {
        for text in ["self", "all", "4026531840"] {
            assert_eq!(text.parse::<NetnsFilter>().unwrap().to_string(), text);
        }
        let err = "mine".parse::<NetnsFilter>().unwrap_err();
        assert!(err.contains("expected self, all or an inode number"));
    }
}
