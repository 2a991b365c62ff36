//! Hourly edge rollups, computed in Rust so every backend counts the same way.
//!
//! An event belongs to the rollup of (hour, host, direction, local address,
//! remote address, service port, protocol, executable, user). Ports other than
//! the service port are left out on purpose: the client's ephemeral port would
//! make every connection its own row. A batch is summed in memory
//! ([`RollupBatch`]) and the backend adds the sums to what it stores (an upsert
//! in SQLite; a summing table engine in ClickHouse), so rollups never need a
//! re-scan of raw events.
//!
//! Counting rules: a `connect` adds a connection, a `connect-failed` a failure,
//! a `disconnect` its bytes; every event widens first/last seen.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use connscope_event::{ConnectionEvent, Direction, EventKind, Protocol, Timestamp};

use crate::hash::FastHash;

const HOUR_NS: i64 = 3_600_000_000_000;

/// The start of the hour `t` falls in.
pub fn hour_start(t: Timestamp) -> Timestamp {
    Timestamp::from_nanos(t.as_nanos().div_euclid(HOUR_NS).saturating_mul(HOUR_NS))
}

/// Whether an address can identify a host: loopback and unspecified addresses
/// are shared by every host, so they never join edges across hosts.
pub fn is_host_address(ip: IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified())
}

/// The user column of a rollup: the name, else the uid in decimal, else empty.
pub fn rollup_user(event: &ConnectionEvent) -> String {
    match (&event.user_name, event.uid) {
        (Some(name), _) => name.clone(),
        (None, Some(uid)) => uid.to_string(),
        (None, None) => String::new(),
    }
}

/// The server side's port: known from the direction; for an event of unknown
/// direction the lower of the two ports, the usual home of services.
fn service_port(event: &ConnectionEvent) -> u16 {
    service_port_of(event.direction, event.local.port(), event.remote.port())
}

pub(crate) fn service_port_of(direction: Direction, local: u16, remote: u16) -> u16 {
    match direction {
        Direction::Outgoing => remote,
        Direction::Incoming => local,
        Direction::Unknown => local.min(remote),
    }
}

/// What a rollup row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub hour: Timestamp,
    pub host: String,
    pub direction: Direction,
    pub local_ip: IpAddr,
    pub remote_ip: IpAddr,
    pub service_port: u16,
    pub protocol: Protocol,
    /// Empty when not known.
    pub executable: String,
    /// See [`rollup_user`].
    pub user: String,
}

impl EdgeKey {
    pub fn of_event(event: &ConnectionEvent) -> EdgeKey {
        EdgeKey {
            hour: hour_start(event.timestamp),
            host: event.host.clone(),
            direction: event.direction,
            local_ip: event.local.ip(),
            remote_ip: event.remote.ip(),
            service_port: service_port(event),
            protocol: event.protocol,
            executable: event.executable().unwrap_or("").to_owned(),
            user: rollup_user(event),
        }
    }

    fn matches(&self, event: &ConnectionEvent) -> bool {
        self.hour == hour_start(event.timestamp)
            && self.direction == event.direction
            && self.local_ip == event.local.ip()
            && self.remote_ip == event.remote.ip()
            && self.service_port == service_port(event)
            && self.protocol == event.protocol
            && self.host == event.host
            && self.executable == event.executable().unwrap_or("")
            && match (&event.user_name, event.uid) {
                (Some(name), _) => self.user == *name,
                (None, Some(uid)) => self.user == uid.to_string(),
                (None, None) => self.user.is_empty(),
            }
    }
}

/// What a rollup row counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeCounts {
    pub connections: u64,
    pub failures: u64,
    /// Bytes sent by the logging host's end.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

impl EdgeCounts {
    fn of_event(event: &ConnectionEvent) -> EdgeCounts {
        let close = event.close.unwrap_or_default();
        EdgeCounts {
            connections: u64::from(event.kind == EventKind::Connect),
            failures: u64::from(event.kind == EventKind::ConnectFailed),
            bytes_sent: close.bytes_sent,
            bytes_received: close.bytes_received,
            first_seen: event.timestamp,
            last_seen: event.timestamp,
        }
    }

    /// Adds `other` to these counts.
    pub fn merge(&mut self, other: &EdgeCounts) {
        self.connections += other.connections;
        self.failures += other.failures;
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
    }
}

/// The rollups of one batch of events, summed in memory.
#[derive(Debug, Default)]
pub struct RollupBatch {
    rows: Vec<(EdgeKey, EdgeCounts)>,
    /// Hash of the key fields -> indexes into `rows`; looked up with borrowed
    /// fields so adding an event to an existing row allocates nothing.
    index: HashMap<u64, Vec<usize>, FastHash>,
    hasher: FastHash,
}

impl RollupBatch {
    pub fn new() -> Self {
        RollupBatch::default()
    }

    /// Counts `event` in its edge's row. Firewall hits (would-block, blocked)
    /// are not connections of the graph: they are read from the raw events.
    pub fn add(&mut self, event: &ConnectionEvent) {
        if matches!(event.kind, EventKind::WouldBlock | EventKind::Blocked) {
            return;
        }
        let hash = self.hash_of(event);
        let counts = EdgeCounts::of_event(event);
        let slots = self.index.entry(hash).or_default();
        if let Some(&i) = slots.iter().find(|&&i| self.rows[i].0.matches(event)) {
            self.rows[i].1.merge(&counts);
            return;
        }
        slots.push(self.rows.len());
        self.rows.push((EdgeKey::of_event(event), counts));
    }

    fn hash_of(&self, event: &ConnectionEvent) -> u64 {
        let mut h = self.hasher.build_hasher();
        hour_start(event.timestamp).hash(&mut h);
        event.host.hash(&mut h);
        event.direction.hash(&mut h);
        event.local.ip().hash(&mut h);
        event.remote.ip().hash(&mut h);
        service_port(event).hash(&mut h);
        event.protocol.hash(&mut h);
        event.executable().unwrap_or("").hash(&mut h);
        // The user is left out of the hash (it would need formatting a uid);
        // `matches` compares it.
        h.finish()
    }

    pub fn rows(&self) -> &[(EdgeKey, EdgeCounts)] {
        &self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn clear(&mut self) {
        self.rows.clear();
        self.index.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_event::CloseStats;

    fn event(kind: EventKind, secs: i64, local: &str, remote: &str) -> ConnectionEvent {
        EventBuilder::connect(local, remote)
            .kind(kind)
            .at_nanos(secs * 1_000_000_000)
            .host("a")
            .uid(1000)
            .process(1, "/usr/bin/ssh")
            .build()
    }

    #[test]
    fn ephemeral_ports_fold_into_one_row_per_hour() {
        let mut batch = RollupBatch::new();
        batch.add(&event(
            EventKind::Connect,
            10,
            "10.0.0.1:40000",
            "10.0.0.2:22",
        ));
        batch.add(&event(
            EventKind::Connect,
            20,
            "10.0.0.1:40001",
            "10.0.0.2:22",
        ));
        let mut close = event(EventKind::Disconnect, 30, "10.0.0.1:40001", "10.0.0.2:22");
        close.close = Some(CloseStats {
            bytes_sent: 7,
            bytes_received: 9,
            ..CloseStats::default()
        });
        batch.add(&close);
        batch.add(&event(
            EventKind::Connect,
            3_700,
            "10.0.0.1:40002",
            "10.0.0.2:22",
        ));
        assert_eq!(batch.rows().len(), 2);
        let (key, counts) = &batch.rows()[0];
        assert_eq!(key.service_port, 22);
        assert_eq!(key.user, "1000");
        assert_eq!(key.executable, "/usr/bin/ssh");
        assert_eq!(counts.connections, 2);
        assert_eq!((counts.bytes_sent, counts.bytes_received), (7, 9));
        assert_eq!(counts.first_seen.as_nanos(), 10_000_000_000);
        assert_eq!(counts.last_seen.as_nanos(), 30_000_000_000);
        assert_eq!(batch.rows()[1].0.hour.as_nanos(), HOUR_NS);
    }

    #[test]
    fn service_port_is_the_servers_whichever_end_logged() {
        let mut ev = event(EventKind::Connect, 0, "10.0.0.2:22", "10.0.0.1:40000");
        ev.direction = Direction::Incoming;
        assert_eq!(EdgeKey::of_event(&ev).service_port, 22);
        ev.direction = Direction::Unknown;
        assert_eq!(EdgeKey::of_event(&ev).service_port, 22);
    }

    #[test]
    fn hours_round_down_before_1970_too() {
        assert_eq!(hour_start(Timestamp::from_nanos(-1)).as_nanos(), -HOUR_NS);
    }
}
