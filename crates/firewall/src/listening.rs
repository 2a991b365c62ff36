//! Listening sockets of the local machine, from `/proc/net/{tcp,tcp6,udp,udp6}`
//! (the data `ss -ltun` shows). The store records connections, not listeners,
//! so `firewall diff` reads them live, and only when the planned host is the
//! machine it runs on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use connscope_event::Protocol;
use serde::Serialize;

/// A socket waiting for connections (TCP LISTEN) or datagrams (bound,
/// unconnected UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Listener {
    #[serde(serialize_with = "crate::flow::as_display")]
    pub protocol: Protocol,
    pub addr: IpAddr,
    pub port: u16,
}

const TCP_LISTEN: u8 = 0x0A;
const UDP_UNCONNECTED: u8 = 0x07;

/// Reads the listeners of the machine this runs on.
pub fn local_listeners() -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for (file, protocol) in [
        ("/proc/net/tcp", Protocol::Tcp),
        ("/proc/net/tcp6", Protocol::Tcp),
        ("/proc/net/udp", Protocol::Udp),
        ("/proc/net/udp6", Protocol::Udp),
    ] {
        match std::fs::read_to_string(file) {
            Ok(text) => out.extend(parse_proc_net(&text, protocol)),
            // No IPv6 on this kernel: no v6 listeners.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Listeners in one `/proc/net/*` table; malformed lines are skipped (the
/// kernel does not write any, and a listing is advice, not evidence).
pub fn parse_proc_net(text: &str, protocol: Protocol) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(state)) =
            (fields.get(1), fields.get(2), fields.get(3))
        else {
            continue;
        };
        let Ok(state) = u8::from_str_radix(state, 16) else {
            continue;
        };
        let listening = match protocol {
            Protocol::Tcp => state == TCP_LISTEN,
            Protocol::Udp => {
                state == UDP_UNCONNECTED
                    && parse_endpoint(remote).is_some_and(|(a, p)| p == 0 && a.is_unspecified())
            }
        };
        if !listening {
            continue;
        }
        if let Some((addr, port)) = parse_endpoint(local) {
            out.push(Listener {
                protocol,
                addr,
                port,
            });
        }
    }
    out
}

/// `0100007F:0016` or a 32-digit IPv6 form; the address is in the kernel's
/// byte order, 32 bits at a time.
fn parse_endpoint(text: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::swap_bytes);
    let addr = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4]
                    .copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:9C40 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n";
        assert_eq!(
            parse_proc_net(tcp, Protocol::Tcp),
            [Listener {
                protocol: Protocol::Tcp,
                addr: "127.0.0.1".parse().unwrap(),
                port: 22
            }]
        );
        let tcp6 = "header\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A x\n";
        assert_eq!(
            parse_proc_net(tcp6, Protocol::Tcp)[0].addr,
            "::1".parse::<IpAddr>().unwrap()
        );
        let udp = "header\n  1: 00000000:0035 00000000:0000 07 x\n  2: 00000000:0036 0100007F:0035 07 x\n";
        let got = parse_proc_net(udp, Protocol::Udp);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].port, 53);
    }

    #[test]
    fn reads_this_machine() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let all = local_listeners().unwrap();
        assert!(all
            .iter()
            .any(|l| l.port == port && l.protocol == Protocol::Tcp));
    }
}
