//! Importing existing tcpspy syslog files into the store.
//!
//! Files as found on real machines: plain, rotated (`syslog.1`), gzipped
//! (`syslog.2.gz`, detected by content), classic timestamps without year or
//! zone, or rsyslog's RFC 3339 ones, mixed with every other program's lines.
//! See `docs/IMPORT.md` for the rules in full; in short:
//!
//! - **Two passes.** The first pass reads every file to learn what cannot be
//!   known line by line: how many New Years each file spans (`year`) and
//!   which endpoints are services
//!   ([`EndpointStats`](connscope_tcpspy_log::EndpointStats), the rule the
//!   syslog listener shares). The second parses again, builds events and
//!   stores them. Files are taken oldest first (by mtime) so connects come before
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
//!
//! The stages, one module each: `source` (files as bounded lines, gzip or
//! not) -> `first_pass` (years, services, loopback lines) -> pass 2's
//! `parse` (lines to events with their direction and `::` addresses
//! resolved by `unspecified`) -> `events` (the year from `year`, the
//! time from `clock`, keys, connects joined (`join`) with disconnects) ->
//! `write` (per-host batches into the store). `report` holds what the
//! caller is told.

mod clock;
mod events;
mod first_pass;
mod hash;
mod join;
mod parse;
mod report;
mod source;
mod unspecified;
mod write;
mod year;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::SystemTime;

use connscope_store::{AgentId, IngestReport, KeyedEvent, Store, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use jiff::tz::TimeZone;

use events::build_events;
use first_pass::{first_pass, FileInfo};
use parse::{read_and_parse, ParsedLine, Read};
use report::Tally;
pub use report::{ImportError, ImportSummary, LineError};
pub use source::MAX_LINE;
pub use unspecified::LoopbackLines;
use write::{store_batches, Batcher};
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

/// Imports `paths` into `store`, calling `on_error` for every line or file
/// that could not be read (the import goes on). Fails only when the store does.
pub fn import_files(
    store: &dyn Store,
    paths: &[PathBuf],
    options: &ImportOptions,
    on_error: &mut dyn FnMut(&LineError),
) -> Result<ImportSummary, ImportError> {
    let mut tally = Tally::new(on_error);
    let mut files = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) => files.push(FileInfo {
                path: path.clone(),
                mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                size: meta.len(),
                years: YearScan::default(),
            }),
            Err(e) => tally.error(LineError::unreadable(path, 0, &e)),
        }
    }
    // Oldest first: syslog.2.gz, syslog.1, syslog.
    files.sort_by_key(|f| f.mtime);
    tally.summary.files = files.len();

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
        let storer = scope.spawn(move || store_batches(store, receiver, spare_sender));
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
        build_events(
            files,
            options.time_zone.as_ref(),
            parsed,
            spare_chunk_sender,
            Batcher::new(options.batch_size, spares),
            sender,
            &mut tally,
        );
        storer.join().expect("the storing thread does not panic")
    })?;
    bar.finish_and_clear();
    tally.summary.imported = stored.stored;
    tally.summary.duplicates = stored.duplicates;
    Ok(tally.summary)
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
