//! The process behind a firewall hit, from the connection the agent saw.
//!
//! The NFLOG reader names a hit's process by walking `/proc/*/fd` for the
//! socket, which misses a process that is already gone: in audit mode a
//! short job's connection succeeds and the job may exit before the walk
//! reaches it. The capture saw the same connection with its process (the
//! eBPF backend in the kernel, at connect time), so a hit without a process
//! takes the one of the connection with the same ends. The two arrive by
//! different paths in either order, so such a hit waits a moment
//! ([`HOLD`]) for its connection before it goes on without a process.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope_event::{ConnectionEvent, EventKind, ProcessInfo, Protocol};
use hashlink::LruCache;

/// Connections remembered for their hits.
const REMEMBERED: usize = 4096;
/// How long a hit without a process waits for its connection's.
pub(crate) const HOLD: Duration = Duration::from_millis(500);

type Ends = (Protocol, SocketAddr, SocketAddr);

pub(crate) struct HitOwners {
    seen: LruCache<Ends, (Arc<ProcessInfo>, Option<u32>)>,
    /// Hits waiting for their connection, oldest first, with their deadline.
    held: VecDeque<(Instant, ConnectionEvent)>,
}

fn is_hit(event: &ConnectionEvent) -> bool {
    matches!(event.kind, EventKind::WouldBlock | EventKind::Blocked)
}

fn ends(event: &ConnectionEvent) -> Ends {
    (event.protocol, event.local, event.remote)
}

impl HitOwners {
    pub(crate) fn new() -> HitOwners {
        HitOwners {
            seen: LruCache::new(REMEMBERED),
            held: VecDeque::new(),
        }
    }

    /// Remembers the connections' processes, gives hits without one the
    /// process of their connection, and holds those whose connection has
    /// not been seen yet. Returns what goes on now, in order.
    pub(crate) fn take(
        &mut self,
        events: Vec<ConnectionEvent>,
        now: Instant,
    ) -> Vec<ConnectionEvent> {
        let mut out = Vec::with_capacity(events.len());
        for mut event in events {
            if !is_hit(&event) {
                if let Some(process) = &event.process {
                    let key = ends(&event);
                    self.seen.insert(key, (process.clone(), event.uid));
                    out.push(event);
                    self.release_matching(key, &mut out);
                    continue;
                }
                out.push(event);
            } else if event.process.is_some() || self.fill(&mut event) {
                out.push(event);
            } else {
                self.held.push_back((now + HOLD, event));
            }
        }
        out.extend(self.due(now, false));
        out
    }

    fn fill(&mut self, event: &mut ConnectionEvent) -> bool {
        match self.seen.get(&ends(event)) {
            Some((process, uid)) => {
                event.process = Some(process.clone());
                event.uid = event.uid.or(*uid);
                true
            }
            None => false,
        }
    }

    fn release_matching(&mut self, key: Ends, out: &mut Vec<ConnectionEvent>) {
        let mut index = 0;
        while index < self.held.len() {
            if ends(&self.held[index].1) == key {
                let (_, mut event) = self.held.remove(index).expect("in range");
                self.fill(&mut event);
                out.push(event);
            } else {
                index += 1;
            }
        }
    }

    /// The held hits whose wait is over (all of them when `everything`).
    pub(crate) fn due(&mut self, now: Instant, everything: bool) -> Vec<ConnectionEvent> {
        let mut out = Vec::new();
        while let Some((deadline, _)) = self.held.front() {
            if !everything && *deadline > now {
                break;
            }
            out.extend(self.held.pop_front().map(|(_, event)| event));
        }
        out
    }

    /// When the oldest held hit's wait is over.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|(deadline, _)| *deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::{Direction, Timestamp};

    fn event(kind: EventKind, process: Option<&str>) -> ConnectionEvent {
        ConnectionEvent {
            kind,
            timestamp: Timestamp::from_nanos(1),
            sequence: 0,
            host: String::new(),
            netns: 0,
            protocol: Protocol::Tcp,
            direction: Direction::Outgoing,
            local: "10.0.0.2:40000".parse().unwrap(),
            remote: "10.0.0.1:5432".parse().unwrap(),
            process: process.map(|exe| {
                Arc::new(ProcessInfo {
                    pid: 7,
                    executable: Some(exe.into()),
                    comm: None,
                    command_line: None,
                    cgroup: None,
                })
            }),
            uid: Some(1000),
            user_name: None,
            close: None,
            failure: None,
            preexisting: false,
            remote_name: None,
        }
    }

    fn exe(e: &ConnectionEvent) -> Option<String> {
        e.process.as_ref().and_then(|p| p.executable.clone())
    }

    #[test]
    fn a_hit_without_a_process_takes_its_connections_in_either_order() {
        let mut owners = HitOwners::new();
        let now = Instant::now();
        // The connection first: the hit takes its process at once.
        let out = owners.take(
            vec![
                event(EventKind::Connect, Some("/usr/bin/pg_dump")),
                event(EventKind::WouldBlock, None),
            ],
            now,
        );
        assert_eq!(exe(&out[1]).as_deref(), Some("/usr/bin/pg_dump"));

        // The hit first: it waits for its connection.
        let mut owners = HitOwners::new();
        assert!(owners
            .take(vec![event(EventKind::Blocked, None)], now)
            .is_empty());
        assert_eq!(owners.next_due(), Some(now + HOLD));
        let out = owners.take(vec![event(EventKind::Connect, Some("/usr/bin/rsync"))], now);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].kind, exe(&out[1]).as_deref()),
            (EventKind::Blocked, Some("/usr/bin/rsync"))
        );

        // A hit whose connection never comes goes on without a process.
        let mut other = event(EventKind::WouldBlock, None);
        other.remote = "10.0.0.1:6000".parse().unwrap();
        assert!(owners.take(vec![other], now).is_empty());
        assert!(owners.due(now + HOLD / 2, false).is_empty());
        let late = owners.due(now + HOLD, false);
        assert_eq!((late.len(), exe(&late[0])), (1, None));
        assert_eq!(owners.next_due(), None);
    }
}
