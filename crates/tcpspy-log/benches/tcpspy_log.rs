//! Parsing and writing speed of tcpspy lines.
//!
//! The parse input is a buffer of realistic syslog lines (classic and RFC 3339
//! prefixes; IPv4 and IPv6; with and without `proc`; service names and numbers;
//! other programs' lines mixed in). The peer, measured in the same run over
//! the same buffer, is the cheapest pass that still looks at every line: split
//! on newlines and find the `: ` after the tag, which is roughly the memory
//! bandwidth floor any line-oriented importer pays. Criterion prints the time
//! per iteration and the throughput (lines/s via `Elements`, MB/s via `Bytes`);
//! the ratio parse / peer is the number to watch.

use std::hint::black_box;
use std::sync::Arc;

use connscope_event::{ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp};
use connscope_tcpspy_log::{write_body, LineStyle, Message, Parser};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const LINES: usize = 100_000;

const TEMPLATES: &[&str] = &[
    "Nov 24 19:26:22 ws1 tcpspy[812]: connect: proc /usr/bin/curl, user joe, local 192.168.1.23:{p}, remote 93.184.216.34:https",
    "Nov 24 19:26:22 ws1 tcpspy[812]: disconnect: proc /usr/lib/firefox-esr/firefox-, user joe, local 192.168.1.23:{p}, remote 151.101.1.69:https",
    "Nov 24 19:26:23 ws1 tcpspy[812]: connect: user root, local 10.0.0.5:ssh, remote 10.0.0.77:{p}",
    "Nov 24 19:26:23 ws1 tcpspy[812]: connect: proc (unknown), user (uid 4242), local :::{p}, remote 2001:db8:::https",
    "2026-11-24T19:26:22.123456+01:00 ws1 tcpspy[812]: connect: proc /usr/sbin/sshd, user root, local 2001:db8::1:2:0:0:ssh, remote 2001:db8::5:6:0:0:{p}",
    "2026-11-24T19:26:22.123456+01:00 ws1 tcpspy[812]: disconnect: user www-data, local 10.1.2.3:{p}, remote 10.1.2.4:postgresql",
    "2026-11-24T19:26:22.223456+01:00 ws1 connscope[77]: connect: proc /usr/bin/python3.11, user joe, local 2001:db8::1:{p}, remote 2001:db8::2:8080",
    "Nov 24 19:26:24 ws1 CRON[5120]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
];

fn syslog_buffer() -> String {
    let mut buf = String::new();
    for i in 0..LINES {
        let port = (32768 + i % 28000).to_string();
        buf.push_str(&TEMPLATES[i % TEMPLATES.len()].replace("{p}", &port));
        buf.push('\n');
    }
    buf
}

fn events() -> Vec<ConnectionEvent> {
    (0..1000u16)
        .map(|i| {
            let (local, remote) = if i % 2 == 0 {
                ("192.168.1.23:40000", "93.184.216.34:443")
            } else {
                ("[2001:db8::1]:40000", "[2001:db8::2:3]:22")
            };
            let mut ev = ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(1_795_548_137_000_000_000),
                Protocol::Tcp,
                Direction::Outgoing,
                local.parse().unwrap(),
                remote.parse().unwrap(),
            );
            ev.local.set_port(30000 + i);
            ev.uid = Some(1000);
            ev.user_name = Some("joe".into());
            ev.process = Some(Arc::new(ProcessInfo {
                pid: 4000,
                executable: Some("/usr/lib/firefox-esr/firefox-esr".into()),
                ..Default::default()
            }));
            ev
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let buf = syslog_buffer();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("peer: lines + find tag end", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for line in black_box(&buf).lines() {
                n += line.find(": ").unwrap_or(0);
            }
            n
        })
    });
    group.bench_function("parse_syslog_line", |b| {
        let mut parser = Parser::default();
        b.iter(|| {
            let mut connections = 0usize;
            for line in black_box(&buf).lines() {
                if let Some(rec) = parser.parse_syslog_line(line.as_bytes()).unwrap() {
                    if let Message::Connection(c) = rec.message {
                        connections += usize::from(c.remote.addr.port());
                    }
                }
            }
            connections
        })
    });
    group.bench_function("parse_syslog_line + to_event", |b| {
        let mut parser = Parser::default();
        b.iter(|| {
            let mut n = 0usize;
            for line in black_box(&buf).lines() {
                if let Some(rec) = parser.parse_syslog_line(line.as_bytes()).unwrap() {
                    if let Message::Connection(c) = rec.message {
                        n += c.to_event(Timestamp::from_nanos(0), rec.host).host.len();
                    }
                }
            }
            n
        })
    });
    group.finish();

    let mut group = c.benchmark_group("parse-bytes");
    group.throughput(Throughput::Bytes(buf.len() as u64));
    group.bench_function("parse_syslog_line", |b| {
        let mut parser = Parser::default();
        b.iter(|| {
            let mut n = 0usize;
            for line in black_box(&buf).lines() {
                n += usize::from(parser.parse_syslog_line(line.as_bytes()).unwrap().is_some());
            }
            n
        })
    });
    group.finish();
}

fn write(c: &mut Criterion) {
    let events = events();
    let mut group = c.benchmark_group("write");
    group.throughput(Throughput::Elements(events.len() as u64));
    let mut out = String::with_capacity(256 * events.len());
    group.bench_function("peer: json::write_json_line", |b| {
        let mut bytes = Vec::with_capacity(512 * events.len());
        b.iter(|| {
            bytes.clear();
            for ev in &events {
                connscope_event::json::write_json_line(&mut bytes, black_box(ev));
            }
            bytes.len()
        })
    });
    for (name, style) in [
        (
            "write_body -p",
            LineStyle {
                show_exe: true,
                numeric_ports: false,
            },
        ),
        (
            "write_body -n",
            LineStyle {
                show_exe: false,
                numeric_ports: true,
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                for ev in &events {
                    write_body(black_box(ev), &style, &mut out).unwrap();
                    out.push('\n');
                }
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse, write);
criterion_main!(benches);
