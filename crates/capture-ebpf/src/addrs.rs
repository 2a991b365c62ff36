//! The kernel's socket addresses (family, 16 address bytes, port) as the
//! events' endpoints: shared by the connection records and the hellos.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use connscope_event::normalize_endpoints;

const AF_INET: u8 = libc::AF_INET as u8;

/// Both ends of a socket; a dual-stack socket talking IPv4 (`::ffff:a.b.c.d`
/// on both ends) is reported as the IPv4 connection it is.
pub(crate) fn socket_addrs(
    family: u8,
    laddr: &[u8; 16],
    lport: u16,
    raddr: &[u8; 16],
    rport: u16,
) -> (SocketAddr, SocketAddr) {
    let ip = |bytes: &[u8; 16]| -> IpAddr {
        if family == AF_INET {
            IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
        } else {
            IpAddr::V6(Ipv6Addr::from(*bytes))
        }
    };
    normalize_endpoints(
        SocketAddr::new(ip(laddr), lport),
        SocketAddr::new(ip(raddr), rport),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(text: &str) -> [u8; 16] {
        text.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn v4_mapped_addresses_become_v4() {
        let (l, r) = socket_addrs(
            10,
            &v6("::ffff:127.0.0.1"),
            40000,
            &v6("::ffff:10.1.2.3"),
            80,
        );
        assert_eq!(l, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(r, "10.1.2.3:80".parse().unwrap());
        let (l, _) = socket_addrs(10, &v6("::1"), 1, &v6("::ffff:10.1.2.3"), 2);
        assert_eq!(l, "[::1]:1".parse().unwrap());
    }

    #[test]
    fn v4_addresses_use_the_first_four_bytes() {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[192, 0, 2, 7]);
        let (l, r) = socket_addrs(AF_INET, &a, 5, &a, 6);
        assert_eq!(l, "192.0.2.7:5".parse().unwrap());
        assert_eq!(r, "192.0.2.7:6".parse().unwrap());
    }
}
