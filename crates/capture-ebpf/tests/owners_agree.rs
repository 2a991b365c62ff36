#![cfg(feature = "system-tests")] // root: eBPF programs
//! The eBPF backend and the /proc poller name the same owner for a socket
//! several processes hold: both read owners through
//! `connscope_capture::sockets`, whose one rule is the oldest holder. Real
//! kernel, real processes; runs as root.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connscope_capture::{CaptureBackend, CaptureConfig};
use connscope_capture_ebpf::EbpfBackend;
use connscope_capture_poll::ProcBackend;
use connscope_event::EventKind;

/// A `sleep` child that inherited `socket` (std opens it close-on-exec; the
/// child clears that on its copy only): two processes hold one socket.
fn child_holding(socket: &impl AsRawFd) -> Child {
    let fd = socket.as_raw_fd();
    // SAFETY: the closure only calls fcntl, which is async-signal-safe.
    let child = unsafe {
        Command::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .pre_exec(move || {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                Ok(())
            })
            .spawn()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
        .map_or(true, |comm| comm.trim_end() != "sleep")
    {
        assert!(Instant::now() < deadline, "the child never ran sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// The pid a backend names for the connection whose local end is `local`.
fn owner_named(backend: &mut dyn CaptureBackend, local: SocketAddr) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    loop {
        backend
            .poll(&mut events, Duration::from_millis(100))
            .unwrap();
        if let Some(event) = events
            .iter()
            .find(|e| e.kind == EventKind::Connect && e.local == local)
        {
            assert!(event.preexisting, "{event:#?}");
            return event.process.as_ref().map(|p| p.pid);
        }
        assert!(
            Instant::now() < deadline,
            "{} never reported {local}",
            backend.name()
        );
        events.clear();
    }
}

#[test]
fn both_backends_name_the_older_holder_of_a_socket_shared_with_a_child() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (_accepted, _) = listener.accept().unwrap();
    let local = client.local_addr().unwrap();
    let mut child = child_holding(&client);

    // Opened after the connection: both meet it as preexisting, with no
    // connect() seen, so only the socket's holders can name its owner.
    let config = CaptureConfig::default();
    let mut ebpf = EbpfBackend::open(&config).expect("the eBPF backend loads (run as root)");
    let mut proc = ProcBackend::open(&config).unwrap();
    let by_ebpf = owner_named(&mut ebpf, local);
    let by_proc = owner_named(&mut proc, local);

    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(by_ebpf, by_proc);
    assert_eq!(
        by_ebpf,
        Some(std::process::id()),
        "the parent, which opened it"
    );
}
