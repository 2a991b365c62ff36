#![cfg(feature = "system-tests")] // util-linux logger and rsyslogd
//! The syslog listener with real senders: util-linux `logger` (UDP and TCP,
//! RFC 3164 and RFC 5424, newline and octet-counted framing) and `rsyslogd`
//! forwarding what it receives, as a tcpspy host's syslog would. Traffic stays
//! on 127.0.0.1.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_for, Running};
use connscope_collector::CollectorConfig;
use connscope_event::{ConnectionEvent, Direction};
use connscope_store::{EventQuery, SqliteStore, Store, TimeRange};

/// A collector with its syslog listener on a free loopback port.
fn start_collector(dir: &std::path::Path, store: Arc<dyn Store>) -> Running {
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("c.db"));
    config.syslog_listen = Some("127.0.0.1:0".parse().unwrap());
    config
        .tokens
        .insert("unused", "token-nobody-uses-here")
        .unwrap();
    Running::start(config, store)
}

fn hostname() -> String {
    connscope_names::host_name().unwrap()
}

fn all_events(store: &SqliteStore) -> Vec<ConnectionEvent> {
    store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: 100_000,
        })
        .unwrap()
}

fn logger(port: u16, args: &[&str], tag: &str, message: &str) {
    let status = Command::new("logger")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(args)
        .args(["-t", tag, message])
        .status()
        .expect("logger (util-linux) is installed");
    assert!(status.success(), "logger {args:?} failed");
}

#[test]
fn logger_messages_in_every_framing_are_stored_and_others_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("c.db")).unwrap());
    let collector = start_collector(dir.path(), store.clone());
    let port = collector.syslog.unwrap().port();

    let variants: [&[&str]; 5] = [
        &["--udp", "--rfc3164"],
        &["--udp", "--rfc5424"],
        &["--tcp", "--rfc3164"],
        &["--tcp", "--rfc5424"],
        &["--tcp", "--rfc5424", "--octet-count"],
    ];
    for (i, args) in variants.iter().enumerate() {
        let message = format!(
            "connect: proc /usr/bin/ssh, user root, local 127.0.0.1:{}, remote 127.0.0.1:ssh",
            41000 + i
        );
        logger(port, args, "tcpspy", &message);
    }
    logger(port, &["--udp", "--rfc5424"], "connscope",
        "disconnect: proc /usr/lib/postgresql/15/bin/postgres, user postgres, local ::1:5432, remote ::1:50000");
    logger(
        port,
        &["--tcp", "--rfc3164"],
        "sshd",
        "Accepted publickey for root",
    );
    logger(
        port,
        &["--udp", "--rfc5424"],
        "tcpspy",
        "tcpspy started, monitoring connections",
    );
    logger(port, &["--udp", "--rfc5424"], "tcpspy", "connect: nonsense");

    wait_for("six events", || all_events(&store).len() == 6);
    wait_for("the counters", || {
        collector.counters.syslog_ignored.load(Ordering::Relaxed) == 1
            && collector.counters.syslog_unreadable.load(Ordering::Relaxed) == 1
    });
    let events = all_events(&store);
    let host = hostname();
    let mut ports: Vec<u16> = events
        .iter()
        .filter(|e| e.remote.port() == 22)
        .map(|e| e.local.port())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, [41000, 41001, 41002, 41003, 41004]);
    for event in &events {
        assert_eq!(event.host, host);
        // Inferred as the importer does: the service end is port 22 or 5432.
        let expected = match event.local.port() {
            5432 => Direction::Incoming,
            _ => Direction::Outgoing,
        };
        assert_eq!(event.direction, expected, "{event:?}");
        // Received just now, whatever the header's time format.
        let age = connscope_event::Timestamp::now().nanos_since(event.timestamp);
        assert!(
            age < 600_000_000_000,
            "timestamp {} is off",
            event.timestamp
        );
    }
    let postgres = events.iter().find(|e| e.local.port() == 5432).unwrap();
    assert_eq!(
        postgres.executable(),
        Some("/usr/lib/postgresql/15/bin/postgres"),
        "connscope's own lines are exact, not cut at 30 bytes"
    );
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].agent.0, format!("syslog@{host}"));
}

#[test]
fn a_resent_message_is_stored_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("c.db")).unwrap());
    let collector = start_collector(dir.path(), store.clone());
    let line = b"<86>1 2026-11-24T19:22:17.5Z gw tcpspy 9 - - connect: user root, local 10.0.0.1:40000, remote 10.0.0.2:22\n";
    for _ in 0..2 {
        let mut tcp = std::net::TcpStream::connect(collector.syslog.unwrap()).unwrap();
        tcp.write_all(line).unwrap();
    }
    wait_for("the resend to be processed", || {
        collector
            .counters
            .syslog_events_duplicate
            .load(Ordering::Relaxed)
            == 1
    });
    assert_eq!(all_events(&store).len(), 1);
    assert_eq!(store.agents().unwrap()[0].agent.0, "syslog@gw");
}

/// rsyslogd in the foreground with its own config, killed on drop.
struct Rsyslogd(Child);

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn rsyslog_forwarding_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("c.db")).unwrap());
    let collector = start_collector(dir.path(), store.clone());
    let input_port = free_udp_port();
    let conf = dir.path().join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}")
module(load="imudp")
input(type="imudp" address="127.0.0.1" port="{input_port}")
# What a tcpspy host does: forward its syslog, here over TCP (traditional
# format, newline framing) and, for the connscope lines, octet-counted RFC 5424.
if $programname == "tcpspy" then {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp")
}} else {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
         TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
}}
"#,
            work = dir.path().display(),
            port = collector.syslog.unwrap().port(),
        ),
    )
    .unwrap();
    let _rsyslogd = Rsyslogd(
        Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .spawn()
            .expect("rsyslogd (Debian rsyslog) is installed"),
    );
    // rsyslogd needs a moment to open its input; resend until the first arrives
    // (content keys make the repeats harmless).
    let deadline = Instant::now() + Duration::from_secs(60);
    while all_events(&store).is_empty() {
        assert!(Instant::now() < deadline, "nothing arrived through rsyslog");
        logger(
            input_port,
            &["--udp", "--rfc3164"],
            "tcpspy",
            "connect: proc /usr/sbin/sshd, user root, local 127.0.0.1:22, remote 127.0.0.1:50022",
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    logger(
        input_port,
        &["--udp", "--rfc5424"],
        "connscope",
        "connect: proc /usr/bin/curl, user nobody, local 127.0.0.1:50100, remote 127.0.0.1:443",
    );
    logger(
        input_port,
        &["--udp", "--rfc5424"],
        "cron",
        "(root) CMD (true)",
    );
    wait_for("the connscope line", || {
        all_events(&store)
            .iter()
            .any(|e| e.executable() == Some("/usr/bin/curl"))
    });
    wait_for("the cron line to be ignored", || {
        collector.counters.syslog_ignored.load(Ordering::Relaxed) >= 1
    });
    let events = all_events(&store);
    assert!(events.iter().all(|e| e.host == hostname()));
    let sshd = events
        .iter()
        .filter(|e| e.executable() == Some("/usr/sbin/sshd"))
        .count();
    assert!(sshd >= 1);
}
