//! The envelope reader against `syslog_loose` (the syslog parser Vector
//! uses), as an oracle: on every well-formed packet of the corpus (the tcpspy
//! fixture lines as RFC 3164 packets, with classic and RFC 3339 times, and as
//! RFC 5424 packets) both read the same host, program, time and message.
//!
//! The listener keeps its own reader because the crate loses messages the
//! listener must read or count (see the second test): an RFC 5424 header
//! with an empty HOSTNAME, a leap second, a day the month does not have (the
//! listener counts it unreadable and says why; the crate's error is one fixed
//! sentence), and an RFC 3164 message that begins with `[`, which the crate
//! takes for structured data. The RFC 3164 header is read by
//! `connscope_tcpspy_log`, the importer's reader, so a line means the same
//! streamed or imported; the crate would be a second reader of it.

use syslog_loose::{Message, Variant};

use super::envelope::{parse_envelope, Envelope, EnvelopeTime};
use super::fuzz::packets;

/// The crate's reading of `packet`; a classic time gets the year 2026.
fn oracle(packet: &str) -> Option<Message<&str>> {
    syslog_loose::parse_message_with_year_exact(packet, |_| 2026, Variant::Either).ok()
}

/// What differs between the two readings, if anything.
fn difference(ours: &Envelope<'_>, theirs: &Message<&str>) -> Option<String> {
    let time = match (ours.time, theirs.timestamp) {
        (EnvelopeTime::Exact(t), Some(o)) => Some(t.as_nanos()) == o.timestamp_nanos_opt(),
        (EnvelopeTime::Classic(c), Some(o)) => o.naive_local().to_string().ends_with(&format!(
            "-{:02}-{:02} {:02}:{:02}:{:02}",
            c.month, c.day, c.hour, c.minute, c.second
        )),
        (EnvelopeTime::Missing, None) => true,
        _ => false,
    };
    // RFC 5424: a BOM starts a UTF-8 MSG; the listener drops it, the crate keeps it.
    let their_message = theirs.msg.trim_start_matches('\u{feff}');
    let same = time
        && ours.host == theirs.hostname
        && ours.program == theirs.appname
        && ours.message == their_message.as_bytes();
    (!same).then(|| {
        format!(
            "ours: {:?} {:?} {:?} {:?}\ntheirs: {:?} {:?} {:?} {:?}",
            ours.host,
            ours.program,
            ours.time,
            String::from_utf8_lossy(ours.message),
            theirs.hostname,
            theirs.appname,
            theirs.timestamp,
            theirs.msg
        )
    })
}

#[test]
fn the_crate_reads_every_well_formed_packet_the_same() {
    let packets = packets();
    let mut compared = 0;
    for packet in &packets {
        let text = std::str::from_utf8(packet).unwrap();
        let ours = parse_envelope(packet).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let theirs = oracle(text).unwrap_or_else(|| panic!("the crate refused {text:?}"));
        // rsyslog's own start line has `[origin ...]` after its tag (below).
        if ours.message.starts_with(b"[") {
            continue;
        }
        if let Some(difference) = difference(&ours, &theirs) {
            panic!("{text:?}\n{difference}");
        }
        compared += 1;
    }
    assert!(
        compared > 50,
        "only {compared} of {} compared",
        packets.len()
    );
    for packet in [
        "<13>Nov 24 19:22:17 web1 tcpspy[812]: connect: user root, local 10.0.0.1:40000, remote 10.0.0.2:ssh",
        "<86>2026-11-24T19:22:17.123456+01:00 db1 connscope: disconnect: x",
        "<13>1 2026-11-24T19:22:17.000001Z web1 tcpspy 812 - [timeQuality tzKnown=\"1\" isSynced=\"0\"][x a=\"q\\]\"] \u{feff}connect: hi",
        "<13>1 - - sshd - - - hello",
    ] {
        let ours = parse_envelope(packet.as_bytes()).unwrap();
        let theirs = oracle(packet).unwrap();
        assert_eq!(difference(&ours, &theirs), None, "{packet:?}");
    }
}

#[test]
fn where_the_crate_loses_a_message_the_listener_reads_it() {
    let empty_host = "<86>1 2026-11-24T20:10:19+00:00  tcpspy 812 - - connect: x";
    let leap_second = "<13>Dec 31 23:59:60 web1 tcpspy[812]: connect: x";
    let no_such_day = "<13>Feb 30 12:00:00 web1 tcpspy[812]: connect: x";
    for packet in [empty_host, leap_second, no_such_day] {
        assert!(oracle(packet).is_none(), "the crate now reads {packet:?}");
        let ours = parse_envelope(packet.as_bytes()).unwrap();
        assert_eq!(ours.program, Some("tcpspy"));
        assert_eq!(ours.message, b"connect: x");
    }
    let bracket = "<13>Nov 24 20:10:18 vm tcpspy[1]: [x a=\"1\"] connect: x";
    assert_eq!(oracle(bracket).unwrap().msg, "connect: x");
    assert_eq!(
        parse_envelope(bracket.as_bytes()).unwrap().message,
        b"[x a=\"1\"] connect: x"
    );
}
