#![cfg(feature = "system-tests")] // root: eBPF programs, network namespaces
//! The eBPF backend against the real kernel: real sockets on loopback, real
//! network namespaces, real short-lived processes. Runs as root.
//!
//! Tests run in parallel threads, each with its own backend (its own BPF
//! objects), so each looks only at the ports and pids it made itself.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use connscope_capture::{netns, CaptureBackend, CaptureConfig, NetnsFilter};
use connscope_capture_ebpf::EbpfBackend;
use connscope_event::{ConnectFailure, ConnectionEvent, Direction, EventKind, Protocol};

const PATIENCE: Duration = Duration::from_secs(20);

struct Watch {
    backend: EbpfBackend,
    seen: Vec<ConnectionEvent>,
}

impl Watch {
    fn new(config: CaptureConfig) -> Watch {
        Watch {
            backend: EbpfBackend::open(&config).expect("the eBPF backend loads (run as root)"),
            seen: Vec::new(),
        }
    }

    fn default() -> Watch {
        Watch::new(CaptureConfig::default())
    }

    /// Polls until `done` holds for the events touching `ports`, or panics.
    fn until(
        &mut self,
        ports: &[u16],
        mut done: impl FnMut(&[&ConnectionEvent]) -> bool,
    ) -> Vec<ConnectionEvent> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mine: Vec<&ConnectionEvent> = self
                .seen
                .iter()
                .filter(|e| ports.contains(&e.local.port()) || ports.contains(&e.remote.port()))
                .collect();
            if done(&mine) {
                return mine.into_iter().cloned().collect();
            }
            assert!(
                Instant::now() < deadline,
                "timed out; events for ports {ports:?}: {mine:#?}"
            );
            self.backend
                .poll(&mut self.seen, Duration::from_millis(100))
                .unwrap();
        }
    }

    /// Everything that arrives for `ports` within a short drain.
    fn drain(&mut self, ports: &[u16]) -> Vec<ConnectionEvent> {
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            self.backend
                .poll(&mut self.seen, Duration::from_millis(50))
                .unwrap();
        }
        self.until(ports, |_| true)
    }
}

fn find(
    events: &[ConnectionEvent],
    kind: EventKind,
    direction: Direction,
    local: SocketAddr,
) -> &ConnectionEvent {
    events
        .iter()
        .find(|e| e.kind == kind && e.direction == direction && e.local == local)
        .unwrap_or_else(|| panic!("no {kind} {direction} event from {local} in {events:#?}"))
}

fn count(events: &[&ConnectionEvent], kind: EventKind, direction: Direction) -> usize {
    events
        .iter()
        .filter(|e| e.kind == kind && e.direction == direction)
        .count()
}

fn assert_is_us(event: &ConnectionEvent) {
    let process = event.process.as_ref().expect("the event names a process");
    assert_eq!(process.pid, std::process::id(), "{event:#?}");
    assert_eq!(
        process.executable.as_deref(),
        std::env::current_exe().unwrap().to_str(),
        "{event:#?}"
    );
}

/// One connection: the client sends `up` bytes, the server `down`; the
/// client closes first.
fn exchange(listen: &str, up: usize, down: usize) -> (SocketAddr, SocketAddr) {
    let listener = TcpListener::bind(listen).unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(server_addr).unwrap();
    let client_addr = client.local_addr().unwrap();
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(&vec![1; up]).unwrap();
    let mut buf = vec![0; up.max(down)];
    server.read_exact(&mut buf[..up]).unwrap();
    server.write_all(&vec![2; down]).unwrap();
    client.read_exact(&mut buf[..down]).unwrap();
    // Hold the connection open a moment so its duration is measurable.
    std::thread::sleep(Duration::from_millis(20));
    drop(client);
    assert_eq!(server.read(&mut buf).unwrap(), 0, "client's FIN");
    drop(server);
    (client_addr, server_addr)
}

#[test]
fn loopback_tcp_v4_and_v6_both_ends() {
    let mut watch = Watch::default();
    for listen in ["127.0.0.1:0", "[::1]:0"] {
        let (client, server) = exchange(listen, 1000, 300);
        let events = watch.until(&[server.port()], |e| {
            count(e, EventKind::Disconnect, Direction::Outgoing) == 1
                && count(e, EventKind::Disconnect, Direction::Incoming) == 1
        });
        let out = find(&events, EventKind::Connect, Direction::Outgoing, client);
        assert_eq!(out.remote, server);
        assert_eq!(out.protocol, Protocol::Tcp);
        assert_eq!(out.netns, netns::current_inode().unwrap());
        assert_eq!(out.uid, Some(0));
        assert!(!out.preexisting);
        assert_is_us(out);
        let inc = find(&events, EventKind::Connect, Direction::Incoming, server);
        assert_eq!(inc.remote, client);
        assert_is_us(inc);

        let out_close = find(&events, EventKind::Disconnect, Direction::Outgoing, client);
        let stats = out_close.close.unwrap();
        assert_eq!((stats.bytes_sent, stats.bytes_received), (1000, 300));
        assert!(stats.duration_ns >= 20_000_000, "{stats:?}");
        assert!(stats.duration_ns < PATIENCE.as_nanos() as u64, "{stats:?}");
        assert_is_us(out_close);
        let in_close = find(&events, EventKind::Disconnect, Direction::Incoming, server);
        let stats = in_close.close.unwrap();
        assert_eq!((stats.bytes_sent, stats.bytes_received), (300, 1000));
        assert!(out_close.timestamp >= out.timestamp);
        for event in &events {
            event.validate().unwrap();
        }
    }
}

#[test]
fn dual_stack_socket_talking_v4_is_reported_as_v4() {
    let mut watch = Watch::default();
    // An IPv6 socket connecting to an IPv4 listener uses ::ffff:a.b.c.d.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TcpStream::connect(format!("[::ffff:127.0.0.1]:{port}")).unwrap();
    assert!(client.local_addr().unwrap().is_ipv6());
    let events = watch.until(&[port], |e| {
        count(e, EventKind::Connect, Direction::Outgoing) == 1
    });
    let out = events
        .iter()
        .find(|e| e.direction == Direction::Outgoing)
        .unwrap();
    assert_eq!(out.remote, format!("127.0.0.1:{port}").parse().unwrap());
    assert!(out.local.is_ipv4());
    drop(listener);
}

#[test]
fn refused_connect_is_reported() {
    let mut watch = Watch::default();
    // A port nobody listens on: bind one, note it, close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = TcpStream::connect(("127.0.0.1", port)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let events = watch.until(&[port], |e| {
        count(e, EventKind::ConnectFailed, Direction::Outgoing) == 1
    });
    let failed = &events[0];
    assert_eq!(failed.failure, Some(ConnectFailure::Refused));
    assert_eq!(failed.remote.port(), port);
    assert_is_us(failed);
    assert!(
        !events.iter().any(|e| e.kind == EventKind::Connect),
        "{events:#?}"
    );
}

#[test]
fn process_that_connects_and_exits_is_named() {
    let mut watch = Watch::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
        .status()
        .unwrap();
    assert!(status.success());
    // bash has exited before the backend reads a single event.
    let events = watch.until(&[port], |e| {
        count(e, EventKind::Disconnect, Direction::Outgoing) == 1
    });
    let out = events
        .iter()
        .find(|e| e.kind == EventKind::Connect && e.direction == Direction::Outgoing)
        .unwrap();
    let process = out.process.as_ref().unwrap();
    assert_ne!(process.pid, std::process::id());
    assert_eq!(
        process.executable.as_deref(),
        Some("/usr/bin/bash"),
        "{out:#?}"
    );
    assert_eq!(process.comm.as_deref(), Some("bash"));
    drop(listener);
}

/// An exited process its parent has not reaped yet (a zombie) still has a
/// /proc entry, but no executable link: the path recorded at exec names it.
#[test]
fn process_that_exits_unreaped_is_named() {
    let mut watch = Watch::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&stat)
        .map(|s| s.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "bash did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let events = watch.until(&[port], |e| {
        count(e, EventKind::Disconnect, Direction::Outgoing) == 1
    });
    assert!(child.wait().unwrap().success());
    let out = events
        .iter()
        .find(|e| e.kind == EventKind::Connect && e.direction == Direction::Outgoing)
        .unwrap();
    let process = out.process.as_ref().unwrap();
    assert_eq!(process.pid, child.id());
    assert_eq!(
        process.executable.as_deref(),
        Some("/usr/bin/bash"),
        "{out:#?}"
    );
    drop(listener);
}

/// A named network namespace, removed on drop.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(tag: &str) -> Namespace {
        let name = format!("cs-ebpf-{}-{tag}", std::process::id());
        let run = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        run(&["netns", "add", &name]);
        let ns = Namespace { name };
        run(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }

    fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", self.name))
            .unwrap()
            .ino()
    }

    /// Runs `work` on a thread that has entered the namespace.
    fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: a valid namespace fd; setns changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            work()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

#[test]
fn other_namespaces_only_when_asked() {
    let ns = Namespace::new("filter");
    let mut own = Watch::default();
    let mut all = Watch::new(CaptureConfig {
        netns: NetnsFilter::All,
        ..CaptureConfig::default()
    });
    let mut by_inode = Watch::new(CaptureConfig {
        netns: NetnsFilter::Inode(ns.inode()),
        ..CaptureConfig::default()
    });
    let (client, server) = ns.run(|| exchange("127.0.0.1:0", 10, 10));
    let inode = ns.inode();
    // Ports are per namespace: a parallel test may use the same number here.
    let in_ns = move |e: &ConnectionEvent| e.netns == inode;
    for watch in [&mut all, &mut by_inode] {
        let events = watch.until(&[server.port()], |e| {
            e.iter()
                .filter(|e| in_ns(e) && e.kind == EventKind::Disconnect)
                .count()
                == 2
        });
        let out = find(&events, EventKind::Connect, Direction::Outgoing, client);
        assert_eq!(out.netns, inode);
        assert_is_us(out);
    }
    // Both others have seen everything; the default backend read the same
    // tracepoints at the same time and must have nothing of that namespace.
    let own_events = own.drain(&[server.port()]);
    assert!(!own_events.iter().any(in_ns), "{own_events:#?}");
}

#[test]
fn unaccepted_connection_reset_in_the_queue_is_reported() {
    let mut watch = Watch::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    let client_addr = client.local_addr().unwrap();
    // Linger 0: close sends a reset, the queued connection dies unaccepted.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid socket and option buffer.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(client);
    let events = watch.until(&[server.port()], |e| {
        count(e, EventKind::Disconnect, Direction::Incoming) == 1
    });
    let inc = find(&events, EventKind::Connect, Direction::Incoming, server);
    assert_eq!(inc.remote, client_addr);
    // Nobody accepted it: the owner is whoever listens on the port.
    assert_is_us(inc);
    drop(listener);
}

#[test]
fn connection_queued_when_its_listener_closes_is_owned_by_the_listener() {
    let mut watch = Watch::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).unwrap();
    // Closing the listener resets what waits in its queue, after the
    // listener itself has already gone to CLOSE.
    drop(listener);
    let events = watch.until(&[server.port()], |e| {
        count(e, EventKind::Disconnect, Direction::Incoming) == 1
    });
    let inc = find(&events, EventKind::Connect, Direction::Incoming, server);
    assert_eq!(inc.remote, client.local_addr().unwrap());
    assert_is_us(inc);
}

#[test]
fn connections_open_before_start_are_reported_once() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let mut client = TcpStream::connect(server).unwrap();
    let client_addr = client.local_addr().unwrap();
    let (mut accepted, _) = listener.accept().unwrap();

    let mut watch = Watch::default();
    let events = watch.until(&[server.port()], |e| e.len() >= 2);
    let out = find(
        &events,
        EventKind::Connect,
        Direction::Outgoing,
        client_addr,
    );
    let inc = find(&events, EventKind::Connect, Direction::Incoming, server);
    for event in [out, inc] {
        assert!(event.preexisting, "{event:#?}");
        assert_is_us(event);
    }
    client.write_all(&[0; 70]).unwrap();
    let mut buf = [0; 70];
    accepted.read_exact(&mut buf).unwrap();
    drop(client);
    drop(accepted);
    let events = watch.until(&[server.port()], |e| {
        e.iter().filter(|e| e.kind == EventKind::Disconnect).count() == 2
    });
    assert_eq!(events.len(), 4, "reported once: {events:#?}");
    let out_close = find(
        &events,
        EventKind::Disconnect,
        Direction::Outgoing,
        client_addr,
    );
    assert_eq!(out_close.close.unwrap().bytes_sent, 70);
    assert!(out_close.preexisting);
}

#[test]
fn burst_of_short_connections_is_complete_or_counted() {
    const CONNECTIONS: usize = 2000;
    let mut watch = Watch::default();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let acceptor = std::thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            drop(listener.accept().unwrap());
        }
    });
    let started = Instant::now();
    // A loopback port in TIME_WAIT may be reused (tcp_tw_reuse), so the same
    // 4-tuple can occur more than once: count each.
    let mut clients: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..CONNECTIONS {
        let stream = TcpStream::connect(server).unwrap();
        *clients.entry(stream.local_addr().unwrap()).or_default() += 1;
    }
    acceptor.join().unwrap();
    let made = started.elapsed();

    let deadline = Instant::now() + PATIENCE;
    let (mut connects, mut disconnects): (HashMap<SocketAddr, usize>, HashMap<_, _>) =
        (HashMap::new(), HashMap::new());
    let total = |seen: &HashMap<SocketAddr, usize>| seen.values().sum::<usize>();
    let mut events = Vec::new();
    loop {
        let lost = watch.backend.stats().kernel_lost as usize;
        let complete =
            total(&connects) + lost >= CONNECTIONS && total(&disconnects) + lost >= CONNECTIONS;
        if complete || Instant::now() > deadline {
            break;
        }
        watch
            .backend
            .poll(&mut events, Duration::from_millis(100))
            .unwrap();
        for event in events.drain(..) {
            if event.direction != Direction::Outgoing || event.remote != server {
                continue;
            }
            assert!(clients.contains_key(&event.local), "{event:#?}");
            let seen = match event.kind {
                EventKind::Connect => &mut connects,
                EventKind::Disconnect => &mut disconnects,
                EventKind::ConnectFailed | EventKind::WouldBlock | EventKind::Blocked => {
                    panic!("{event:#?}")
                }
            };
            *seen.entry(event.local).or_default() += 1;
        }
    }
    let lost = watch.backend.stats().kernel_lost as usize;
    let drained = started.elapsed();
    eprintln!(
        "burst: {CONNECTIONS} connections in {made:?}, {} connects + {} disconnects \
         (outgoing side) read by {drained:?}; kernel lost {lost}",
        total(&connects),
        total(&disconnects)
    );
    for (client, made) in &clients {
        assert!(
            connects.get(client).unwrap_or(&0) <= made,
            "{client} reported too often"
        );
    }
    assert!(total(&connects) + lost >= CONNECTIONS, "missing connects");
    assert!(
        total(&disconnects) + lost >= CONNECTIONS,
        "missing disconnects"
    );
}

#[test]
fn connections_past_the_table_are_counted_as_lost() {
    const TABLE: u32 = 16;
    const CONNECTIONS: usize = 40;
    let mut watch = Watch::new(CaptureConfig {
        max_tcp_connections: TABLE,
        ..CaptureConfig::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    // Held open: each end keeps its entry until it closes.
    let held: Vec<(TcpStream, TcpStream)> = (0..CONNECTIONS)
        .map(|_| {
            let client = TcpStream::connect(server).unwrap();
            (client, listener.accept().unwrap().0)
        })
        .collect();
    let ends = 2 * CONNECTIONS;
    // Other tests' sockets may take entries too: they only add to the lost.
    let deadline = Instant::now() + PATIENCE;
    let connects = loop {
        let connects = watch
            .drain(&[server.port()])
            .iter()
            .filter(|e| e.kind == EventKind::Connect)
            .count();
        let lost = watch.backend.stats().kernel_lost as usize;
        if connects + lost >= ends {
            break connects;
        }
        assert!(
            Instant::now() < deadline,
            "{connects} connects and {lost} lost of {ends} connection ends"
        );
    };
    // Zero is possible: a parallel test's burst may hold every entry.
    assert!(connects <= TABLE as usize, "{connects} connects");
    drop(held);
}

#[test]
fn udp_first_datagram_and_idle_expiry_with_counts() {
    let mut watch = Watch::new(CaptureConfig {
        udp_idle_timeout: Duration::from_millis(400),
        ..CaptureConfig::default()
    });
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let mut buf = [0; 200];
    for _ in 0..3 {
        a.send_to(&[7; 100], b_addr).unwrap();
        assert_eq!(b.recv(&mut buf).unwrap(), 100);
    }
    for _ in 0..2 {
        b.send_to(&[8; 50], a_addr).unwrap();
        assert_eq!(a.recv(&mut buf).unwrap(), 50);
    }
    let events = watch.until(&[b_addr.port()], |e| {
        e.iter().filter(|e| e.kind == EventKind::Disconnect).count() == 2
    });
    assert_eq!(
        events.len(),
        4,
        "one connect and one disconnect per end: {events:#?}"
    );
    let out = find(&events, EventKind::Connect, Direction::Outgoing, a_addr);
    assert_eq!((out.protocol, out.remote), (Protocol::Udp, b_addr));
    assert_is_us(out);
    // b's first datagram arrived: its owner is the socket's creator.
    let inc = find(&events, EventKind::Connect, Direction::Incoming, b_addr);
    assert_eq!(inc.remote, a_addr);
    assert_is_us(inc);

    let a_close = find(&events, EventKind::Disconnect, Direction::Outgoing, a_addr);
    let stats = a_close.close.unwrap();
    assert_eq!((stats.packets_sent, stats.bytes_sent), (Some(3), 300));
    assert_eq!(
        (stats.packets_received, stats.bytes_received),
        (Some(2), 100)
    );
    assert!(a_close.timestamp >= out.timestamp);
    let b_close = find(&events, EventKind::Disconnect, Direction::Incoming, b_addr);
    let stats = b_close.close.unwrap();
    assert_eq!((stats.packets_sent, stats.bytes_sent), (Some(2), 100));
    assert_eq!(
        (stats.packets_received, stats.bytes_received),
        (Some(3), 300)
    );
}

#[test]
fn program_stats_name_every_attached_program() {
    let watch = Watch::default();
    let names: Vec<String> = watch
        .backend
        .program_stats()
        .into_iter()
        .map(|p| p.name)
        .collect();
    for expected in [
        "tcp_state_change",
        "accept4_exit",
        "process_exec",
        "packet_egress",
        "packet_ingress",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    let without_udp = Watch::new(CaptureConfig {
        udp: false,
        ..CaptureConfig::default()
    });
    let names: Vec<String> = without_udp
        .backend
        .program_stats()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("udp") || n.starts_with("packet_")),
        "{names:?}"
    );
    let naming_only = Watch::new(CaptureConfig {
        udp: false,
        name_packets: true,
        ..CaptureConfig::default()
    });
    let names: Vec<String> = naming_only
        .backend
        .program_stats()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(names.iter().any(|n| n == "hello_send"), "{names:?}");
    assert!(names.iter().any(|n| n == "packet_ingress"), "{names:?}");
    assert!(!names.iter().any(|n| n == "packet_egress"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("udp")), "{names:?}");
}

/// A TLS handshake record holding a ClientHello's header, `len` bytes in
/// all: the kernel side looks at its first six bytes and the length.
fn hello_record(len: usize) -> Vec<u8> {
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&((len - 5) as u16).to_be_bytes());
    record.push(0x01);
    record.resize(len, 0xab);
    record
}

/// Connects to `server` and writes each of `writes` (no Nagle: one write,
/// one packet at least); returns the connection's (local, remote).
fn send_writes(listener: &TcpListener, writes: &[&[u8]]) -> (SocketAddr, SocketAddr) {
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_nodelay(true).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let total: usize = writes.iter().map(|w| w.len()).sum();
    for write in writes {
        client.write_all(write).unwrap();
        // Each write leaves before the next is made.
        std::thread::sleep(Duration::from_millis(20));
    }
    server.read_exact(&mut vec![0; total]).unwrap();
    (client.local_addr().unwrap(), client.peer_addr().unwrap())
}

#[test]
fn client_hellos_are_copied_from_a_connections_first_payload_only() {
    let mut watch = Watch::new(CaptureConfig {
        name_packets: true,
        udp: false,
        ..CaptureConfig::default()
    });
    assert!(watch.backend.sees_name_packets());
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").unwrap();
    let whole = hello_record(600);
    let long = hello_record(5000);
    let copied = send_writes(&v4, &[&whole, b"after the hello"]);
    let cut = send_writes(&v6, &[&long]);
    let second = send_writes(&v4, &[b"GET / HTTP/1.1\r\n\r\n", &whole]);
    let split = send_writes(&v4, &[&whole[..3], &whole[3..]]);
    let plain = send_writes(&v4, &[&b"\x16\x03\x01\x00\x10\x02 a server hello"[..]]);

    let mut hellos = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while hellos.len() < 2 {
        assert!(Instant::now() < deadline, "{hellos:#?}");
        watch
            .backend
            .poll(&mut watch.seen, Duration::from_millis(100))
            .unwrap();
        assert_eq!(
            watch.backend.take_client_hellos(&mut hellos),
            0,
            "none lost"
        );
        hellos.retain(|h| [copied, cut, second, split, plain].contains(&(h.local, h.remote)));
    }
    watch.drain(&[]);
    watch.backend.take_client_hellos(&mut hellos);
    hellos.retain(|h| [copied, cut, second, split, plain].contains(&(h.local, h.remote)));
    let own = netns::current_inode().unwrap();
    assert_eq!(hellos.len(), 2, "{hellos:#?}");
    assert_eq!((hellos[0].local, hellos[0].remote), copied);
    assert_eq!(hellos[0].record, whole, "the first payload, whole");
    assert_eq!((hellos[1].local, hellos[1].remote), cut);
    assert_eq!(hellos[1].record, long[..4096], "cut at 4 KiB");
    assert!(hellos.iter().all(|h| h.netns == own));

    let mut off = Watch::default();
    assert!(!off.backend.sees_name_packets());
    let unseen = send_writes(&v4, &[&whole]);
    off.drain(&[unseen.0.port()]);
    let mut none = Vec::new();
    off.backend.take_client_hellos(&mut none);
    assert!(none.is_empty(), "{none:#?}");
}

/// What the kernel test needs of a copied IPv4 packet: protocol, source and
/// destination ports, TCP flags (0 for UDP) and payload length.
fn ipv4_summary(packet: &[u8]) -> (u8, u16, u16, u8, usize) {
    let ip_len = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let l4 = &packet[ip_len..];
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    let (flags, header) = match packet[9] {
        6 => (l4[13], usize::from(l4[12] >> 4) * 4),
        _ => (0, 8),
    };
    (packet[9], port(0), port(2), flags, total - ip_len - header)
}

#[test]
fn dns_answers_are_copied_by_the_ingress_hook_and_nothing_else() {
    let ns = Namespace::new("answers");
    let inode = ns.inode();
    let mut watch = Watch::new(CaptureConfig {
        netns: NetnsFilter::Inode(inode),
        name_packets: true,
        udp: false,
        ..CaptureConfig::default()
    });
    assert!(watch.backend.sees_name_packets());
    let mut off = Watch::new(CaptureConfig {
        netns: NetnsFilter::Inode(inode),
        ..CaptureConfig::default()
    });
    assert!(!off.backend.sees_name_packets());
    let big = vec![0xab; 5000];
    let (udp_client, tcp_client) = {
        let big = big.clone();
        ns.run(move || {
            let server = UdpSocket::bind("127.0.0.1:53").unwrap();
            let other = UdpSocket::bind("127.0.0.1:0").unwrap();
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            let to = client.local_addr().unwrap();
            server.send_to(b"\x12\x34an answer", to).unwrap();
            other.send_to(b"\x12\x34not from 53", to).unwrap();
            server.send_to(&big, to).unwrap();
            let mut buffer = [0; 8192];
            for _ in 0..3 {
                client.recv(&mut buffer).unwrap();
            }
            // A query and its answer over TCP, then the server closes.
            let listener = TcpListener::bind("127.0.0.1:53").unwrap();
            let mut client_tcp = TcpStream::connect("127.0.0.1:53").unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            client_tcp.write_all(b"\x00\x05query").unwrap();
            conn.read_exact(&mut [0; 7]).unwrap();
            conn.write_all(b"\x00\x06answer").unwrap();
            client_tcp.read_exact(&mut [0; 8]).unwrap();
            drop(conn);
            assert_eq!(client_tcp.read(&mut buffer).unwrap(), 0);
            (to, client_tcp.local_addr().unwrap())
        })
    };

    let mut copied = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    // UDP: the answer and the cut one; TCP: SYN-ACK, the answer, the FIN.
    while copied.len() < 5 {
        assert!(Instant::now() < deadline, "{copied:#?}");
        watch
            .backend
            .poll(&mut watch.seen, Duration::from_millis(100))
            .unwrap();
        assert_eq!(watch.backend.take_dns_answers(&mut copied), 0, "none lost");
    }
    watch.drain(&[]);
    watch.backend.take_dns_answers(&mut copied);
    assert!(copied.iter().all(|p| p.netns == inode), "{copied:#?}");
    let summaries: Vec<_> = copied.iter().map(|p| ipv4_summary(&p.packet)).collect();
    assert!(
        summaries.iter().all(|&(_, sport, _, _, _)| sport == 53),
        "only packets from port 53: {summaries:?}"
    );
    let udp: Vec<_> = copied
        .iter()
        .filter(|p| ipv4_summary(&p.packet).2 == udp_client.port() && p.packet[9] == 17)
        .collect();
    assert_eq!(udp.len(), 2, "{summaries:?}");
    assert_eq!(
        &udp[0].packet[28..],
        b"\x12\x34an answer",
        "headers and payload"
    );
    assert_eq!(udp[0].wire_len, udp[0].packet.len());
    assert_eq!(udp[1].wire_len, 20 + 8 + big.len());
    assert_eq!(
        udp[1].packet.len(),
        60 + 8 + 4096,
        "cut past a 4 KiB answer"
    );
    let tcp: Vec<_> = summaries
        .iter()
        .filter(|&&(protocol, _, dport, _, _)| protocol == 6 && dport == tcp_client.port())
        .collect();
    let (fin, syn, ack) = (0x01, 0x02, 0x10);
    // A bare ACK (of the query) is not copied; SYN, data and FIN are.
    assert_eq!(
        tcp.iter()
            .map(|&&(_, _, _, flags, payload)| (flags & (fin | syn) != 0, payload))
            .collect::<Vec<_>>(),
        [(true, 0), (false, 8), (true, 0)],
        "{tcp:?}"
    );
    assert!(tcp.iter().all(|t| t.3 & ack != 0));

    let mut none = Vec::new();
    off.drain(&[]);
    off.backend.take_dns_answers(&mut none);
    assert!(none.is_empty(), "{none:#?}");
}

/// A threaded cgroup v2 right under the hierarchy's root (which is a
/// threaded domain for the root's own processes: the test process stays
/// where it is, one thread moves).
struct ThreadCgroup {
    dir: std::path::PathBuf,
    /// Inside the hierarchy, as `packet_cgroup` takes it.
    path: String,
}

impl ThreadCgroup {
    fn new(tag: &str) -> ThreadCgroup {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mount = mounts
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(2) == Some(&"cgroup2")).then(|| fields[1].to_owned())
            })
            .expect("a cgroup v2 hierarchy is mounted");
        let path = format!("/connscope-test-{}-{tag}", std::process::id());
        let dir = std::path::Path::new(&mount).join(&path[1..]);
        std::fs::create_dir(&dir).unwrap();
        let cgroup = ThreadCgroup { dir, path };
        std::fs::write(cgroup.dir.join("cgroup.type"), "threaded").unwrap();
        cgroup
    }
}

/// Moves the calling thread into the cgroup at `dir`: the sockets it makes
/// from then on are that cgroup's.
fn enter_cgroup(dir: &std::path::Path) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    std::fs::write(dir.join("cgroup.threads"), tid.to_string())
        .expect("the test process runs in the root cgroup (cgroup v2)");
}

impl Drop for ThreadCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn packet_hooks_on_a_cgroup_see_only_its_sockets() {
    let ns = Namespace::new("cgroup");
    let inside = ThreadCgroup::new("in");
    let mut watch = Watch::new(CaptureConfig {
        netns: NetnsFilter::Inode(ns.inode()),
        name_packets: true,
        udp: false,
        packet_cgroup: Some(inside.path.clone().into()),
        ..CaptureConfig::default()
    });
    assert!(watch.backend.sees_name_packets());
    let hello = hello_record(300);
    // Sockets made before the thread enters the cgroup are outside it.
    let (seen, unseen, hello_seen, hello_unseen) = {
        let inside = inside.dir.clone();
        ns.run(move || {
            let server = UdpSocket::bind("127.0.0.1:53").unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let outside = UdpSocket::bind("127.0.0.1:0").unwrap();
            let unhooked = send_writes(&listener, &[&hello]);
            enter_cgroup(&inside);
            let inside = UdpSocket::bind("127.0.0.1:0").unwrap();
            let hooked = send_writes(&listener, &[&hello]);
            let mut buffer = [0; 64];
            for client in [&outside, &inside] {
                server
                    .send_to(b"\x12\x34an answer", client.local_addr().unwrap())
                    .unwrap();
                client.recv(&mut buffer).unwrap();
            }
            let port = |socket: &UdpSocket| socket.local_addr().unwrap().port();
            (port(&inside), port(&outside), hooked, unhooked)
        })
    };
    let mut answers = Vec::new();
    let mut hellos = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while answers.is_empty() || hellos.is_empty() {
        assert!(Instant::now() < deadline, "{answers:#?} {hellos:#?}");
        watch
            .backend
            .poll(&mut watch.seen, Duration::from_millis(100))
            .unwrap();
        watch.backend.take_dns_answers(&mut answers);
        watch.backend.take_client_hellos(&mut hellos);
    }
    watch.drain(&[]);
    watch.backend.take_dns_answers(&mut answers);
    watch.backend.take_client_hellos(&mut hellos);
    let to: Vec<u16> = answers.iter().map(|p| ipv4_summary(&p.packet).2).collect();
    assert_eq!(to, [seen], "not {unseen}");
    let from: Vec<_> = hellos.iter().map(|h| (h.local, h.remote)).collect();
    assert_eq!(from, [hello_seen], "not {hello_unseen:?}");
    // The thread that entered the cgroup has ended: it is empty again.
    drop(watch);
    drop(inside);
}
