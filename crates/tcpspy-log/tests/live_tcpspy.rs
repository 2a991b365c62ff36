#![cfg(feature = "system-tests")] // root: Debian's tcpspy, run as another user
//! The real tcpspy (Debian package, /usr/sbin/tcpspy) as reference peer: run
//! `tcpspy -d [-p] -I 10` while this test makes loopback connections, then
//! read everything it printed and write it back.
//!
//! tcpspy sees every connection on the machine, so other tests' lines show up
//! too; all of them must parse and write back, while the detailed assertions
//! look only at this test's own ports.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connscope_event::test_support::EventBuilder;
use connscope_event::{ConnectionEvent, EventKind, Protocol, Timestamp};
use connscope_tcpspy_log::{
    write_body, write_foreground_line, Connection, Exe, LineStyle, Message, Parser, Precision,
    User, TCPSPY_EXE_CUT,
};
use jiff::tz::TimeZone;

const TCPSPY: &str = "/usr/sbin/tcpspy";
const WAIT: Duration = Duration::from_secs(20);

/// A running `tcpspy -d`, killed and reaped on drop.
struct Tcpspy {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tcpspy {
    fn start(show_exe: bool) -> Tcpspy {
        let mut cmd = Command::new(TCPSPY);
        cmd.arg("-d").args(["-I", "10"]);
        if show_exe {
            cmd.arg("-p");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{TCPSPY} (Debian package tcpspy) must be installed: {e}"));
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut banner = String::new();
        stderr.read_line(&mut banner).unwrap();
        assert_eq!(banner, "tcpspy 1.7d started (debug)\n");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Tcpspy { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until tcpspy printed a line that `wanted` accepts.
    fn saw(&self, wanted: impl Fn(&str) -> bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| wanted(l)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Tcpspy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How tcpspy prints a port: its service name where it has one.
fn port_text(port: u16) -> String {
    connscope_names::Services::system()
        .name(port, Protocol::Tcp)
        .map_or_else(|| port.to_string(), str::to_owned)
}

/// Makes one loopback connection that tcpspy reports both ways: held open
/// until its connect line is seen (at least 300 ms), then closed until the
/// disconnect is seen. Returns (client, server) addresses.
fn observed_connection(spy: &Tcpspy, ip: &str, printed_ip: &str) -> (SocketAddr, SocketAddr) {
    // A connection opened before tcpspy's first poll is never reported as a
    // connect (tcpspy takes the first table as its baseline), so retry.
    for _ in 0..5 {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let server = listener.local_addr().unwrap();
        let client = TcpStream::connect(server).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let client_addr = client.local_addr().unwrap();
        let ends = format!(
            ", local {printed_ip}:{}, remote {printed_ip}:{}",
            port_text(client_addr.port()),
            port_text(server.port())
        );
        let line_of = |action: &'static str| {
            let ends = ends.clone();
            move |l: &str| l.contains(action) && l.ends_with(&ends)
        };
        std::thread::sleep(Duration::from_millis(300));
        if spy.saw(line_of(": connect: "), Duration::from_secs(3)) {
            drop(client);
            drop(accepted);
            assert!(
                spy.saw(line_of(": disconnect: "), WAIT),
                "tcpspy did not report the disconnect of {client_addr}"
            );
            return (client_addr, server);
        }
    }
    panic!("tcpspy never reported a connection on {ip}");
}

/// A connection from a process running as uid 4242, which has no user name.
/// The ports of uid 4242's end and of ours.
fn connection_from_nameless_uid(spy: &Tcpspy) -> (u16, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut bash = Command::new("setpriv")
        .args([
            "--reuid",
            "4242",
            "--regid",
            "4242",
            "--clear-groups",
            "bash",
            "-c",
        ])
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; read -t 30 -u 3 x"
        ))
        .spawn()
        .unwrap();
    let (mut accepted, peer) = listener.accept().unwrap();
    let needle = format!(
        "user (uid 4242), local 127.0.0.1:{}, ",
        port_text(peer.port())
    );
    let seen = spy.saw(|l| l.contains(&needle), WAIT);
    // Closing our end lets bash's read return.
    accepted.write_all(b"bye\n").unwrap();
    drop(accepted);
    bash.wait().unwrap();
    assert!(seen, "tcpspy did not report uid 4242's connection");
    assert!(
        spy.saw(
            |l| l.contains(": disconnect: ") && l.contains(&needle),
            WAIT
        ),
        "tcpspy did not report uid 4242's disconnect"
    );
    (peer.port(), port)
}

/// Every line tcpspy printed parses, and writing the parsed event back gives
/// the line again. The 30-byte cut survives a round trip unchanged (the event
/// holds the cut path); the IPv6 bug too for loopback (`::` prints as `::`).
fn assert_every_line_round_trips(
    lines: &[String],
    show_exe: bool,
) -> Vec<(String, Connection<'_>)> {
    let mut parser = Parser::default();
    let tz = TimeZone::system();
    let year = tz.to_datetime(jiff::Timestamp::now()).year();
    let mut connections = Vec::new();
    for line in lines {
        let rec = parser
            .parse_foreground_line(line.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let Message::Connection(c) = rec.message else {
            continue;
        };
        assert_eq!(c.exe.is_some(), show_exe, "{line}");
        let t = rec.time.unwrap();
        let civil = jiff::civil::date(year, t.month as i8, t.day as i8).at(
            t.hour as i8,
            t.minute as i8,
            t.second as i8,
            0,
        );
        let ts: Timestamp = tz.to_timestamp(civil).unwrap().into();
        let style = LineStyle {
            show_exe,
            numeric_ports: false,
        };
        let mut out = String::new();
        // The addresses as the line wrote them: `to_event` reads a `::` pair as `::1`.
        let mut event = c.to_event(ts, "h");
        (event.local, event.remote) = (c.local.addr, c.remote.addr);
        write_foreground_line(&event, &style, &tz, &mut out).unwrap();
        if [c.local, c.remote]
            .iter()
            .all(|ep| ep.precision == Precision::Exact || ep.addr.ip() == Ipv6Addr::UNSPECIFIED)
        {
            assert_eq!(out, format!("{line}\n"));
        }
        connections.push((line.clone(), c));
    }
    connections
}

fn find<'a, 'b>(
    conns: &'a [(String, Connection<'b>)],
    (local_port, remote_port): (u16, u16),
    kind: EventKind,
) -> &'a Connection<'b> {
    // Both ports: tcpspy logs the whole host, and another program's
    // connection may have the same local port meanwhile.
    &conns
        .iter()
        .find(|(_, c)| {
            c.kind == kind
                && c.local.addr.port() == local_port
                && c.remote.addr.port() == remote_port
        })
        .unwrap_or_else(|| panic!("no {kind} line for ports {local_port} -> {remote_port}"))
        .1
}

fn true_event(c: &Connection<'_>, local: SocketAddr, remote: SocketAddr) -> ConnectionEvent {
    EventBuilder::connect(local, remote)
        .kind(c.kind)
        .user("root")
        .process(
            std::process::id(),
            std::env::current_exe().unwrap().to_str().unwrap(),
        )
        .build()
}

#[test]
fn tcpspy_with_proc_round_trips() {
    let spy = Tcpspy::start(true);
    let (v4_client, v4_server) = observed_connection(&spy, "127.0.0.1", "127.0.0.1");
    let (v6_client, v6_server) = observed_connection(&spy, "::1", "::");
    let uid_ports = connection_from_nameless_uid(&spy);
    let lines = spy.lines();
    drop(spy);
    let conns = assert_every_line_round_trips(&lines, true);

    // Our own executable, cut at 30 bytes and flagged; the full path is longer.
    let exe = std::env::current_exe()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(exe.len() > TCPSPY_EXE_CUT, "{exe}");
    let c = find(
        &conns,
        (v4_client.port(), v4_server.port()),
        EventKind::Connect,
    );
    assert_eq!(
        c.exe,
        Some(Exe::Path {
            path: exe[..TCPSPY_EXE_CUT].into(),
            possibly_cut: true
        })
    );
    assert_eq!(c.user, User::Name("root"));
    assert_eq!(c.remote.addr, v4_server);
    // connscope writes what tcpspy would have, uncut.
    let mut out = String::new();
    let style = LineStyle {
        show_exe: true,
        numeric_ports: true,
    };
    write_body(&true_event(c, v4_client, v4_server), &style, &mut out).unwrap();
    assert_eq!(
        out,
        format!("connect: proc {exe}, user root, local {v4_client}, remote {v4_server}")
    );

    // ::1 was printed as ::, read back as :: with the loss flagged.
    let c = find(
        &conns,
        (v6_client.port(), v6_server.port()),
        EventKind::Disconnect,
    );
    assert_eq!(
        c.local.addr,
        SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), v6_client.port())
    );
    assert_eq!(c.remote.addr.port(), v6_server.port());
    assert_eq!(c.local.precision, Precision::Upper64Bits);
    out.clear();
    write_body(&true_event(c, v6_client, v6_server), &style, &mut out).unwrap();
    assert_eq!(
        out,
        format!(
            "disconnect: proc {exe}, user root, local ::1:{}, remote ::1:{}",
            v6_client.port(),
            v6_server.port()
        )
    );

    let c = find(&conns, uid_ports, EventKind::Connect);
    assert_eq!(c.user, User::Uid(4242));
    assert!(matches!(&c.exe, Some(Exe::Path { .. } | Exe::Unknown)));
}

#[test]
fn tcpspy_without_proc_round_trips() {
    let spy = Tcpspy::start(false);
    let (v4_client, v4_server) = observed_connection(&spy, "127.0.0.1", "127.0.0.1");
    let (v6_client, v6_server) = observed_connection(&spy, "::1", "::");
    let uid_ports = connection_from_nameless_uid(&spy);
    let lines = spy.lines();
    drop(spy);
    let conns = assert_every_line_round_trips(&lines, false);
    let c = find(
        &conns,
        (v4_server.port(), v4_client.port()),
        EventKind::Connect,
    );
    assert_eq!((c.exe.clone(), c.remote.addr), (None, v4_client));
    let c = find(
        &conns,
        (v6_client.port(), v6_server.port()),
        EventKind::Connect,
    );
    assert_eq!(c.remote.precision, Precision::Upper64Bits);
    assert_eq!(
        find(&conns, uid_ports, EventKind::Disconnect).user,
        User::Uid(4242)
    );
}

#[test]
fn tcpspy_is_killed_on_drop() {
    let spy = Tcpspy::start(false);
    let pid = spy.child.id();
    drop(spy);
    // Killed and reaped: /proc/PID is gone (unless the pid was reused at once).
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    assert_ne!(
        exe.as_deref(),
        Some(std::path::Path::new(TCPSPY)),
        "tcpspy {pid} still there"
    );
}
