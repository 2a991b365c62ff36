//! One hit per connection attempt, and a bound on floods.
//!
//! A blocked `connect` retransmits its SYN (after 1 s, 3 s, 7 s, ... until
//! `tcp_syn_retries` gives up, about two minutes), a resolver repeats its
//! datagram: every copy is logged, but it is one attempt by one process. An
//! attempt is keyed by kind, chain, protocol and both ends (a new `connect`
//! gets a new local port, so a new attempt); its first packet is reported at
//! once, later ones only counted, and when it has been quiet for the window
//! an attempt of more than one packet is reported again with its count.
//!
//! A flood (a scan, a misbehaving client) must not flood the agent: new
//! attempts beyond `max_new_per_second` in one second, or beyond
//! `max_open` attempts being tracked, are dropped and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use connscope_event::Protocol;

use crate::hit::{Chain, FirewallHit, HitKind};

/// The bounds of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimits {
    /// How long an attempt may stay quiet and still be the same attempt:
    /// longer than the largest SYN retransmission gap (64 s at the default
    /// six retries).
    pub quiet: Duration,
    /// New attempts reported per second at most.
    pub max_new_per_second: u32,
    /// Attempts tracked at once at most.
    pub max_open: usize,
    /// New attempts attributed per second at most; those beyond are reported
    /// without a process. A lookup reads the namespace's `/proc/net` tables,
    /// which costs milliseconds on a busy host (docs/BENCHMARKS.md).
    pub max_attributed_per_second: u32,
}

impl Default for AttemptLimits {
    fn default() -> Self {
        AttemptLimits {
            quiet: Duration::from_secs(70),
            max_new_per_second: 200,
            max_open: 16_384,
            max_attributed_per_second: 50,
        }
    }
}

type Key = (HitKind, Chain, Protocol, SocketAddr, SocketAddr);

struct Open {
    hit: FirewallHit,
    last: Instant,
}

/// The attempts being tracked.
pub struct Attempts {
    limits: AttemptLimits,
    open: HashMap<Key, Open>,
    second: Instant,
    new_this_second: u32,
    attributed_second: Instant,
    attributed_this_second: u32,
    dropped: u64,
}

/// What one packet did to the table.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// The first packet of a new attempt: the caller attributes and reports it.
    New,
    /// Another packet of an attempt already reported.
    Repeat,
    /// A new attempt beyond a limit: dropped (and counted).
    Dropped,
}

impl Attempts {
    pub fn new(limits: AttemptLimits, now: Instant) -> Attempts {
        Attempts {
            limits,
            open: HashMap::new(),
            second: now,
            new_this_second: 0,
            attributed_second: now,
            attributed_this_second: 0,
            dropped: 0,
        }
    }

    /// Counts a packet of the attempt `key` would name; [`Seen::New`] asks
    /// the caller to [`Attempts::open`] it with its hit.
    pub fn see(
        &mut self,
        kind: HitKind,
        chain: Chain,
        protocol: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Seen {
        if let Some(open) = self.open.get_mut(&(kind, chain, protocol, local, remote)) {
            open.hit.packets += 1;
            open.last = now;
            return Seen::Repeat;
        }
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.new_this_second = 0;
        }
        if self.new_this_second >= self.limits.max_new_per_second
            || self.open.len() >= self.limits.max_open
        {
            self.dropped += 1;
            return Seen::Dropped;
        }
        self.new_this_second += 1;
        Seen::New
    }

    /// Whether a new attempt seen at `now` may still be attributed this
    /// second (and counts it if so).
    pub fn may_attribute(&mut self, now: Instant) -> bool {
        if now.duration_since(self.attributed_second) >= Duration::from_secs(1) {
            self.attributed_second = now;
            self.attributed_this_second = 0;
        }
        if self.attributed_this_second >= self.limits.max_attributed_per_second {
            return false;
        }
        self.attributed_this_second += 1;
        true
    }

    /// Starts tracking the attempt of a [`Seen::New`] packet.
    pub fn open(&mut self, hit: FirewallHit, now: Instant) {
        let key = (hit.kind, hit.chain, hit.protocol, hit.local, hit.remote);
        self.open.insert(key, Open { hit, last: now });
    }

    /// Ends the attempts quiet for the window; returns those that had more
    /// than one packet, with their counts.
    pub fn expire(&mut self, now: Instant) -> Vec<FirewallHit> {
        let quiet = self.limits.quiet;
        let mut repeated = Vec::new();
        self.open.retain(|_, open| {
            if now.duration_since(open.last) < quiet {
                return true;
            }
            if open.hit.packets > 1 {
                repeated.push(open.hit.clone());
            }
            false
        });
        repeated
    }

    /// New attempts dropped by the limits so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Attempts being tracked.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::Timestamp;

    fn hit(local: &str) -> FirewallHit {
        FirewallHit {
            at: Timestamp::from_nanos(0),
            kind: HitKind::Blocked,
            chain: Chain::Output,
            protocol: Protocol::Tcp,
            local: local.parse().unwrap(),
            remote: "10.0.0.1:5432".parse().unwrap(),
            netns: 1,
            process: None,
            uid: None,
            packets: 1,
        }
    }

    fn see(attempts: &mut Attempts, h: &FirewallHit, now: Instant) -> Seen {
        attempts.see(h.kind, h.chain, h.protocol, h.local, h.remote, now)
    }

    #[test]
    fn retransmissions_are_counted_and_reported_once_when_quiet() {
        let t0 = Instant::now();
        let mut attempts = Attempts::new(AttemptLimits::default(), t0);
        let h = hit("10.0.0.2:40000");
        assert_eq!(see(&mut attempts, &h, t0), Seen::New);
        attempts.open(h.clone(), t0);
        for gap in [1, 3, 7, 15, 31, 63] {
            assert_eq!(
                see(&mut attempts, &h, t0 + Duration::from_secs(gap)),
                Seen::Repeat
            );
        }
        assert!(attempts.expire(t0 + Duration::from_secs(100)).is_empty());
        let ended = attempts.expire(t0 + Duration::from_secs(63 + 70));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].packets, 7);
        assert!(attempts.is_empty());

        // A lone packet ends silently; a new connect is a new attempt.
        let other = hit("10.0.0.2:40001");
        assert_eq!(see(&mut attempts, &other, t0), Seen::New);
        attempts.open(other, t0);
        assert!(attempts.expire(t0 + Duration::from_secs(71)).is_empty());
        assert!(attempts.is_empty());
    }

    #[test]
    fn floods_are_bounded_per_second_and_in_size() {
        let t0 = Instant::now();
        let limits = AttemptLimits {
            quiet: Duration::from_secs(70),
            max_new_per_second: 10,
            max_open: 15,
            max_attributed_per_second: 10,
        };
        let mut attempts = Attempts::new(limits, t0);
        let mut new = 0;
        for port in 0..50u16 {
            let h = hit(&format!("10.0.0.2:{}", 40000 + port));
            if see(&mut attempts, &h, t0) == Seen::New {
                attempts.open(h, t0);
                new += 1;
            }
        }
        assert_eq!((new, attempts.dropped()), (10, 40));
        let later = t0 + Duration::from_secs(1);
        for port in 50..100u16 {
            let h = hit(&format!("10.0.0.2:{}", 40000 + port));
            if see(&mut attempts, &h, later) == Seen::New {
                attempts.open(h, later);
            }
        }
        assert_eq!(attempts.len(), 15, "the table stops at max_open");
        assert_eq!(attempts.dropped(), 85);
    }
}
