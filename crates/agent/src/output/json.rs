//! JSON Lines (`--format json`): the versioned schema of docs/EVENTS.md.

use connscope_event::{json::write_json_line, ConnectionEvent};
use connscope_sink::{OutputError, Sink};

use super::{Destination, TextWriter};

/// Writes each event as one JSON line.
pub struct JsonLines {
    out: TextWriter,
    buffer: Vec<u8>,
}

impl JsonLines {
    pub fn open(destination: Destination) -> Result<JsonLines, OutputError> {
        Ok(JsonLines {
            out: TextWriter::open(destination)?,
            buffer: Vec::with_capacity(1 << 16),
        })
    }
}

impl Sink for JsonLines {
    fn name(&self) -> &str {
        &self.out.name
    }

    fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError> {
        self.buffer.clear();
        for event in events {
            write_json_line(&mut self.buffer, event);
        }
        self.out.write_all(&self.buffer)?;
        Ok(0)
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.out.flush()
    }

    fn reopen(&mut self) -> Result<(), OutputError> {
        self.out.reopen()
    }
}
