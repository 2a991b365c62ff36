//! Per-agent sequence numbers that stay unique and gap-free across restarts.
//!
//! The collector deduplicates by (agent, sequence) and spots lost events as
//! gaps, so a number must never be handed out twice, even after a crash. The
//! file in the state directory holds the first number not yet reserved,
//! replaced atomically and durably (write a temporary file, fsync, rename,
//! fsync the directory) *before* any event carrying a reserved number leaves
//! the agent.
//!
//! # Reserving ahead, and what a crash costs
//!
//! Making the file durable costs two disk flushes; once per output batch (a
//! hundred a second on a busy host) that was most of the agent's own CPU time.
//! So numbers are reserved ahead: when a batch needs numbers past the
//! reservation, the file is moved on by the batch *plus about one second's
//! worth* of numbers at the recent rate, and batches are numbered from memory
//! until that is used up. A steadily busy agent syncs about once a second; a
//! quiet one reserves nothing ahead and behaves as if there were no
//! reservation.
//!
//! On a clean stop, [`SequenceFile::close`] gives the unused reservation back
//! (the file gets the exact next number), so a restart continues without a
//! gap. A crash leaves a gap — which honestly says events may have been lost —
//! never a duplicate; the gap is the events numbered but not written plus the
//! unused reservation (at most about a second's worth). The file says
//! `reserved` while a reservation is out, so the next start can tell the two
//! apart and log the range that may hold no events at all.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the next sequence number is kept.
#[derive(Debug)]
pub struct SequenceFile {
    path: PathBuf,
    /// The number the next event gets.
    next: u64,
    /// First number not on disk as used: `next..reserved_until` may be handed
    /// out without writing.
    reserved_until: u64,
    rate: RecentRate,
    /// Held open with an exclusive lock for as long as the agent runs: two
    /// agents on one state directory would hand out the same numbers.
    _lock: File,
}

/// The state file exists but does not hold a number.
#[derive(Debug, thiserror::Error)]
pub enum SequenceError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path}:1:1: expected the next sequence number (a positive integer, \
         optionally followed by \"reserved\"), found {found:?}"
    )]
    Corrupt { path: PathBuf, found: String },
    #[error(
        "{path}: another agent is running with this state directory; \
         give each agent its own --state-dir"
    )]
    InUse { path: PathBuf },
}

const FILE_NAME: &str = "sequence";
const LOCK_FILE: &str = "lock";
/// Marks a file written with numbers reserved ahead (not a clean stop).
const RESERVED: &str = "reserved";
/// How much history sizes the reservation.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// The most numbers reserved ahead, whatever the rate.
const MAX_AHEAD: u64 = 1 << 20;

impl SequenceFile {
    /// Opens (or starts at 1) the sequence kept in `state_dir`, creating the
    /// directory if needed.
    pub fn open(state_dir: &Path) -> Result<SequenceFile, SequenceError> {
        let path = state_dir.join(FILE_NAME);
        let io_err = |source| SequenceError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(io_err)?;
        let lock = lock_state_dir(&state_dir.join(LOCK_FILE))?;
        let (next, reserved) = match fs::read_to_string(&path) {
            Ok(text) => match parse(&text) {
                Some(parsed) => parsed,
                None => {
                    return Err(SequenceError::Corrupt {
                        path,
                        found: text.chars().take(40).collect(),
                    })
                }
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => (1, false),
            Err(err) => return Err(io_err(err)),
        };
        if reserved {
            tracing::warn!(
                next,
                "the agent did not stop cleanly: some sequence numbers just below {next} \
                 were reserved but may never have been used (the collector counts them missing)"
            );
        }
        let mut file = SequenceFile {
            path,
            next,
            reserved_until: next,
            rate: RecentRate::default(),
            _lock: lock,
        };
        file.persist(next, false)?;
        Ok(file)
    }

    /// The number the next event gets.
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands out `count` consecutive numbers, returning the first; they are
    /// on disk as used before this returns.
    pub fn reserve(&mut self, count: u64) -> Result<u64, SequenceError> {
        self.reserve_at(count, Instant::now())
    }

    fn reserve_at(&mut self, count: u64, now: Instant) -> Result<u64, SequenceError> {
        let first = self.next;
        let end = first + count;
        if end > self.reserved_until {
            let until = end + self.rate.per_window(now).min(MAX_AHEAD);
            self.persist(until, until > end)?;
            self.reserved_until = until;
        }
        self.rate.count(count, now);
        self.next = end;
        Ok(first)
    }

    /// Gives back the numbers reserved but not used, so the next start
    /// continues right after the last one handed out. (Numbering may go on
    /// afterwards; it then reserves again.)
    pub fn close(&mut self) -> Result<(), SequenceError> {
        if self.reserved_until != self.next {
            self.persist(self.next, false)?;
            self.reserved_until = self.next;
        }
        Ok(())
    }

    fn persist(&mut self, next: u64, reserved: bool) -> Result<(), SequenceError> {
        let io_err = |source| SequenceError::Io {
            path: self.path.clone(),
            source,
        };
        let temporary = self.path.with_extension("tmp");
        let mut file = File::create(&temporary).map_err(io_err)?;
        if reserved {
            writeln!(file, "{next} {RESERVED}")
        } else {
            writeln!(file, "{next}")
        }
        .map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        fs::rename(&temporary, &self.path).map_err(io_err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        }
        Ok(())
    }
}

/// Takes the state directory's lock (released when the file closes, also
/// when the process dies), or says who has it.
fn lock_state_dir(path: &Path) -> Result<File, SequenceError> {
    use std::os::fd::AsRawFd;
    let io_err = |source| SequenceError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err)?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) => SequenceError::InUse {
                path: path.to_owned(),
            },
            _ => io_err(err),
        });
    }
    Ok(file)
}

/// `N` or `N reserved`: the next number, and whether numbers were reserved.
fn parse(text: &str) -> Option<(u64, bool)> {
    let mut words = text.split_ascii_whitespace();
    let next = words.next()?.parse::<u64>().ok().filter(|&n| n >= 1)?;
    let reserved = match words.next() {
        None => false,
        Some(RESERVED) => true,
        Some(_) => return None,
    };
    words.next().is_none().then_some((next, reserved))
}

/// Numbers handed out over the last full window, or the current one if busier.
#[derive(Debug, Default)]
struct RecentRate {
    window_start: Option<Instant>,
    in_window: u64,
    last_window: u64,
}

impl RecentRate {
    fn count(&mut self, n: u64, now: Instant) {
        self.roll(now);
        self.in_window += n;
    }

    fn per_window(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.last_window.max(self.in_window)
    }

    fn roll(&mut self, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            // A window with nothing in between forgets the older one.
            self.last_window = if elapsed >= 2 * RATE_WINDOW {
                0
            } else {
                self.in_window
            };
            self.in_window = 0;
            self.window_start = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(state: &Path) -> String {
        fs::read_to_string(state.join(FILE_NAME)).unwrap()
    }

    #[test]
    fn continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut seq = SequenceFile::open(&state).unwrap();
        assert_eq!(seq.reserve(3).unwrap(), 1);
        assert_eq!(seq.reserve(2).unwrap(), 4);
        assert_eq!(seq.reserve(0).unwrap(), 6);
        seq.close().unwrap();
        assert_eq!(on_disk(&state), "6\n");
        // A second agent on the same state directory is refused.
        let err = SequenceFile::open(&state).unwrap_err().to_string();
        assert!(err.contains("another agent is running"), "{err}");
        drop(seq);
        let mut seq = SequenceFile::open(&state).unwrap();
        assert_eq!(seq.next(), 6);
        assert_eq!(seq.reserve(1).unwrap(), 6);
    }

    #[test]
    fn reserves_about_a_second_ahead_and_gives_it_back_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = SequenceFile::open(dir.path()).unwrap();
        let t0 = Instant::now();
        // No history yet: exactly what is used is written.
        assert_eq!(seq.reserve_at(100, t0).unwrap(), 1);
        assert_eq!(on_disk(dir.path()), "101\n");
        // 100 in this window: the next write reserves 100 ahead.
        assert_eq!(seq.reserve_at(10, t0).unwrap(), 101);
        assert_eq!(on_disk(dir.path()), "211 reserved\n");
        // Within the reservation: numbered from memory, the file unchanged.
        assert_eq!(seq.reserve_at(100, t0).unwrap(), 111);
        assert_eq!(on_disk(dir.path()), "211 reserved\n");
        // Past it: a new reservation covering the batch.
        assert_eq!(seq.reserve_at(20, t0).unwrap(), 211);
        assert_eq!(on_disk(dir.path()), "441 reserved\n");
        // Quiet for longer than two windows: nothing is reserved ahead.
        let later = t0 + 3 * RATE_WINDOW;
        assert_eq!(seq.reserve_at(300, later).unwrap(), 231);
        assert_eq!(on_disk(dir.path()), "531\n");
        seq.close().unwrap();
        assert_eq!(on_disk(dir.path()), "531\n");
    }

    #[test]
    fn a_crash_never_reuses_a_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = SequenceFile::open(dir.path()).unwrap();
        let t0 = Instant::now();
        seq.reserve_at(50, t0).unwrap();
        let last = seq.reserve_at(5, t0).unwrap() + 4;
        drop(seq); // no close: as after a crash
        let seq = SequenceFile::open(dir.path()).unwrap();
        assert!(seq.next() > last, "{} after {last}", seq.next());
        // The reopen wrote a clean number (the gap is now history).
        assert_eq!(on_disk(dir.path()), format!("{}\n", seq.next()));
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["twelve\n", "12 twelve\n", "0\n", "12 reserved extra\n"] {
            fs::write(dir.path().join(FILE_NAME), bad).unwrap();
            let err = SequenceFile::open(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains("sequence:1:1: expected the next sequence number"),
                "{err}"
            );
            assert!(err.contains(bad.trim()), "{err}");
        }
    }
}
