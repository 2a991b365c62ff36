//! Per-agent sequence numbers that stay unique and gap-free across restarts.
//!
//! The collector deduplicates by (agent, sequence) and spots lost events as
//! gaps, so a number must never be handed out twice, even after a crash. The
//! next number lives in a small file in the state directory, replaced
//! atomically and durably (write a temporary file, fsync, rename, fsync the
//! directory) *before* the events carrying the numbers leave the agent. A
//! crash between the two leaves a gap — which honestly says events were lost —
//! never a duplicate.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where the next sequence number is kept.
#[derive(Debug)]
pub struct SequenceFile {
    path: PathBuf,
    next: u64,
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
    #[error("{path}:1:1: expected the next sequence number (a positive integer), found {found:?}")]
    Corrupt { path: PathBuf, found: String },
}

const FILE_NAME: &str = "sequence";

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
        let next = match fs::read_to_string(&path) {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(next) if next >= 1 => next,
                _ => {
                    return Err(SequenceError::Corrupt {
                        path,
                        found: text.chars().take(40).collect(),
                    })
                }
            },
            Err(err) if err.kind() == io::ErrorKind::NotFound => 1,
            Err(err) => return Err(io_err(err)),
        };
        let mut file = SequenceFile { path, next };
        file.persist()?;
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
        let first = self.next;
        self.next += count;
        if count > 0 {
            if let Err(err) = self.persist() {
                self.next = first;
                return Err(err);
            }
        }
        Ok(first)
    }

    fn persist(&mut self) -> Result<(), SequenceError> {
        let io_err = |source| SequenceError::Io {
            path: self.path.clone(),
            source,
        };
        let temporary = self.path.with_extension("tmp");
        let mut file = File::create(&temporary).map_err(io_err)?;
        writeln!(file, "{}", self.next).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        fs::rename(&temporary, &self.path).map_err(io_err)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut seq = SequenceFile::open(&state).unwrap();
        assert_eq!(seq.reserve(3).unwrap(), 1);
        assert_eq!(seq.reserve(2).unwrap(), 4);
        assert_eq!(seq.reserve(0).unwrap(), 6);
        drop(seq);
        let mut seq = SequenceFile::open(&state).unwrap();
        assert_eq!(seq.next(), 6);
        assert_eq!(seq.reserve(1).unwrap(), 6);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "twelve\n").unwrap();
        let err = SequenceFile::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("sequence:1:1: expected the next sequence number"),
            "{err}"
        );
        assert!(err.contains("twelve"), "{err}");
    }
}
