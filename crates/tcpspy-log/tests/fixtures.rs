//! Real tcpspy 1.7d output captured on Debian 12 (see tests/fixtures/README.md):
//! every line must parse, and writing the parsed event back must give the same
//! message, except where tcpspy's output is lossy, which is asserted explicitly.

use connscope_event::{ConnectionEvent, Timestamp};
use connscope_tcpspy_log::{
    write_body, write_foreground_line, ClassicTime, Connection, Exe, LineStyle, LogTime, Message,
    NoticeKind, Origin, Parser, Precision, SyslogRecord, User,
};
use jiff::tz::TimeZone;

const CLASSIC: &str = include_str!("fixtures/syslog-classic.log");
const RFC3339: &str = include_str!("fixtures/syslog-rfc3339.log");
const FOREGROUND: &str = include_str!("fixtures/foreground.log");

fn records(text: &str) -> Vec<SyslogRecord<'_>> {
    let mut parser = Parser::default();
    let mut out = Vec::new();
    let mut others = 0;
    for (n, line) in text.lines().enumerate() {
        match parser.parse_syslog_line(line.as_bytes()) {
            Ok(Some(rec)) => out.push(rec),
            Ok(None) => others += 1,
            Err(e) => panic!("line {}: {e}", n + 1),
        }
    }
    assert_eq!(others, 1, "only rsyslogd's start line is another program's");
    out
}

fn style_of(c: &Connection<'_>) -> LineStyle {
    LineStyle {
        show_exe: c.exe.is_some(),
        numeric_ports: false,
    }
}

/// The message as tcpspy would print the parsed connection, with the 64-bit
/// IPv6 bug applied again; equal to the logged message exactly when nothing
/// but the bug was lost.
fn rewritten(c: &Connection<'_>) -> String {
    let mut out = String::new();
    write_body(
        &as_written(c, Timestamp::from_nanos(0)),
        &style_of(c),
        &mut out,
    )
    .unwrap();
    with_tcpspy_v6_bug(c, out)
}

/// The event of `c` with the addresses as the line wrote them: `to_event`
/// normalises them (a `::` pair is `::1`), the writer is checked on the text.
fn as_written(c: &Connection<'_>, ts: Timestamp) -> ConnectionEvent {
    let mut event = c.to_event(ts, "h");
    (event.local, event.remote) = (c.local.addr, c.remote.addr);
    event
}

/// Prints the addresses of `c` that came through tcpspy's IPv6 bug the way
/// tcpspy printed them: real words 0 and 1 at printed words 0 and 2.
fn with_tcpspy_v6_bug(c: &Connection<'_>, mut out: String) -> String {
    for ep in [c.local, c.remote] {
        if ep.precision == Precision::Upper64Bits {
            let real = ep.addr.ip().to_string();
            let bits = match ep.addr.ip() {
                std::net::IpAddr::V6(v6) => u128::from(v6),
                std::net::IpAddr::V4(_) => unreachable!(),
            };
            let words = [(bits >> 96) as u32, (bits >> 64) as u32];
            let printed = std::net::Ipv6Addr::from(
                (u128::from(words[0]) << 96) | (u128::from(words[1]) << 32),
            );
            out = out.replace(&format!(" {real}:"), &format!(" {printed}:"));
        }
    }
    out
}

#[test]
fn syslog_files_parse_and_write_back() {
    let classic = records(CLASSIC);
    let rfc = records(RFC3339);
    assert_eq!(classic.len(), 28);
    assert_eq!(classic.len(), rfc.len());
    let mut connections = 0;
    for ((line, c), r) in CLASSIC
        .lines()
        .filter(|l| l.contains(" tcpspy["))
        .zip(&classic)
        .zip(&rfc)
    {
        assert_eq!(
            (c.host, c.origin, &c.message),
            (r.host, r.origin, &r.message)
        );
        assert_eq!(c.host, "vm");
        assert_eq!(c.origin, Origin::Tcpspy);
        assert!(matches!(c.pid, Some(11277 | 11281)));
        if let Message::Connection(conn) = &c.message {
            connections += 1;
            let logged = &line[line.find("]: ").unwrap() + 3..];
            assert_eq!(rewritten(conn), logged);
        }
    }
    assert_eq!(connections, 24);

    let first = &rfc[0];
    let expected: Timestamp = "2026-11-24T20:10:18.973143Z".parse().unwrap();
    assert_eq!(first.time, LogTime::Rfc3339(expected));
    assert_eq!(
        classic[0].time,
        LogTime::Classic(ClassicTime {
            month: 11,
            day: 24,
            hour: 20,
            minute: 10,
            second: 18
        })
    );
    let kinds = |recs: &[SyslogRecord<'_>]| {
        recs.iter()
            .filter_map(|r| match &r.message {
                Message::Notice(n) => Some(n.kind),
                Message::Connection(_) => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        kinds(&classic),
        [
            NoticeKind::Started,
            NoticeKind::Started,
            NoticeKind::ShuttingDown,
            NoticeKind::ShuttingDown
        ]
    );
}

#[test]
fn lossy_parts_of_real_lines_are_flagged() {
    let classic = records(CLASSIC);
    let conns: Vec<&Connection<'_>> = classic
        .iter()
        .filter_map(|r| match &r.message {
            Message::Connection(c) => Some(c),
            Message::Notice(_) => None,
        })
        .collect();
    // The python interpreter's path, cut by tcpspy at 30 bytes.
    let cut = conns
        .iter()
        .find(
            |c| matches!(&c.exe, Some(Exe::Path { path, .. }) if path.starts_with("/root/.pyenv")),
        )
        .unwrap();
    assert_eq!(
        cut.exe,
        Some(Exe::Path {
            path: "/root/.pyenv/versions/3.11.7/b".into(),
            possibly_cut: true
        })
    );
    // A uid without a name.
    let numeric = conns
        .iter()
        .find(|c| c.user == User::Uid(4242) && c.exe.is_some())
        .unwrap();
    assert_eq!(
        numeric.exe,
        Some(Exe::Path {
            path: "/usr/bin/sleep".into(),
            possibly_cut: false
        })
    );
    // ::1 printed as ::, both ends.
    let v6: Vec<_> = conns.iter().filter(|c| c.local.addr.is_ipv6()).collect();
    assert_eq!(v6.len(), 8);
    for c in v6 {
        for ep in [c.local, c.remote] {
            assert_eq!(ep.addr.ip().to_string(), "::");
            assert_eq!(ep.precision, Precision::Upper64Bits);
        }
    }
}

#[test]
fn foreground_lines_parse_and_write_back() {
    let mut parser = Parser::default();
    let mut seen_ports = std::collections::BTreeSet::new();
    let mut unknown_exe = 0;
    for (n, line) in FOREGROUND.lines().enumerate() {
        let rec = parser
            .parse_foreground_line(line.as_bytes())
            .unwrap_or_else(|e| panic!("line {}: {e}", n + 1));
        let time = rec.time.unwrap();
        let Message::Connection(c) = rec.message else {
            assert!(line.ends_with("caught signal 15, shutting down"), "{line}");
            continue;
        };
        // Captured in UTC in 2026.
        let ts = TimeZone::UTC
            .to_timestamp(
                jiff::civil::date(2026, time.month as i8, time.day as i8).at(
                    time.hour as i8,
                    time.minute as i8,
                    time.second as i8,
                    0,
                ),
            )
            .unwrap();
        let mut out = String::new();
        write_foreground_line(
            &as_written(&c, ts.into()),
            &style_of(&c),
            &TimeZone::UTC,
            &mut out,
        )
        .unwrap();
        assert_eq!(with_tcpspy_v6_bug(&c, out), format!("{line}\n"));
        seen_ports.insert(c.local.addr.port().min(c.remote.addr.port()));
        unknown_exe += usize::from(c.exe == Some(Exe::Unknown));
        // The addresses the capture used, as far as tcpspy kept them.
        let ip = c.local.addr.ip().to_string();
        assert!(
            ["127.0.0.1", "::", "2001:db8::", "2001:db8:1:2::"].contains(&ip.as_str()),
            "{ip}"
        );
    }
    // ssh, http, https, postgresql were logged by name.
    for port in [22, 80, 443, 5432] {
        assert!(seen_ports.contains(&port), "{port}");
    }
    assert_eq!(unknown_exe, 2);
}
