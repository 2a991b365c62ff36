//! Turning an ingest request body into events, or into a precise refusal.
//!
//! A batch is all or nothing: if any line is wrong the whole batch is refused
//! with that line's number and reason, and nothing of it is stored. The agent
//! keeps the refused batch aside instead of retrying it, so one bad line never
//! wedges a spool, and the good batches around it still go through.
//!
//! Both sizes are bounded: the compressed body by the HTTP layer, the
//! decompressed one by the codec (`connscope_protocol::batch`) while
//! decompressing, so a small body that inflates to gigabytes (a zip bomb) is
//! refused after `limit` bytes of work.
//!
//! Each event is also checked at this edge for what the event schema allows
//! but nothing downstream should have to handle: a time outside the
//! [`PlausibleWindow`] (an absurd time once broke every query of the map),
//! and a host name longer than a DNS name.

use connscope_event::{ConnectionEvent, PlausibleWindow, Timestamp};
use connscope_protocol::batch::decode_body_measured;
pub use connscope_protocol::batch::BatchError;

/// Decompresses (per `encoding`: `gzip`, or none for identity) and parses a
/// batch of JSON Lines, refusing it whole at the first bad line or the first
/// event this edge refuses; with the events, their decompressed size.
pub fn decode_batch(
    body: &[u8],
    encoding: Option<&str>,
    decompressed_limit: u64,
) -> Result<(Vec<ConnectionEvent>, u64), BatchError> {
    let window = PlausibleWindow::at(Timestamp::now());
    decode_body_measured(body, encoding, decompressed_limit, |event| {
        check_at_edge(event, &window)
    })
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
    use connscope_event::test_support::EventBuilder;
    use connscope_event::Timestamp;
    use std::io::Write;

    fn event(seq: u64) -> ConnectionEvent {
        EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
            .at_nanos(1_700_000_000_000_000_000)
            .sequence(seq)
            .host("a")
            .build()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_good_batch_decodes_in_order() {
        let body = connscope_protocol::batch::encode_body(&[event(1), event(2), event(3)]);
        let (events, size) = decode_batch(&body, Some("gzip"), 1 << 20).unwrap();
        assert_eq!(
            events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // The size is the JSON Lines' own, not the gzip body's.
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .unwrap();
        assert_eq!(size, text.len() as u64);
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
