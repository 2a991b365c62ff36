//! Listening sockets of the local machine, from `/proc/net/{tcp,tcp6,udp,udp6}`
//! (the data `ss -ltun` shows). The store records connections, not listeners,
//! so `firewall diff` reads them live, and only when the planned host is the
//! machine it runs on.

use std::net::IpAddr;

use connscope_capture::proc_net;
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
    proc_net::rows(text.as_bytes())
        .flatten()
        .filter(|row| match protocol {
            Protocol::Tcp => row.state == proc_net::TCP_LISTEN,
            Protocol::Udp => {
                row.state == proc_net::UDP_UNCONNECTED
                    && row.remote.port() == 0
                    && row.remote.ip().is_unspecified()
            }
        })
        .map(|row| Listener {
            protocol,
            addr: row.local.ip(),
            port: row.local.port(),
        })
        .collect()
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
