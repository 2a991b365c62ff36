//! Event lines arrive from the network (agents' batches) and from files: no
//! line may panic the reader, and a line it accepts must be a valid event that
//! writes back to a line reading as the same event. The corpus is the
//! documented example and events of every kind written by the writer, damaged
//! by mutation; random bytes as well.
//!
//! `CONNSCOPE_FUZZ_CASES` sets the cases per test (the soak run: a million).

use std::sync::Arc;

use connscope_event::json::{from_json_line, to_json_line};
use connscope_event::{
    CloseStats, ConnectFailure, ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol,
    Timestamp,
};
use connscope_fuzzkit::{config, lines, mutated, random_bytes};
use proptest::prelude::*;

const EVENTS_DOC: &str = include_str!("../../../docs/EVENTS.md");

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-",
    b"e",
    b".",
    b"\\u0000",
    b"\\ud800",
    b"\\\"",
    b"\"@timestamp\":",
    b"\"sequence\":",
    b"\"port\":",
    b"\"ip\":\"::ffff:1.2.3.4\"",
    b"\"direction\":\"incoming\"",
    b"\"action\":\"connect-failed\"",
    b"\"reason\":\"refused\"",
    b"\"bytes\":",
    b"\"version\":2",
    b"0001-01-01T00:00:00Z",
    b"9999-12-31T23:59:59.999999999Z",
    b"+25:00",
];

fn written_events() -> Vec<ConnectionEvent> {
    let at = Timestamp::from_nanos(1_764_000_000_123_456_789);
    let v4 = (
        "10.0.0.1:40000".parse().unwrap(),
        "10.0.0.2:22".parse().unwrap(),
    );
    let v6 = (
        "[fe80::1]:53".parse().unwrap(),
        "[::1]:5353".parse().unwrap(),
    );
    let mut connect = ConnectionEvent::new(
        EventKind::Connect,
        at,
        Protocol::Tcp,
        Direction::Incoming,
        v4.0,
        v4.1,
    );
    connect.sequence = 7;
    connect.host = "db1".into();
    connect.uid = Some(0);
    connect.preexisting = true;
    connect.process = Some(Arc::new(ProcessInfo {
        pid: 812,
        executable: Some("/usr/sbin/sshd \"quoted\"\n".into()),
        ..ProcessInfo::default()
    }));
    let mut udp_close = ConnectionEvent::new(
        EventKind::Disconnect,
        at,
        Protocol::Udp,
        Direction::Outgoing,
        v6.0,
        v6.1,
    );
    udp_close.close = Some(CloseStats {
        duration_ns: u64::MAX,
        bytes_sent: 1,
        bytes_received: 2,
        packets_sent: Some(3),
        packets_received: Some(4),
    });
    udp_close.user_name = Some("joé".into());
    let mut failed = ConnectionEvent::new(
        EventKind::ConnectFailed,
        at,
        Protocol::Tcp,
        Direction::Unknown,
        v4.0,
        v4.1,
    );
    failed.failure = Some(ConnectFailure::Refused);
    vec![connect, udp_close, failed]
}

fn corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = lines(EVENTS_DOC)
        .into_iter()
        .filter(|line| line.starts_with(b"{\"@timestamp\""))
        .collect();
    assert!(!corpus.is_empty(), "docs/EVENTS.md lost its example line");
    corpus.extend(
        written_events()
            .iter()
            .map(|e| to_json_line(e).into_bytes()),
    );
    corpus
}

fn read(bytes: &[u8]) {
    let Ok(line) = std::str::from_utf8(bytes) else {
        return;
    };
    match from_json_line(line) {
        Ok(event) => {
            event.validate().expect("an accepted line is a valid event");
            let again = from_json_line(&to_json_line(&event)).expect("a written event reads back");
            assert_eq!(again, event, "the event changed by writing it back: {line}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

#[test]
fn the_corpus_reads() {
    for line in &corpus() {
        read(line);
        from_json_line(std::str::from_utf8(line).unwrap()).unwrap();
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn mutated_event_lines_never_panic(line in mutated(corpus(), TOKENS)) {
        read(&line);
    }

    #[test]
    fn random_lines_never_panic(line in random_bytes(400)) {
        read(&line);
    }
}
