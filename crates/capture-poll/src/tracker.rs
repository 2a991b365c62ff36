//! Turning snapshots of socket tables into connect and disconnect events.
//!
//! A poller sees states, not changes: "these connections exist now". The
//! tracker remembers the previous snapshot and reports the difference, the
//! way tcpspy does: a connection that appears is a connect, one that
//! disappears is a disconnect. Both pollers share it; they differ only in how
//! they read the table and in what identifies a connection (the 4-tuple for
//! /proc, the kernel's socket cookie for sock_diag).
//!
//! Reading a socket table is not atomic: the kernel hands it out a chunk per
//! read, and when sockets come and go between chunks an entry that is still
//! open can be skipped by one snapshot. So a connection counts as closed only
//! when two snapshots in a row miss it (the disconnect is timestamped at the
//! first miss); one that reappears was never gone and is not reported again.
//!
//! A connection no process holds yet (an incoming one still in the accept
//! queue) has its connect held back for a grace ([`NamingGrace`]) and looked
//! up again on each poll, so a busy server is still named.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope_capture::process::ProcessCache;
use connscope_event::{
    CloseStats, ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp,
};

use crate::owners::SocketOwners;

/// One connected socket as a poll saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Observed {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// 0 when no process holds the socket (accept queue, orphaned, destroyed).
    pub inode: u64,
    /// `None` when the kernel did not say (sock_diag destroy messages).
    pub uid: Option<u32>,
    /// Bytes sent (acknowledged by the peer) and received; sock_diag only.
    pub bytes: Option<(u64, u64)>,
}

/// How long the connect of a socket no process holds yet is held back.
///
/// The kernel establishes an incoming connection before any process has it:
/// it waits in the listener's accept queue, with no inode, until accept().
/// A poll in that window (a busy server, a loaded machine) would report it
/// unnamed although its owner appears milliseconds later. So such a connect
/// waits, looked up again on each poll, until it is named or until `polls`
/// later polls and `floor` have both passed; then it goes out with what is
/// known. Either way it keeps the time it was first seen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NamingGrace {
    /// Later polls to look again on; 0 holds nothing back.
    pub polls: u32,
    pub floor: Duration,
    /// Connects held back at once at most; past it, a new unnamed one goes
    /// out at once (and is counted).
    pub max_held: usize,
}

impl NamingGrace {
    /// What the pollers use: three polls, and at least a second.
    pub const POLLERS: NamingGrace = NamingGrace {
        polls: 3,
        floor: Duration::from_secs(1),
        max_held: 4096,
    };
}

#[derive(Debug)]
struct Open {
    seen: Observed,
    since: Timestamp,
    direction: Direction,
    process: Option<Arc<ProcessInfo>>,
    /// When a snapshot first missed this connection; `None` while seen.
    missing_since: Option<Timestamp>,
    /// `Some` while the connect waits for an owner (not reported yet).
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    first_seen: Instant,
    /// Later polls that looked for the owner again.
    polls: u32,
    preexisting: bool,
}

/// The set of open connections between polls, keyed by `K`.
#[derive(Debug)]
pub(crate) struct Tracker<K> {
    open: HashMap<K, Open>,
    listening_ports: HashSet<u16>,
    owners: SocketOwners,
    processes: ProcessCache,
    netns: u64,
    /// No snapshot taken yet: what the first one finds was open before us.
    first: bool,
    events: u64,
    grace: NamingGrace,
    /// Connects held back now.
    held: usize,
    /// Unnamed connects not held back because `grace.max_held` were.
    not_held: u64,
}

impl<K: Hash + Eq + Copy> Tracker<K> {
    pub fn new(netns: u64, command_lines: bool, grace: NamingGrace) -> Self {
        Tracker {
            open: HashMap::new(),
            listening_ports: HashSet::new(),
            owners: SocketOwners::default(),
            processes: ProcessCache::new(4096, command_lines),
            netns,
            first: true,
            events: 0,
            grace,
            held: 0,
            not_held: 0,
        }
    }

    /// Events handed out since start.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The local ports sockets listen on now; a connection on one of them
    /// was accepted (incoming), any other was made by this host (outgoing).
    pub fn set_listening_ports(&mut self, ports: HashSet<u16>) {
        self.listening_ports = ports;
    }

    /// Takes a full snapshot of the connections open now: reports the new
    /// ones as connects (those without an owner after [`NamingGrace`]), and
    /// those missed by two snapshots in a row as disconnects, whose keys it
    /// returns.
    pub fn snapshot(&mut self, now: Vec<(K, Observed)>, out: &mut Vec<ConnectionEvent>) -> Vec<K> {
        let timestamp = Timestamp::now();
        let preexisting = std::mem::replace(&mut self.first, false);
        self.owners.refresh_for(
            now.iter()
                .filter(|(key, _)| self.open.get(key).is_none_or(|open| open.held.is_some()))
                .map(|(_, seen)| seen.inode),
        );
        let mut current = HashSet::with_capacity(now.len());
        let mut new = Vec::new();
        for (key, seen) in now {
            current.insert(key);
            if let Some(open) = self.open.get_mut(&key) {
                if same_socket(open.seen.inode, seen.inode) {
                    if open.seen.inode == 0 {
                        open.seen.inode = seen.inode; // accepted since
                    }
                    open.seen.bytes = seen.bytes.or(open.seen.bytes);
                    open.missing_since = None;
                    continue;
                }
                // The same addresses on another socket: the old connection
                // closed and its port was reused between two snapshots.
                let old = self.open.remove(&key).expect("just found");
                let closed = old.missing_since.unwrap_or(timestamp);
                self.close(old, closed, out);
            }
            new.push((key, seen));
        }
        // Connects held back before come first: they were seen earlier.
        self.release_held(out);
        for (key, seen) in new {
            let mut open = self.open_connection(seen, timestamp);
            if open.process.is_none() && self.grace.polls > 0 {
                if self.held < self.grace.max_held {
                    open.held = Some(Held {
                        first_seen: Instant::now(),
                        polls: 0,
                        preexisting,
                    });
                    self.held += 1;
                    self.open.insert(key, open);
                    continue;
                }
                self.count_not_held();
            }
            let mut event = self.event(EventKind::Connect, &open, timestamp);
            event.preexisting = preexisting;
            self.push(out, event);
            self.open.insert(key, open);
        }
        let mut gone = Vec::new();
        for (key, open) in self.open.iter_mut() {
            if current.contains(key) {
                continue;
            }
            match open.missing_since {
                None => open.missing_since = Some(timestamp),
                Some(_) => gone.push(*key),
            }
        }
        for key in &gone {
            let open = self.open.remove(key).expect("key listed from the map");
            let closed = open.missing_since.expect("missed twice");
            self.close(open, closed, out);
        }
        gone
    }

    /// Looks up the owners of held-back connects and reports those named or
    /// past their grace, oldest first.
    fn release_held(&mut self, out: &mut Vec<ConnectionEvent>) {
        if self.held == 0 {
            return;
        }
        let mut ready = Vec::new();
        for (key, open) in self.open.iter_mut() {
            let Some(held) = &mut open.held else {
                continue;
            };
            open.process = owner(&self.owners, &mut self.processes, open.seen.inode);
            held.polls += 1;
            let grace_over =
                held.polls >= self.grace.polls && held.first_seen.elapsed() >= self.grace.floor;
            if open.process.is_some() || grace_over {
                ready.push((open.since, *key));
            }
        }
        ready.sort_unstable_by_key(|(since, _)| *since);
        for (_, key) in ready {
            let mut open = self.open.remove(&key).expect("key listed from the map");
            self.report_held(&mut open, out);
            self.open.insert(key, open);
        }
    }

    /// Reports the connect of a held-back connection, as of when it was
    /// first seen.
    fn report_held(&mut self, open: &mut Open, out: &mut Vec<ConnectionEvent>) {
        let Some(held) = open.held.take() else {
            return;
        };
        self.held -= 1;
        let mut event = self.event(EventKind::Connect, open, open.since);
        event.preexisting = held.preexisting;
        self.push(out, event);
    }

    /// Reports a disconnect, preceded by the connect if that was held back
    /// (named if its owner can still be found).
    fn close(&mut self, mut open: Open, at: Timestamp, out: &mut Vec<ConnectionEvent>) {
        if open.held.is_some() {
            open.process = owner(&self.owners, &mut self.processes, open.seen.inode);
            self.report_held(&mut open, out);
        }
        let event = self.event(EventKind::Disconnect, &open, at);
        self.push(out, event);
    }

    fn count_not_held(&mut self) {
        self.not_held += 1;
        if self.not_held.is_power_of_two() {
            tracing::warn!(
                held = self.held,
                not_held = self.not_held,
                "too many connections wait for an owner; reporting new ones unnamed at once"
            );
        }
    }

    /// The kernel reported the socket destroyed (sock_diag destroy group).
    /// A connection the tracker never saw lived entirely between two polls:
    /// it is reported as a connect and a disconnect. Returns whether the
    /// connection was known.
    pub fn destroyed(&mut self, key: K, last: Observed, out: &mut Vec<ConnectionEvent>) -> bool {
        let timestamp = Timestamp::now();
        let (open, known) = match self.open.remove(&key) {
            Some(mut open) => {
                open.seen.bytes = last.bytes.or(open.seen.bytes);
                (open, true)
            }
            None => {
                let open = self.open_connection(last, timestamp);
                let connect = self.event(EventKind::Connect, &open, timestamp);
                self.push(out, connect);
                (open, false)
            }
        };
        self.close(open, timestamp, out);
        known
    }

    /// Whether the connection is open as far as the tracker knows.
    pub fn is_tracked(&self, key: &K) -> bool {
        self.open.contains_key(key)
    }

    /// Whether a local port is one sockets listen on.
    pub fn is_listening_port(&self, port: u16) -> bool {
        self.listening_ports.contains(&port)
    }

    fn open_connection(&mut self, seen: Observed, since: Timestamp) -> Open {
        let direction = if self.listening_ports.contains(&seen.local.port()) {
            Direction::Incoming
        } else {
            Direction::Outgoing
        };
        let process = owner(&self.owners, &mut self.processes, seen.inode);
        Open {
            seen,
            since,
            direction,
            process,
            missing_since: None,
            held: None,
        }
    }

    fn event(&self, kind: EventKind, open: &Open, timestamp: Timestamp) -> ConnectionEvent {
        let mut event = ConnectionEvent::new(
            kind,
            timestamp,
            Protocol::Tcp,
            open.direction,
            open.seen.local,
            open.seen.remote,
        );
        event.normalize_addresses();
        event.netns = self.netns;
        event.uid = open.seen.uid;
        event.process = open.process.clone();
        if kind == EventKind::Disconnect {
            let (sent, received) = open.seen.bytes.unwrap_or_default();
            event.close = Some(CloseStats {
                duration_ns: timestamp.nanos_since(open.since),
                bytes_sent: sent,
                bytes_received: received,
                packets_sent: None,
                packets_received: None,
            });
        }
        event
    }

    fn push(&mut self, out: &mut Vec<ConnectionEvent>, event: ConnectionEvent) {
        self.events += 1;
        out.push(event);
    }
}

/// The process holding the socket with this inode, as the last scan of
/// `/proc/*/fd` found it.
fn owner(
    owners: &SocketOwners,
    processes: &mut ProcessCache,
    inode: u64,
) -> Option<Arc<ProcessInfo>> {
    owners
        .get(inode)
        .filter(|_| inode != 0)
        .and_then(|pid| processes.get(pid))
}

/// Whether two sightings are of one socket; an unknown inode (0) does not
/// tell them apart.
fn same_socket(inode: u64, other: u64) -> bool {
    inode == other || inode == 0 || other == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Never held back: every connect reported by the snapshot that first
    /// sees it.
    const NO_GRACE: NamingGrace = NamingGrace {
        polls: 0,
        floor: Duration::ZERO,
        max_held: usize::MAX,
    };

    /// Held back until named, never for lack of time.
    const LONG_GRACE: NamingGrace = NamingGrace {
        polls: 3,
        floor: Duration::from_secs(3600),
        max_held: 4,
    };

    fn seen(local: &str, remote: &str) -> Observed {
        Observed {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            inode: 0,
            uid: Some(1000),
            bytes: None,
        }
    }

    #[test]
    fn reports_differences_between_snapshots() {
        let mut tracker = Tracker::<u64>::new(7, false, NO_GRACE);
        tracker.set_listening_ports([80].into());
        let mut out = Vec::new();
        let a = seen("127.0.0.1:80", "127.0.0.1:5000");
        let b = seen("127.0.0.1:5001", "127.0.0.1:22");
        tracker.snapshot(vec![(1, a)], &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].preexisting);
        assert_eq!(out[0].direction, Direction::Incoming);
        assert_eq!(out[0].netns, 7);
        assert_eq!(out[0].uid, Some(1000));
        out.clear();

        tracker.snapshot(vec![(1, a), (2, b)], &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].preexisting);
        assert_eq!(out[0].direction, Direction::Outgoing);
        out.clear();

        // One miss is not a close: table reads can skip an entry.
        tracker.snapshot(vec![(2, b)], &mut out);
        assert!(out.is_empty());
        tracker.snapshot(vec![(2, b)], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].kind, EventKind::Disconnect);
        assert_eq!(out[0].local, a.local);
        out.iter().for_each(|e| e.validate().unwrap());
        assert_eq!(tracker.events(), 3);
    }

    #[test]
    fn a_dual_stack_socket_talking_ipv4_is_reported_as_ipv4() {
        let mut tracker = Tracker::<u64>::new(0, false, NO_GRACE);
        tracker.set_listening_ports([8443].into());
        let mut out = Vec::new();
        let a = seen("[::ffff:192.0.2.10]:8443", "[::ffff:198.51.100.7]:51000");
        tracker.snapshot(vec![(1, a)], &mut out);
        assert_eq!(out[0].local, "192.0.2.10:8443".parse().unwrap());
        assert_eq!(out[0].remote, "198.51.100.7:51000".parse().unwrap());
        assert_eq!(out[0].direction, Direction::Incoming);
        out[0].validate().unwrap();
    }

    #[test]
    fn a_connection_skipped_by_one_snapshot_is_reported_once() {
        let mut tracker = Tracker::<u64>::new(0, false, NO_GRACE);
        let mut out = Vec::new();
        let a = seen("127.0.0.1:5000", "127.0.0.1:80");
        tracker.snapshot(vec![(1, a)], &mut out);
        tracker.snapshot(vec![], &mut out);
        tracker.snapshot(vec![(1, a)], &mut out);
        tracker.snapshot(vec![(1, a)], &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");

        // Missed twice: closed, as of the first miss.
        tracker.snapshot(vec![], &mut out);
        let first_miss = Timestamp::now();
        tracker.snapshot(vec![], &mut out);
        assert_eq!(out[1].kind, EventKind::Disconnect);
        assert!(out[1].timestamp <= first_miss);
    }

    #[test]
    fn reused_addresses_on_another_socket_are_a_new_connection() {
        let mut tracker = Tracker::<u64>::new(0, false, NO_GRACE);
        let mut out = Vec::new();
        let mut a = seen("127.0.0.1:5000", "127.0.0.1:80");
        a.inode = 11;
        tracker.snapshot(vec![(1, a)], &mut out);
        a.inode = 12;
        tracker.snapshot(vec![(1, a)], &mut out);
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Connect,
                EventKind::Disconnect,
                EventKind::Connect
            ]
        );
    }

    #[test]
    fn destroy_of_unseen_connection_reports_both_ends() {
        let mut tracker = Tracker::<u64>::new(0, false, NO_GRACE);
        let mut out = Vec::new();
        tracker.snapshot(vec![], &mut out);
        let mut short = seen("[::1]:5000", "[::1]:80");
        short.bytes = Some((10, 20));
        assert!(!tracker.destroyed(9, short, &mut out));
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Connect, EventKind::Disconnect]);
        let close = out[1].close.unwrap();
        assert_eq!((close.bytes_sent, close.bytes_received), (10, 20));
        out.iter().for_each(|e| e.validate().unwrap());

        // Once destroyed it is gone: the next snapshot reports nothing.
        out.clear();
        tracker.snapshot(vec![], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_connect_waits_for_its_owner_and_keeps_its_time() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let mut tracker = Tracker::<u64>::new(0, false, LONG_GRACE);
        tracker.set_listening_ports([80].into());
        let mut out = Vec::new();
        tracker.snapshot(vec![], &mut out);
        // In the accept queue: no inode, no owner.
        let mut queued = seen("127.0.0.1:80", "127.0.0.1:5000");
        tracker.snapshot(vec![(1, queued)], &mut out);
        let first_seen_by = Timestamp::now();
        tracker.snapshot(vec![(1, queued)], &mut out);
        assert!(out.is_empty(), "{out:#?}");

        queued.inode = inode; // accepted
        tracker.snapshot(vec![(1, queued)], &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].kind, EventKind::Connect);
        assert_eq!(out[0].direction, Direction::Incoming);
        assert_eq!(out[0].pid(), Some(std::process::id()));
        assert!(out[0].timestamp <= first_seen_by);
        assert!(!out[0].preexisting);
        tracker.snapshot(vec![(1, queued)], &mut out);
        assert_eq!(out.len(), 1, "reported once");
    }

    #[test]
    fn an_unnamed_connect_goes_out_after_its_polls_and_floor() {
        let grace = NamingGrace {
            polls: 2,
            floor: Duration::from_millis(50),
            max_held: 4,
        };
        let mut tracker = Tracker::<u64>::new(0, false, grace);
        let mut out = Vec::new();
        let a = seen("127.0.0.1:5000", "127.0.0.1:80");
        let started = Instant::now();
        tracker.snapshot(vec![(1, a)], &mut out);
        let first_seen_by = Timestamp::now();
        tracker.snapshot(vec![(1, a)], &mut out);
        tracker.snapshot(vec![(1, a)], &mut out);
        if started.elapsed() < grace.floor {
            assert!(out.is_empty(), "before the floor: {out:#?}");
        }
        std::thread::sleep(grace.floor);
        tracker.snapshot(vec![(1, a)], &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert_eq!(out[0].process, None);
        assert!(out[0].preexisting, "seen by the first snapshot");
        assert!(out[0].timestamp <= first_seen_by);
        out[0].validate().unwrap();
    }

    #[test]
    fn a_connection_closed_while_held_back_reports_connect_then_disconnect() {
        let mut tracker = Tracker::<u64>::new(0, false, LONG_GRACE);
        let mut out = Vec::new();
        let a = seen("127.0.0.1:5000", "127.0.0.1:80");
        tracker.snapshot(vec![], &mut out);
        tracker.snapshot(vec![(1, a), (2, a)], &mut out);
        tracker.snapshot(vec![(2, a)], &mut out);
        tracker.snapshot(vec![(2, a)], &mut out);
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Connect, EventKind::Disconnect]);
        assert!(out[0].timestamp < out[1].timestamp);
        out.iter().for_each(|e| e.validate().unwrap());

        // A destroy message for a held-back connection (sock_diag).
        out.clear();
        assert!(tracker.destroyed(2, a, &mut out));
        let kinds: Vec<_> = out.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Connect, EventKind::Disconnect]);
    }

    #[test]
    fn held_back_connects_are_capped_and_counted() {
        let mut tracker = Tracker::<u64>::new(0, false, LONG_GRACE);
        let mut out = Vec::new();
        tracker.snapshot(vec![], &mut out);
        let many: Vec<_> = (0..6)
            .map(|port| (port, seen("127.0.0.1:5000", "127.0.0.1:80")))
            .collect();
        tracker.snapshot(many.clone(), &mut out);
        assert_eq!(out.len(), 2, "past the cap of 4, reported at once");
        assert_eq!((tracker.held, tracker.not_held), (4, 2));
        tracker.snapshot(many, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_released_connect_comes_before_newer_ones() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
        let inode = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .ino();
        let grace = NamingGrace {
            polls: 1,
            floor: Duration::ZERO,
            max_held: 4,
        };
        let mut tracker = Tracker::<u64>::new(0, false, grace);
        let mut out = Vec::new();
        let unnamed = seen("127.0.0.1:5000", "127.0.0.1:80");
        let mut named = seen("127.0.0.1:5001", "127.0.0.1:80");
        named.inode = inode;
        tracker.snapshot(vec![(1, unnamed)], &mut out);
        assert!(out.is_empty());
        tracker.snapshot(vec![(1, unnamed), (2, named)], &mut out);
        let order: Vec<_> = out.iter().map(|e| (e.local, e.process.is_some())).collect();
        assert_eq!(order, [(unnamed.local, false), (named.local, true)]);
        assert!(out[0].timestamp < out[1].timestamp);
    }
}
