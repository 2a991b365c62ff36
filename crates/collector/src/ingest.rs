//! Turning an ingest request body into events, or into a precise refusal.
//!
//! A batch is all or nothing: if any line is wrong the whole batch is refused
//! with that line's number and reason, and nothing of it is stored. The agent
//! keeps the refused batch aside instead of retrying it, so one bad line never
//! wedges a spool, and the good batches around it still go through.
//!
//! Both sizes are bounded: the compressed body by the HTTP layer, the
//! decompressed one here, while decompressing, so a small body that inflates
//! to gigabytes (a zip bomb) is refused after `limit` bytes of work.
//!
//! Each event is also checked at this edge for what the event schema allows
//! but nothing downstream should have to handle: a time outside the
//! [`PlausibleWindow`] (an absurd time once broke every query of the map),
//! and a host name longer than a DNS name.

use std::io::Read;

use connscope_event::{json::from_json_line, ConnectionEvent, PlausibleWindow, Timestamp};
use flate2::read::GzDecoder;

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

/// Decompresses (per `encoding`: `gzip`, or none for identity) and parses a
/// batch of JSON Lines, refusing it whole at the first bad line.
pub fn decode_batch(
    body: &[u8],
    encoding: Option<&str>,
    decompressed_limit: u64,
) -> Result<Vec<ConnectionEvent>, BatchError> {
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
    let window = PlausibleWindow::at(Timestamp::now());
    let mut events = Vec::with_capacity(text.len() / 350);
    for (index, line) in text.split(|b| *b == b'\n').enumerate() {
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
        check_at_edge(&event, &window).map_err(at_line)?;
        events.push(event);
    }
    if events.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(events)
}

/// What the collector refuses although the schema allows it.
fn check_at_edge(event: &ConnectionEvent, window: &PlausibleWindow) -> Result<(), String> {
    window
        .check(event.timestamp)
        .map_err(|e| format!("field @timestamp: {e}"))?;
    crate::auth::check_host_name(&event.host).map_err(|e| format!("field host.name: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::{Direction, EventKind, Protocol, Timestamp};
    use std::io::Write;

    fn event(seq: u64) -> ConnectionEvent {
        let mut ev = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(1_700_000_000_000_000_000),
            Protocol::Tcp,
            Direction::Outgoing,
            "10.0.0.1:40000".parse().unwrap(),
            "10.0.0.2:22".parse().unwrap(),
        );
        ev.sequence = seq;
        ev.host = "a".into();
        ev
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_good_batch_decodes_in_order() {
        let body = connscope_protocol::batch::encode_body(&[event(1), event(2), event(3)]);
        let events = decode_batch(&body, Some("gzip"), 1 << 20).unwrap();
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn one_bad_line_refuses_the_batch_and_names_the_line() {
        let mut lines: Vec<String> = (1..=3)
            .map(|seq| connscope_event::json::to_json_line(&event(seq)))
            .collect();
        lines[2] = lines[2].replace("\"outgoing\"", "\"sideways\"");
        let body = gzip(lines.join("\n").as_bytes());
        let err = decode_batch(&body, Some("gzip"), 1 << 20).unwrap_err();
        assert_eq!(err.line(), Some(3));
        assert!(
            err.to_string()
                .starts_with("line 3: field network.direction"),
            "{err}"
        );

        let err = decode_batch(b"{\"a\":1}\n", None, 1 << 20).unwrap_err();
        assert_eq!(err.line(), Some(1));
    }

    #[test]
    fn implausible_times_and_overlong_hosts_are_refused_naming_the_field() {
        let mut old = event(1);
        old.timestamp = Timestamp::from_nanos(i64::MIN);
        let mut long = event(2);
        long.host = "h".repeat(254);
        for (bad, field) in [(old, "@timestamp"), (long, "host.name")] {
            let body = connscope_protocol::batch::encode_body(&[event(3), bad]);
            let err = decode_batch(&body, Some("gzip"), 1 << 20).unwrap_err();
            assert_eq!(err.line(), Some(2));
            assert!(
                err.to_string()
                    .starts_with(&format!("line 2: field {field}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_zip_bomb_is_stopped_at_the_limit() {
        let body = gzip(&vec![b' '; 50 << 20]);
        assert!(body.len() < 1 << 20, "the bomb is small: {}", body.len());
        let err = decode_batch(&body, Some("gzip"), 1 << 20).unwrap_err();
        assert_eq!(err, BatchError::TooLarge { limit: 1 << 20 });
    }

    #[test]
    fn other_refusals() {
        assert!(matches!(
            decode_batch(b"not gzip", Some("gzip"), 100),
            Err(BatchError::Gzip(_))
        ));
        assert!(matches!(
            decode_batch(b"x", Some("br"), 100),
            Err(BatchError::Encoding(_))
        ));
        assert_eq!(decode_batch(b"\n\n", None, 100), Err(BatchError::Empty));
    }
}
