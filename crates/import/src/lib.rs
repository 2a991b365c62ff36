//! Importing existing tcpspy syslog files into the store.
//!
//! Files as found on real machines: plain, rotated (`syslog.1`), gzipped
//! (`syslog.2.gz`, detected by content), classic timestamps without year or
//! zone, or rsyslog's RFC 3339 ones, mixed with every other program's lines.
//! See `docs/IMPORT.md` for the rules in full; in short:
//!
//! - **Two passes.** The first pass reads every file to learn what cannot be
//!   known line by line: how many New Years each file spans ([`year`]) and
//!   which endpoints are services ([`direction`]). The second parses again,
//!   builds events and stores them. Files are taken oldest first (by mtime) so
//!   connects come before their disconnects.
//! - **Identity.** Events go to agent `import:HOST` (HOST from the line), each
//!   keyed by a hash of its raw line plus how many identical lines came before
//!   it in the same second of the same file. The key depends on content only,
//!   not on the file's name, compression or the time zone, so importing a
//!   file again — renamed, rotated, gzipped, or as part of a longer file —
//!   adds nothing.
//! - **Errors.** Lines of other programs are skipped quietly; an unreadable
//!   tcpspy line is reported with file, line and column and the import goes
//!   on. Nothing is dropped silently: the summary counts every line.
//! - **Speed.** Parsing runs on the calling thread and storing on another,
//!   in large batches (one transaction each), so the two overlap.

mod direction;
mod source;
mod year;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::SystemTime;

use connscope_event::{EventKind, ProcessInfo, Timestamp};
use connscope_store::{AgentId, EventKey, IngestReport, KeyedEvent, Store, StoreError};
use connscope_tcpspy_log::{ClassicTime, LogTime, Message, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::tz::TimeZone;

pub use direction::EndpointStats;
pub use year::{YearScan, YearWalk};

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The zone classic timestamps are in (they carry none).
    pub time_zone: TimeZone,
    /// Show a progress bar on standard error.
    pub progress: bool,
    /// Events per store transaction.
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            time_zone: TimeZone::system(),
            progress: false,
            batch_size: 50_000,
        }
    }
}

/// What an import did. Every line read is counted in exactly one of
/// `events_read`, `skipped` and `errors`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub files: usize,
    pub lines: u64,
    /// tcpspy connect/disconnect lines read.
    pub events_read: u64,
    /// Of those, newly stored.
    pub imported: u64,
    /// Of those, already in the store (imported before).
    pub duplicates: u64,
    /// Other programs' lines, tcpspy status lines, blank lines.
    pub skipped: u64,
    /// Unreadable tcpspy lines, and files that could not be (fully) read.
    pub errors: u64,
    /// Disconnects matched with their connect (they carry a duration).
    pub joined: u64,
}

/// A line (or file) that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub path: PathBuf,
    /// 1-based; 0 when the whole file is concerned.
    pub line: u64,
    /// 1-based byte column; 0 when not known.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if self.column > 0 {
            write!(f, ":{}", self.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct FileInfo {
    path: PathBuf,
    mtime: SystemTime,
    size: u64,
    years: YearScan,
}

/// Imports `paths` into `store`, calling `on_error` for every line or file
/// that could not be read (the import goes on). Fails only when the store does.
pub fn import_files(
    store: &dyn Store,
    paths: &[PathBuf],
    options: &ImportOptions,
    on_error: &mut dyn FnMut(&LineError),
) -> Result<ImportSummary, ImportError> {
    let mut summary = ImportSummary::default();
    let mut files = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) => files.push(FileInfo {
                path: path.clone(),
                mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                size: meta.len(),
                years: YearScan::default(),
            }),
            Err(e) => {
                summary.errors += 1;
                on_error(&file_error(path, 0, &e));
            }
        }
    }
    // Oldest first: syslog.2.gz, syslog.1, syslog.
    files.sort_by_key(|f| f.mtime);
    summary.files = files.len();

    let bytes_read = Arc::new(AtomicU64::new(0));
    let bar = progress_bar(
        options.progress,
        2 * files.iter().map(|f| f.size).sum::<u64>(),
    );
    let mut parser = Parser::default();

    // Pass 1: years and services. Errors are reported in pass 2 only.
    let mut stats = EndpointStats::default();
    for file in &mut files {
        let _ = for_each_line(&file.path, &bytes_read, &bar, |_, line| {
            if let Ok(Some(rec)) = parser.parse_syslog_line(line) {
                if let LogTime::Classic(t) = rec.time {
                    file.years.observe(t);
                }
                if let Message::Connection(c) = &rec.message {
                    if c.kind == EventKind::Connect {
                        stats.observe_connect(c.local.addr, c.remote.addr);
                    }
                }
            }
        });
    }

    // Pass 2: events, stored on another thread.
    let stored = std::thread::scope(|scope| -> Result<IngestReport, StoreError> {
        let (sender, receiver) = sync_channel::<(AgentId, Vec<KeyedEvent>)>(4);
        let storer = scope.spawn(move || {
            let mut total = IngestReport::default();
            for (agent, batch) in receiver {
                let r = store.ingest_keyed(&agent, &batch)?;
                total.stored += r.stored;
                total.duplicates += r.duplicates;
            }
            Ok(total)
        });
        let mut builder = EventBuilder {
            time_zone: options.time_zone.clone(),
            hour_cache: None,
            open: HashMap::new(),
            batches: HashMap::new(),
            batch_size: options.batch_size.max(1),
        };
        let mut store_gone = false;
        'files: for file in &files {
            let mtime =
                jiff::Timestamp::try_from(file.mtime).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let date = options.time_zone.to_datetime(mtime).date();
            let mut years = file
                .years
                .first_year((date.year(), date.month(), date.day()));
            let mut occurrences = Occurrences::default();
            let result = for_each_line(&file.path, &bytes_read, &bar, |number, line| {
                summary.lines += 1;
                if store_gone {
                    return;
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    summary.skipped += 1;
                    return;
                }
                let rec = match parser.parse_syslog_line(line) {
                    Ok(Some(rec)) => rec,
                    Ok(None) => {
                        summary.skipped += 1;
                        return;
                    }
                    Err(e) => {
                        summary.errors += 1;
                        on_error(&LineError {
                            path: file.path.clone(),
                            line: number,
                            column: e.column,
                            message: format!("{}: {}: {:?}", e.field, e.problem, e.line),
                        });
                        return;
                    }
                };
                let year = match rec.time {
                    LogTime::Classic(t) => Some(years.year_of(t)),
                    LogTime::Rfc3339(_) => None,
                };
                let Message::Connection(connection) = &rec.message else {
                    summary.skipped += 1;
                    return;
                };
                let timestamp = match (rec.time, year) {
                    (LogTime::Rfc3339(ts), _) => ts,
                    (LogTime::Classic(t), Some(year)) => match builder.classic_timestamp(year, t) {
                        Ok(ts) => ts,
                        Err(reason) => {
                            summary.errors += 1;
                            on_error(&LineError {
                                path: file.path.clone(),
                                line: number,
                                column: 1,
                                message: format!("timestamp: {t} in {year}: {reason}"),
                            });
                            return;
                        }
                    },
                    (LogTime::Classic(_), None) => unreachable!("classic times get a year above"),
                };
                summary.events_read += 1;
                let key = occurrences.key_of(rec.time, line);
                let mut event = connection.to_event(timestamp, rec.host);
                event.direction = stats.direction(event.local, event.remote);
                if builder.join(&mut event) {
                    summary.joined += 1;
                }
                if let Some(full) = builder.push(KeyedEvent { key, event }) {
                    if sender.send(full).is_err() {
                        store_gone = true;
                    }
                }
            });
            if let Err((line, e)) = result {
                summary.errors += 1;
                on_error(&file_error(&file.path, line, &e));
            }
            if store_gone {
                break 'files;
            }
        }
        for (_, full) in builder.batches.drain() {
            if sender.send(full).is_err() {
                break;
            }
        }
        drop(sender);
        storer.join().expect("the storing thread does not panic")
    })?;
    bar.finish_and_clear();
    summary.imported = stored.stored;
    summary.duplicates = stored.duplicates;
    Ok(summary)
}

fn file_error(path: &Path, line: u64, e: &std::io::Error) -> LineError {
    LineError {
        path: path.to_owned(),
        line,
        column: 0,
        message: format!("cannot read: {e}"),
    }
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message("importing");
    bar
}

/// Calls `each(line_number, line)` for every line of the file; on a read
/// error returns the number of the line it happened at.
fn for_each_line(
    path: &Path,
    bytes_read: &Arc<AtomicU64>,
    bar: &ProgressBar,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<(), (u64, std::io::Error)> {
    let mut reader = source::open_lines(path, bytes_read.clone()).map_err(|e| (0, e))?;
    let mut buf = Vec::with_capacity(512);
    let mut number = 0u64;
    loop {
        match source::next_line(&mut *reader, &mut buf) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err((number + 1, e)),
        }
        number += 1;
        each(number, &buf);
        if number % 65_536 == 0 {
            bar.set_position(bytes_read.load(Ordering::Relaxed));
        }
    }
}

/// Counts identical lines within one second of one file, so a line logged
/// twice in the same second (the same connection made twice) gets two keys,
/// while the same line read again later gets the same key.
#[derive(Default)]
struct Occurrences {
    time: Option<LogTime>,
    seen: HashMap<u64, u32>,
}

impl Occurrences {
    fn key_of(&mut self, time: LogTime, line: &[u8]) -> EventKey {
        if self.time != Some(time) {
            self.time = Some(time);
            self.seen.clear();
        }
        let n = self.seen.entry(EventKey::of_bytes(&[line]).0).or_default();
        let key = EventKey::of_bytes(&[line, &n.to_le_bytes()]);
        *n += 1;
        key
    }
}

struct EventBuilder {
    time_zone: TimeZone,
    /// The last (year, month, day, hour) converted and its start: lines come
    /// in time order, so most lines reuse it.
    hour_cache: Option<((i16, u8, u8, u8), i64)>,
    /// Connects waiting for their disconnect: (host, local, remote) -> time
    /// and process (tcpspy often logs `proc (unknown)` on disconnect, the
    /// process being gone).
    open: HashMap<(String, SocketAddr, SocketAddr), (Timestamp, Option<ProcessInfo>)>,
    batches: HashMap<String, (AgentId, Vec<KeyedEvent>)>,
    batch_size: usize,
}

impl EventBuilder {
    fn classic_timestamp(&mut self, year: i16, t: ClassicTime) -> Result<Timestamp, String> {
        let hour_key = (year, t.month, t.day, t.hour);
        let start = match self.hour_cache {
            Some((key, start)) if key == hour_key => start,
            _ => {
                let start = jiff::civil::DateTime::new(
                    year,
                    t.month as i8,
                    t.day as i8,
                    t.hour as i8,
                    0,
                    0,
                    0,
                )
                .and_then(|dt| dt.to_zoned_datetime(self.time_zone.clone()))
                .map_err(|e| e.to_string())?
                .timestamp()
                .as_nanosecond() as i64;
                self.hour_cache = Some((hour_key, start));
                start
            }
        };
        // A leap second (:60) is read as :59.
        let seconds = i64::from(t.minute) * 60 + i64::from(t.second.min(59));
        Ok(Timestamp::from_nanos(start + seconds * 1_000_000_000))
    }

    /// Remembers connects and gives disconnects their duration (and their
    /// connect's process when they name none); true when a disconnect found
    /// its connect.
    fn join(&mut self, event: &mut connscope_event::ConnectionEvent) -> bool {
        let key = (event.host.clone(), event.local, event.remote);
        match event.kind {
            EventKind::Connect => {
                self.open
                    .insert(key, (event.timestamp, event.process.clone()));
                false
            }
            EventKind::Disconnect => match self.open.remove(&key) {
                Some((opened, process)) => {
                    if let Some(close) = &mut event.close {
                        close.duration_ns = event.timestamp.nanos_since(opened);
                    }
                    if event.process.is_none() {
                        event.process = process;
                    }
                    true
                }
                None => false,
            },
            EventKind::ConnectFailed => false,
        }
    }

    /// Adds an event to its host's batch; returns the batch when it is full.
    fn push(&mut self, keyed: KeyedEvent) -> Option<(AgentId, Vec<KeyedEvent>)> {
        let batch_size = self.batch_size;
        let (_, batch) = self
            .batches
            .entry(keyed.event.host.clone())
            .or_insert_with(|| {
                (
                    AgentId(format!("import:{}", keyed.event.host)),
                    Vec::with_capacity(batch_size),
                )
            });
        batch.push(keyed);
        if batch.len() >= batch_size {
            let host = batch[0].event.host.clone();
            return self.batches.remove(&host);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_lines_in_one_second_get_distinct_keys_that_repeat() {
        let t = LogTime::Rfc3339(Timestamp::from_nanos(1));
        let mut first = Occurrences::default();
        let a = first.key_of(t, b"same");
        let b = first.key_of(t, b"same");
        assert_ne!(a, b);
        let mut again = Occurrences::default();
        assert_eq!(again.key_of(t, b"same"), a);
        assert_eq!(again.key_of(t, b"same"), b);
    }

    #[test]
    fn classic_times_use_the_zone() {
        let mut b = EventBuilder {
            time_zone: TimeZone::get("Europe/Berlin").unwrap(),
            hour_cache: None,
            open: HashMap::new(),
            batches: HashMap::new(),
            batch_size: 10,
        };
        let t = ClassicTime {
            month: 11,
            day: 24,
            hour: 20,
            minute: 10,
            second: 19,
        };
        assert_eq!(
            b.classic_timestamp(2026, t).unwrap().to_string(),
            "2026-11-24T19:10:19.000000000Z"
        );
        let feb29 = ClassicTime {
            month: 2,
            day: 29,
            hour: 0,
            minute: 0,
            second: 0,
        };
        assert!(b.classic_timestamp(2026, feb29).is_err());
        assert!(b.classic_timestamp(2028, feb29).is_ok());
    }
}
