//! The batch codec: what an ingest body is. The agent encodes (to spool and
//! send), the collector decodes; a batch is all or nothing, so a decode error
//! names the first bad line and nothing of the batch is taken.

use std::io::{Read, Write};

use connscope_event::json::{from_json_line, write_json_line};
use connscope_event::ConnectionEvent;
use flate2::{read::GzDecoder, write::GzEncoder, Compression};

/// Why a batch was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("unsupported Content-Encoding {0:?}: send gzip or identity")]
    Encoding(String),
    #[error("the body is not valid gzip: {0}")]
    Gzip(String),
    #[error("the body is larger than {limit} bytes once decompressed")]
    TooLarge { limit: u64 },
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("the batch has no events")]
    Empty,
}

impl BatchError {
    /// The 1-based line number the error is about, when it is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            BatchError::Line { line, .. } => Some(*line),
            _ => None,
        }
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

/// Decompresses (per `encoding`: `gzip`, or none for identity) and parses a
/// batch of JSON Lines, refusing it whole at the first bad line or at the
/// first event `check` refuses (the receiver's own rules, named with the line).
///
/// The decompressed size is bounded while decompressing, so a small body that
/// inflates to gigabytes (a zip bomb) is refused after `decompressed_limit`
/// bytes of work.
pub fn decode_body(
    body: &[u8],
    encoding: Option<&str>,
    decompressed_limit: u64,
    check: impl FnMut(&ConnectionEvent) -> Result<(), String>,
) -> Result<Vec<ConnectionEvent>, BatchError> {
    decode_body_measured(body, encoding, decompressed_limit, check).map(|(events, _)| events)
}

/// [`decode_body`], also telling the decompressed size (what a receiver
/// counts a decoded batch's memory by).
pub fn decode_body_measured(
    body: &[u8],
    encoding: Option<&str>,
    decompressed_limit: u64,
    mut check: impl FnMut(&ConnectionEvent) -> Result<(), String>,
) -> Result<(Vec<ConnectionEvent>, u64), BatchError> {
    let inflated;
    let text: &[u8] = match encoding.map(str::trim) {
        None | Some("identity") => {
            if body.len() as u64 > decompressed_limit {
                return Err(BatchError::TooLarge {
                    limit: decompressed_limit,
                });
            }
            body
        }
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(6).min(64 << 20));
            GzDecoder::new(body)
                .take(decompressed_limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| BatchError::Gzip(e.to_string()))?;
            if out.len() as u64 > decompressed_limit {
                return Err(BatchError::TooLarge {
                    limit: decompressed_limit,
                });
            }
            inflated = out;
            &inflated
        }
        Some(other) => return Err(BatchError::Encoding(other.to_owned())),
    };
    let mut events = Vec::with_capacity(text.len() / 350);
    for (index, line) in lines(text).enumerate() {
        let line_number = index as u64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let at_line = |reason: String| BatchError::Line {
            line: line_number,
            reason,
        };
        let line = std::str::from_utf8(line).map_err(|e| at_line(format!("not UTF-8: {e}")))?;
        let event = from_json_line(line).map_err(|e| at_line(e.to_string()))?;
        check(&event).map_err(at_line)?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok((events, text.len() as u64))
}

/// The lines of `text`, as `split` on `\n` gives them (the last one may be
/// empty), found with memchr's SIMD search instead of a byte at a time.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', text)
        .map(Some)
        .chain([None])
        .map(move |end| {
            let end = end.unwrap_or(text.len());
            let line = &text[start..end];
            start = end + 1;
            line
        })
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::SocketAddr;

    use connscope_event::json::from_json_line;
    use connscope_event::{Direction, EventKind, Protocol, Timestamp};

    use super::*;

    #[test]
    fn a_body_is_gzip_json_lines_one_event_a_line_in_order() {
        let addr = |port| SocketAddr::from(([10, 0, 0, 1], port));
        let events: Vec<ConnectionEvent> = (1..=3)
            .map(|sequence| ConnectionEvent {
                sequence,
                ..ConnectionEvent::new(
                    EventKind::Connect,
                    Timestamp::from_nanos(1),
                    Protocol::Tcp,
                    Direction::Outgoing,
                    addr(40000),
                    addr(443),
                )
            })
            .collect();
        let mut text = String::new();
        flate2::read::GzDecoder::new(encode_body(&events).as_slice())
            .read_to_string(&mut text)
            .unwrap();
        let back: Vec<ConnectionEvent> = text
            .lines()
            .map(|line| from_json_line(line).unwrap())
            .collect();
        assert_eq!(back, events);
    }

    #[test]
    fn lines_are_what_splitting_on_newlines_gives() {
        for text in [
            "",
            "\n",
            "\n\n",
            "a",
            "a\n",
            "\na",
            "a\n\nb",
            "ab\r\ncd\n\n",
        ] {
            let text = text.as_bytes();
            let ours: Vec<&[u8]> = lines(text).collect();
            let split: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
            assert_eq!(ours, split, "{text:?}");
        }
    }
}
