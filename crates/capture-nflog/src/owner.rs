//! The socket and process behind a logged packet.
//!
//! A packet carries no pid. What the kernel still has is the socket: the
//! connecting socket of an outgoing SYN exists (`SYN_SENT`) until `connect`
//! gives up, whether the SYN was let through or dropped; an incoming SYN was
//! meant for a listener, which exists whether or not the SYN reached it. The
//! socket's row in the namespace's `/proc/net` tables gives its uid and
//! inode, the shared walk of `/proc/*/fd` (`connscope_capture::sockets`) the
//! process holding it, so a hit names the same process a connection event
//! would.
//!
//! Tables are read through `/proc/thread-self/net`, which shows the tables of
//! the network namespace the reading thread is in: the capture thread has
//! entered the namespace it watches.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use connscope_capture::proc_net::{rows, SocketRow, TCP_LISTEN};
use connscope_capture::process::ProcessCache;
use connscope_capture::sockets::{socket_owners, SocketOwners};
use connscope_event::{normalize_endpoints, ProcessInfo, Protocol};

/// Who is behind a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: Option<u32>,
    /// `None` when no process holds the socket any more (or /proc hides it).
    pub process: Option<Arc<ProcessInfo>>,
}

/// Socket tables and socket holders, re-read as attempts need them.
pub struct Owners {
    proc_net: PathBuf,
    owners: SocketOwners,
    processes: ProcessCache,
    walked_this_batch: bool,
    walks: u64,
}

impl Owners {
    /// Reads the tables of the calling thread's network namespace.
    pub fn new() -> Owners {
        Owners {
            proc_net: PathBuf::from("/proc/thread-self/net"),
            owners: SocketOwners::new(),
            processes: ProcessCache::new(1024, false),
            walked_this_batch: false,
            walks: 0,
        }
    }

    /// Starts a batch of lookups (one datagram's packets): the walk of
    /// `/proc/*/fd` is repeated at most once per batch, so a burst of new
    /// sockets costs one walk.
    pub fn begin_batch(&mut self) {
        self.walked_this_batch = false;
    }

    /// Walks of `/proc/*/fd` so far.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// The owner of the socket at this host's end `local` of a packet
    /// exchanged with `remote`; `None` when the namespace has no such socket.
    pub fn find(
        &mut self,
        protocol: Protocol,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<Owner> {
        let tables: &[&str] = match protocol {
            Protocol::Tcp => &["tcp", "tcp6"],
            Protocol::Udp => &["udp", "udp6"],
        };
        let mut table_rows = Vec::new();
        for table in tables {
            let Ok(text) = fs::read(self.proc_net.join(table)) else {
                continue; // no IPv6 in this kernel
            };
            table_rows.extend(rows(&text).flatten());
        }
        let row = matching_socket(&table_rows, protocol, local, remote)?;
        let inode = row.inode?;
        if !self.owners.contains_key(&inode) && !self.walked_this_batch {
            self.walked_this_batch = true;
            self.walks += 1;
            self.owners = socket_owners(|| Ok::<_, std::convert::Infallible>(()))
                .unwrap_or_else(|never| match never {});
        }
        let process = self
            .owners
            .get(&inode)
            .and_then(|&pid| self.processes.get(pid));
        Some(Owner {
            uid: row.uid,
            process,
        })
    }
}

impl Default for Owners {
    fn default() -> Self {
        Owners::new()
    }
}

/// The socket a packet between `local` and `remote` belongs to: the
/// connected socket of exactly these ends, else the listener (TCP) or the
/// bound, unconnected socket (UDP) at `local`. Rows without an inode
/// (`TIME_WAIT`, a request socket) belong to no process and are skipped.
pub fn matching_socket(
    table: &[SocketRow],
    protocol: Protocol,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<SocketRow> {
    let live = || {
        table
            .iter()
            .filter(|row| row.inode.is_some_and(|inode| inode != 0))
    };
    if let Some(row) =
        live().find(|row| normalize_endpoints(row.local, row.remote) == (local, remote))
    {
        return Some(*row);
    }
    live()
        .find(|row| {
            let waiting = match protocol {
                Protocol::Tcp => row.state == TCP_LISTEN,
                Protocol::Udp => row.remote.port() == 0 && row.remote.ip().is_unspecified(),
            };
            waiting && row.local.port() == local.port() && serves(row.local.ip(), local.ip())
        })
        .copied()
}

/// A socket bound to `bound` receives packets for `to`: the same address, or
/// a wildcard (an IPv6 wildcard also takes IPv4 unless `IPV6_V6ONLY`, which
/// the tables do not show).
fn serves(bound: IpAddr, to: IpAddr) -> bool {
    let bound = match bound {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(bound),
        v4 => v4,
    };
    bound == to
        || match bound {
            IpAddr::V4(v4) => v4.is_unspecified() && to.is_ipv4(),
            IpAddr::V6(v6) => v6.is_unspecified(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_capture::proc_net::parse_row;

    fn row(line: &str) -> SocketRow {
        parse_row(line.as_bytes()).unwrap()
    }

    // 10.0.0.2:40000 -> 10.0.0.1:5432 connecting (02 = SYN_SENT); a
    // listener on *:22 in tcp and [::]:80 in tcp6; a TIME_WAIT without inode.
    fn table() -> Vec<SocketRow> {
        vec![
            row("0: 0200000A:9C40 0100000A:1538 02 0:0 0:0 0 1000 0 111 1"),
            row("1: 00000000:0016 00000000:0000 0A 0:0 0:0 0 0 0 222 1"),
            row("2: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0:0 0:0 0 33 0 333 1"),
            row("3: 0200000A:9C41 0100000A:1538 06 0:0 0:0 0 0 0 0 1"),
        ]
    }

    fn inode(local: &str, remote: &str) -> Option<u64> {
        matching_socket(
            &table(),
            Protocol::Tcp,
            local.parse().unwrap(),
            remote.parse().unwrap(),
        )
        .and_then(|row| row.inode)
    }

    #[test]
    fn the_connecting_socket_or_the_listener_is_found() {
        assert_eq!(inode("10.0.0.2:40000", "10.0.0.1:5432"), Some(111));
        assert_eq!(inode("10.0.0.2:22", "10.0.0.9:50000"), Some(222));
        assert_eq!(
            inode("10.0.0.2:80", "10.0.0.9:50000"),
            Some(333),
            "dual-stack listener"
        );
        assert_eq!(inode("[fd00::2]:80", "[fd00::9]:50000"), Some(333));
        assert_eq!(
            inode("10.0.0.2:40001", "10.0.0.1:5432"),
            None,
            "TIME_WAIT has no owner"
        );
        assert_eq!(inode("10.0.0.2:23", "10.0.0.9:50000"), None);
    }

    #[test]
    fn a_udp_packet_belongs_to_the_bound_socket() {
        let table = [row("0: 00000000:0035 00000000:0000 07 0:0 0:0 0 0 0 444 1")];
        let found = matching_socket(
            &table,
            Protocol::Udp,
            "10.0.0.2:53".parse().unwrap(),
            "10.0.0.9:4000".parse().unwrap(),
        );
        assert_eq!(found.and_then(|row| row.inode), Some(444));
        assert_eq!(
            matching_socket(
                &table,
                Protocol::Tcp,
                "10.0.0.2:53".parse().unwrap(),
                "10.0.0.9:4000".parse().unwrap()
            ),
            None
        );
    }

    #[test]
    fn finds_this_process_behind_its_own_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let mut owners = Owners::new();
        owners.begin_batch();
        let owner = owners
            .find(Protocol::Tcp, local, "127.0.0.1:1".parse().unwrap())
            .unwrap();
        assert_eq!(owner.process.unwrap().pid, std::process::id());
        // SAFETY: getuid has no preconditions.
        assert_eq!(owner.uid, Some(unsafe { libc::getuid() }));
    }
}
