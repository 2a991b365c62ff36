//! Both pollers against real loopback connections made by this test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use connscope_capture::{CaptureBackend, CaptureConfig};
use connscope_capture_poll::{ProcBackend, SockDiagBackend};
use connscope_event::{ConnectionEvent, Direction, EventKind, Timestamp};

fn config(interval_ms: u64) -> CaptureConfig {
    CaptureConfig {
        poll_interval: Duration::from_millis(interval_ms),
        ..CaptureConfig::default()
    }
}

/// Polls until `done` holds for the events gathered so far (at most 20 s).
fn collect_until(
    backend: &mut dyn CaptureBackend,
    seen: &mut Vec<ConnectionEvent>,
    done: impl Fn(&[ConnectionEvent]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(seen) {
        assert!(Instant::now() < deadline, "timed out; saw {seen:#?}");
        backend.poll(seen, Duration::from_millis(50)).unwrap();
    }
}

fn find(
    events: &[ConnectionEvent],
    kind: EventKind,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<&ConnectionEvent> {
    events
        .iter()
        .find(|e| e.kind == kind && e.local == local && e.remote == remote)
}

/// A connected pair on `listen_on`: (client, server side, client addr, server addr).
fn connect_pair(listen_on: &str) -> (TcpStream, TcpStream, SocketAddr, SocketAddr) {
    let listener = TcpListener::bind(listen_on).unwrap();
    let server_addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(server_addr).unwrap();
    let (server, client_addr) = listener.accept().unwrap();
    (client, server, client_addr, server_addr)
}

fn sees_both_ends_with_process(backend: &mut dyn CaptureBackend, listen_on: &str) {
    let mut seen = Vec::new();
    // The first poll reports what was open before: not what this test makes.
    backend.poll(&mut seen, Duration::from_millis(10)).unwrap();
    let listener = TcpListener::bind(listen_on).unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(server_addr).unwrap();
    let (server, client_addr) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();

    collect_until(backend, &mut seen, |s| {
        find(s, EventKind::Connect, client_addr, server_addr).is_some()
            && find(s, EventKind::Connect, server_addr, client_addr).is_some()
    });
    let exe = std::env::current_exe().unwrap();
    let out = find(&seen, EventKind::Connect, client_addr, server_addr).unwrap();
    let inc = find(&seen, EventKind::Connect, server_addr, client_addr).unwrap();
    assert_eq!(out.direction, Direction::Outgoing);
    assert_eq!(inc.direction, Direction::Incoming);
    for event in [out, inc] {
        assert!(!event.preexisting);
        assert_eq!(event.pid(), Some(std::process::id()), "{event:#?}");
        assert_eq!(event.executable(), exe.to_str());
        // SAFETY: geteuid cannot fail.
        assert_eq!(event.uid, Some(unsafe { libc::geteuid() }));
        event.validate().unwrap();
    }

    drop(client);
    drop(server);
    collect_until(backend, &mut seen, |s| {
        find(s, EventKind::Disconnect, client_addr, server_addr).is_some()
            && find(s, EventKind::Disconnect, server_addr, client_addr).is_some()
    });
    let close = find(&seen, EventKind::Disconnect, client_addr, server_addr).unwrap();
    assert_eq!(close.executable(), exe.to_str());
}

#[test]
fn proc_sees_loopback_v4_and_v6() {
    let mut backend = ProcBackend::open(&config(20)).unwrap();
    assert_eq!(backend.name(), "proc");
    sees_both_ends_with_process(&mut backend, "127.0.0.1:0");
    sees_both_ends_with_process(&mut backend, "[::1]:0");
}

#[test]
fn sockdiag_sees_loopback_v4_and_v6_with_bytes() {
    let mut backend = SockDiagBackend::open(&config(20)).unwrap();
    assert_eq!(backend.name(), "sockdiag");
    sees_both_ends_with_process(&mut backend, "127.0.0.1:0");
    sees_both_ends_with_process(&mut backend, "[::1]:0");
}

#[test]
fn sockdiag_catches_connection_shorter_than_interval() {
    // An hour between dumps: only the destroy messages can report this one.
    let mut backend = SockDiagBackend::open(&config(3_600_000)).unwrap();
    let mut seen = Vec::new();
    backend.poll(&mut seen, Duration::from_millis(10)).unwrap();
    // The listener is younger than the last dump, and stays (as servers do).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(server_addr).unwrap();
    let (mut server, client_addr) = listener.accept().unwrap();
    client.write_all(b"ping!").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    server.write_all(b"pong, longer").unwrap();
    client.read_exact(&mut [0u8; 12]).unwrap();
    drop(client);
    drop(server);

    collect_until(&mut backend, &mut seen, |s| {
        find(s, EventKind::Disconnect, client_addr, server_addr).is_some()
            && find(s, EventKind::Disconnect, server_addr, client_addr).is_some()
    });
    let connect = find(&seen, EventKind::Connect, client_addr, server_addr)
        .expect("a destroyed connection never dumped is reported as connected too");
    assert_eq!(connect.direction, Direction::Outgoing);
    let client_close = find(&seen, EventKind::Disconnect, client_addr, server_addr).unwrap();
    let stats = client_close.close.unwrap();
    // The kernel's counters include the SYN and FIN sequence numbers besides
    // the data bytes.
    assert!(
        (5..=7).contains(&stats.bytes_sent),
        "sent {}",
        stats.bytes_sent
    );
    assert!(
        (12..=13).contains(&stats.bytes_received),
        "received {}",
        stats.bytes_received
    );
    let server_close = find(&seen, EventKind::Disconnect, server_addr, client_addr).unwrap();
    assert_eq!(server_close.direction, Direction::Incoming);
    assert!((5..=6).contains(&server_close.close.unwrap().bytes_received));
    // Each was reported exactly once.
    let count = |local, remote| {
        seen.iter()
            .filter(|e| e.local == local && e.remote == remote)
            .count()
    };
    assert_eq!(count(client_addr, server_addr), 2);
    assert_eq!(count(server_addr, client_addr), 2);
}

fn marks_preexisting(open: fn() -> Box<dyn CaptureBackend>) {
    let (_client, _server, client_addr, server_addr) = connect_pair("127.0.0.1:0");
    let mut backend = open();
    let mut seen = Vec::new();
    collect_until(backend.as_mut(), &mut seen, |s| {
        find(s, EventKind::Connect, client_addr, server_addr).is_some()
    });
    assert!(
        find(&seen, EventKind::Connect, client_addr, server_addr)
            .unwrap()
            .preexisting
    );

    let (_client2, _server2, client2, server2) = connect_pair("[::1]:0");
    collect_until(backend.as_mut(), &mut seen, |s| {
        find(s, EventKind::Connect, client2, server2).is_some()
    });
    assert!(
        !find(&seen, EventKind::Connect, client2, server2)
            .unwrap()
            .preexisting
    );
    // The preexisting connection is reported once, not on every poll.
    let again = seen
        .iter()
        .filter(|e| e.kind == EventKind::Connect && e.local == client_addr)
        .count();
    assert_eq!(again, 1, "{seen:#?}");
}

#[test]
fn proc_marks_preexisting_connections() {
    marks_preexisting(|| Box::new(ProcBackend::open(&config(20)).unwrap()));
}

#[test]
fn sockdiag_marks_preexisting_connections() {
    marks_preexisting(|| Box::new(SockDiagBackend::open(&config(20)).unwrap()));
}

/// The server side of a connection waits in the listener's accept queue, held
/// by no process, until accept(): a busy server leaves it there for many
/// polls. It must still be reported with the process that accepts it.
fn names_the_server_of_a_late_accept(backend: &mut dyn CaptureBackend, listen_on: &str) {
    let mut seen = Vec::new();
    backend.poll(&mut seen, Duration::from_millis(10)).unwrap();
    let listener = TcpListener::bind(listen_on).unwrap();
    let server_addr = listener.local_addr().unwrap();
    let client = TcpStream::connect(server_addr).unwrap();
    let client_addr = client.local_addr().unwrap();
    let accepted_at = Instant::now() + Duration::from_millis(300);
    let server = std::thread::spawn(move || {
        std::thread::sleep(accepted_at.saturating_duration_since(Instant::now()));
        (Timestamp::now(), listener.accept().unwrap().0)
    });
    // Fifteen polls fall in the wait; the first sees the queued socket.
    while Instant::now() < accepted_at {
        backend.poll(&mut seen, Duration::from_millis(50)).unwrap();
    }
    let (accepting, server) = server.join().unwrap();
    collect_until(backend, &mut seen, |s| {
        find(s, EventKind::Connect, server_addr, client_addr).is_some()
    });
    let inc = find(&seen, EventKind::Connect, server_addr, client_addr).unwrap();
    assert_eq!(inc.direction, Direction::Incoming);
    assert_eq!(inc.pid(), Some(std::process::id()), "{inc:#?}");
    assert!(
        inc.timestamp < accepting,
        "stamped when first seen, not when named: {inc:#?}"
    );

    drop(client);
    drop(server);
    collect_until(backend, &mut seen, |s| {
        find(s, EventKind::Disconnect, server_addr, client_addr).is_some()
    });
    let close = find(&seen, EventKind::Disconnect, server_addr, client_addr).unwrap();
    assert_eq!(close.pid(), Some(std::process::id()));
    let server_events: Vec<_> = seen
        .iter()
        .filter(|e| e.local == server_addr && e.remote == client_addr)
        .map(|e| e.kind)
        .collect();
    assert_eq!(server_events, [EventKind::Connect, EventKind::Disconnect]);
}

#[test]
fn proc_names_the_server_of_a_late_accept() {
    let mut backend = ProcBackend::open(&config(20)).unwrap();
    names_the_server_of_a_late_accept(&mut backend, "127.0.0.1:0");
    names_the_server_of_a_late_accept(&mut backend, "[::1]:0");
}

#[test]
fn sockdiag_names_the_server_of_a_late_accept() {
    let mut backend = SockDiagBackend::open(&config(20)).unwrap();
    names_the_server_of_a_late_accept(&mut backend, "127.0.0.1:0");
    names_the_server_of_a_late_accept(&mut backend, "[::1]:0");
}
