//! The agent's local outputs: syslog, tcpspy lines, JSON Lines, each a
//! [`Sink`](crate::Sink) (the trait is in `connscope-sink`, below the agent and the
//! shipping output of `connscope-transport`, which implements it too).

mod json;
mod syslog;
mod tcpspy;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use connscope_sink::OutputError;

pub use json::JsonLines;
pub use syslog::{Facility, SyslogOutput, UnknownFacility};
pub use tcpspy::TcpspyLines;

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
