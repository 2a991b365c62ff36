//! Content keys: the identity of an event that has no sequence number.
//!
//! The hash is written out here rather than taken from `std` because the
//! standard hasher may change between Rust releases, and a key stored today
//! must match the key computed for the same content next year. It is a 64-bit
//! word-at-a-time multiply-xorshift hash: fast (the importer keys every line)
//! and well mixed, not cryptographic — keys are scoped per agent and hour,
//! where a collision among a million events has a probability of about
//! 3·10^-8.

use connscope_event::ConnectionEvent;

/// The identity of an unnumbered event, unique per agent and hour (see
/// [`crate::KeyedEvent::key_time`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey(pub u64);

impl EventKey {
    /// The key of a byte string, e.g. a raw log line plus an occurrence count.
    pub fn of_bytes(parts: &[&[u8]]) -> EventKey {
        let mut hasher = StableHasher::new();
        for part in parts {
            hasher.write(part);
        }
        EventKey(hasher.finish())
    }

    /// The key of an event's whole content, for unnumbered events whose
    /// producer gave no identity (e.g. a syslog stream): two events equal in
    /// every field are the same event.
    pub fn of_event(event: &ConnectionEvent) -> EventKey {
        let mut h = StableHasher::new();
        h.write(event.kind.as_str().as_bytes());
        h.write(&event.timestamp.as_nanos().to_le_bytes());
        h.write(event.host.as_bytes());
        h.write(&event.netns.to_le_bytes());
        h.write(event.protocol.as_str().as_bytes());
        h.write(event.direction.as_str().as_bytes());
        h.write(event.local.to_string().as_bytes());
        h.write(event.remote.to_string().as_bytes());
        if let Some(p) = &event.process {
            h.write(&p.pid.to_le_bytes());
            for s in [&p.executable, &p.comm, &p.command_line, &p.cgroup] {
                h.write(s.as_deref().unwrap_or("\0").as_bytes());
            }
        }
        h.write(&event.uid.map_or(-1, i64::from).to_le_bytes());
        h.write(event.user_name.as_deref().unwrap_or("\0").as_bytes());
        if let Some(c) = &event.close {
            for n in [c.duration_ns, c.bytes_sent, c.bytes_received] {
                h.write(&n.to_le_bytes());
            }
            for n in [c.packets_sent, c.packets_received] {
                h.write(&n.map_or(u64::MAX, |n| n).to_le_bytes());
            }
        }
        if let Some(f) = event.failure {
            h.write(f.as_str().as_bytes());
        }
        h.write(&[u8::from(event.preexisting)]);
        EventKey(h.finish())
    }
}

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

struct StableHasher(u64);

impl StableHasher {
    fn new() -> Self {
        StableHasher(0x243F_6A88_85A3_08D3)
    }

    /// Feeds one field; its length goes in too, so field boundaries count
    /// ("ab","c" and "a","bc" hash differently).
    fn write(&mut self, bytes: &[u8]) {
        self.mix(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.mix(u64::from_le_bytes(chunk.try_into().expect("chunks of 8")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(last));
        }
    }

    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(MULTIPLIER);
        self.0 ^= self.0 >> 29;
    }

    /// MurmurHash3's finaliser, so every input bit reaches every output bit.
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::{Direction, EventKind, Protocol, Timestamp};

    #[test]
    fn keys_are_stable_across_builds() {
        // Pinned: stored keys must keep matching, so this value may never change.
        assert_eq!(
            EventKey::of_bytes(&[b"hello"]),
            EventKey(0x4315_25f6_5444_a547)
        );
    }

    #[test]
    fn field_boundaries_matter() {
        assert_ne!(
            EventKey::of_bytes(&[b"ab", b"c"]),
            EventKey::of_bytes(&[b"a", b"bc"])
        );
        assert_ne!(EventKey::of_bytes(&[b"x"]), EventKey::of_bytes(&[b"y"]));
    }

    #[test]
    fn event_keys_follow_content() {
        let mut ev = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(5),
            Protocol::Tcp,
            Direction::Outgoing,
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:22".parse().unwrap(),
        );
        let k = EventKey::of_event(&ev);
        assert_eq!(k, EventKey::of_event(&ev.clone()));
        ev.remote = "10.0.0.2:23".parse().unwrap();
        assert_ne!(k, EventKey::of_event(&ev));
    }
}
