//! Pass 2's first stage, on its own thread: every file read in order and
//! each line parsed as far as it can be without the lines before it (its
//! year and its connect come later, in [`events`](crate::events)). The
//! direction comes from pass 1's service endpoints, and a `::`/`::` line
//! gets its addresses from its loopback partner ([`unspecified`](crate::unspecified)).

use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use connscope_event::{ConnectionEvent, Timestamp};
use connscope_store::EventKey;
use connscope_tcpspy_log::{EndpointStats, LogTime, Message, Parser, Quote};
use indicatif::ProgressBar;

use crate::first_pass::FileInfo;
use crate::source::{for_each_line, Line, MAX_LINE};
use crate::unspecified::LoopbackLines;

/// What the reading thread sends in pass 2: a file's lines, a chunk at a
/// time, then the end of the file (with the error that cut it short, if any).
pub(crate) enum Read {
    Lines(Vec<ParsedLine>),
    End(Result<(), (u64, std::io::Error)>),
}

/// A line of pass 2, parsed as far as it can be without the lines before it.
// Nearly every line is a connection: boxing it would add an allocation per
// line to save space on the rare others.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ParsedLine {
    /// Blank, or another program's line.
    Skipped,
    /// A tcpspy line that is no connection (a status line): its time still
    /// counts for the year.
    Other(LogTime),
    Garbled {
        number: u64,
        column: usize,
        message: String,
    },
    /// A connection, with its direction; its timestamp is set once the year
    /// is known.
    Connection {
        number: u64,
        time: LogTime,
        /// The hash of the line (`events` makes the key from it).
        first_key: EventKey,
        event: ConnectionEvent,
    },
}

/// Lines per [`Read::Lines`]: large enough that the channel costs nothing
/// per line, small enough that the threads overlap.
const CHUNK_LINES: usize = 4_096;

/// Pass 2's first stage: reads and parses every file in order, into chunks
/// taken from `spares` when the next stage has given some back. Stops early
/// when the next stage is gone.
pub(crate) fn read_and_parse(
    files: &[FileInfo],
    learned: (&EndpointStats, &LoopbackLines),
    bytes_read: &Arc<AtomicU64>,
    bar: &ProgressBar,
    out: &SyncSender<Read>,
    spares: &Receiver<Vec<ParsedLine>>,
) {
    let mut parser = Parser::default();
    let new_chunk = || {
        spares
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_LINES))
    };
    for file in files {
        let mut chunk = new_chunk();
        let mut gone = false;
        let result = for_each_line(&file.path, bytes_read, bar, |number, line| {
            if gone {
                return;
            }
            chunk.push(parse_line(&mut parser, learned, number, line));
            if chunk.len() == CHUNK_LINES {
                let full = std::mem::replace(&mut chunk, new_chunk());
                gone = out.send(Read::Lines(full)).is_err();
            }
        });
        if gone || out.send(Read::Lines(chunk)).is_err() || out.send(Read::End(result)).is_err() {
            return;
        }
    }
}

fn parse_line(
    parser: &mut Parser<'_>,
    (stats, loopback): (&EndpointStats, &LoopbackLines),
    number: u64,
    line: Line<'_>,
) -> ParsedLine {
    let line = match line {
        Line::Whole(line) => line,
        Line::TooLong { start, length } => {
            let mut quote = Quote::around(start, 0);
            quote.total = usize::try_from(length).unwrap_or(usize::MAX);
            return ParsedLine::Garbled {
                number,
                column: MAX_LINE + 1,
                message: format!(
                    "line of {length} bytes, longer than the {MAX_LINE}-byte limit: skipped: {quote}"
                ),
            };
        }
    };
    if line.iter().all(u8::is_ascii_whitespace) {
        return ParsedLine::Skipped;
    }
    let rec = match parser.parse_syslog_line(line) {
        Ok(Some(rec)) => rec,
        Ok(None) => return ParsedLine::Skipped,
        Err(e) => {
            return ParsedLine::Garbled {
                number,
                column: e.column,
                message: format!("{}: {}: {}", e.field, e.problem, e.line),
            }
        }
    };
    let Message::Connection(connection) = &rec.message else {
        return ParsedLine::Other(rec.time);
    };
    let mut event = connection.to_event(Timestamp::from_nanos(0), rec.host);
    // The first pass counted a `::`/`::` line as `::1` (to_event's reading).
    event.direction = stats.direction(event.local, event.remote);
    if let Some((local, remote)) = loopback.resolve(rec.host, connection) {
        (event.local, event.remote) = (local, remote);
    }
    ParsedLine::Connection {
        number,
        time: rec.time,
        first_key: EventKey::of_bytes(&[line]),
        event,
    }
}
