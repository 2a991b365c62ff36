//! The `proc` backend: polling `/proc/net/tcp` and `/proc/net/tcp6`, as tcpspy
//! does.
//!
//! It needs nothing but a readable /proc, so it works where neither eBPF nor
//! sock_diag does (old kernels, locked-down containers). Like tcpspy it only
//! sees what is ESTABLISHED at the moment it looks: a connection shorter than
//! the interval may be missed, and a disconnect carries no byte counts.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use connscope_capture::proc_net::{self, TCP_ESTABLISHED, TCP_LISTEN};
use connscope_capture::{CaptureBackend, CaptureConfig, CaptureError, CaptureStats};
use connscope_event::ConnectionEvent;

use crate::tracker::{NamingGrace, Observed, Tracker};
use crate::{own_namespace_only, BACKEND_PROC};

/// Polls /proc/net/tcp{,6} every `poll_interval`.
pub struct ProcBackend {
    tracker: Tracker<(SocketAddr, SocketAddr)>,
    interval: Duration,
    next_poll: Instant,
    /// Lines of /proc/net/tcp* that could not be read; each is logged once.
    bad_lines: u64,
}

impl ProcBackend {
    /// Checks that /proc/net/tcp is readable and the namespace filter is one a
    /// poller can honour.
    pub fn open(config: &CaptureConfig) -> Result<ProcBackend, CaptureError> {
        let netns = own_namespace_only(BACKEND_PROC, config.netns)?;
        std::fs::read("/proc/net/tcp").map_err(|err| CaptureError::Unavailable {
            backend: BACKEND_PROC,
            reason: format!("cannot read /proc/net/tcp: {err}"),
        })?;
        Ok(ProcBackend {
            tracker: Tracker::new(netns, config.command_lines, NamingGrace::POLLERS),
            interval: config.poll_interval.max(Duration::from_millis(1)),
            next_poll: Instant::now(),
            bad_lines: 0,
        })
    }

    fn poll_once(&mut self, out: &mut Vec<ConnectionEvent>) -> Result<(), CaptureError> {
        let mut established = Vec::new();
        let mut listening = HashSet::new();
        for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
            let text = match std::fs::read(path) {
                Ok(text) => text,
                // tcp6 is absent when IPv6 is disabled.
                Err(err) if v6 && err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CaptureError::Io {
                        backend: BACKEND_PROC,
                        source,
                    })
                }
            };
            for line in text.split(|&b| b == b'\n').skip(1) {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match parse_line(line, v6) {
                    Some(row) if row.state == TCP_LISTEN => {
                        listening.insert(row.seen.local.port());
                    }
                    Some(row) if row.state == TCP_ESTABLISHED => {
                        established.push(((row.seen.local, row.seen.remote), row.seen));
                    }
                    Some(_) => {}
                    None => {
                        self.bad_lines += 1;
                        if self.bad_lines == 1 {
                            tracing::warn!(
                                path,
                                line = %String::from_utf8_lossy(line),
                                "cannot read a line of the socket table; skipping such lines"
                            );
                        }
                    }
                }
            }
        }
        self.tracker.set_listening_ports(listening);
        self.tracker.snapshot(established, out);
        Ok(())
    }
}

impl CaptureBackend for ProcBackend {
    fn name(&self) -> &'static str {
        BACKEND_PROC
    }

    fn poll(
        &mut self,
        out: &mut Vec<ConnectionEvent>,
        timeout: Duration,
    ) -> Result<(), CaptureError> {
        let now = Instant::now();
        if now < self.next_poll {
            std::thread::sleep((self.next_poll - now).min(timeout));
            if Instant::now() < self.next_poll {
                return Ok(());
            }
        }
        self.next_poll = Instant::now() + self.interval;
        self.poll_once(out)
    }

    fn stats(&self) -> CaptureStats {
        CaptureStats {
            events: self.tracker.events(),
            kernel_lost: 0,
            closes_inferred: 0,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Row {
    state: u8,
    seen: Observed,
}

/// One line of /proc/net/tcp{,6}, which must be of the table's family and
/// name the socket's owner and inode.
fn parse_line(line: &[u8], v6: bool) -> Option<Row> {
    let row = proc_net::parse_row(line)?;
    if row.local.is_ipv6() != v6 {
        return None;
    }
    Some(Row {
        state: row.state,
        seen: Observed {
            local: row.local,
            remote: row.remote,
            inode: row.inode?,
            uid: Some(row.uid?),
            bytes: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_lines() {
        let v4 = b"   1: 0100007F:A1B2 0100007F:0016 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 20 4 30 10 -1";
        let row = parse_line(v4, false).unwrap();
        assert_eq!(row.state, TCP_ESTABLISHED);
        assert_eq!(row.seen.local, "127.0.0.1:41394".parse().unwrap());
        assert_eq!(row.seen.remote, "127.0.0.1:22".parse().unwrap());
        assert_eq!((row.seen.uid, row.seen.inode), (Some(1000), 4242));

        let v6 = b"   0: 00000000000000000000000001000000:0050 00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 4 30 10 -1";
        let row = parse_line(v6, true).unwrap();
        assert_eq!(row.seen.local, "[::1]:80".parse().unwrap());
        assert_eq!(row.seen.remote, "[::1]:54321".parse().unwrap());
    }

    #[test]
    fn rejects_damaged_lines() {
        assert_eq!(parse_line(b"   1: 0100007F:A1B2", false), None);
        assert_eq!(
            parse_line(b"   1: 0100007F:A1B2 0100007F:XYZ 01 0 0 0 0 0 1", false),
            None
        );
        // An IPv4 row in the IPv6 table.
        assert_eq!(
            parse_line(
                b"   1: 0100007F:A1B2 0100007F:0016 01 0:0 0:0 0 1000 0 4242",
                true
            ),
            None
        );
    }
}
