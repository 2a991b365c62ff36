//! tcpspy lines come from files and syslog streams anyone can write to: no
//! line may panic the reader. Real captured lines (tests/fixtures) damaged by
//! mutation, and random bytes, through every entry point; a read line must
//! also become an event and be written back without panicking, and an error
//! must point inside the line.
//!
//! `CONNSCOPE_FUZZ_CASES` sets the cases per test (the soak run: a million).

use connscope_event::Timestamp;
use connscope_fuzzkit::{config, lines, mutated, random_bytes};
use connscope_tcpspy_log::{
    parse_syslog_prefix, write_body, LineStyle, Message, Origin, ParseError, Parser,
};
use proptest::prelude::*;

const FIXTURES: [&str; 3] = [
    include_str!("fixtures/syslog-classic.log"),
    include_str!("fixtures/syslog-rfc3339.log"),
    include_str!("fixtures/foreground.log"),
];

/// Words of the format that mutations insert.
const TOKENS: &[&[u8]] = &[
    b"connect: ",
    b"disconnect: ",
    b"proc ",
    b"user ",
    b"(uid 4294967295)",
    b"(unknown)",
    b", local ",
    b", remote ",
    b"::",
    b":::",
    b"::ffff:",
    b"[",
    b"]",
    b"%",
    b":",
    b" ",
    b"  ",
    b"tcpspy[",
    b"connscope: ",
    b"]: ",
    b"Feb 30 ",
    b"Xyz 99 ",
    b"24:60:61",
    b"+14:00",
    b"-99:99",
    b"T",
    b"Z",
    b".999999999999",
    b"\xff",
    b"\xc3",
    b"\0",
    b"\t",
];

fn corpus() -> Vec<Vec<u8>> {
    let mut corpus: Vec<Vec<u8>> = FIXTURES.iter().flat_map(|text| lines(text)).collect();
    // The messages alone, as the syslog listener hands them over.
    let messages: Vec<Vec<u8>> = corpus
        .iter()
        .filter_map(|line| {
            let at = line.windows(2).position(|w| w == b": ")?;
            Some(line[at + 2..].to_vec())
        })
        .collect();
    corpus.extend(messages);
    corpus
}

fn assert_points_inside(err: &ParseError, line: &[u8]) {
    assert!(
        err.column >= 1 && err.column <= line.len() + 1,
        "column {} outside a line of {} bytes: {err}",
        err.column,
        line.len()
    );
    let _ = err.to_string();
}

fn exercise(message: &Message<'_>) {
    if let Message::Connection(c) = message {
        let event = c.to_event(Timestamp::from_nanos(1_764_000_000_000_000_000), "h");
        let mut out = String::new();
        let style = LineStyle {
            show_exe: c.exe.is_some(),
            numeric_ports: false,
        };
        write_body(&event, &style, &mut out).expect("a read connection can be written");
    }
}

fn read_every_way(parser: &mut Parser<'_>, line: &[u8]) {
    match parser.parse_syslog_line(line) {
        Ok(Some(record)) => {
            if let connscope_tcpspy_log::LogTime::Classic(t) = record.time {
                let _ = t.to_string();
            }
            exercise(&record.message);
        }
        Ok(None) => {}
        Err(e) => assert_points_inside(&e, line),
    }
    match parser.parse_foreground_line(line) {
        Ok(record) => {
            if let Some(t) = record.time {
                let _ = t.to_string();
            }
            exercise(&record.message);
        }
        Err(e) => assert_points_inside(&e, line),
    }
    for origin in [Origin::Tcpspy, Origin::Connscope] {
        match parser.parse_message(origin, line) {
            Ok(message) => exercise(&message),
            Err(e) => assert_points_inside(&e, line),
        }
    }
    if let Err(e) = parse_syslog_prefix(line) {
        assert_points_inside(&e, line);
    }
}

#[test]
fn every_fixture_line_is_read() {
    let mut parser = Parser::default();
    let corpus = corpus();
    assert!(corpus.len() > 60, "corpus of {} lines", corpus.len());
    for line in &corpus {
        read_every_way(&mut parser, line);
    }
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn mutated_fixture_lines_never_panic(line in mutated(corpus(), TOKENS)) {
        read_every_way(&mut Parser::default(), &line);
    }

    #[test]
    fn random_lines_never_panic(line in random_bytes(300)) {
        read_every_way(&mut Parser::default(), &line);
    }
}

/// Found by the syslog listener's fuzzing: a 4-digit year outside the range
/// of nanosecond timestamps (1677 to 2262) overflowed the conversion, a panic
/// in debug builds and a wrong time in release builds.
#[test]
fn years_beyond_nanosecond_timestamps_are_errors() {
    for line in [
        "1026-11-24T20:10:21.292367+00:00 vm tcpspy[1]: tcpspy started, monitoring connections",
        "9999-12-31T23:59:59Z vm tcpspy[1]: tcpspy started, monitoring connections",
    ] {
        let err = Parser::default()
            .parse_syslog_line(line.as_bytes())
            .unwrap_err();
        assert_eq!(err.field, connscope_tcpspy_log::Field::Timestamp, "{err}");
        assert_eq!(err.column, 1, "{err}");
        assert!(err.to_string().contains("1677"), "{err}");
    }
    let inside = "2262-04-11T23:47:16Z vm tcpspy[1]: tcpspy started, monitoring connections";
    assert!(Parser::default()
        .parse_syslog_line(inside.as_bytes())
        .is_ok());
}
