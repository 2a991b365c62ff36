//! The batch codec: what an ingest body is. Both sides use it, the agent to
//! spool and send, the collector's tests and benches to make bodies exactly
//! as agents do (the collector reads them with its own bounded decoder).

use std::io::Write;

use connscope_event::{json::write_json_line, ConnectionEvent};
use flate2::{write::GzEncoder, Compression};

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
}
