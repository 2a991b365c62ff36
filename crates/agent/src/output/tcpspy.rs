//! `tcpspy -d` lines (`Nov 24 19:22:17: connect: ...`), on standard output or
//! in a file.

use connscope_event::ConnectionEvent;
use connscope_sink::{OutputError, Sink};
use connscope_tcpspy_log::{write_foreground_line, LineStyle};
use jiff::tz::TimeZone;

use super::{Destination, TextWriter};

/// Writes events as tcpspy prints them in the foreground, in local time.
pub struct TcpspyLines {
    out: TextWriter,
    style: LineStyle,
    tz: TimeZone,
    line: String,
}

impl TcpspyLines {
    pub fn open(destination: Destination, style: LineStyle) -> Result<TcpspyLines, OutputError> {
        Ok(TcpspyLines {
            out: TextWriter::open(destination)?,
            style,
            tz: TimeZone::system(),
            line: String::with_capacity(1 << 16),
        })
    }
}

impl Sink for TcpspyLines {
    fn name(&self) -> &str {
        &self.out.name
    }

    fn write_batch(&mut self, events: &[ConnectionEvent]) -> Result<u64, OutputError> {
        self.line.clear();
        let mut skipped = 0;
        for event in events {
            if write_foreground_line(event, &self.style, &self.tz, &mut self.line).is_err() {
                skipped += 1;
            }
        }
        self.out.write_all(self.line.as_bytes())?;
        Ok(skipped)
    }

    fn flush(&mut self) -> Result<(), OutputError> {
        self.out.flush()
    }

    fn reopen(&mut self) -> Result<(), OutputError> {
        self.out.reopen()
    }
}
