//! The disk spool: batches the collector has not acknowledged yet.
//!
//! Why files and not a segment log: one file per batch makes the two dangerous
//! moments trivially safe. A batch is written to `ID.tmp`, fsynced, renamed to
//! `ID.batch` and the directory fsynced; only then does [`Spool::push`] return,
//! which is the moment the capture side may consider the events safe. After a
//! kill -9 a `.tmp` file is a torn write that was never acknowledged, so it is
//! deleted on open; a `.batch` file is complete by construction (and its CRC is
//! still checked, against disk corruption). Acknowledging a batch is deleting its
//! file. File names are a monotonically increasing spool id, so the oldest batch
//! is the one with the smallest name.
//!
//! Each file holds a fixed header and the body exactly as it goes on the wire
//! (gzip-compressed JSON Lines), so shipping is a read and a POST, and the bound
//! `max_bytes` is a bound on disk use.
//!
//! When the spool is full the oldest batches are deleted. Nothing is lost
//! silently: the sequence ranges and the event count of what was deleted go to
//! `dropped.json` (written atomically too), which the shipper reports to the
//! collector and clears once the collector has recorded it. So do batches
//! the collector refused (kept in `rejected/`, whose files count against the
//! same bound and go first when it is reached), batches that could not be
//! written, and what a crash of the agent may have lost; each report says
//! why, and which agent state ([`BatchOrigin`]) numbered the events.
//!
//! Each batch carries who numbered it (instance, boot, first number), in the
//! header's origin field, so a batch spooled before the state directory was
//! wiped is still sent as its own instance's. A `lock` file keeps a second
//! agent out of the spool directory.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use connscope_event::{ConnectionEvent, Timestamp};
use connscope_protocol::batch::encode_body;
use connscope_protocol::{drop_reason, BatchOrigin, DroppedReport};
use flate2::Crc;
use serde::Deserialize;

const MAGIC: &[u8; 8] = b"CSSPOOL1";
const HEADER_LEN: usize = 48;
const BATCH_SUFFIX: &str = "batch";
const TMP_SUFFIX: &str = "tmp";
const DROPPED_FILE: &str = "dropped.json";
const REJECTED_DIR: &str = "rejected";
const LOCK_FILE: &str = "lock";

/// Why the spool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "spool {path}: another agent is using this spool directory; \
         give each agent its own --spool-dir"
    )]
    InUse { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One spooled batch, as the shipper sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// Spool-local id; increasing, so the smallest is the oldest.
    pub id: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub events: u64,
    /// Size on disk, header included.
    pub file_bytes: u64,
    /// Who numbered it; `None` for batches of agents before instance ids.
    pub origin: Option<Arc<BatchOrigin>>,
}

/// A batch read back for shipping: its info and the wire body (gzip JSON Lines).
#[derive(Debug)]
pub struct SpooledBatch {
    pub info: BatchInfo,
    pub body: Vec<u8>,
}

/// What [`Spool::push`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Events of older batches deleted to make room (or of this batch, when it
    /// alone is larger than the spool).
    pub dropped_events: u64,
}

/// Counters for logs and `--stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub batches: u64,
    pub events: u64,
    pub bytes: u64,
    /// Dropped events not yet reported to the collector.
    pub unreported_dropped: u64,
}

/// What `dropped.json` holds: the reports, or (written by earlier versions)
/// one report of spool-full drops.
#[derive(Deserialize)]
#[serde(untagged)]
enum DroppedFile {
    Reports(Vec<DroppedReport>),
    Single(DroppedReport),
}

/// The unreported drops, one report per (instance, reason).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Dropped(Vec<DroppedReport>);

impl Dropped {
    fn report(&mut self, instance: &str, reason: &str) -> &mut DroppedReport {
        let at = self
            .0
            .iter()
            .position(|r| r.instance == instance && r.reason == reason);
        let at = at.unwrap_or_else(|| {
            self.0.push(DroppedReport {
                instance: instance.to_owned(),
                reason: reason.to_owned(),
                ..DroppedReport::default()
            });
            self.0.len() - 1
        });
        &mut self.0[at]
    }

    fn add(&mut self, info: &BatchInfo, reason: &str) {
        let instance = info.origin.as_ref().map_or("", |o| o.instance.as_str());
        self.report(instance, reason).add_range(
            info.first_sequence,
            info.last_sequence,
            info.events,
        );
    }

    fn events(&self) -> u64 {
        self.0.iter().fold(0, |n, r| n.saturating_add(r.events))
    }
}

struct State {
    batches: VecDeque<BatchInfo>,
    bytes: u64,
    next_id: u64,
    dropped: Dropped,
    /// Stamped on every batch pushed from now on.
    origin: Option<Arc<BatchOrigin>>,
    /// Refused batches kept for a person to look at, oldest first, with
    /// their sizes: they count against `max_bytes` and go first.
    rejected: VecDeque<(PathBuf, u64)>,
    rejected_bytes: u64,
    /// The batch the shipper is sending: never evicted under its feet.
    in_flight: Option<u64>,
    closed: bool,
}

/// A bounded, crash-safe queue of batches on disk, shared by the capture side
/// (which pushes) and the shipper (which reads the oldest and acknowledges it).
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    changed: Condvar,
    /// Held for as long as the spool is open: two agents sharing a spool
    /// would send and delete each other's batches.
    _lock: File,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, bounded to `max_bytes` on
    /// disk. Torn writes from a crash are deleted; batches that fail their
    /// checks are deleted and counted as dropped.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Spool, SpoolError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = lock_dir(&dir.join(LOCK_FILE))?;
        let dropped_path = dir.join(DROPPED_FILE);
        let mut dropped = match fs::read(&dropped_path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(DroppedFile::Reports(reports)) => Dropped(reports),
                Ok(DroppedFile::Single(mut report)) => {
                    report.reason = drop_reason::SPOOL_FULL.to_owned();
                    Dropped(vec![report])
                }
                Err(e) => {
                    return Err(SpoolError::Corrupt {
                        path: dropped_path.clone(),
                        reason: e.to_string(),
                    })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Dropped::default(),
            Err(e) => return Err(io_err(&dropped_path)(e)),
        };
        let mut batches = Vec::new();
        let mut next_id = 0;
        let mut dropped_changed = false;
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let path = entry.path();
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            let Ok(id) = u64::from_str_radix(stem, 16) else {
                continue;
            };
            next_id = next_id.max(id + 1);
            match ext {
                TMP_SUFFIX => {
                    // A write interrupted before its rename: never acknowledged.
                    tracing::warn!(path = %path.display(), "discarding an incomplete spool write");
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
                BATCH_SUFFIX => match read_header(&path, id) {
                    Ok(info) => batches.push(info),
                    Err(HeaderProblem::Io(e)) => return Err(io_err(&path)(e)),
                    Err(HeaderProblem::Bad { reason, info }) => {
                        tracing::error!(path = %path.display(), %reason, "discarding a damaged spool batch");
                        if let Some(info) = info {
                            dropped.add(&info, drop_reason::SPOOL_DAMAGED);
                            dropped_changed = true;
                        }
                        fs::remove_file(&path).map_err(io_err(&path))?;
                    }
                },
                _ => {}
            }
        }
        batches.sort_by_key(|b| b.id);
        let bytes = batches.iter().map(|b| b.file_bytes).sum();
        let rejected = list_rejected(&dir.join(REJECTED_DIR))?;
        let rejected_bytes = rejected.iter().map(|(_, n)| n).sum();
        let spool = Spool {
            dir,
            max_bytes,
            state: Mutex::new(State {
                batches: batches.into(),
                bytes,
                next_id,
                dropped,
                origin: None,
                rejected,
                rejected_bytes,
                in_flight: None,
                closed: false,
            }),
            changed: Condvar::new(),
            _lock: lock,
        };
        if dropped_changed {
            let dropped = spool.lock().dropped.clone();
            spool.persist_dropped(&dropped)?;
        }
        spool.trim_rejected(0)?;
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Who numbers the batches pushed from now on.
    pub fn set_origin(&self, origin: BatchOrigin) {
        self.lock().origin = Some(Arc::new(origin));
    }

    /// Records numbers lost before they reached the spool (`reason` from
    /// [`drop_reason`]): by a crash, or because the spool could not take
    /// them. Kept in memory even when it cannot be written to disk, so the
    /// shipper still reports it.
    pub fn record_lost(
        &self,
        instance: &str,
        reason: &str,
        first: u64,
        last: u64,
        events: u64,
    ) -> Result<(), SpoolError> {
        let dropped = {
            let mut state = self.lock();
            state
                .dropped
                .report(instance, reason)
                .add_range(first, last, events);
            state.dropped.clone()
        };
        self.changed.notify_all();
        self.persist_dropped(&dropped)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data (every update is
        // a single assignment after the file work), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encodes `events` as one batch and stores it durably. When this returns
    /// `Ok`, the batch survives a crash of the process or the machine.
    pub fn push(&self, events: &[ConnectionEvent]) -> Result<PushOutcome, SpoolError> {
        if events.is_empty() {
            return Ok(PushOutcome::default());
        }
        let body = encode_body(events);
        let first_sequence = events.iter().map(|e| e.sequence).min().unwrap_or(0);
        let last_sequence = events.iter().map(|e| e.sequence).max().unwrap_or(0);
        let (id, origin) = {
            let mut state = self.lock();
            let id = state.next_id;
            state.next_id += 1;
            (id, state.origin.clone())
        };
        let origin_len = origin.as_deref().map_or(0, |o| origin_text(o).len());
        let info = BatchInfo {
            id,
            first_sequence,
            last_sequence,
            events: events.len() as u64,
            file_bytes: (HEADER_LEN + origin_len + body.len()) as u64,
            origin,
        };
        if info.file_bytes > self.max_bytes {
            tracing::error!(
                bytes = info.file_bytes,
                max = self.max_bytes,
                "a batch is larger than the whole spool; dropping it"
            );
            self.record_dropped(std::slice::from_ref(&info), drop_reason::SPOOL_FULL)?;
            return Ok(PushOutcome {
                dropped_events: info.events,
            });
        }
        if let Err(e) = self.write_batch(&info, &body) {
            // Numbered, and now lost: said so, even if only in memory.
            if let Err(persist) =
                self.record_dropped(std::slice::from_ref(&info), drop_reason::SPOOL_WRITE)
            {
                tracing::error!(error = %persist, "cannot write the spool's dropped record");
            }
            return Err(e);
        }
        self.trim_rejected(info.file_bytes)?;

        let mut evicted = Vec::new();
        {
            let mut state = self.lock();
            state.bytes += info.file_bytes;
            let pos = state.batches.partition_point(|b| b.id < id);
            state.batches.insert(pos, info.clone());
            while state.bytes > self.max_bytes {
                let victim = state
                    .batches
                    .iter()
                    .position(|b| Some(b.id) != state.in_flight && b.id != id);
                let Some(victim) = victim else { break };
                let victim = state.batches.remove(victim).expect("position is in range");
                state.bytes -= victim.file_bytes;
                evicted.push(victim);
            }
        }
        self.changed.notify_all();
        for victim in &evicted {
            remove_if_present(&self.batch_path(victim.id))?;
        }
        let dropped_events = evicted.iter().map(|b| b.events).sum();
        if !evicted.is_empty() {
            tracing::warn!(
                dropped_events,
                "spool full: deleted the oldest unacknowledged batches"
            );
            self.record_dropped(&evicted, drop_reason::SPOOL_FULL)?;
        }
        Ok(PushOutcome { dropped_events })
    }

    /// Waits up to `timeout` for a batch and reads the oldest one, marking it in
    /// flight. `Ok(None)` on timeout or after [`Spool::close`] with nothing left.
    pub fn next_batch(&self, timeout: Duration) -> Result<Option<SpooledBatch>, SpoolError> {
        loop {
            let info = {
                let mut state = self.lock();
                if state.batches.is_empty() && !state.closed {
                    state = self
                        .changed
                        .wait_timeout(state, timeout)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                let Some(info) = state.batches.front().cloned() else {
                    return Ok(None);
                };
                state.in_flight = Some(info.id);
                info
            };
            let path = self.batch_path(info.id);
            match read_batch(&path, &info) {
                Ok(body) => return Ok(Some(SpooledBatch { info, body })),
                Err(HeaderProblem::Io(e)) => return Err(io_err(&path)(e)),
                Err(HeaderProblem::Bad { reason, .. }) => {
                    tracing::error!(path = %path.display(), %reason, "discarding a damaged spool batch");
                    self.forget(info.id)?;
                    self.record_dropped(&[info], drop_reason::SPOOL_DAMAGED)?;
                }
            }
        }
    }

    /// Sending the batch failed: it may be evicted again if the spool fills
    /// up while the collector is away.
    pub fn release(&self, id: u64) {
        let mut state = self.lock();
        if state.in_flight == Some(id) {
            state.in_flight = None;
        }
    }

    /// The collector has stored the batch: delete it.
    pub fn acknowledge(&self, id: u64) -> Result<(), SpoolError> {
        self.forget(id)
    }

    /// The collector refused the batch for good (it is malformed or too
    /// large): keep it aside in `rejected/` for a person to look at, stop
    /// retrying it, and report its events as dropped (refused).
    pub fn reject(&self, id: u64) -> Result<(), SpoolError> {
        let rejected = self.dir.join(REJECTED_DIR);
        fs::create_dir_all(&rejected).map_err(io_err(&rejected))?;
        let from = self.batch_path(id);
        let to = rejected.join(from.file_name().expect("batch paths have a file name"));
        let info = self.lock().batches.iter().find(|b| b.id == id).cloned();
        fs::rename(&from, &to).map_err(io_err(&from))?;
        if let Some(info) = info {
            {
                let mut state = self.lock();
                state.rejected.push_back((to, info.file_bytes));
                state.rejected_bytes += info.file_bytes;
            }
            self.forget(id)?;
            self.record_dropped(&[info], drop_reason::REFUSED)?;
        }
        self.trim_rejected(0)
    }

    /// Deletes the oldest refused batches (already reported) until they and
    /// the spooled batches, plus `coming` bytes, fit in `max_bytes`.
    fn trim_rejected(&self, coming: u64) -> Result<(), SpoolError> {
        let mut victims = Vec::new();
        {
            let mut state = self.lock();
            while state.bytes + state.rejected_bytes + coming > self.max_bytes {
                let Some((path, bytes)) = state.rejected.pop_front() else {
                    break;
                };
                state.rejected_bytes -= bytes;
                victims.push(path);
            }
        }
        if !victims.is_empty() {
            tracing::warn!(
                files = victims.len(),
                "spool full: deleted the oldest refused batches kept in rejected/"
            );
        }
        for path in &victims {
            remove_if_present(path)?;
        }
        Ok(())
    }

    fn forget(&self, id: u64) -> Result<(), SpoolError> {
        let removed = {
            let mut state = self.lock();
            if state.in_flight == Some(id) {
                state.in_flight = None;
            }
            let pos = state.batches.iter().position(|b| b.id == id);
            let removed = pos.and_then(|p| state.batches.remove(p));
            if let Some(b) = &removed {
                state.bytes -= b.file_bytes;
            }
            removed
        };
        if removed.is_some() {
            remove_if_present(&self.batch_path(id))?;
        }
        self.changed.notify_all();
        Ok(())
    }

    /// The batches waiting, oldest first.
    pub fn batches(&self) -> Vec<BatchInfo> {
        self.lock().batches.iter().cloned().collect()
    }

    /// All dropped events not yet reported to the collector, whatever their
    /// instance and reason, in one summary (ranges merged).
    pub fn dropped(&self) -> DroppedReport {
        let state = self.lock();
        let mut all = DroppedReport::default();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for report in &state.dropped.0 {
            all.events = all.events.saturating_add(report.events);
            ranges.extend(&report.ranges);
        }
        ranges.sort_unstable();
        for (first, last) in ranges {
            match all.ranges.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => all.ranges.push((first, last)),
            }
        }
        all
    }

    /// Records that the agent state `instance` was not running from `from`
    /// to `to` (reported with reason [`drop_reason::DOWN`]).
    pub fn record_downtime(
        &self,
        instance: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(), SpoolError> {
        let dropped = {
            let mut state = self.lock();
            state
                .dropped
                .report(instance, drop_reason::DOWN)
                .down
                .push((from, to));
            state.dropped.clone()
        };
        self.changed.notify_all();
        self.persist_dropped(&dropped)
    }

    /// The reports to send: one per instance and reason.
    pub fn dropped_reports(&self) -> Vec<DroppedReport> {
        let state = self.lock();
        state
            .dropped
            .0
            .iter()
            .filter(|r| !r.is_empty())
            .cloned()
            .collect()
    }

    /// The collector recorded `reported`: forget it (what was dropped since stays).
    pub fn dropped_reported(&self, reported: &DroppedReport) -> Result<(), SpoolError> {
        let remaining = {
            let mut state = self.lock();
            let report = state.dropped.report(&reported.instance, &reported.reason);
            report.subtract(reported);
            state.dropped.0.retain(|r| !r.is_empty());
            state.dropped.clone()
        };
        self.persist_dropped(&remaining)
    }

    fn record_dropped(&self, batches: &[BatchInfo], reason: &str) -> Result<(), SpoolError> {
        let dropped = {
            let mut state = self.lock();
            for b in batches {
                state.dropped.add(b, reason);
            }
            state.dropped.clone()
        };
        self.changed.notify_all();
        self.persist_dropped(&dropped)
    }

    pub fn stats(&self) -> SpoolStats {
        let state = self.lock();
        SpoolStats {
            batches: state.batches.len() as u64,
            events: state.batches.iter().map(|b| b.events).sum(),
            bytes: state.bytes,
            unreported_dropped: state.dropped.events(),
        }
    }

    /// When the oldest batch waiting was written (its file's modification
    /// time, so batches recovered after a restart keep their age); `None`
    /// when the spool is empty.
    pub fn oldest_batch_written(&self) -> Option<std::time::SystemTime> {
        let id = self.lock().batches.front()?.id;
        fs::metadata(self.batch_path(id)).ok()?.modified().ok()
    }

    /// Wakes a shipper waiting in [`Spool::next_batch`] so it can stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn batch_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:016x}.{BATCH_SUFFIX}"))
    }

    fn write_batch(&self, info: &BatchInfo, body: &[u8]) -> Result<(), SpoolError> {
        let tmp = self.dir.join(format!("{:016x}.{TMP_SUFFIX}", info.id));
        let mut crc = Crc::new();
        crc.update(body);
        let origin = info.origin.as_deref().map(origin_text).unwrap_or_default();
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc.sum().to_le_bytes());
        // Once always 0: batches of earlier versions have no origin.
        header.extend_from_slice(&(origin.len() as u32).to_le_bytes());
        header.extend_from_slice(&info.first_sequence.to_le_bytes());
        header.extend_from_slice(&info.last_sequence.to_le_bytes());
        header.extend_from_slice(&info.events.to_le_bytes());
        debug_assert_eq!(header.len(), HEADER_LEN);
        write_durably(
            &self.dir,
            &tmp,
            &self.batch_path(info.id),
            &[&header, origin.as_bytes(), body],
        )
    }

    fn persist_dropped(&self, dropped: &Dropped) -> Result<(), SpoolError> {
        let path = self.dir.join(DROPPED_FILE);
        if dropped.0.iter().all(DroppedReport::is_empty) {
            return remove_if_present(&path);
        }
        let json = serde_json::to_vec(&dropped.0).expect("a report always serialises");
        let tmp = self.dir.join(format!("{DROPPED_FILE}.new"));
        write_durably(&self.dir, &tmp, &path, &[&json])
    }
}

/// Writes `parts` to `tmp`, fsyncs it, renames it to `dest` and fsyncs the
/// directory, so `dest` is either absent or complete after any crash.
fn write_durably(dir: &Path, tmp: &Path, dest: &Path, parts: &[&[u8]]) -> Result<(), SpoolError> {
    let mut file = File::create(tmp).map_err(io_err(tmp))?;
    for part in parts {
        file.write_all(part).map_err(io_err(tmp))?;
    }
    file.sync_all().map_err(io_err(tmp))?;
    drop(file);
    fs::rename(tmp, dest).map_err(io_err(dest))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn remove_if_present(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// A batch's origin as its file holds it: `INSTANCE BOOT FIRST_SEQUENCE`.
fn origin_text(origin: &BatchOrigin) -> String {
    format!(
        "{} {} {}",
        origin.instance, origin.boot, origin.first_sequence
    )
}

fn parse_origin(text: &[u8]) -> Option<BatchOrigin> {
    let text = std::str::from_utf8(text).ok()?;
    let mut words = text.split(' ');
    let origin = BatchOrigin {
        instance: words.next()?.to_owned(),
        boot: words.next()?.to_owned(),
        first_sequence: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(origin)
}

/// Takes the spool directory's lock (released when the file closes, also
/// when the process dies), or says another agent has it.
fn lock_dir(path: &Path) -> Result<File, SpoolError> {
    use std::os::fd::AsRawFd;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => SpoolError::InUse {
                path: path.to_owned(),
            },
            _ => io_err(path)(err),
        });
    }
    Ok(file)
}

/// The refused batches kept, oldest (smallest id) first, with their sizes.
fn list_rejected(dir: &Path) -> Result<VecDeque<(PathBuf, u64)>, SpoolError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VecDeque::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let bytes = entry.metadata().map_err(io_err(&entry.path()))?.len();
        files.push((entry.path(), bytes));
    }
    files.sort();
    Ok(files.into())
}

enum HeaderProblem {
    Io(io::Error),
    /// The file is damaged; `info` when the header itself was readable.
    Bad {
        reason: String,
        info: Option<BatchInfo>,
    },
}

/// Longest origin a header may announce (two 64-byte ids and a number).
const MAX_ORIGIN_LEN: u64 = 160;

/// The header's fields: the batch's info (without its origin, which
/// follows the header), the body's length and CRC, and the origin's length.
fn parse_header(header: &[u8; HEADER_LEN], id: u64) -> Result<(BatchInfo, u64, u32, u64), String> {
    if &header[..8] != MAGIC {
        return Err("not a spool batch (bad magic)".into());
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let body_len = word(8);
    let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    let origin_len = u64::from(u32::from_le_bytes(
        header[20..24].try_into().expect("4 bytes"),
    ));
    if origin_len > MAX_ORIGIN_LEN {
        return Err(format!("origin of {origin_len} bytes announced"));
    }
    let info = BatchInfo {
        id,
        first_sequence: word(24),
        last_sequence: word(32),
        events: word(40),
        file_bytes: (HEADER_LEN as u64 + origin_len).saturating_add(body_len),
        origin: None,
    };
    Ok((info, body_len, crc, origin_len))
}

fn read_header(path: &Path, id: u64) -> Result<BatchInfo, HeaderProblem> {
    let mut file = File::open(path).map_err(HeaderProblem::Io)?;
    let len = file.metadata().map_err(HeaderProblem::Io)?.len();
    let mut header = [0u8; HEADER_LEN];
    if let Err(e) = file.read_exact(&mut header) {
        return Err(match e.kind() {
            io::ErrorKind::UnexpectedEof => HeaderProblem::Bad {
                reason: format!("truncated header ({len} bytes)"),
                info: None,
            },
            _ => HeaderProblem::Io(e),
        });
    }
    let (mut info, _, _, origin_len) =
        parse_header(&header, id).map_err(|reason| HeaderProblem::Bad { reason, info: None })?;
    if info.file_bytes != len {
        return Err(HeaderProblem::Bad {
            reason: format!("expected {} bytes, found {len}", info.file_bytes),
            info: Some(info),
        });
    }
    if origin_len > 0 {
        let mut text = vec![0; origin_len as usize];
        file.read_exact(&mut text).map_err(HeaderProblem::Io)?;
        match parse_origin(&text) {
            Some(origin) => info.origin = Some(Arc::new(origin)),
            None => {
                return Err(HeaderProblem::Bad {
                    reason: "unreadable origin".into(),
                    info: Some(info),
                })
            }
        }
    }
    Ok(info)
}

fn read_batch(path: &Path, expected: &BatchInfo) -> Result<Vec<u8>, HeaderProblem> {
    let bytes = fs::read(path).map_err(HeaderProblem::Io)?;
    let bad = |reason: String| HeaderProblem::Bad {
        reason,
        info: Some(expected.clone()),
    };
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("truncated header".into()))?;
    let (mut info, body_len, crc, origin_len) = parse_header(header, expected.id).map_err(bad)?;
    let rest = &bytes[HEADER_LEN..];
    let Some((origin, body)) = rest.split_at_checked(origin_len as usize) else {
        return Err(bad("origin truncated".into()));
    };
    info.origin = (origin_len > 0)
        .then(|| parse_origin(origin).map(Arc::new))
        .flatten();
    if info != *expected || body.len() as u64 != body_len {
        return Err(bad("header changed or body truncated".into()));
    }
    let mut actual = Crc::new();
    actual.update(body);
    if actual.sum() != crc {
        return Err(bad("checksum mismatch".into()));
    }
    Ok(body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::{Direction, EventKind, Protocol, Timestamp};

    fn events(first: u64, count: u64) -> Vec<ConnectionEvent> {
        (first..first + count)
            .map(|seq| {
                let mut ev = ConnectionEvent::new(
                    EventKind::Connect,
                    Timestamp::from_nanos(seq as i64),
                    Protocol::Tcp,
                    Direction::Outgoing,
                    "10.0.0.1:40000".parse().unwrap(),
                    "10.0.0.2:22".parse().unwrap(),
                );
                ev.sequence = seq;
                ev.host = "h".into();
                ev
            })
            .collect()
    }

    fn decode(body: &[u8]) -> Vec<u64> {
        let mut text = String::new();
        flate2::read::GzDecoder::new(body)
            .read_to_string(&mut text)
            .unwrap();
        text.lines()
            .map(|l| connscope_event::json::from_json_line(l).unwrap().sequence)
            .collect()
    }

    const WAIT: Duration = Duration::from_millis(10);

    #[test]
    fn batches_come_out_oldest_first_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(&events(1, 3)).unwrap();
        spool.push(&events(4, 2)).unwrap();
        assert_eq!(spool.stats().events, 5);
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let first = spool.next_batch(WAIT).unwrap().unwrap();
        assert_eq!(
            (first.info.first_sequence, first.info.last_sequence),
            (1, 3)
        );
        assert_eq!(decode(&first.body), [1, 2, 3]);
        spool.acknowledge(first.info.id).unwrap();
        spool.push(&events(6, 1)).unwrap();
        drop(spool);

        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let next = spool.next_batch(WAIT).unwrap().unwrap();
        assert_eq!(decode(&next.body), [4, 5]);
        spool.acknowledge(next.info.id).unwrap();
        let last = spool.next_batch(WAIT).unwrap().unwrap();
        assert_eq!(decode(&last.body), [6]);
        spool.acknowledge(last.info.id).unwrap();
        assert!(spool.next_batch(WAIT).unwrap().is_none());
        assert_eq!(spool.stats(), SpoolStats::default());
    }

    #[test]
    fn a_torn_write_is_discarded_and_ids_move_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(&events(1, 2)).unwrap();
        drop(spool);
        // What a kill -9 during a write leaves: a partial temp file.
        fs::write(dir.path().join("0000000000000001.tmp"), b"CSSPOOL1\x10").unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(!dir.path().join("0000000000000001.tmp").exists());
        assert_eq!(spool.stats().batches, 1);
        assert!(
            spool.dropped().is_empty(),
            "an unacknowledged write is not a drop"
        );
        spool.push(&events(3, 1)).unwrap();
        assert!(dir.path().join("0000000000000002.batch").exists());
    }

    #[test]
    fn damaged_batches_are_dropped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(&events(1, 2)).unwrap();
        spool.push(&events(3, 2)).unwrap();
        drop(spool);
        // Flip a body byte of the first batch: the CRC catches it on read.
        let path = dir.path().join("0000000000000000.batch");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let batch = spool.next_batch(WAIT).unwrap().unwrap();
        assert_eq!(decode(&batch.body), [3, 4]);
        assert_eq!(
            spool.dropped(),
            DroppedReport {
                events: 2,
                ranges: vec![(1, 2)],
                ..DroppedReport::default()
            }
        );
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_remembers_it() {
        let dir = tempfile::tempdir().unwrap();
        let one = (HEADER_LEN + encode_body(&events(1, 10)).len()) as u64;
        // Room for about three batches.
        let spool = Spool::open(dir.path(), one * 3 + one / 2).unwrap();
        let mut dropped = 0;
        for i in 0..6 {
            dropped += spool.push(&events(1 + i * 10, 10)).unwrap().dropped_events;
        }
        assert_eq!(dropped, 30);
        assert!(spool.stats().bytes <= one * 3 + one / 2);
        let expected = DroppedReport {
            events: 30,
            ranges: vec![(1, 30)],
            ..DroppedReport::default()
        };
        assert_eq!(spool.dropped(), expected);
        drop(spool);

        let spool = Spool::open(dir.path(), one * 4).unwrap();
        assert_eq!(
            spool.dropped(),
            expected,
            "the drop record survives a restart"
        );
        let batch = spool.next_batch(WAIT).unwrap().unwrap();
        assert_eq!(batch.info.first_sequence, 31);
        // Reported while more was dropped: only the reported part is forgotten.
        spool.lock().dropped.add(
            &BatchInfo {
                id: 99,
                first_sequence: 200,
                last_sequence: 209,
                events: 10,
                file_bytes: 0,
                origin: None,
            },
            drop_reason::SPOOL_FULL,
        );
        let reports = spool.dropped_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].reason, drop_reason::SPOOL_FULL);
        spool
            .dropped_reported(&DroppedReport {
                reason: drop_reason::SPOOL_FULL.into(),
                ..expected
            })
            .unwrap();
        assert_eq!(
            spool.dropped(),
            DroppedReport {
                events: 10,
                ranges: vec![(200, 209)],
                ..DroppedReport::default()
            }
        );
    }

    #[test]
    fn the_batch_in_flight_is_never_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let one = (HEADER_LEN + encode_body(&events(1, 10)).len()) as u64;
        let spool = Spool::open(dir.path(), one * 2 + one / 2).unwrap();
        spool.push(&events(1, 10)).unwrap();
        let in_flight = spool.next_batch(WAIT).unwrap().unwrap();
        spool.push(&events(11, 10)).unwrap();
        spool.push(&events(21, 10)).unwrap();
        assert_eq!(spool.dropped().ranges, vec![(11, 20)]);
        spool.acknowledge(in_flight.info.id).unwrap();
        let next = spool.next_batch(WAIT).unwrap().unwrap();
        assert_eq!(next.info.first_sequence, 21);
    }
}
