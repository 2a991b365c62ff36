//! What an import tells its caller: the [`ImportSummary`] counting every
//! line, a [`LineError`] for each line or file it could not read, and the
//! [`ImportError`] that stops it.

use std::fmt;
use std::path::{Path, PathBuf};

use connscope_store::StoreError;

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

impl LineError {
    /// A file that could not be (fully) read, from `line` on (0: not at all).
    pub(crate) fn unreadable(path: &Path, line: u64, e: &std::io::Error) -> LineError {
        LineError {
            path: path.to_owned(),
            line,
            column: 0,
            message: format!("cannot read: {e}"),
        }
    }
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The summary being counted and the caller's error callback together, so
/// that every error reported is also counted.
pub(crate) struct Tally<'a> {
    pub(crate) summary: ImportSummary,
    on_error: &'a mut dyn FnMut(&LineError),
}

impl<'a> Tally<'a> {
    pub(crate) fn new(on_error: &'a mut dyn FnMut(&LineError)) -> Self {
        Tally {
            summary: ImportSummary::default(),
            on_error,
        }
    }

    pub(crate) fn error(&mut self, error: LineError) {
        self.summary.errors += 1;
        (self.on_error)(&error);
    }
}
