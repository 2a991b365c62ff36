//! Building events in tests: one builder instead of a hand-written function
//! per test file. Only compiled with the `test-support` feature, which crates
//! enable in their dev-dependencies.
//!
//! ```
//! # use connscope_event::{test_support::EventBuilder, Direction, EventKind};
//! let event = EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
//!     .host("web1")
//!     .sequence(7)
//!     .process(42, "/usr/bin/ssh")
//!     .build();
//! assert_eq!((event.kind, event.direction), (EventKind::Connect, Direction::Outgoing));
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use crate::{
    CloseStats, ConnectFailure, ConnectionEvent, Direction, EventKind, NameSource, ProcessInfo,
    Protocol, RemoteName, Timestamp,
};

/// What a test may give as one end of a connection.
pub trait Endpoint {
    fn socket_addr(self) -> SocketAddr;
}

impl Endpoint for SocketAddr {
    fn socket_addr(self) -> SocketAddr {
        self
    }
}

impl Endpoint for &str {
    fn socket_addr(self) -> SocketAddr {
        self.parse()
            .unwrap_or_else(|_| panic!("{self:?} is not a socket address"))
    }
}

impl Endpoint for String {
    fn socket_addr(self) -> SocketAddr {
        self.as_str().socket_addr()
    }
}

/// A [`ConnectionEvent`] under construction: an outgoing TCP connect at time
/// 0 until told otherwise, with what [`ConnectionEvent::new`] leaves empty.
#[derive(Debug, Clone)]
pub struct EventBuilder {
    event: ConnectionEvent,
}

impl EventBuilder {
    /// An outgoing TCP connect from `local` to `remote`.
    pub fn connect(local: impl Endpoint, remote: impl Endpoint) -> EventBuilder {
        EventBuilder {
            event: ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(0),
                Protocol::Tcp,
                Direction::Outgoing,
                local.socket_addr(),
                remote.socket_addr(),
            ),
        }
    }

    /// Another kind, with the close counters or failure reason
    /// [`ConnectionEvent::new`] gives it.
    pub fn kind(mut self, kind: EventKind) -> EventBuilder {
        let event = &mut self.event;
        event.kind = kind;
        event.close = (kind == EventKind::Disconnect).then(|| event.close.unwrap_or_default());
        event.failure = (kind == EventKind::ConnectFailed)
            .then(|| event.failure.unwrap_or(ConnectFailure::Other));
        self
    }

    /// A disconnect with these counters.
    pub fn closed(mut self, close: CloseStats) -> EventBuilder {
        self = self.kind(EventKind::Disconnect);
        self.event.close = Some(close);
        self
    }

    pub fn at(mut self, timestamp: Timestamp) -> EventBuilder {
        self.event.timestamp = timestamp;
        self
    }

    /// At `nanos` since the epoch.
    pub fn at_nanos(self, nanos: i64) -> EventBuilder {
        self.at(Timestamp::from_nanos(nanos))
    }

    pub fn protocol(mut self, protocol: Protocol) -> EventBuilder {
        self.event.protocol = protocol;
        self
    }

    pub fn direction(mut self, direction: Direction) -> EventBuilder {
        self.event.direction = direction;
        self
    }

    pub fn sequence(mut self, sequence: u64) -> EventBuilder {
        self.event.sequence = sequence;
        self
    }

    pub fn host(mut self, host: impl Into<String>) -> EventBuilder {
        self.event.host = host.into();
        self
    }

    pub fn netns(mut self, netns: u64) -> EventBuilder {
        self.event.netns = netns;
        self
    }

    pub fn uid(mut self, uid: u32) -> EventBuilder {
        self.event.uid = Some(uid);
        self
    }

    pub fn user(mut self, name: impl Into<String>) -> EventBuilder {
        self.event.user_name = Some(name.into());
        self
    }

    /// Owned by process `pid` running `executable`.
    pub fn process(self, pid: u32, executable: impl Into<String>) -> EventBuilder {
        self.process_info(ProcessInfo {
            pid,
            executable: Some(executable.into()),
            ..ProcessInfo::default()
        })
    }

    pub fn process_info(mut self, info: ProcessInfo) -> EventBuilder {
        self.event.process = Some(Arc::new(info));
        self
    }

    /// The task name of the process set by [`Self::process`].
    pub fn comm(mut self, comm: impl Into<String>) -> EventBuilder {
        let process = self.event.process.get_or_insert_with(Arc::default);
        Arc::make_mut(process).comm = Some(comm.into());
        self
    }

    /// The remote end named `name`, learned from a DNS answer.
    pub fn named(self, name: impl Into<String>) -> EventBuilder {
        self.named_by(name, NameSource::Dns)
    }

    pub fn named_by(mut self, name: impl Into<String>, source: NameSource) -> EventBuilder {
        self.event.remote_name = Some(RemoteName {
            name: name.into(),
            source,
        });
        self
    }

    pub fn preexisting(mut self) -> EventBuilder {
        self.event.preexisting = true;
        self
    }

    pub fn build(self) -> ConnectionEvent {
        self.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_what_new_and_field_by_field_setting_build() {
        let mut by_hand = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(5),
            Protocol::Udp,
            Direction::Incoming,
            "[::1]:53".parse().unwrap(),
            "[::1]:40000".parse().unwrap(),
        );
        by_hand.sequence = 3;
        by_hand.host = "ns1".into();
        by_hand.netns = 9;
        by_hand.uid = Some(1000);
        by_hand.user_name = Some("joe".into());
        by_hand.preexisting = true;
        by_hand.process = Some(Arc::new(ProcessInfo {
            pid: 42,
            executable: Some("/usr/sbin/named".into()),
            comm: Some("named".into()),
            ..ProcessInfo::default()
        }));
        let built = EventBuilder::connect("[::1]:53", String::from("[::1]:40000"))
            .at_nanos(5)
            .protocol(Protocol::Udp)
            .direction(Direction::Incoming)
            .sequence(3)
            .host("ns1")
            .netns(9)
            .uid(1000)
            .user("joe")
            .process(42, "/usr/sbin/named")
            .comm("named")
            .preexisting()
            .build();
        assert_eq!(built, by_hand);
        assert!(built.validate().is_ok());
    }

    #[test]
    fn kind_brings_its_own_fields_and_drops_the_others() {
        let local: SocketAddr = "10.0.0.1:1".parse().unwrap();
        let connect = EventBuilder::connect(local, "10.0.0.2:2");
        let closed = connect.clone().kind(EventKind::Disconnect).build();
        assert_eq!(closed.close, Some(CloseStats::default()));
        assert_eq!(closed.failure, None);
        let failed = connect
            .kind(EventKind::Disconnect)
            .kind(EventKind::ConnectFailed)
            .build();
        assert_eq!(
            (failed.close, failed.failure),
            (None, Some(ConnectFailure::Other))
        );
        assert!(failed.validate().is_ok());
    }
}
