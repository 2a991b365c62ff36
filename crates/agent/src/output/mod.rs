//! Where the agent's events go: the [`Sink`] trait and the local outputs.
//!
//! Every output takes batches of finished events (numbered, named, filtered)
//! from the agent's output thread, never from the capture thread, so a slow
//! output can only make the agent's queue overflow (counted), never stall the
//! kernel reader. The shipping output of `connscope-transport` implements
//! the same trait.

mod json;
mod syslog;
mod tcpspy;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use connscope_event::ConnectionEvent;

use crate::RunStart;

pub use json::JsonLines;
pub use syslog::{Facility, SyslogOutput, UnknownFacility};
pub use tcpspy::TcpspyLines;

/// Why an output could not take or deliver events.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// An output defined elsewhere (e.g. the shipping output) failed.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Why events were lost before the agent could number them: the agent gives
/// them numbers of their own and tells every output ([`Sink::lost`]), so
/// the collector learns of the loss instead of only the agent's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossCause {
    /// The kernel side could not deliver them: ring buffer full, connection
    /// table full, or a probe run skipped by the kernel's recursion
    /// protection (which may or may not have carried an event: an upper bound).
    Kernel,
    /// The outputs were too slow and the capture queue was full. Counted
    /// before the rules, so some of them might not have been selected.
    Queue,
    /// Their sequence numbers could not be recorded in the state file.
    StateWrite,
}

/// An output of the agent.
pub trait Sink: Send {
    /// Short name for statistics and logs (`stdout`, `syslog`, a file name).
    fn name(&self) -> &str;

    /// Takes a batch of events. Returns how many events this output has no
    /// form for (tcpspy lines cannot show UDP flows or failed connects);
    /// they are skipped, not errors.
    fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError>;

    /// Pushes out what is buffered; called whenever the agent's queue runs
    /// empty, so a quiet agent never sits on events.
    fn flush(&mut self) -> Result<(), OutputError>;

    /// Called once before the first batch with who numbers the events; the
    /// shipping output sends it with every batch.
    fn begin(&mut self, _run: &RunStart) -> Result<(), OutputError> {
        Ok(())
    }

    /// Numbers `first..=last` stand for events lost before numbering, for
    /// `cause`. Outputs that report to someone (the shipping output) pass it
    /// on; local outputs have no form for it (the agent logs the loss).
    fn lost(&mut self, _first: u64, _last: u64, _cause: LossCause) -> Result<(), OutputError> {
        Ok(())
    }

    /// SIGHUP: reopen files, so a rotated log is let go of.
    fn reopen(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    /// Exit: deliver everything and release resources. Defaults to a flush.
    fn close(&mut self) -> Result<(), OutputError> {
        self.flush()
    }
}

/// A text destination: standard output, or a file reopened on SIGHUP.
#[derive(Debug)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    fn name(&self) -> String {
        match self {
            Destination::Stdout => "stdout".to_owned(),
            Destination::File(path) => path.display().to_string(),
        }
    }
}

/// The open writer behind a [`Destination`].
struct TextWriter {
    destination: Destination,
    name: String,
    writer: BufWriter<Box<dyn Write + Send>>,
}

impl TextWriter {
    fn open(destination: Destination) -> Result<TextWriter, OutputError> {
        let name = destination.name();
        let writer = BufWriter::with_capacity(1 << 16, Self::open_raw(&destination, &name)?);
        Ok(TextWriter {
            destination,
            name,
            writer,
        })
    }

    fn open_raw(
        destination: &Destination,
        name: &str,
    ) -> Result<Box<dyn Write + Send>, OutputError> {
        Ok(match destination {
            Destination::Stdout => Box::new(io::stdout()),
            Destination::File(path) => {
                let file: File = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| OutputError::Io {
                        what: format!("cannot open {name}"),
                        source,
                    })?;
                Box::new(file)
            }
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.writer
            .write_all(bytes)
            .map_err(|source| OutputError::Io {
                what: format!("cannot write to {}", self.name),
                source,
            })
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.writer.flush().map_err(|source| OutputError::Io {
            what: format!("cannot write to {}", self.name),
            source,
        })
    }

    /// Flushes the old file and opens the path again (it may be a new file
    /// after rotation). Standard output stays as it is.
    fn reopen(&mut self) -> Result<(), OutputError> {
        self.flush()?;
        if matches!(self.destination, Destination::File(_)) {
            let raw = Self::open_raw(&self.destination, &self.name)?;
            self.writer = BufWriter::with_capacity(1 << 16, raw);
        }
        Ok(())
    }
}
