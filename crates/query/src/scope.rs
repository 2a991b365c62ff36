//! Internal or external: which side of the perimeter an address is on.
//!
//! An address is *internal* when it belongs to a monitored host (it was seen
//! as the local end of some host's own events) or lies in a range that is not
//! routed on the public internet:
//! IPv4 10/8, 172.16/12, 192.168/16 (RFC 1918), 100.64/10 (shared address
//! space, RFC 6598), 169.254/16 (link-local), 127/8 (loopback);
//! IPv6 fc00::/7 (unique local), fe80::/10 (link-local), ::1, and IPv4-mapped
//! forms of the IPv4 ranges. Everything else is *external*.

use std::net::IpAddr;

use crate::join::HostDirectory;

/// Whether `ip` is in a private, shared, link-local or loopback range.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Internal: a monitored host's address or a private range (see module docs).
pub fn is_internal(ip: IpAddr, hosts: &HostDirectory) -> bool {
    is_private(ip) || hosts.is_monitored(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for ip in [
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "127.0.0.1",
            "fd00::1",
            "fe80::1",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
