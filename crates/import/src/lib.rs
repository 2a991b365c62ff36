//! Importing existing tcpspy syslog files into the store.
//!
//! Files as found on real machines: plain, rotated (`syslog.1`), gzipped
//! (`syslog.2.gz`, detected by content), classic timestamps without year or
//! zone, or rsyslog's RFC 3339 ones, mixed with every other program's lines.
//! See `docs/IMPORT.md` for the rules in full; in short:
//!
//! - **Two passes.** The first pass reads every file to learn what cannot be
//!   known line by line: how many New Years each file spans ([`year`]) and
//!   which endpoints are services ([`EndpointStats`], the rule the syslog
//!   listener shares). The second parses again, builds events and stores
//!   them. Files are taken oldest first (by mtime) so connects come before
//!   their disconnects.
//! - **Identity.** Events go to agent `import:HOST` (HOST from the line), each
//!   keyed by a hash of its raw line (and, for a repeat of the same line in
//!   the same second of the same file, its count), filed under the line's
//!   wall-clock hour. Neither depends on the file's name, compression or the
//!   time zone, so importing a file again — renamed, rotated, gzipped, or as
//!   part of a longer file — adds nothing.
//! - **Errors.** Lines of other programs are skipped quietly; an unreadable
//!   tcpspy line is reported with file, line and column and the import goes
//!   on. Nothing is dropped silently: the summary counts every line.
//! - **Speed.** Pass 1 spreads the files over the cores. Pass 2 is a
//!   pipeline: a thread reads and parses, the calling thread orders, keys and
//!   joins (and reports errors), a third stores batches, one transaction each.

mod source;
mod unspecified;
mod year;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::SystemTime;

use connscope_event::{normalize_endpoints, ConnectionEvent, EventKind, ProcessInfo, Timestamp};
use connscope_store::{AgentId, EventKey, IngestReport, KeyedEvent, Store, StoreError};
use connscope_tcpspy_log::{ClassicTime, EndpointStats, LogTime, Message, Parser, Quote};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::tz::TimeZone;

pub use source::MAX_LINE;
pub use unspecified::LoopbackLines;

use source::Line;
pub use year::{YearScan, YearWalk};

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The zone classic timestamps are in (they carry none); `None`: this
    /// machine's zone, with a warning for each file whose last line and
    /// modification time disagree (a sign the file comes from another zone).
    pub time_zone: Option<TimeZone>,
    /// Show a progress bar on standard error.
    pub progress: bool,
    /// The most events per store transaction (one host's); at most about
    /// twice this many wait in memory.
    pub batch_size: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            time_zone: None,
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
    // Pass 1: years and services, files spread over the cores. Errors are
    // reported in pass 2 only.
    let (stats, loopback) = first_pass(&mut files, &bytes_read, &bar);

    // Pass 2, as a pipeline of three threads: one reads and parses, this one
    // puts lines in order with their time, key and connect (and reports
    // errors as they come), the last stores batches.
    let stored = std::thread::scope(|scope| -> Result<IngestReport, StoreError> {
        let (sender, receiver) = sync_channel::<(AgentId, Vec<KeyedEvent>)>(4);
        // Emptied batches go back for reuse: fresh multi-megabyte vectors
        // cost page faults on every batch.
        let (spare_sender, spares) = sync_channel::<Vec<KeyedEvent>>(8);
        let storer = scope.spawn(move || {
            let mut total = IngestReport::default();
            for (agent, mut batch) in receiver {
                let r = store.ingest_keyed(&agent, &batch)?;
                total.stored += r.stored;
                total.duplicates += r.duplicates;
                batch.clear();
                let _ = spare_sender.try_send(batch);
            }
            Ok(total)
        });
        let (parsed_sender, parsed) = sync_channel::<Read>(4);
        // Emptied chunks go back to the reader, for the same reason.
        let (spare_chunk_sender, spare_chunks) = sync_channel::<Vec<ParsedLine>>(8);
        let files = &files;
        let (stats, loopback, bytes_read, bar) = (&stats, &loopback, &bytes_read, &bar);
        scope.spawn(move || {
            let learned = (stats, loopback);
            read_and_parse(
                files,
                learned,
                bytes_read,
                bar,
                &parsed_sender,
                &spare_chunks,
            )
        });
        {
            let time_zone = options.time_zone.clone().unwrap_or_else(TimeZone::system);
            let mut builder = EventBuilder::new(time_zone.clone());
            let mut batcher = Batcher::new(options.batch_size, spares);
            let mut parsed = parsed.into_iter();
            'files: for file in files {
                let mtime =
                    jiff::Timestamp::try_from(file.mtime).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                let date = time_zone.to_datetime(mtime).date();
                if options.time_zone.is_none() {
                    warn_if_mtime_disagrees(file, date, mtime, &time_zone);
                }
                let mut years = file.years.first_year(date);
                let mut occurrences = Occurrences::default();
                for read in parsed.by_ref() {
                    let mut lines = match read {
                        Read::Lines(lines) => lines,
                        Read::End(Ok(())) => continue 'files,
                        Read::End(Err((line, e))) => {
                            summary.errors += 1;
                            on_error(&file_error(&file.path, line, &e));
                            continue 'files;
                        }
                    };
                    for line in lines.drain(..) {
                        summary.lines += 1;
                        let (number, time, first_key, mut event) = match line {
                            ParsedLine::Skipped => {
                                summary.skipped += 1;
                                continue;
                            }
                            ParsedLine::Other(time) => {
                                if let LogTime::Classic(t) = time {
                                    years.year_of(t);
                                }
                                summary.skipped += 1;
                                continue;
                            }
                            ParsedLine::Garbled {
                                number,
                                column,
                                message,
                            } => {
                                summary.errors += 1;
                                on_error(&LineError {
                                    path: file.path.clone(),
                                    line: number,
                                    column,
                                    message,
                                });
                                continue;
                            }
                            ParsedLine::Connection {
                                number,
                                time,
                                first_key,
                                event,
                            } => (number, time, first_key, event),
                        };
                        // The key is filed under a time that does not depend
                        // on --tz: a classic line's wall-clock time.
                        let (timestamp, key_time) = match time {
                            LogTime::Rfc3339(ts) => (ts, ts),
                            LogTime::Classic(t) => {
                                let year = years.year_of(t);
                                match builder.classic_timestamp(year, t) {
                                    Ok(times) => times,
                                    Err(reason) => {
                                        summary.errors += 1;
                                        on_error(&LineError {
                                            path: file.path.clone(),
                                            line: number,
                                            column: 1,
                                            message: format!("timestamp: {t} in {year}: {reason}"),
                                        });
                                        continue;
                                    }
                                }
                            }
                        };
                        summary.events_read += 1;
                        event.timestamp = timestamp;
                        if builder.join(&mut event) {
                            summary.joined += 1;
                        }
                        let keyed = KeyedEvent {
                            key: occurrences.key_of(time, first_key),
                            key_time,
                            event,
                        };
                        // A failed send means the storer failed: its error
                        // ends the import, and dropping `parsed` stops the reader.
                        if let Some(full) = batcher.push(keyed) {
                            if sender.send(full).is_err() {
                                break 'files;
                            }
                        }
                    }
                    let _ = spare_chunk_sender.try_send(lines);
                }
            }
            for full in batcher.drain() {
                if sender.send(full).is_err() {
                    break;
                }
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

/// What the reading thread sends in pass 2: a file's lines, a chunk at a
/// time, then the end of the file (with the error that cut it short, if any).
enum Read {
    Lines(Vec<ParsedLine>),
    End(Result<(), (u64, std::io::Error)>),
}

/// A line of pass 2, parsed as far as it can be without the lines before it.
// Nearly every line is a connection: boxing it would add an allocation per
// line to save space on the rare others.
#[allow(clippy::large_enum_variant)]
enum ParsedLine {
    /// Blank, or another program's line.
    Skipped,
    /// A tcpspy line that is no connection (a status line): its time still
    /// counts for the year.
    Other(LogTime),
    Garbled {
        number: u64,
        column: usize,
        message: String,
    },
    /// A connection, with its direction; its timestamp is set once the year
    /// is known.
    Connection {
        number: u64,
        time: LogTime,
        /// The hash of the line ([`Occurrences`] makes the key).
        first_key: EventKey,
        event: ConnectionEvent,
    },
}

/// Lines per [`Read::Lines`]: large enough that the channel costs nothing
/// per line, small enough that the threads overlap.
const CHUNK_LINES: usize = 4_096;

/// Pass 2's first stage: reads and parses every file in order, into chunks
/// taken from `spares` when the next stage has given some back. Stops early
/// when the next stage is gone.
fn read_and_parse(
    files: &[FileInfo],
    learned: (&EndpointStats, &LoopbackLines),
    bytes_read: &Arc<AtomicU64>,
    bar: &ProgressBar,
    out: &SyncSender<Read>,
    spares: &Receiver<Vec<ParsedLine>>,
) {
    let mut parser = Parser::default();
    let new_chunk = || {
        spares
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_LINES))
    };
    for file in files {
        let mut chunk = new_chunk();
        let mut gone = false;
        let result = for_each_line(&file.path, bytes_read, bar, |number, line| {
            if gone {
                return;
            }
            chunk.push(parse_line(&mut parser, learned, number, line));
            if chunk.len() == CHUNK_LINES {
                let full = std::mem::replace(&mut chunk, new_chunk());
                gone = out.send(Read::Lines(full)).is_err();
            }
        });
        if gone || out.send(Read::Lines(chunk)).is_err() || out.send(Read::End(result)).is_err() {
            return;
        }
    }
}

fn parse_line(
    parser: &mut Parser<'_>,
    (stats, loopback): (&EndpointStats, &LoopbackLines),
    number: u64,
    line: Line<'_>,
) -> ParsedLine {
    let line = match line {
        Line::Whole(line) => line,
        Line::TooLong { start, length } => {
            let mut quote = Quote::around(start, 0);
            quote.total = usize::try_from(length).unwrap_or(usize::MAX);
            return ParsedLine::Garbled {
                number,
                column: MAX_LINE + 1,
                message: format!(
                    "line of {length} bytes, longer than the {MAX_LINE}-byte limit: skipped: {quote}"
                ),
            };
        }
    };
    if line.iter().all(u8::is_ascii_whitespace) {
        return ParsedLine::Skipped;
    }
    let rec = match parser.parse_syslog_line(line) {
        Ok(Some(rec)) => rec,
        Ok(None) => return ParsedLine::Skipped,
        Err(e) => {
            return ParsedLine::Garbled {
                number,
                column: e.column,
                message: format!("{}: {}: {}", e.field, e.problem, e.line),
            }
        }
    };
    let Message::Connection(connection) = &rec.message else {
        return ParsedLine::Other(rec.time);
    };
    let mut event = connection.to_event(Timestamp::from_nanos(0), rec.host);
    // The first pass counted a `::`/`::` line as `::1` (to_event's reading).
    event.direction = stats.direction(event.local, event.remote);
    if let Some((local, remote)) = loopback.resolve(rec.host, connection) {
        (event.local, event.remote) = (local, remote);
    }
    ParsedLine::Connection {
        number,
        time: rec.time,
        first_key: EventKey::of_bytes(&[line]),
        event,
    }
}

/// Reads every file once for what pass 2 needs to know beforehand: each
/// file's New Years (into `files`), the endpoints of all connect lines and
/// the loopback lines (for tcpspy's `::` pairs, [`unspecified`]).
/// Files are independent here, so each core takes the next file.
fn first_pass(
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

/// How far a file's last line may be from its mtime before the zone is
/// suspect: syslog writes lag a little, while zones differ by at least 15
/// minutes.
const MTIME_TOLERANCE: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

/// Warns when the last classic line, read in this machine's zone, is not
/// when the file was last written: the file likely comes from a machine in
/// another zone (and needs `--tz`), or was copied without its mtime.
fn warn_if_mtime_disagrees(
    file: &FileInfo,
    mtime_date: jiff::civil::Date,
    mtime: jiff::Timestamp,
    zone: &TimeZone,
) {
    let Some((year, t)) = file.years.last_line(mtime_date) else {
        return;
    };
    let Ok(last) = jiff::civil::DateTime::new(
        year,
        t.month as i8,
        t.day as i8,
        t.hour as i8,
        t.minute as i8,
        t.second.min(59) as i8,
        0,
    )
    .and_then(|civil| civil.to_zoned_datetime(zone.clone())) else {
        return;
    };
    let apart = last.timestamp().duration_since(mtime);
    if apart.abs() > MTIME_TOLERANCE {
        let side = if apart.is_negative() {
            "before"
        } else {
            "after"
        };
        tracing::warn!(
            file = %file.path.display(),
            "the last line ({t}) is {:#} {side} the file's modification time, read in this machine's zone: if the log comes from a machine in another time zone, give --tz; if it was copied without keeping its mtime, its years may be wrong",
            apart.abs()
        );
    }
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
    mut each: impl FnMut(u64, Line<'_>),
) -> Result<(), (u64, std::io::Error)> {
    let mut reader = source::open_lines(path, bytes_read.clone()).map_err(|e| (0, e))?;
    let mut buf = Vec::with_capacity(512);
    let mut number = 0u64;
    loop {
        let line = match source::next_line(&mut *reader, &mut buf) {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(()),
            Err(e) => return Err((number + 1, e)),
        };
        number += 1;
        each(number, line);
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
    seen: HashMap<EventKey, u32, FastHash>,
}

impl Occurrences {
    /// The key of a line whose hash is `line_key`: the hash itself for its
    /// first occurrence, a hash of it and the count for repeats.
    fn key_of(&mut self, time: LogTime, line_key: EventKey) -> EventKey {
        if self.time != Some(time) {
            self.time = Some(time);
            self.seen.clear();
        }
        let n = self.seen.entry(line_key).or_default();
        *n += 1;
        match *n - 1 {
            0 => line_key,
            repeat => EventKey::of_bytes(&[&line_key.0.to_le_bytes(), &repeat.to_le_bytes()]),
        }
    }
}

/// The hasher of the importer's hot maps: their keys come from the files
/// being imported, not from a network peer, so flooding is no concern and
/// std's SipHash only costs time.
type FastHash = foldhash::fast::RandomState;

struct EventBuilder {
    time_zone: TimeZone,
    /// The last hour converted: lines come in time order, so most lines
    /// reuse it.
    hour_cache: Option<HourStarts>,
    /// Per host, connects waiting for their disconnect: (local, remote) ->
    /// time and process (tcpspy often logs `proc (unknown)` on disconnect,
    /// the process being gone).
    open: HashMap<String, OpenConnections, FastHash>,
}

/// An hour of classic timestamps: (year, month, day, hour) and when it
/// starts in UTC and on the wall clock (read as if UTC), in nanoseconds.
#[derive(Clone, Copy)]
struct HourStarts {
    hour: (i16, u8, u8, u8),
    utc: i64,
    wall: i64,
}

type OpenConnections =
    HashMap<(SocketAddr, SocketAddr), (Timestamp, Option<Arc<ProcessInfo>>), FastHash>;

impl EventBuilder {
    fn new(time_zone: TimeZone) -> Self {
        EventBuilder {
            time_zone,
            hour_cache: None,
            open: HashMap::default(),
        }
    }

    /// The line's time in UTC, and its wall-clock time read as if it were UTC.
    fn classic_timestamp(
        &mut self,
        year: i16,
        t: ClassicTime,
    ) -> Result<(Timestamp, Timestamp), String> {
        let hour = (year, t.month, t.day, t.hour);
        let starts = match self.hour_cache {
            Some(starts) if starts.hour == hour => starts,
            _ => {
                let civil = jiff::civil::DateTime::new(
                    year,
                    t.month as i8,
                    t.day as i8,
                    t.hour as i8,
                    0,
                    0,
                    0,
                )
                .map_err(|e| e.to_string())?;
                let start_in = |zone: TimeZone| {
                    civil
                        .to_zoned_datetime(zone)
                        .map(|z| z.timestamp().as_nanosecond() as i64)
                        .map_err(|e| e.to_string())
                };
                let starts = HourStarts {
                    hour,
                    utc: start_in(self.time_zone.clone())?,
                    wall: start_in(TimeZone::UTC)?,
                };
                self.hour_cache = Some(starts);
                starts
            }
        };
        // A leap second (:60) is read as :59.
        let offset = (i64::from(t.minute) * 60 + i64::from(t.second.min(59))) * 1_000_000_000;
        Ok((
            Timestamp::from_nanos(starts.utc + offset),
            Timestamp::from_nanos(starts.wall + offset),
        ))
    }

    /// Remembers connects and gives disconnects their duration (and their
    /// connect's process when they name none); true when a disconnect found
    /// its connect.
    fn join(&mut self, event: &mut ConnectionEvent) -> bool {
        if !self.open.contains_key(&event.host) {
            self.open.insert(event.host.clone(), HashMap::default());
        }
        let open = self
            .open
            .get_mut(&event.host)
            .expect("inserted above when missing");
        let key = (event.local, event.remote);
        match event.kind {
            EventKind::Connect => {
                open.insert(key, (event.timestamp, event.process.clone()));
                false
            }
            EventKind::Disconnect => match open.remove(&key) {
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
}

/// Groups events into per-host batches (the store takes one agent per call)
/// for the storing thread.
///
/// In a central syslog the hosts' lines interleave, so their batches fill at
/// the same pace: waiting for each to be full would hand the storer twenty
/// at once and then nothing, and leave twenty for after the last line.
/// Instead, whenever more than twice the batch size waits in all, the largest
/// batch goes. That keeps a steady stream, bounds what waits, and leaves
/// little to store once reading ends.
struct Batcher {
    batches: HashMap<String, (AgentId, Vec<KeyedEvent>), FastHash>,
    waiting: usize,
    batch_size: usize,
    spares: Receiver<Vec<KeyedEvent>>,
}

impl Batcher {
    fn new(batch_size: usize, spares: Receiver<Vec<KeyedEvent>>) -> Self {
        Batcher {
            batches: HashMap::default(),
            waiting: 0,
            batch_size: batch_size.max(1),
            spares,
        }
    }

    /// Adds an event; returns a batch when one should be stored.
    fn push(&mut self, keyed: KeyedEvent) -> Option<(AgentId, Vec<KeyedEvent>)> {
        let host = &keyed.event.host;
        let batch = match self.batches.get_mut(host) {
            Some((_, batch)) => batch,
            None => {
                let vec = self
                    .spares
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(self.batch_size.min(8_192)));
                let entry = (AgentId(format!("import:{host}")), vec);
                &mut self.batches.entry(host.clone()).or_insert(entry).1
            }
        };
        batch.push(keyed);
        self.waiting += 1;
        let full = batch.len() >= self.batch_size;
        if !full && self.waiting <= 2 * self.batch_size {
            return None;
        }
        let host = match full {
            true => batch[0].event.host.clone(),
            false => self
                .batches
                .iter()
                .max_by_key(|(_, (_, batch))| batch.len())
                .map(|(host, _)| host.clone())
                .expect("events are waiting"),
        };
        let taken = self.batches.remove(&host).expect("the host has a batch");
        self.waiting -= taken.1.len();
        Some(taken)
    }

    /// The batches still waiting.
    fn drain(self) -> impl Iterator<Item = (AgentId, Vec<KeyedEvent>)> {
        self.batches.into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_lines_in_one_second_get_distinct_keys_that_repeat() {
        let t = LogTime::Rfc3339(Timestamp::from_nanos(1));
        let line = EventKey::of_bytes(&[b"same"]);
        let mut first = Occurrences::default();
        let a = first.key_of(t, line);
        let b = first.key_of(t, line);
        assert_ne!(a, b);
        let mut again = Occurrences::default();
        assert_eq!(again.key_of(t, line), a);
        assert_eq!(again.key_of(t, line), b);
        // A new second starts the count again.
        let later = LogTime::Rfc3339(Timestamp::from_nanos(2));
        assert_eq!(again.key_of(later, line), a);
    }

    #[test]
    fn interleaved_hosts_make_a_steady_stream_of_batches() {
        let (_spare, spares) = sync_channel(1);
        let mut batcher = Batcher::new(10, spares);
        let keyed = |host: &str| {
            let mut event = connscope_event::ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(0),
                connscope_event::Protocol::Tcp,
                connscope_event::Direction::Unknown,
                "10.0.0.1:1".parse().unwrap(),
                "10.0.0.2:2".parse().unwrap(),
            );
            event.host = host.into();
            KeyedEvent {
                key: EventKey(0),
                key_time: event.timestamp,
                event,
            }
        };
        let mut sizes = Vec::new();
        for i in 0..100 {
            let host = ["a", "b", "c", "d"][i % 4];
            if let Some((agent, batch)) = batcher.push(keyed(host)) {
                assert!(batch
                    .iter()
                    .all(|k| agent.0 == format!("import:{}", k.event.host)));
                sizes.push(batch.len());
            }
            assert!(batcher.waiting <= 20);
        }
        // Four hosts filling evenly: once 20 wait, a batch leaves every
        // few events instead of all four at once when they are full.
        assert!(sizes.len() >= 8, "{sizes:?}");
        assert!(sizes.iter().all(|&n| (5..=10).contains(&n)), "{sizes:?}");
        let left: usize = batcher.drain().map(|(_, b)| b.len()).sum();
        assert_eq!(sizes.iter().sum::<usize>() + left, 100);

        // One host alone fills whole batches.
        let (_spare, spares) = sync_channel(1);
        let mut alone = Batcher::new(10, spares);
        let full: Vec<usize> = (0..30)
            .filter_map(|_| alone.push(keyed("a")).map(|(_, b)| b.len()))
            .collect();
        assert_eq!(full, [10, 10, 10]);
    }

    #[test]
    fn classic_times_use_the_zone() {
        let mut b = EventBuilder::new(TimeZone::get("Europe/Berlin").unwrap());
        let t = ClassicTime {
            month: 11,
            day: 24,
            hour: 20,
            minute: 10,
            second: 19,
        };
        let (utc, wall) = b.classic_timestamp(2026, t).unwrap();
        assert_eq!(utc.to_string(), "2026-11-24T19:10:19.000000000Z");
        assert_eq!(
            wall.to_string(),
            "2026-11-24T20:10:19.000000000Z",
            "the wall-clock time, the same in every zone"
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
