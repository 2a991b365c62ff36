//! Pass 1: every file read once for what pass 2 must know before its first
//! line: each file's New Years ([`YearScan`]), which endpoints are services
//! ([`EndpointStats`], the rule the syslog listener shares) and this host's
//! loopback lines ([`LoopbackLines`], for tcpspy's `::` pairs).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use connscope_event::{normalize_endpoints, EventKind};
use connscope_tcpspy_log::{EndpointStats, LogTime, Message, Parser};
use indicatif::ProgressBar;

use crate::source::{for_each_line, Line};
use crate::unspecified::LoopbackLines;
use crate::year::YearScan;

/// A file to import, and what pass 1 learned about it.
pub(crate) struct FileInfo {
    pub(crate) path: PathBuf,
    pub(crate) mtime: SystemTime,
    pub(crate) size: u64,
    /// Its New Years, filled in by [`first_pass`].
    pub(crate) years: YearScan,
}

/// Reads every file once for what pass 2 needs to know beforehand: each
/// file's New Years (into `files`), the endpoints of all connect lines and
/// the loopback lines (for tcpspy's `::` pairs, [`unspecified`](crate::unspecified)).
/// Files are independent here, so each core takes the next file.
pub(crate) fn first_pass(
    files: &mut [FileInfo],
    bytes_read: &Arc<AtomicU64>,
    bar: &ProgressBar,
) -> (EndpointStats, LoopbackLines) {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, files.len().max(1));
    let next = AtomicUsize::new(0);
    let files_ref: &[FileInfo] = files;
    type Learned = (EndpointStats, LoopbackLines, Vec<(usize, YearScan)>);
    let results: Vec<Learned> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut parser = Parser::default();
                    let mut stats = EndpointStats::default();
                    let mut loopback = LoopbackLines::default();
                    let mut years = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files_ref.get(index) else {
                            break;
                        };
                        let mut scan = YearScan::default();
                        let _ = for_each_line(&file.path, bytes_read, bar, |_, line| {
                            // Over-long lines are reported in pass 2.
                            let Line::Whole(line) = line else {
                                return;
                            };
                            if let Ok(Some(rec)) = parser.parse_syslog_line(line) {
                                if let LogTime::Classic(t) = rec.time {
                                    scan.observe(t);
                                }
                                if let Message::Connection(c) = &rec.message {
                                    loopback.observe(rec.host, c);
                                    if c.kind == EventKind::Connect {
                                        // The addresses pass 2's events carry.
                                        let (local, remote) =
                                            normalize_endpoints(c.local.addr, c.remote.addr);
                                        stats.observe_connect(local, remote);
                                    }
                                }
                            }
                        });
                        years.push((index, scan));
                    }
                    (stats, loopback, years)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a first-pass worker does not panic"))
            .collect()
    });
    let mut all = EndpointStats::default();
    let mut all_loopback = LoopbackLines::default();
    for (stats, loopback, years) in results {
        all.merge(stats);
        all_loopback.merge(loopback);
        for (index, scan) in years {
            files[index].years = scan;
        }
    }
    (all, all_loopback)
}
