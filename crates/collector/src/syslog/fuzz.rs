//! Syslog packets and TCP streams come from anyone who can reach the port:
//! no packet may panic the listener's reading (envelope, time of a yearless
//! RFC 3164 header, tcpspy message, event), and the TCP framing must return
//! frames within the size limit or an error, never panic or over-allocate.
//!
//! In-crate because the envelope and framing are private to the listener. The
//! corpus is the real tcpspy fixture lines with the RFC 3164 and RFC 5424
//! headers rsyslog and `logger` put on them, damaged by mutation; random bytes
//! as well. `CONNSCOPE_FUZZ_CASES` sets the cases per test (soak: a million).

use connscope_fuzzkit::{config, joined, mutated, random_bytes};
use proptest::prelude::*;

use connscope_event::Timestamp;
use connscope_tcpspy_log::{ClassicTime, Parser};

use super::direction::Directions;
use super::envelope::resolve_classic;
use super::framing::{frames_of, MAX_MESSAGE};
use super::messages::{interpret, Outcome, Received};

const FIXTURES: [&str; 2] = [
    include_str!("../../../tcpspy-log/tests/fixtures/syslog-classic.log"),
    include_str!("../../../tcpspy-log/tests/fixtures/syslog-rfc3339.log"),
];

const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"<13>",
    b"<191>",
    b"<192>",
    b"1 ",
    b"- ",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"=",
    b" ",
    b"\n",
    b"\r",
    b"\0",
    b"\xef\xbb\xbf",
    b"tcpspy",
    b"connscope",
    b"[812]: ",
    b"Feb 29 ",
    b"Feb 30 ",
    b"Dec 31 23:59:60 ",
    b"2026-11-24T19:22:17.123456+01:00",
    b"0001-01-01T00:00:00Z",
    b"9999-12-31T23:59:59Z",
    b"connect: user root, local 10.0.0.1:22, remote 10.0.0.2:40000",
    b"99999999999 ",
    b"65536 ",
    b"\xff",
];

/// The fixture lines as RFC 3164 and RFC 5424 packets.
pub(super) fn packets() -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    for line in FIXTURES.iter().flat_map(|f| f.lines()) {
        packets.push(format!("<13>{line}\n").into_bytes());
        // RFC 5424: take the host, tag and message back out of the file line.
        let mut words = line.splitn(4, ' ');
        let (Some(time), Some(host), Some(tag), Some(message)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        if time.starts_with(|c: char| c.is_ascii_digit()) {
            let app = tag.split('[').next().unwrap_or(tag).trim_end_matches(':');
            packets.push(
                format!(
                    "<86>1 {time} {host} {app} 812 - [timeQuality tzKnown=\"1\"] \u{feff}{message}"
                )
                .into_bytes(),
            );
        }
    }
    packets
}

/// Packets as a TCP sender frames them: octet-counted or newline-terminated.
fn framed() -> Vec<Vec<u8>> {
    packets()
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 0 {
                let mut frame = format!("{} ", p.len()).into_bytes();
                frame.extend_from_slice(&p);
                frame
            } else {
                let mut frame = p;
                if frame.last() != Some(&b'\n') {
                    frame.push(b'\n');
                }
                frame
            }
        })
        .collect()
}

fn receive(packet: &[u8]) {
    let received = Received {
        packet: packet.to_vec(),
        peer: "192.0.2.1".parse().unwrap(),
        at: Timestamp::from_nanos(1_764_000_000_000_000_000),
    };
    let mut parser = Parser::default();
    match interpret(&mut parser, &mut Directions::default(), &received) {
        Outcome::Event { host, event } => {
            assert!(!host.is_empty());
            event.event.validate().unwrap();
        }
        Outcome::Unreadable(reason) => assert!(!reason.is_empty()),
        Outcome::Notice | Outcome::Ignored => {}
    }
}

/// Reads every frame of `stream`, whole and in chunks: the same frames
/// either way, each within the size limit, their total bounded by the input.
fn frames(stream: &[u8], chunk: usize) {
    let (whole, error) = frames_of(stream, stream.len().max(1));
    let mut total = 0;
    for frame in &whole {
        assert!(frame.len() <= MAX_MESSAGE);
        total += frame.len();
        assert!(total <= stream.len(), "frames longer than their stream");
        receive(frame);
    }
    assert_eq!(
        frames_of(stream, chunk),
        (whole, error),
        "chunks of {chunk}"
    );
}

#[test]
fn the_corpus_is_read_as_events() {
    let packets = packets();
    assert!(packets.len() > 40, "{} packets", packets.len());
    let mut parser = Parser::default();
    let mut directions = Directions::default();
    let received = |packet: &Vec<u8>| Received {
        packet: packet.clone(),
        peer: "192.0.2.1".parse().unwrap(),
        at: Timestamp::from_nanos(1_764_000_000_000_000_000),
    };
    let events = packets
        .iter()
        .filter(|p| {
            matches!(
                interpret(&mut parser, &mut directions, &received(p)),
                Outcome::Event { .. }
            )
        })
        .count();
    assert!(events > 30, "only {events} packets became events");
    frames(&framed().concat(), 7);
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn mutated_packets_never_panic(packet in mutated(packets(), TOKENS)) {
        receive(&packet);
    }

    #[test]
    fn random_packets_never_panic(packet in random_bytes(300)) {
        receive(&packet);
    }

    #[test]
    fn mutated_tcp_streams_never_panic(stream in prop_oneof![
        joined(mutated(framed(), TOKENS), 5, b""),
        random_bytes(400),
    ], chunk in 1..64usize) {
        frames(&stream, chunk);
    }
}

/// Found by `mutated_packets_never_panic`: `Feb 30` passed the header's
/// range check (day 1 to 31) and panicked in the date constructor, which took
/// the listener's writer task, and so all syslog ingest, down.
/// Found by the million-case run: an RFC 5424 header with an empty HOSTNAME
/// gave an event of host "", which the store refuses, and with it the other
/// lines of its batch.
#[test]
fn an_empty_host_name_is_the_sender_and_an_over_long_one_unreadable() {
    let interpret_packet = |packet: Vec<u8>| {
        let received = Received {
            packet,
            peer: "192.0.2.1".parse().unwrap(),
            at: Timestamp::from_nanos(1_764_000_000_000_000_000),
        };
        interpret(
            &mut Parser::default(),
            &mut Directions::default(),
            &received,
        )
    };
    let line = |host: &str| {
        format!(
            "<86>1 2026-11-24T20:10:19+00:00 {host} tcpspy 812 - - connect: user root, \
             local 127.0.0.1:50786, remote 127.0.0.1:47151"
        )
        .into_bytes()
    };
    match interpret_packet(line("")) {
        Outcome::Event { host, event } => {
            assert_eq!(host, "192.0.2.1");
            assert_eq!(event.event.host, "192.0.2.1");
        }
        _ => panic!("not an event"),
    }
    let long = "h".repeat(254);
    assert!(
        matches!(interpret_packet(line(&long)), Outcome::Unreadable(reason) if reason.contains("253")),
        "not unreadable"
    );
}

#[test]
fn a_day_the_month_does_not_have_is_unreadable_not_a_panic() {
    let received = Received {
        packet: b"<13>Feb 30 12:00:00 web1 tcpspy[812]: connect: user root, local 10.0.0.1:22, remote 10.0.0.2:40000".to_vec(),
        peer: "192.0.2.1".parse().unwrap(),
        at: Timestamp::from_nanos(1_764_000_000_000_000_000),
    };
    let outcome = interpret(
        &mut Parser::default(),
        &mut Directions::default(),
        &received,
    );
    assert!(
        matches!(&outcome, Outcome::Unreadable(reason) if reason.contains("Feb 30")),
        "not unreadable"
    );
    let feb29 = ClassicTime {
        month: 2,
        day: 29,
        hour: 12,
        minute: 0,
        second: 0,
    };
    // In January 2025, the only Feb 29 that can be meant is last year's.
    let now: Timestamp = "2025-01-15T00:00:00Z".parse().unwrap();
    let resolved = resolve_classic(feb29, now).unwrap();
    assert!(resolved.to_string().starts_with("2024-02-2"), "{resolved}");
}
