//! Names the remote end of each outgoing connection from what the host's
//! processes were told (`connscope-dns-observe`): the DNS answer for the
//! address, else the server name of the connection's TLS ClientHello.
//!
//! A connect event is made when the handshake completes, before the client
//! sends its ClientHello. So an outgoing TCP connect without a DNS name waits
//! here for at most [`NamingConfig::sni_wait`] (the observer sees the hello a
//! few milliseconds after the connect; the wait also covers a DNS answer still
//! being read). Later events of a waiting connection release it first, so a
//! connection's events keep their order; at most [`MAX_WAITING`] connects
//! wait, past that they go out at once. Only the output is delayed, never the
//! connection. Every event of a named connection carries the name its connect
//! got, even after the answer expired.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connscope_dns_observe::NameCache;
use connscope_event::{ConnectionEvent, Direction, EventKind, NameSource, Protocol, RemoteName};
use hashlink::LruCache;

/// How the agent names connections.
#[derive(Debug, Clone)]
pub struct NamingConfig {
    /// How long an unnamed outgoing TCP connect waits for its ClientHello.
    pub sni_wait: Duration,
    /// How long a name outlives its answer's TTL.
    pub grace: Duration,
    /// Addresses remembered per namespace.
    pub addresses_per_netns: usize,
    /// Keep the name sets of table `inet connscope` filled.
    pub nft_name_sets: bool,
}

impl Default for NamingConfig {
    fn default() -> Self {
        NamingConfig {
            sni_wait: Duration::from_millis(500),
            grace: Duration::from_secs(300),
            addresses_per_netns: 65_536,
            nft_name_sets: false,
        }
    }
}

/// At most this many connects wait for a ClientHello at once (and at most
/// twice as many slots, released ones included, are kept until they expire).
pub const MAX_WAITING: usize = 4096;
/// Names of open connections remembered for their later events.
const OPEN_NAMED: usize = 65_536;

type Flow = (u64, Protocol, SocketAddr, SocketAddr);

/// The naming stage of the output thread.
pub(crate) struct Naming {
    names: Arc<Mutex<NameCache>>,
    own_netns: u64,
    sni_wait: Duration,
    /// Waiting connects in the order they came (so their deadlines are in
    /// order too); a slot is emptied when a later event of its connection
    /// releases it early, and dropped when it reaches the front.
    waiting: VecDeque<(Instant, Option<ConnectionEvent>)>,
    /// The number of `waiting`'s front slot: slots are numbered as they
    /// are pushed, so a number stays valid while slots leave at the front.
    first_slot: u64,
    /// The slots of each flow's waiting connects, oldest first: a release
    /// visits only its own flow's slots, not every waiting connect.
    waiting_flows: HashMap<Flow, VecDeque<u64>>,
    /// Connects still waiting (slots not emptied).
    waiting_count: usize,
    open: LruCache<Flow, RemoteName>,
}

impl Naming {
    pub(crate) fn new(names: Arc<Mutex<NameCache>>, own_netns: u64, sni_wait: Duration) -> Naming {
        Naming {
            names,
            own_netns,
            sni_wait,
            waiting: VecDeque::new(),
            first_slot: 0,
            waiting_flows: HashMap::new(),
            waiting_count: 0,
            open: LruCache::new(OPEN_NAMED),
        }
    }

    fn flow(&self, event: &ConnectionEvent) -> Flow {
        let netns = if event.netns == 0 {
            self.own_netns
        } else {
            event.netns
        };
        (netns, event.protocol, event.local, event.remote)
    }

    /// Names what can be named now; returns the events ready to go out, in
    /// order, and keeps those that wait.
    pub(crate) fn take(
        &mut self,
        events: Vec<ConnectionEvent>,
        now: Instant,
    ) -> Vec<ConnectionEvent> {
        let mut ready = Vec::with_capacity(events.len());
        for mut event in events {
            if event.direction != Direction::Outgoing {
                ready.push(event);
                continue;
            }
            let flow = self.flow(&event);
            if let Some(slots) = self.waiting_flows.remove(&flow) {
                self.release(slots, now, &mut ready);
            }
            match event.kind {
                EventKind::Connect
                | EventKind::ConnectFailed
                | EventKind::WouldBlock
                | EventKind::Blocked => {
                    let dns = self.dns_name(&flow, now);
                    let waits = dns.is_none()
                        && event.kind == EventKind::Connect
                        && event.protocol == Protocol::Tcp
                        && !event.preexisting
                        && self.waiting_count < MAX_WAITING
                        && self.waiting.len() < 2 * MAX_WAITING;
                    if waits {
                        let slot = self.first_slot + self.waiting.len() as u64;
                        self.waiting_flows.entry(flow).or_default().push_back(slot);
                        self.waiting.push_back((now + self.sni_wait, Some(event)));
                        self.waiting_count += 1;
                        continue;
                    }
                    event.remote_name = dns.or_else(|| self.sni_name(&flow, now));
                    if let (Some(name), EventKind::Connect) = (&event.remote_name, event.kind) {
                        self.open.insert(flow, name.clone());
                    }
                }
                EventKind::Disconnect => {
                    event.remote_name = self
                        .open
                        .remove(&flow)
                        .or_else(|| self.dns_name(&flow, now))
                        .or_else(|| self.sni_name(&flow, now));
                }
            }
            ready.push(event);
        }
        ready
    }

    /// Waiting connects whose time is up (all of them with `everything`),
    /// named with what is known by now.
    pub(crate) fn due(&mut self, now: Instant, everything: bool) -> Vec<ConnectionEvent> {
        let mut ready = Vec::new();
        while let Some((deadline, _)) = self.waiting.front() {
            if !everything && *deadline > now {
                break;
            }
            let (_, event) = self.waiting.pop_front().expect("front exists");
            let slot = self.first_slot;
            self.first_slot += 1;
            let Some(event) = event else { continue };
            // The oldest waiting slot of its flow is this one.
            let flow = self.flow(&event);
            if let Some(slots) = self.waiting_flows.get_mut(&flow) {
                debug_assert_eq!(slots.front(), Some(&slot));
                slots.pop_front();
                if slots.is_empty() {
                    self.waiting_flows.remove(&flow);
                }
            }
            self.waiting_count -= 1;
            self.finish(event, now, &mut ready);
        }
        ready
    }

    /// When the next waiting connect is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.waiting.front().map(|(deadline, _)| *deadline)
    }

    /// Sends a flow's waiting connects on ahead of its later event, in order.
    fn release(&mut self, slots: VecDeque<u64>, now: Instant, ready: &mut Vec<ConnectionEvent>) {
        for slot in slots {
            let index = (slot - self.first_slot) as usize;
            if let Some(event) = self.waiting[index].1.take() {
                self.waiting_count -= 1;
                self.finish(event, now, ready);
            }
        }
        // Emptied slots at the front would only make a wake-up for nothing.
        while matches!(self.waiting.front(), Some((_, None))) {
            self.waiting.pop_front();
            self.first_slot += 1;
        }
    }

    fn finish(
        &mut self,
        mut event: ConnectionEvent,
        now: Instant,
        ready: &mut Vec<ConnectionEvent>,
    ) {
        let flow = self.flow(&event);
        event.remote_name = self
            .dns_name(&flow, now)
            .or_else(|| self.sni_name(&flow, now));
        if let Some(name) = &event.remote_name {
            self.open.insert(flow, name.clone());
        }
        ready.push(event);
    }

    fn dns_name(&self, flow: &Flow, now: Instant) -> Option<RemoteName> {
        let mut names = self.names.lock().expect("the name cache is not poisoned");
        let cached = names.name_of(flow.0, flow.3.ip(), now)?;
        Some(RemoteName {
            name: cached.asked.to_string(),
            source: NameSource::Dns,
        })
    }

    fn sni_name(&self, flow: &Flow, now: Instant) -> Option<RemoteName> {
        let mut names = self.names.lock().expect("the name cache is not poisoned");
        let name = names.sni_of(flow.0, flow.2, flow.3, now)?;
        Some(RemoteName {
            name: name.to_string(),
            source: NameSource::Sni,
        })
    }
}

#[cfg(test)]
mod tests {
    use connscope_dns_observe::Answer;
    use connscope_event::Timestamp;

    use super::*;

    fn event(kind: EventKind, remote: &str) -> ConnectionEvent {
        let mut event = ConnectionEvent::new(
            kind,
            Timestamp::from_nanos(1),
            Protocol::Tcp,
            Direction::Outgoing,
            "10.0.0.1:40000".parse().unwrap(),
            remote.parse().unwrap(),
        );
        event.netns = 7;
        if kind == EventKind::Disconnect {
            event.close = Some(Default::default());
        }
        event
    }

    fn naming() -> (Naming, Arc<Mutex<NameCache>>) {
        let names = Arc::new(Mutex::new(NameCache::new(64, Duration::from_secs(300))));
        (
            Naming::new(names.clone(), 7, Duration::from_millis(250)),
            names,
        )
    }

    #[test]
    fn a_dns_name_wins_over_sni_and_stays_with_the_connection() {
        let (mut naming, names) = naming();
        let now = Instant::now();
        {
            let mut names = names.lock().unwrap();
            names.learn_answer(
                7,
                &Answer {
                    asked: "www.example.org".into(),
                    chain: vec!["cdn.example.net".into()],
                    addresses: vec![("192.0.2.1".parse().unwrap(), 1)],
                },
                now,
            );
            names.learn_sni(
                7,
                "10.0.0.1:40000".parse().unwrap(),
                "192.0.2.1:443".parse().unwrap(),
                "other.example".into(),
                now,
            );
        }
        let ready = naming.take(vec![event(EventKind::Connect, "192.0.2.1:443")], now);
        let expected = Some(RemoteName {
            name: "www.example.org".into(),
            source: NameSource::Dns,
        });
        assert_eq!(ready[0].remote_name, expected);
        // An hour later the answer is gone, the connection keeps its name.
        let later = now + Duration::from_secs(3600);
        let ready = naming.take(vec![event(EventKind::Disconnect, "192.0.2.1:443")], later);
        assert_eq!(ready[0].remote_name, expected);
    }

    #[test]
    fn an_unnamed_connect_waits_for_its_hello_and_its_disconnect_follows_it() {
        let (mut naming, names) = naming();
        let now = Instant::now();
        assert!(naming
            .take(vec![event(EventKind::Connect, "192.0.2.9:8443")], now)
            .is_empty());
        assert_eq!(naming.next_due(), Some(now + Duration::from_millis(250)));
        names.lock().unwrap().learn_sni(
            7,
            "10.0.0.1:40000".parse().unwrap(),
            "192.0.2.9:8443".parse().unwrap(),
            "tls.example".into(),
            now,
        );
        assert!(naming
            .due(now + Duration::from_millis(100), false)
            .is_empty());
        let ready = naming.take(vec![event(EventKind::Disconnect, "192.0.2.9:8443")], now);
        let kinds: Vec<_> = ready.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Connect, EventKind::Disconnect]);
        for event in &ready {
            assert_eq!(
                event.remote_name,
                Some(RemoteName {
                    name: "tls.example".into(),
                    source: NameSource::Sni
                })
            );
        }
        assert_eq!(naming.next_due(), None);
    }

    #[test]
    fn a_release_takes_only_its_own_connection_and_the_rest_wait_in_order() {
        let (mut naming, _) = naming();
        let now = Instant::now();
        let remotes = ["192.0.2.1:80", "192.0.2.2:80", "192.0.2.3:80"];
        for (i, remote) in remotes.iter().enumerate() {
            let at = now + Duration::from_millis(10 * i as u64);
            assert!(naming
                .take(vec![event(EventKind::Connect, remote)], at)
                .is_empty());
        }
        // The middle one closes: its connect and disconnect go, in order.
        let later = now + Duration::from_millis(30);
        let ready = naming.take(vec![event(EventKind::Disconnect, remotes[1])], later);
        let got: Vec<_> = ready.iter().map(|e| (e.kind, e.remote)).collect();
        let middle = remotes[1].parse().unwrap();
        assert_eq!(
            got,
            [
                (EventKind::Connect, middle),
                (EventKind::Disconnect, middle)
            ]
        );
        // The port is used again at once: the new connect waits in its turn.
        assert!(naming
            .take(vec![event(EventKind::Connect, remotes[1])], later)
            .is_empty());
        assert_eq!(naming.next_due(), Some(now + Duration::from_millis(250)));
        let ready = naming.due(now + Duration::from_millis(265), false);
        let got: Vec<_> = ready.iter().map(|e| e.remote).collect();
        assert_eq!(got, [remotes[0].parse().unwrap()]);
        let ready = naming.due(later, true);
        let got: Vec<_> = ready.iter().map(|e| e.remote).collect();
        assert_eq!(
            got,
            [remotes[2].parse().unwrap(), remotes[1].parse().unwrap()]
        );
        assert_eq!(naming.next_due(), None);
        // Nothing is left to release: a later disconnect goes alone.
        let ready = naming.take(vec![event(EventKind::Disconnect, remotes[1])], later);
        assert_eq!(ready.len(), 1);
    }

    #[test]
    fn a_connect_without_any_name_goes_out_unnamed_when_its_wait_ends() {
        let (mut naming, _) = naming();
        let now = Instant::now();
        assert!(naming
            .take(vec![event(EventKind::Connect, "192.0.2.9:80")], now)
            .is_empty());
        let ready = naming.due(now + Duration::from_millis(250), false);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].remote_name, None);
    }
}
