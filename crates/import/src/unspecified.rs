//! What a 64-bit tcpspy's `::`/`::` line was.
//!
//! 64-bit tcpspy prints the low 64 bits of an IPv6 address as zero
//! (docs/TCPSPY-LOG.md), so `::1` and every IPv4-mapped address print as
//! `::`. A `::`/`::` line is then one of:
//! - loopback over `::1`: the other end's socket is on this host too, and its
//!   line (ports swapped) is in the same log, also `::`/`::`;
//! - loopback over 127.x to a dual-stack socket: the other end's line reads
//!   `127.x:B, remote 127.y:A`;
//! - a dual-stack socket (`IPV6_V6ONLY=0`, e.g. Java) talking to a **remote
//!   IPv4 peer**: no other line, and both addresses are lost.
//!
//! The line alone cannot tell these apart (the live syslog listener, which
//! sees one line at a time, reads every such pair as `::1`). An import sees
//! the whole log: the first pass records the port pairs of this host's
//! loopback lines, and the second gives a `::`/`::` line its partner's
//! addresses, or, without a partner, `0.0.0.0` on both ends: an IPv4
//! connection (mapped addresses are IPv4 on the wire) whose addresses are
//! unknown. The firewall planner opens such a port to any IPv4 peer rather
//! than block traffic that was seen (docs/IMPORT.md).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use connscope_tcpspy_log::Connection;

/// The loopback lines of the import, per host and (local port, remote port).
#[derive(Debug, Default)]
pub struct LoopbackLines {
    ends: HashMap<(String, u16, u16), (IpAddr, IpAddr), foldhash::fast::RandomState>,
}

fn is_printed_unspecified(c: &Connection<'_>) -> bool {
    c.local.addr.ip().is_unspecified() && c.remote.addr.ip().is_unspecified()
}

impl LoopbackLines {
    /// Records `c` (of `host`) if it may be the other end of a `::`/`::` line.
    pub fn observe(&mut self, host: &str, c: &Connection<'_>) {
        let (local, remote) = connscope_event::normalize_endpoints(c.local.addr, c.remote.addr);
        if local.ip().is_loopback() && remote.ip().is_loopback() {
            self.ends.insert(
                (host.to_owned(), local.port(), remote.port()),
                (local.ip(), remote.ip()),
            );
        }
    }

    pub fn merge(&mut self, other: LoopbackLines) {
        self.ends.extend(other.ends);
    }

    /// The addresses of a line of `host`: `None` when it is not a `::`/`::`
    /// line (its normalised addresses stand), else what its partner says.
    pub fn resolve(&self, host: &str, c: &Connection<'_>) -> Option<(SocketAddr, SocketAddr)> {
        if !is_printed_unspecified(c) {
            return None;
        }
        let (lport, rport) = (c.local.addr.port(), c.remote.addr.port());
        let (local, remote) = match self.ends.get(&(host.to_owned(), rport, lport)) {
            // The partner's remote is this line's local, and the other way round.
            Some(&(partner_local, partner_remote)) => (partner_remote, partner_local),
            None => (Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::UNSPECIFIED.into()),
        };
        Some((
            SocketAddr::new(local, lport),
            SocketAddr::new(remote, rport),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_tcpspy_log::{Message, Origin, Parser};

    fn with_connection<T>(msg: &str, f: impl FnOnce(&Connection<'_>) -> T) -> T {
        match Parser::default()
            .parse_message(Origin::Tcpspy, msg.as_bytes())
            .unwrap()
        {
            Message::Connection(c) => f(&c),
            other => panic!("{other:?}"),
        }
    }

    fn resolved(lines: &LoopbackLines, msg: &str) -> Option<(String, String)> {
        with_connection(msg, |c| {
            lines
                .resolve("srv", c)
                .map(|(l, r)| (l.to_string(), r.to_string()))
        })
    }

    #[test]
    fn a_pair_with_a_partner_is_loopback_without_one_a_lost_ipv4_peer() {
        let mut lines = LoopbackLines::default();
        for msg in [
            // ::1 client and server: both print as ::.
            "connect: user root, local :::41000, remote :::8443",
            "connect: user root, local :::8443, remote :::41000",
            // 127.0.0.1 client of a dual-stack server.
            "connect: user root, local 127.0.0.1:42000, remote 127.0.0.1:8443",
            "connect: user root, local :::8443, remote :::42000",
            // A remote IPv4 client of the dual-stack server.
            "connect: user root, local :::8443, remote :::43000",
        ] {
            with_connection(msg, |c| lines.observe("srv", c));
        }
        let s = |t: &str| t.to_owned();
        assert_eq!(
            resolved(&lines, "connect: user root, local :::8443, remote :::41000"),
            Some((s("[::1]:8443"), s("[::1]:41000")))
        );
        assert_eq!(
            resolved(&lines, "connect: user root, local :::8443, remote :::42000"),
            Some((s("127.0.0.1:8443"), s("127.0.0.1:42000")))
        );
        assert_eq!(
            resolved(&lines, "connect: user root, local :::8443, remote :::43000"),
            Some((s("0.0.0.0:8443"), s("0.0.0.0:43000")))
        );
        // Another host's loopback line is no partner.
        with_connection("connect: user root, local :::41000, remote :::8443", |c| {
            assert_eq!(
                lines.resolve("other", c).unwrap().0.ip(),
                IpAddr::from(Ipv4Addr::UNSPECIFIED)
            )
        });
        // Lines with real addresses keep theirs.
        assert_eq!(
            resolved(
                &lines,
                "connect: user root, local 10.0.0.1:22, remote 10.0.0.2:5000"
            ),
            None
        );
    }
}
