//! The connection event: the one record that every part of connscope speaks.
//!
//! A capture backend fills it in, the agent numbers it and filters it with rules,
//! the transport ships it, the collector stores it, and the map and the firewall
//! planner read it back. Keeping one type for the whole path means a field added
//! for one stage cannot silently be dropped by another.
//!
//! The in-memory form ([`ConnectionEvent`]) is flat and cheap to copy around; the
//! on-the-wire form is a versioned JSON Lines record with Elastic Common Schema
//! names where one fits (see `docs/EVENTS.md` and [`json`]).

mod address;
pub mod json;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod timestamp;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

pub use address::{is_ipv4_mapped, normalize_endpoints};
pub use timestamp::{PlausibleWindow, Timestamp, TimestampError};

/// Version of the JSON Lines schema written by this build (`connscope.version`).
pub const SCHEMA_VERSION: u32 = 1;

/// What happened to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// An outgoing connection was established, an incoming one accepted, or
    /// (UDP) the first datagram of a flow was seen.
    Connect,
    /// The connection closed, or (UDP) the flow went idle; carries [`CloseStats`].
    Disconnect,
    /// An outgoing connection attempt failed; carries a [`ConnectFailure`].
    ConnectFailed,
    /// A connection attempt the host's connscope policy, in audit mode, would
    /// have dropped and let through (its first packet, logged to NFLOG).
    WouldBlock,
    /// A connection attempt the host's connscope policy, in enforce mode, dropped.
    Blocked,
}

/// Transport protocol of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Address family, always derived from the addresses (see [`ConnectionEvent::family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// Which side opened the connection, seen from the host that logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// This host connected out: the local end is the client.
    Outgoing,
    /// This host accepted the connection: the local end is the server.
    Incoming,
    /// Not known, e.g. a tcpspy log line, which does not say.
    Unknown,
}

/// Why an outgoing connection attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectFailure {
    /// The peer answered with a reset (ECONNREFUSED).
    Refused,
    /// No answer before the kernel gave up (ETIMEDOUT).
    Timeout,
    /// The attempt was abandoned for another reason (closed while connecting,
    /// unreachable, ...).
    Other,
}

/// The process that owns the local end of the connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Full path of the executable (`/proc/PID/exe`), never truncated;
    /// `None` when it could not be read (e.g. a kernel thread).
    pub executable: Option<String>,
    /// The kernel's short task name (`comm`, at most 15 bytes).
    pub comm: Option<String>,
    /// Arguments joined by single spaces, when the agent collects them.
    pub command_line: Option<String>,
    /// cgroup v2 path of the process, e.g. `/system.slice/sshd.service`.
    pub cgroup: Option<String>,
}

/// Counters a disconnect carries: how long the connection lived and what crossed it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloseStats {
    pub duration_ns: u64,
    /// Bytes the local end sent (`local.bytes` in JSON).
    pub bytes_sent: u64,
    /// Bytes the local end received (`remote.bytes` in JSON).
    pub bytes_received: u64,
    /// Datagrams sent and received, for UDP flows.
    pub packets_sent: Option<u64>,
    pub packets_received: Option<u64>,
}

/// How an agent learned the name of a connection's remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameSource {
    /// A DNS answer delivered to a process of the host named this address.
    Dns,
    /// The server name (SNI) of the TLS ClientHello sent on the connection.
    Sni,
}

/// The longest name kept, in bytes: the longest DNS name in text form
/// (RFC 1035's 255 wire bytes, less the length bytes). A longer "name" (an
/// SNI can claim 64 KiB) is refused, never cut: a cut name is another name.
pub const MAX_REMOTE_NAME_LEN: usize = 253;

/// The name of a connection's remote end, as the host itself learned it.
///
/// Names come from the network: `name` is kept exactly as received (it may
/// hold any bytes a DNS label can, shown escaped downstream), never resolved
/// by connscope. At most [`MAX_REMOTE_NAME_LEN`] bytes and not empty
/// ([`ConnectionEvent::validate`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteName {
    /// The name the process asked for (the first name of the CNAME chain
    /// that ended at the address, or the SNI).
    pub name: String,
    pub source: NameSource,
}

/// One observed connection event.
///
/// Invariants (checked by [`ConnectionEvent::validate`], and by the JSON reader):
/// both addresses are of the same family and normalised (no IPv4-mapped
/// address, see [`normalize_endpoints`]); `close` is present exactly on
/// [`EventKind::Disconnect`]; `failure` exactly on [`EventKind::ConnectFailed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEvent {
    pub kind: EventKind,
    /// When the kernel saw the state change (UTC, nanoseconds).
    pub timestamp: Timestamp,
    /// Per-agent sequence number, gap-free from 1, so a collector can prove
    /// nothing is missing. 0 means "not numbered" (e.g. imported log lines).
    pub sequence: u64,
    /// Name of the host that logged the event.
    pub host: String,
    /// Inode of the network namespace the socket lives in; 0 when unknown.
    pub netns: u64,
    pub protocol: Protocol,
    pub direction: Direction,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Shared: an agent names thousands of connections a second after a
    /// handful of processes, and every event of one process points at one
    /// record instead of copying its strings.
    pub process: Option<Arc<ProcessInfo>>,
    /// Effective uid owning the socket (`sk_uid`).
    pub uid: Option<u32>,
    pub user_name: Option<String>,
    pub close: Option<CloseStats>,
    pub failure: Option<ConnectFailure>,
    /// The connection was already open when the agent started: its `timestamp`
    /// is when the agent first saw it, not when it was opened.
    pub preexisting: bool,
    /// What the remote end is called, when the host saw a DNS answer or a
    /// TLS server name for it.
    pub remote_name: Option<RemoteName>,
}

/// An event whose fields contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("local address {local} and remote address {remote} are of different families")]
    MixedFamilies {
        local: SocketAddr,
        remote: SocketAddr,
    },
    #[error("{0} is an IPv4-mapped address, which no packet carries (a mapped pair reads as IPv4; one mapped end alone comes from no socket)")]
    MappedAddress(SocketAddr),
    #[error("a {0} event must carry close statistics exactly when it is a disconnect")]
    CloseStatsMismatch(EventKind),
    #[error("a {0} event must carry a failure reason exactly when it is a failed connect")]
    FailureMismatch(EventKind),
    #[error("the remote name is {0} bytes long; at most {MAX_REMOTE_NAME_LEN} are kept")]
    NameTooLong(usize),
    #[error("the remote name is empty")]
    EmptyName,
}

impl ConnectionEvent {
    /// A connect event with everything optional left empty; a starting point for
    /// backends and tests.
    pub fn new(
        kind: EventKind,
        timestamp: Timestamp,
        protocol: Protocol,
        direction: Direction,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Self {
        ConnectionEvent {
            kind,
            timestamp,
            sequence: 0,
            host: String::new(),
            netns: 0,
            protocol,
            direction,
            local,
            remote,
            process: None,
            uid: None,
            user_name: None,
            close: (kind == EventKind::Disconnect).then(CloseStats::default),
            failure: (kind == EventKind::ConnectFailed).then_some(ConnectFailure::Other),
            preexisting: false,
            remote_name: None,
        }
    }

    pub fn family(&self) -> Family {
        if self.local.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    /// The full executable path, if known.
    pub fn executable(&self) -> Option<&str> {
        self.process.as_ref()?.executable.as_deref()
    }

    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.pid)
    }

    /// The port of the server side, when the direction says which side that is.
    pub fn service_port(&self) -> Option<u16> {
        match self.direction {
            Direction::Outgoing => Some(self.remote.port()),
            Direction::Incoming => Some(self.local.port()),
            Direction::Unknown => None,
        }
    }

    /// Rewrites the addresses as the packets carry them (see [`normalize_endpoints`]).
    pub fn normalize_addresses(&mut self) {
        (self.local, self.remote) = normalize_endpoints(self.local, self.remote);
    }

    pub fn validate(&self) -> Result<(), InvalidEvent> {
        if let Some(mapped) = [self.local, self.remote]
            .into_iter()
            .find(|a| is_ipv4_mapped(a.ip()))
        {
            return Err(InvalidEvent::MappedAddress(mapped));
        }
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(InvalidEvent::MixedFamilies {
                local: self.local,
                remote: self.remote,
            });
        }
        if self.close.is_some() != (self.kind == EventKind::Disconnect) {
            return Err(InvalidEvent::CloseStatsMismatch(self.kind));
        }
        if self.failure.is_some() != (self.kind == EventKind::ConnectFailed) {
            return Err(InvalidEvent::FailureMismatch(self.kind));
        }
        if let Some(named) = &self.remote_name {
            if named.name.len() > MAX_REMOTE_NAME_LEN {
                return Err(InvalidEvent::NameTooLong(named.name.len()));
            }
            if named.name.is_empty() {
                return Err(InvalidEvent::EmptyName);
            }
        }
        Ok(())
    }
}

/// An unknown name for one of the enums above.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {found:?}; expected one of: {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub found: String,
    pub expected: &'static str,
}

/// The names used in JSON, on the command line and in the store; one table per
/// enum so the spellings cannot drift apart.
macro_rules! named_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        found: s.to_owned(),
                        expected: concat!($($name, " "),+).trim_ascii_end(),
                    }),
                }
            }
        }
    };
}

named_enum!(EventKind, "event kind", {
    Connect => "connect",
    Disconnect => "disconnect",
    ConnectFailed => "connect-failed",
    WouldBlock => "would-block",
    Blocked => "blocked",
});
named_enum!(Protocol, "protocol", { Tcp => "tcp", Udp => "udp" });
named_enum!(Family, "address family", { Ipv4 => "ipv4", Ipv6 => "ipv6" });
named_enum!(Direction, "direction", {
    Outgoing => "outgoing",
    Incoming => "incoming",
    Unknown => "unknown",
});
named_enum!(NameSource, "name source", { Dns => "dns", Sni => "sni" });
named_enum!(ConnectFailure, "failure reason", {
    Refused => "refused",
    Timeout => "timeout",
    Other => "other",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::EventBuilder;

    fn sample() -> ConnectionEvent {
        EventBuilder::connect("127.0.0.1:40000", "127.0.0.1:22")
            .at_nanos(1)
            .build()
    }

    #[test]
    fn names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>().unwrap(), *k);
        }
        for d in Direction::ALL {
            assert_eq!(d.as_str().parse::<Direction>().unwrap(), *d);
        }
        let err = "sideways".parse::<Direction>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown direction \"sideways\"; expected one of: outgoing incoming unknown"
        );
    }

    #[test]
    fn validate_catches_contradictions() {
        let mut ev = sample();
        assert_eq!(ev.validate(), Ok(()));
        ev.remote = "[::1]:22".parse().unwrap();
        assert!(matches!(
            ev.validate(),
            Err(InvalidEvent::MixedFamilies { .. })
        ));
        let mut ev = sample();
        ev.close = Some(CloseStats::default());
        assert_eq!(
            ev.validate(),
            Err(InvalidEvent::CloseStatsMismatch(EventKind::Connect))
        );
        let mut ev = sample();
        ev.kind = EventKind::ConnectFailed;
        assert_eq!(
            ev.validate(),
            Err(InvalidEvent::FailureMismatch(EventKind::ConnectFailed))
        );
    }

    #[test]
    fn a_remote_name_is_kept_up_to_253_bytes_and_refused_beyond() {
        let mut ev = sample();
        let named = |name: String| {
            Some(RemoteName {
                name,
                source: NameSource::Sni,
            })
        };
        ev.remote_name = named("x".repeat(MAX_REMOTE_NAME_LEN));
        assert_eq!(ev.validate(), Ok(()));
        ev.remote_name = named("x".repeat(255));
        assert_eq!(
            ev.validate().unwrap_err().to_string(),
            "the remote name is 255 bytes long; at most 253 are kept"
        );
        ev.remote_name = named(String::new());
        assert_eq!(ev.validate(), Err(InvalidEvent::EmptyName));
    }

    #[test]
    fn service_port_follows_direction() {
        let mut ev = sample();
        assert_eq!(ev.service_port(), Some(22));
        ev.direction = Direction::Incoming;
        assert_eq!(ev.service_port(), Some(40000));
        ev.direction = Direction::Unknown;
        assert_eq!(ev.service_port(), None);
    }
}
