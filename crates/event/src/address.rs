//! Address normalisation at the edge: every producer of events (the tcpspy
//! parser, the eBPF and poll capture backends, the JSON reader) passes the two
//! ends of a connection through [`normalize_endpoints`], so nothing
//! downstream — store, joins, map, firewall planner — ever sees an address
//! form that is not what the packets carry.
//!
//! Two forms are rewritten:
//! - **IPv4-mapped** (`::ffff:a.b.c.d` on both ends): a dual-stack socket
//!   (`AF_INET6`, `IPV6_V6ONLY=0`) talking IPv4. The packets are IPv4, so a
//!   firewall rule must be an `ip` rule and the other end's record (written by
//!   an IPv4 socket) names the same addresses: both must read `a.b.c.d`.
//! - **tcpspy's `::` pair**: 64-bit tcpspy prints the low 64 bits of an IPv6
//!   address as zero, so `::1` and `::ffff:127.x` both print as `::`. A
//!   connection cannot have the unspecified address at either end, and the
//!   only addresses whose upper 64 bits are zero are `::1`, the mapped ones and
//!   the deprecated IPv4-compatible ones; both ends `::` is read as loopback
//!   `::1` (see docs/EVENTS.md for what this cannot tell apart).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The two ends of a connection as the packets carry them: IPv4-mapped ends
/// become IPv4, a `::`/`::` pair becomes `::1`/`::1`. Anything else is
/// returned as given; an end that is mapped while the other is not stays as it
/// is, for [`crate::ConnectionEvent::validate`] to refuse.
pub fn normalize_endpoints(local: SocketAddr, remote: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (IpAddr::V6(l), IpAddr::V6(r)) = (local.ip(), remote.ip()) else {
        return (local, remote);
    };
    let (l, r) = match (l.to_ipv4_mapped(), r.to_ipv4_mapped()) {
        (Some(l4), Some(r4)) => (IpAddr::V4(l4), IpAddr::V4(r4)),
        _ if l.is_unspecified() && r.is_unspecified() => {
            (Ipv6Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into())
        }
        _ => return (local, remote),
    };
    (
        SocketAddr::new(l, local.port()),
        SocketAddr::new(r, remote.port()),
    )
}

/// The address is IPv4-mapped (`::ffff:a.b.c.d`), a form no packet carries.
pub fn is_ipv4_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(local: &str, remote: &str) -> (String, String) {
        let (l, r) = normalize_endpoints(local.parse().unwrap(), remote.parse().unwrap());
        (l.to_string(), r.to_string())
    }

    #[test]
    fn mapped_pairs_become_ipv4() {
        assert_eq!(
            norm("[::ffff:192.0.2.1]:8443", "[::ffff:198.51.100.7]:40000"),
            ("192.0.2.1:8443".into(), "198.51.100.7:40000".into())
        );
        assert_eq!(
            norm("[::ffff:127.0.0.1]:1", "[::ffff:127.0.0.2]:2"),
            ("127.0.0.1:1".into(), "127.0.0.2:2".into())
        );
    }

    #[test]
    fn unspecified_pair_is_loopback() {
        assert_eq!(
            norm("[::]:8443", "[::]:40000"),
            ("[::1]:8443".into(), "[::1]:40000".into())
        );
    }

    #[test]
    fn everything_else_is_kept() {
        for (l, r) in [
            ("192.0.2.1:1", "192.0.2.2:2"),
            ("[::1]:1", "[::1]:2"),
            ("[2001:db8::1]:1", "[2001:db8::2]:2"),
            // Half a pair is not rewritten: validate() refuses it.
            ("[::ffff:192.0.2.1]:1", "[2001:db8::2]:2"),
            ("[::]:1", "[2001:db8::]:2"),
            // IPv4-compatible (deprecated) is not mapped.
            ("[::192.0.2.1]:1", "[::192.0.2.2]:2"),
        ] {
            let (l, r) = (l.parse().unwrap(), r.parse().unwrap());
            assert_eq!(normalize_endpoints(l, r), (l, r));
        }
    }
}
