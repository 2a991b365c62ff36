//! A firewall hit as an event: the NFLOG capture's would-block or blocked
//! attempt, given the shape of a connection event so it travels the agent's
//! pipeline (rules, numbering, spool, shipping) like any other.

use connscope_capture_nflog::{Chain, FirewallHit, HitKind};
use connscope_event::{ConnectionEvent, Direction, EventKind};

/// The event of `hit` (host, sequence and user name are the agent's to fill).
pub fn hit_event(hit: &FirewallHit) -> ConnectionEvent {
    ConnectionEvent {
        kind: match hit.kind {
            HitKind::WouldBlock => EventKind::WouldBlock,
            HitKind::Blocked => EventKind::Blocked,
        },
        timestamp: hit.at,
        sequence: 0,
        host: String::new(),
        netns: hit.netns,
        protocol: hit.protocol,
        direction: match hit.chain {
            Chain::Input => Direction::Incoming,
            Chain::Output => Direction::Outgoing,
        },
        local: hit.local,
        remote: hit.remote,
        process: hit.process.clone(),
        uid: hit.uid,
        user_name: None,
        close: None,
        failure: None,
        preexisting: false,
        remote_name: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::{Protocol, Timestamp};

    #[test]
    fn an_outgoing_block_keeps_its_ends_and_owner() {
        let hit = FirewallHit {
            at: Timestamp::from_nanos(1_795_548_137_000_000_000),
            kind: HitKind::Blocked,
            chain: Chain::Output,
            protocol: Protocol::Tcp,
            local: "10.0.0.2:40000".parse().unwrap(),
            remote: "10.0.0.1:5432".parse().unwrap(),
            netns: 7,
            process: None,
            uid: Some(1000),
            packets: 1,
        };
        let event = hit_event(&hit);
        assert_eq!(event.kind, EventKind::Blocked);
        assert_eq!(event.direction, Direction::Outgoing);
        assert_eq!((event.local, event.remote), (hit.local, hit.remote));
        assert_eq!((event.uid, event.netns), (Some(1000), 7));
        let incoming = hit_event(&FirewallHit {
            kind: HitKind::WouldBlock,
            chain: Chain::Input,
            ..hit
        });
        assert_eq!(incoming.kind, EventKind::WouldBlock);
        assert_eq!(incoming.direction, Direction::Incoming);
    }
}
