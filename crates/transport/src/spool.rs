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
//! collector and clears once the collector has recorded it.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use connscope_event::{json::write_json_line, ConnectionEvent};
use flate2::{write::GzEncoder, Compression, Crc};
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"CSSPOOL1";
const HEADER_LEN: usize = 48;
const BATCH_SUFFIX: &str = "batch";
const TMP_SUFFIX: &str = "tmp";
const DROPPED_FILE: &str = "dropped.json";

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
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One spooled batch, as the shipper sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Spool-local id; increasing, so the smallest is the oldest.
    pub id: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub events: u64,
    /// Size on disk, header included.
    pub file_bytes: u64,
}

/// A batch read back for shipping: its info and the wire body (gzip JSON Lines).
#[derive(Debug)]
pub struct SpooledBatch {
    pub info: BatchInfo,
    pub body: Vec<u8>,
}

/// Events the spool had to delete before they were acknowledged, not yet
/// reported to the collector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedReport {
    /// Number of events deleted.
    pub events: u64,
    /// Inclusive sequence ranges of the deleted events, merged, oldest first.
    pub ranges: Vec<(u64, u64)>,
}

impl DroppedReport {
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    fn add(&mut self, info: &BatchInfo) {
        self.events += info.events;
        match self.ranges.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(info.first_sequence) => {
                last.1 = info.last_sequence
            }
            _ => self.ranges.push((info.first_sequence, info.last_sequence)),
        }
    }

    /// Removes what `reported` covered (a prefix of what was dropped, since
    /// reports only grow at the end while one is in flight).
    fn subtract(&mut self, reported: &DroppedReport) {
        self.events = self.events.saturating_sub(reported.events);
        for range in &reported.ranges {
            if let Some(pos) = self.ranges.iter().position(|r| r.0 == range.0) {
                if self.ranges[pos].1 == range.1 {
                    self.ranges.remove(pos);
                } else {
                    self.ranges[pos].0 = range.1 + 1;
                }
            }
        }
    }
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

struct State {
    batches: VecDeque<BatchInfo>,
    bytes: u64,
    next_id: u64,
    dropped: DroppedReport,
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
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, bounded to `max_bytes` on
    /// disk. Torn writes from a crash are deleted; batches that fail their
    /// checks are deleted and counted as dropped.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Spool, SpoolError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let dropped_path = dir.join(DROPPED_FILE);
        let mut dropped = match fs::read(&dropped_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
                path: dropped_path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => DroppedReport::default(),
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
                            dropped.add(&info);
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
        let spool = Spool {
            dir,
            max_bytes,
            state: Mutex::new(State {
                batches: batches.into(),
                bytes,
                next_id,
                dropped,
                in_flight: None,
                closed: false,
            }),
            changed: Condvar::new(),
        };
        if dropped_changed {
            let dropped = spool.lock().dropped.clone();
            spool.persist_dropped(&dropped)?;
        }
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
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
        let id = {
            let mut state = self.lock();
            let id = state.next_id;
            state.next_id += 1;
            id
        };
        let info = BatchInfo {
            id,
            first_sequence,
            last_sequence,
            events: events.len() as u64,
            file_bytes: (HEADER_LEN + body.len()) as u64,
        };
        if info.file_bytes > self.max_bytes {
            tracing::error!(
                bytes = info.file_bytes,
                max = self.max_bytes,
                "a batch is larger than the whole spool; dropping it"
            );
            self.record_dropped(&[info])?;
            return Ok(PushOutcome {
                dropped_events: info.events,
            });
        }
        self.write_batch(&info, &body)?;

        let mut evicted = Vec::new();
        {
            let mut state = self.lock();
            state.bytes += info.file_bytes;
            let pos = state.batches.partition_point(|b| b.id < id);
            state.batches.insert(pos, info);
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
            self.record_dropped(&evicted)?;
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
                let Some(info) = state.batches.front().copied() else {
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
                    self.record_dropped(&[info])?;
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

    /// The collector refused the batch for good (it is malformed): keep it aside
    /// in `rejected/` for a person to look at, and stop retrying it.
    pub fn reject(&self, id: u64) -> Result<(), SpoolError> {
        let rejected = self.dir.join("rejected");
        fs::create_dir_all(&rejected).map_err(io_err(&rejected))?;
        let from = self.batch_path(id);
        let to = rejected.join(from.file_name().expect("batch paths have a file name"));
        fs::rename(&from, &to).map_err(io_err(&from))?;
        self.forget(id)
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
        self.lock().batches.iter().copied().collect()
    }

    /// Dropped events not yet reported to the collector.
    pub fn dropped(&self) -> DroppedReport {
        self.lock().dropped.clone()
    }

    /// The collector recorded `reported`: forget it (what was dropped since stays).
    pub fn dropped_reported(&self, reported: &DroppedReport) -> Result<(), SpoolError> {
        let remaining = {
            let mut state = self.lock();
            state.dropped.subtract(reported);
            state.dropped.clone()
        };
        self.persist_dropped(&remaining)
    }

    fn record_dropped(&self, batches: &[BatchInfo]) -> Result<(), SpoolError> {
        let dropped = {
            let mut state = self.lock();
            for b in batches {
                state.dropped.add(b);
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
            unreported_dropped: state.dropped.events,
        }
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
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&(body.len() as u64).to_le_bytes());
        header.extend_from_slice(&crc.sum().to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&info.first_sequence.to_le_bytes());
        header.extend_from_slice(&info.last_sequence.to_le_bytes());
        header.extend_from_slice(&info.events.to_le_bytes());
        debug_assert_eq!(header.len(), HEADER_LEN);
        write_durably(&self.dir, &tmp, &self.batch_path(info.id), &[&header, body])
    }

    fn persist_dropped(&self, dropped: &DroppedReport) -> Result<(), SpoolError> {
        let path = self.dir.join(DROPPED_FILE);
        if dropped.is_empty() {
            return remove_if_present(&path);
        }
        let json = serde_json::to_vec(dropped).expect("a report always serialises");
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

/// The wire body of a batch: JSON Lines, gzip-compressed (fast level: the
/// agent's CPU matters more than the bytes on a LAN).
pub fn encode_body(events: &[ConnectionEvent]) -> Vec<u8> {
    let mut lines = Vec::with_capacity(events.len() * 400);
    for event in events {
        write_json_line(&mut lines, event);
    }
    let mut gz = GzEncoder::new(Vec::with_capacity(lines.len() / 6), Compression::fast());
    gz.write_all(&lines).expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

enum HeaderProblem {
    Io(io::Error),
    /// The file is damaged; `info` when the header itself was readable.
    Bad {
        reason: String,
        info: Option<BatchInfo>,
    },
}

fn parse_header(header: &[u8; HEADER_LEN], id: u64) -> Result<(BatchInfo, u64, u32), String> {
    if &header[..8] != MAGIC {
        return Err("not a spool batch (bad magic)".into());
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let body_len = word(8);
    let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
    let info = BatchInfo {
        id,
        first_sequence: word(24),
        last_sequence: word(32),
        events: word(40),
        file_bytes: HEADER_LEN as u64 + body_len,
    };
    Ok((info, body_len, crc))
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
    let (info, _, _) =
        parse_header(&header, id).map_err(|reason| HeaderProblem::Bad { reason, info: None })?;
    if info.file_bytes != len {
        return Err(HeaderProblem::Bad {
            reason: format!("expected {} bytes, found {len}", info.file_bytes),
            info: Some(info),
        });
    }
    Ok(info)
}

fn read_batch(path: &Path, expected: &BatchInfo) -> Result<Vec<u8>, HeaderProblem> {
    let bytes = fs::read(path).map_err(HeaderProblem::Io)?;
    let bad = |reason: String| HeaderProblem::Bad {
        reason,
        info: Some(*expected),
    };
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| bad("truncated header".into()))?;
    let (info, body_len, crc) = parse_header(header, expected.id).map_err(bad)?;
    let body = &bytes[HEADER_LEN..];
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
                ranges: vec![(1, 2)]
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
        spool.lock().dropped.add(&BatchInfo {
            id: 99,
            first_sequence: 200,
            last_sequence: 209,
            events: 10,
            file_bytes: 0,
        });
        spool.dropped_reported(&expected).unwrap();
        assert_eq!(
            spool.dropped(),
            DroppedReport {
                events: 10,
                ranges: vec![(200, 209)]
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
