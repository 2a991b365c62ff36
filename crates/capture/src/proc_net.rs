//! Rows of the kernel's socket tables, `/proc/net/{tcp,tcp6,udp,udp6}`: the
//! `proc` poller reads its connections there and `firewall diff` its
//! listeners, through this one reader.
//!
//! Hand-written rather than the `procfs` crate's reader: the crate refuses a
//! whole table for one line it cannot read, where a poller must skip (and
//! count) that line and keep the rest of the table, or every connection in
//! it would look closed. A test checks it against the crate on this
//! machine's tables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a TCP socket that is connected.
pub const TCP_ESTABLISHED: u8 = 0x01;
/// `st` of a TCP socket waiting for connections.
pub const TCP_LISTEN: u8 = 0x0a;
/// `st` of a UDP socket that is bound and not connected (`TCP_CLOSE`).
pub const UDP_UNCONNECTED: u8 = 0x07;

/// One line of a table:
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// `None` when the line stops before it or it cannot be read.
    pub uid: Option<u32>,
    /// `None` when the line stops before it or it cannot be read.
    pub inode: Option<u64>,
}

/// Reads one line (not the header); `None` when its addresses or state
/// cannot be read.
pub fn parse_row(line: &[u8]) -> Option<SocketRow> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    fields.next()?; // sl
    let local = parse_endpoint(fields.next()?)?;
    let remote = parse_endpoint(fields.next()?)?;
    if local.is_ipv4() != remote.is_ipv4() {
        return None;
    }
    let state = u8::from_str_radix(fields.next()?, 16).ok()?;
    let mut rest = fields.skip(3); // tx:rx, tr:when, retrnsmt
    let uid = rest.next().and_then(|uid| uid.parse().ok());
    let inode = rest.nth(1).and_then(|inode| inode.parse().ok()); // after timeout
    Some(SocketRow {
        local,
        remote,
        state,
        uid,
        inode,
    })
}

/// `0100007F:0016`, or the 32-hex-digit IPv6 form. The kernel prints the
/// address as 32-bit words in host byte order.
pub fn parse_endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The rows of a whole table as the kernel wrote it, header skipped, blank
/// lines ignored; each unreadable line is an `Err` with its text.
pub fn rows(table: &[u8]) -> impl Iterator<Item = Result<SocketRow, &[u8]>> {
    table
        .split(|&b| b == b'\n')
        .skip(1)
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| parse_row(line).ok_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v4_and_v6_rows() {
        let v4 = b"   1: 0100007F:A1B2 0100007F:0016 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1";
        let row = parse_row(v4).unwrap();
        assert_eq!(row.state, TCP_ESTABLISHED);
        assert_eq!(row.local, "127.0.0.1:41394".parse().unwrap());
        assert_eq!(row.remote, "127.0.0.1:22".parse().unwrap());
        assert_eq!((row.uid, row.inode), (Some(1000), Some(4242)));

        let v6 = b"   0: 00000000000000000000000001000000:0050 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 30 10 -1";
        let row = parse_row(v6).unwrap();
        assert_eq!(row.local, "[::1]:80".parse().unwrap());
        assert_eq!(row.remote, "[::1]:54321".parse().unwrap());
    }

    #[test]
    fn refuses_damaged_rows() {
        assert_eq!(parse_row(b"   1: 0100007F:A1B2"), None);
        assert_eq!(
            parse_row(b"   1: 0100007F:A1B2 0100007F:XYZ 01 0 0 0 0 0 1"),
            None
        );
        assert_eq!(
            parse_endpoint("0100007F:00"),
            Some("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(parse_endpoint("0100007F0:0016"), None);
        // A row whose ends are of different families is damaged.
        assert_eq!(
            parse_row(b"   1: 0100007F:0016 00000000000000000000000001000000:0050 01 0 0 0 0 0 1"),
            None
        );
        // The fields after the state are optional here; callers that need them say so.
        let short = parse_row(b"   0: 0100007F:0016 00000000:0000 0A x").unwrap();
        assert_eq!(
            (short.state, short.uid, short.inode),
            (TCP_LISTEN, None, None)
        );
    }

    #[test]
    fn rows_skip_the_header_and_report_bad_lines() {
        let table = b"  sl  local_address rem_address   st\n   0: 0100007F:0016 00000000:0000 0A 0 0 0 0 0 9\n\n   1: bad\n";
        let rows: Vec<_> = rows(table).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].unwrap().inode, Some(9));
        assert_eq!(rows[1], Err(&b"   1: bad"[..]));
    }

    /// Every row of this machine's TCP tables, read here and by the
    /// `procfs` crate. Sockets come and go between the two reads: only rows
    /// both saw (by inode) are compared, and there are some (our own).
    #[test]
    fn agrees_with_the_procfs_crate() {
        let _listeners = [
            std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            std::net::TcpListener::bind("[::1]:0").unwrap(),
        ];
        for (path, from_crate) in [
            ("/proc/net/tcp", procfs::net::tcp().unwrap()),
            ("/proc/net/tcp6", procfs::net::tcp6().unwrap()),
        ] {
            let table = std::fs::read(path).unwrap();
            let ours: Vec<SocketRow> = rows(&table).map(Result::unwrap).collect();
            let mut compared = 0;
            // TIME_WAIT rows all have inode 0.
            for theirs in from_crate.iter().filter(|t| t.inode != 0) {
                let Some(row) = ours.iter().find(|r| r.inode == Some(theirs.inode)) else {
                    continue;
                };
                assert_eq!(row.local, theirs.local_address, "{path}");
                assert_eq!(row.remote, theirs.remote_address, "{path}");
                assert_eq!(row.state, theirs.state.to_u8(), "{path}");
                assert_eq!(row.uid, Some(theirs.uid), "{path}");
                compared += 1;
            }
            assert!(compared > 0, "{path}: no row read both ways");
        }
    }
}
