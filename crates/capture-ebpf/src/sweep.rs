//! Closes the kernel never reported.
//!
//! A connection's disconnect comes from the state-change program when its
//! socket reaches CLOSE. If that program does not run for a close, nothing
//! counts it: the kernel skips a tracing program without a trace in its
//! statistics in some contexts (on this project's test machines: a softirq
//! taken on top of one particular process, seen with ftrace firing where the
//! program did not), and the connection would look open for ever. So every
//! [`SWEEP_INTERVAL`] the TCP sockets are walked ([`crate::kernel`]'s
//! iterator), and a connection reported open whose socket is missing from
//! two walks in a row, with no close in between, is closed here: its
//! disconnect carries the end of the first walk that missed it (the close
//! happened before) and no byte counts, since the socket is gone.
//!
//! Two walks, not one: a close that happened just before a walk may still
//! be on its way through the ring buffer when the walk ends.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::kernel::RawEvent;
use crate::skel::types;

/// How often the sockets are walked. A walk costs about a microsecond per
/// TCP socket on the host.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

const IPPROTO_TCP: u8 = 6;

/// The open TCP connections reported so far, and which of them the last
/// walk did not find.
pub(crate) struct Sweeper {
    /// The connect record of each open connection, by its socket key.
    open: HashMap<u64, RawEvent>,
    /// Open connections the last walk did not find.
    missing: HashSet<u64>,
    /// When the last walk ended (CLOCK_BOOTTIME ns).
    last_walk_ns: u64,
    next_walk: Instant,
}

impl Sweeper {
    pub(crate) fn new(now: Instant) -> Sweeper {
        Sweeper {
            open: HashMap::new(),
            missing: HashSet::new(),
            last_walk_ns: 0,
            next_walk: now + SWEEP_INTERVAL,
        }
    }

    /// Follows a record from the ring buffer. Returns the disconnect of an
    /// earlier connection whose close was never reported, if this one
    /// reuses its socket (a socket is only freed after its close).
    pub(crate) fn note(&mut self, raw: &RawEvent) -> Option<RawEvent> {
        if raw.protocol != IPPROTO_TCP || raw.sock == 0 {
            return None;
        }
        match types::event_kind(raw.kind.into()) {
            types::event_kind::KIND_CONNECT => self
                .open
                .insert(raw.sock, *raw)
                .map(|earlier| closed(&earlier, raw.ts_ns)),
            _ => {
                self.open.remove(&raw.sock);
                None
            }
        }
    }

    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.next_walk
    }

    /// A walk failed: try again after an interval, keeping what is known.
    pub(crate) fn postpone(&mut self, now: Instant) {
        self.next_walk = now + SWEEP_INTERVAL;
    }

    /// Takes a walk's findings: `alive` the sockets it found, `started_ns`
    /// and `ended_ns` when it ran. Call it after the ring buffer was drained,
    /// so every close the kernel did report before the walk ended is noted.
    /// Returns the disconnects of the connections gone without a close.
    pub(crate) fn after_walk(
        &mut self,
        alive: &HashSet<u64>,
        started_ns: u64,
        ended_ns: u64,
        now: Instant,
    ) -> Vec<RawEvent> {
        let mut gone = Vec::new();
        for sock in std::mem::take(&mut self.missing) {
            if alive.contains(&sock) {
                continue;
            }
            if let Some(connect) = self.open.remove(&sock) {
                gone.push(closed(&connect, self.last_walk_ns));
            }
        }
        // Connections made while the walk ran may not have been found yet.
        self.missing = self
            .open
            .iter()
            .filter(|(sock, connect)| connect.ts_ns < started_ns && !alive.contains(sock))
            .map(|(sock, _)| *sock)
            .collect();
        self.last_walk_ns = ended_ns;
        self.next_walk = now + SWEEP_INTERVAL;
        gone
    }
}

/// The disconnect of `connect`'s connection, closed by `by_ns` at the latest.
fn closed(connect: &RawEvent, by_ns: u64) -> RawEvent {
    let by_ns = by_ns.max(connect.ts_ns);
    RawEvent {
        kind: types::event_kind::KIND_DISCONNECT.0 as u8,
        ts_ns: by_ns,
        duration_ns: by_ns - connect.ts_ns,
        bytes_sent: 0,
        bytes_received: 0,
        ..*connect
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: types::event_kind, sock: u64, ts_ns: u64) -> RawEvent {
        RawEvent {
            kind: kind.0 as u8,
            protocol: IPPROTO_TCP,
            sock,
            ts_ns,
            ..RawEvent::default()
        }
    }

    fn connect(sock: u64, ts_ns: u64) -> RawEvent {
        record(types::event_kind::KIND_CONNECT, sock, ts_ns)
    }

    fn alive(socks: &[u64]) -> HashSet<u64> {
        socks.iter().copied().collect()
    }

    #[test]
    fn a_connection_missing_from_two_walks_is_closed_by_the_end_of_the_first() {
        let now = Instant::now();
        let mut sweeper = Sweeper::new(now);
        assert!(sweeper.note(&connect(1, 100)).is_none());
        assert!(sweeper.note(&connect(2, 100)).is_none());
        assert!(sweeper
            .after_walk(&alive(&[1, 2]), 200, 210, now)
            .is_empty());
        // Socket 1 closed without a report.
        assert!(sweeper.after_walk(&alive(&[2]), 300, 310, now).is_empty());
        let gone = sweeper.after_walk(&alive(&[2]), 400, 410, now);
        assert_eq!(gone.len(), 1);
        let disconnect = gone[0];
        assert_eq!(disconnect.sock, 1);
        assert_eq!(
            types::event_kind(disconnect.kind.into()),
            types::event_kind::KIND_DISCONNECT
        );
        assert_eq!((disconnect.ts_ns, disconnect.duration_ns), (310, 210));
        // Closed once, not again.
        assert!(sweeper.after_walk(&alive(&[2]), 500, 510, now).is_empty());
    }

    #[test]
    fn a_close_reported_after_the_walk_that_missed_it_closes_nothing_more() {
        let now = Instant::now();
        let mut sweeper = Sweeper::new(now);
        sweeper.note(&connect(1, 100));
        // The close was still in the ring buffer when the walk ended.
        assert!(sweeper.after_walk(&alive(&[]), 200, 210, now).is_empty());
        sweeper.note(&record(types::event_kind::KIND_DISCONNECT, 1, 205));
        assert!(sweeper.after_walk(&alive(&[]), 300, 310, now).is_empty());
    }

    #[test]
    fn a_connection_made_during_a_walk_is_not_missing_from_it() {
        let now = Instant::now();
        let mut sweeper = Sweeper::new(now);
        sweeper.note(&connect(1, 250));
        assert!(sweeper.after_walk(&alive(&[]), 200, 300, now).is_empty());
        assert!(sweeper.after_walk(&alive(&[1]), 400, 410, now).is_empty());
        assert!(sweeper.after_walk(&alive(&[1]), 500, 510, now).is_empty());
    }

    #[test]
    fn a_socket_reused_before_its_close_was_reported_closes_the_earlier_connection() {
        let mut sweeper = Sweeper::new(Instant::now());
        sweeper.note(&connect(7, 100));
        let earlier = sweeper
            .note(&connect(7, 900))
            .expect("the earlier one closed");
        assert_eq!((earlier.ts_ns, earlier.duration_ns), (900, 800));
        assert_eq!(sweeper.open.len(), 1);
    }

    #[test]
    fn udp_flows_are_not_followed() {
        let mut sweeper = Sweeper::new(Instant::now());
        let mut flow = connect(0, 100);
        flow.protocol = 17;
        assert!(sweeper.note(&flow).is_none());
        assert!(sweeper.open.is_empty());
    }
}
