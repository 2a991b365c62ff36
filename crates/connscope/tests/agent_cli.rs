#![cfg(feature = "system-tests")] // root: the eBPF agent, network namespaces, tcpspy
//! `connscope agent` end to end: the real binary, real eBPF (or the forced
//! fallbacks), real loopback connections between real programs (curl, python's
//! http.server, bash's /dev/tcp), real network namespaces.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connscope_event::json::from_json_line;
use connscope_event::{ConnectionEvent, Direction, EventKind};

const WAIT: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running agent whose standard output is collected line by line.
struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
    _state: tempfile::TempDir,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        Agent::start_in(None, args)
    }

    /// Starts `connscope agent ARGS`, inside `netns` when given, and waits
    /// until it is monitoring.
    fn start_in(netns: Option<&str>, args: &[&str]) -> Agent {
        let agent = Agent::spawn_in(netns, args);
        agent.wait_stderr("monitoring connections");
        agent
    }

    /// Starts `connscope agent ARGS` without waiting for it.
    fn spawn_in(netns: Option<&str>, args: &[&str]) -> Agent {
        let state = tempfile::tempdir().unwrap();
        let stderr = state.path().join("stderr");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_connscope")]);
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_connscope")),
        };
        command
            .arg("agent")
            .arg("--no-default-rules")
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .args(args)
            .env("CONNSCOPE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut child = command.spawn().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Agent {
            child,
            lines,
            stderr,
            _state: state,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_stderr(&self, text: &str) {
        wait_until(|| self.stderr().contains(text), || self.stderr());
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line contains every one of `parts`; returns it.
    fn wait_line(&self, parts: &[&str]) -> String {
        let find = || {
            self.lines()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
        };
        wait_until(
            || find().is_some(),
            || {
                format!(
                    "no line with {parts:?} in {:#?}\n{}",
                    self.lines(),
                    self.stderr()
                )
            },
        );
        find().unwrap()
    }

    fn events(&self) -> Vec<ConnectionEvent> {
        self.lines()
            .iter()
            .map(|l| from_json_line(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGTERM, then waits for the exit; returns the exit status's success.
    fn stop(mut self) -> (bool, Vec<String>, String) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status.success(), self.lines(), self.stderr());
            }
            assert!(Instant::now() < deadline, "agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(mut done: impl FnMut() -> bool, explain: impl Fn() -> String) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {}", explain());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `python3 -m http.server` minus its start-up lookup of the machine's fully
/// qualified name, which would send a DNS query off the machine.
const WEB_SERVER_PY: &str = "import http.server, socket, socketserver, sys
class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
Server((sys.argv[1], int(sys.argv[2])), http.server.SimpleHTTPRequestHandler).serve_forever()
";

/// A python3 web server on 127.0.0.1, optionally inside a namespace.
struct HttpServer {
    child: Child,
    port: u16,
    exe: String,
    netns: Option<String>,
}

impl HttpServer {
    fn start(netns: Option<&str>) -> HttpServer {
        let port = free_port();
        let mut command = wrap(netns, "python3");
        command
            .args(["-c", WEB_SERVER_PY, "127.0.0.1", &port.to_string()])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command.spawn().unwrap();
        let mut server = HttpServer {
            exe: String::new(),
            child,
            port,
            netns: netns.map(str::to_owned),
        };
        // Ready when it accepts (ip netns exec execs, so the pid is python's).
        wait_until(
            || {
                wrap(server.netns.as_deref(), "bash")
                    .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
                    .stderr(Stdio::null())
                    .status()
                    .unwrap()
                    .success()
            },
            || "http.server did not start".into(),
        );
        server.exe = std::fs::read_link(format!("/proc/{}/exe", server.child.id()))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        server
    }

    /// One GET with curl; returns curl's exit success.
    fn get(&self) -> bool {
        wrap(self.netns.as_deref(), "curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                &format!("http://127.0.0.1:{}/", self.port),
            ])
            .status()
            .unwrap()
            .success()
    }

    /// A connection from bash that stays open for `hold`.
    fn hold_connection(&self, hold: Duration) {
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{}; sleep {}; exec 3>&-",
            self.port,
            hold.as_secs_f64()
        );
        assert!(wrap(self.netns.as_deref(), "bash")
            .args(["-c", &script])
            .status()
            .unwrap()
            .success());
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wrap(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// A network namespace with loopback up, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = unique("cs-agent");
        let ok = |c: &mut Command| assert!(c.status().unwrap().success());
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns(name);
        ok(Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]));
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The `Mmm dd HH:MM:SS: ` prefix of `tcpspy -d`.
fn has_tcpspy_time(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 17
        && b[..3].iter().all(u8::is_ascii_alphabetic)
        && b[3] == b' '
        && b[4..6].iter().all(u8::is_ascii_digit)
        && &line[6..7] == " "
        && &line[9..10] == ":"
        && &line[15..17] == ": "
}

#[test]
fn foreground_lines_name_both_executables() {
    let agent = Agent::start(&["-d", "-p", "-n"]);
    let server = HttpServer::start(None);
    assert!(server.get());
    let port = format!("127.0.0.1:{}", server.port);
    // Other tests run curl at the same time: wait for this server's line.
    let remote = format!(", remote {port}");
    let curl = agent.wait_line(&[
        "connect: proc /usr/bin/curl, user root, local 127.0.0.1:",
        &remote,
    ]);
    assert!(curl.ends_with(&remote), "{curl}");
    assert!(has_tcpspy_time(&curl), "{curl}");
    let client_port = curl
        .split(", local 127.0.0.1:")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap();
    let accepted = agent.wait_line(&[&format!(
        "connect: proc {}, user root, local {port}, remote 127.0.0.1:{client_port}",
        server.exe
    )]);
    assert!(has_tcpspy_time(&accepted));
    agent.wait_line(&[&format!(
        "disconnect: proc /usr/bin/curl, user root, local 127.0.0.1:{client_port}, remote {port}"
    )]);
    agent.wait_line(&[&format!(
        "disconnect: proc {}, user root, local {port}, remote 127.0.0.1:{client_port}",
        server.exe
    )]);
    assert!(
        agent.stderr().contains("capture backend: ebpf"),
        "{}",
        agent.stderr()
    );
}

#[test]
fn json_lines_follow_the_schema_with_directions() {
    let agent = Agent::start(&["--format", "json", "--host-name", "agent-test-host"]);
    let server = HttpServer::start(None);
    assert!(server.get());
    let port = server.port;
    let mine = |events: &[ConnectionEvent]| -> Vec<ConnectionEvent> {
        events
            .iter()
            .filter(|e| e.local.port() == port || e.remote.port() == port)
            .cloned()
            .collect()
    };
    // Readiness probes of the server connect too: wait for curl's close.
    wait_until(
        || {
            mine(&agent.events())
                .iter()
                .any(|e| e.kind == EventKind::Disconnect && e.executable() == Some("/usr/bin/curl"))
        },
        || format!("{:#?}", agent.lines()),
    );
    let events = agent.events();
    // Numbered from 1 without gaps, in output order.
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.sequence, i as u64 + 1);
        assert_eq!(event.host, "agent-test-host");
    }
    let ours = mine(&events);
    let curl = |e: &&ConnectionEvent| e.executable() == Some("/usr/bin/curl");
    let outgoing = ours
        .iter()
        .filter(curl)
        .find(|e| e.kind == EventKind::Connect && e.remote.port() == port)
        .unwrap();
    assert_eq!(outgoing.direction, Direction::Outgoing);
    assert_eq!(outgoing.executable(), Some("/usr/bin/curl"));
    assert_eq!(outgoing.user_name.as_deref(), Some("root"));
    assert_eq!(outgoing.uid, Some(0));
    let incoming = ours
        .iter()
        .find(|e| e.kind == EventKind::Connect && e.remote == outgoing.local)
        .unwrap();
    assert_eq!(incoming.direction, Direction::Incoming);
    assert_eq!(incoming.executable(), Some(server.exe.as_str()));
    let close = ours
        .iter()
        .filter(curl)
        .find(|e| e.kind == EventKind::Disconnect)
        .unwrap();
    assert!(close.close.unwrap().bytes_sent > 0);
    // The raw line carries the documented field names.
    let line = agent
        .lines()
        .into_iter()
        .find(|l| l.contains("\"/usr/bin/curl\""))
        .unwrap();
    for field in [
        "\"@timestamp\"",
        "\"network\"",
        "\"direction\":\"outgoing\"",
        "\"connscope\":{\"version\":1",
    ] {
        assert!(line.contains(field), "{field} missing in {line}");
    }
}

#[test]
fn rules_select_what_is_logged() {
    let server = HttpServer::start(None);
    let rule = format!(
        "rport {} and (exe \"/usr/bin/cu*\" or exe \"/usr/bin/bash\")",
        server.port
    );
    let agent = Agent::start(&["-d", "-p", "-n", "-e", &rule]);
    assert!(server.get());
    let port = format!("127.0.0.1:{}", server.port);
    agent.wait_line(&["disconnect: proc /usr/bin/curl", &format!("remote {port}")]);
    // A marker that the rule also selects, made after the server side closed:
    // once it shows, the server side's lines would have shown too.
    server.hold_connection(Duration::from_millis(10));
    agent.wait_line(&["disconnect: proc /usr/bin/bash", &format!("remote {port}")]);
    let (ok, lines, _) = agent.stop();
    assert!(ok);
    assert!(
        lines.iter().all(|l| l.contains(&format!("remote {port}"))),
        "{lines:#?}"
    );
}

#[test]
fn exe_rules_without_p_match_everything_as_tcpspy_does() {
    let server = HttpServer::start(None);
    let rule = format!("lport {} and exe \"/nonexistent\"", server.port);
    let agent = Agent::start(&["-d", "-n", "-e", &rule]);
    assert!(
        agent.stderr().contains("exe rules are ignored"),
        "{}",
        agent.stderr()
    );
    assert!(server.get());
    let line = agent.wait_line(&[&format!(
        "connect: user root, local 127.0.0.1:{}",
        server.port
    )]);
    assert!(!line.contains("proc "));
}

#[test]
fn namespaced_agent_reports_its_namespace_only() {
    let ns = Netns::new();
    let inside = Agent::start_in(Some(&ns.0), &["-d", "-p", "-n"]);
    let outside = Agent::start(&["-d", "-p", "-n"]);
    let server = HttpServer::start(Some(&ns.0));
    assert!(server.get());
    let remote = format!("remote 127.0.0.1:{}", server.port);
    inside.wait_line(&["connect: proc /usr/bin/curl", &remote]);
    inside.wait_line(&["disconnect: proc /usr/bin/curl", &remote]);

    // A marker in the outside namespace: when the outside agent shows it, it
    // has processed everything before it.
    let marker = HttpServer::start(None);
    assert!(marker.get());
    outside.wait_line(&[
        "disconnect: proc /usr/bin/curl",
        &format!("remote 127.0.0.1:{}", marker.port),
    ]);
    let port = format!(":{}", server.port);
    let leaked: Vec<_> = outside
        .lines()
        .into_iter()
        .filter(|l| l.contains(&port))
        .collect();
    assert!(leaked.is_empty(), "outside agent saw {leaked:#?}");
}

fn fallback_backend_logs_lines(backend: &str) {
    // The server first: its readiness probes are then not in the log.
    let server = HttpServer::start(None);
    let agent = Agent::start(&["-d", "-p", "-n", "--backend", backend, "-I", "20"]);
    assert!(agent
        .stderr()
        .contains(&format!("capture backend: {backend} (forced by --backend)")));
    server.hold_connection(Duration::from_millis(500));
    let port = format!("127.0.0.1:{}", server.port);
    let connect = agent.wait_line(&[
        "connect: proc /usr/bin/bash, user root, local 127.0.0.1:",
        &format!("remote {port}"),
    ]);
    assert!(has_tcpspy_time(&connect));
    agent.wait_line(&[&format!(
        "connect: proc {}, user root, local {port}, remote",
        server.exe
    )]);
    agent.wait_line(&["disconnect: proc /usr/bin/bash", &format!("remote {port}")]);
    agent.wait_line(&[&format!(
        "disconnect: proc {}, user root, local {port}",
        server.exe
    )]);
}

#[test]
fn sockdiag_backend_logs_lines() {
    fallback_backend_logs_lines("sockdiag");
}

#[test]
fn proc_backend_logs_lines() {
    fallback_backend_logs_lines("proc");
}

#[test]
fn pollers_refuse_all_namespaces() {
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args([
            "agent",
            "-d",
            "--backend",
            "proc",
            "--netns",
            "all",
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sees only its own network namespace"), "{err}");
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn sighup_reopens_the_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let agent = Agent::start(&["--format", "json", "--output", log.to_str().unwrap()]);
    let server = HttpServer::start(None);
    assert!(server.get());
    let port = format!("\"port\":{}", server.port);
    wait_until(
        || file_lines(&log).iter().any(|l| l.contains(&port)),
        || format!("{:?}", file_lines(&log)),
    );
    let rotated = dir.path().join("events.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    agent.signal(libc::SIGHUP);
    wait_until(|| log.exists(), || "SIGHUP did not reopen the file".into());
    let second = HttpServer::start(None);
    assert!(second.get());
    let port2 = format!("\"port\":{}", second.port);
    wait_until(
        || file_lines(&log).iter().any(|l| l.contains(&port2)),
        || format!("{:?}", file_lines(&log)),
    );
    let (ok, _, _) = agent.stop();
    assert!(ok);
    assert!(!file_lines(&rotated).iter().any(|l| l.contains(&port2)));
    // Every line in both files is a complete event.
    for line in file_lines(&rotated).iter().chain(&file_lines(&log)) {
        from_json_line(line).unwrap();
    }
}

#[test]
fn sigterm_flushes_what_was_captured() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.log");
    let agent = Agent::start(&["-p", "-n", "--output", log.to_str().unwrap()]);
    let server = HttpServer::start(None);
    assert!(server.get());
    // Stop at once: the connection's events may still sit in the ring buffer.
    let (ok, _, stderr) = agent.stop();
    assert!(ok, "{stderr}");
    let lines = file_lines(&log);
    let remote = format!("remote 127.0.0.1:{}", server.port);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("connect: proc /usr/bin/curl") && l.contains(&remote)),
        "{lines:#?}\n{stderr}"
    );
    assert!(stderr.contains("statistics at exit: captured"), "{stderr}");
}

#[test]
fn syslog_datagrams_carry_tcpspy_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log");
    let syslog = UnixDatagram::bind(&socket_path).unwrap();
    syslog.set_read_timeout(Some(WAIT)).unwrap();
    let agent = Agent::start(&[
        "-p",
        "-n",
        "-F",
        "daemon",
        "--ident",
        "tcpspy",
        "--syslog-socket",
        socket_path.to_str().unwrap(),
    ]);
    let server = HttpServer::start(None);
    assert!(server.get());
    let want = format!(
        "tcpspy[{}]: connect: proc /usr/bin/curl, user root, local 127.0.0.1:",
        agent.child.id()
    );
    let mut buf = [0u8; 2048];
    loop {
        let len = syslog
            .recv(&mut buf)
            .expect("a datagram before the timeout");
        let text = String::from_utf8_lossy(&buf[..len]).into_owned();
        if text.contains(&want) && text.ends_with(&format!("remote 127.0.0.1:{}", server.port)) {
            // daemon.notice = 3 * 8 + 5.
            assert!(text.starts_with("<29>"), "{text}");
            break;
        }
    }
}

#[test]
fn drops_to_nobody_and_still_names_root_processes() {
    let agent = Agent::start(&["-d", "-p", "-n", "-U", "nobody"]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.child.id())).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65534"),
        "{uid_line}"
    );
    let server = HttpServer::start(None);
    assert!(server.get());
    agent.wait_line(&[
        "connect: proc /usr/bin/curl, user root",
        &format!("remote 127.0.0.1:{}", server.port),
    ]);
    agent.wait_line(&[&format!(
        "connect: proc {}, user root, local 127.0.0.1:{}",
        server.exe, server.port
    )]);
}

/// Holds as many duplicates of one loopback connection's socket as its file
/// limit allows, like the busy processes of a desktop: the agent's start-up
/// walk of /proc/*/fd (owners of connections open before it) reads them all.
const FD_HOLDER_PY: &str = "import os, resource, socket, sys
want = int(sys.argv[1])
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
limit = want + 100 if hard == resource.RLIM_INFINITY else min(want + 100, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
listener = socket.create_server(('127.0.0.1', 0))
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
held = [os.dup(client.fileno()) for _ in range(limit - 100)]
print(len(held), flush=True)
sys.stdin.read()
";

/// Makes loopback connections at `per_second` until a line comes on its
/// standard input, each closed at once by both ends; prints the server's
/// port first and the number of connections made last.
const CONNECT_LOOP_PY: &str = "import socket, sys, threading, time
per_second = float(sys.argv[1])
listener = socket.create_server(('127.0.0.1', 0), backlog=4096)
print(listener.getsockname()[1], flush=True)
def serve():
    while True:
        listener.accept()[0].close()
threading.Thread(target=serve, daemon=True).start()
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
start, made = time.monotonic(), 0
while not stop.is_set():
    socket.create_connection(listener.getsockname()).close()
    made += 1
    ahead = start + made / per_second - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
print(made, flush=True)
";

#[test]
fn a_burst_during_start_up_loses_nothing() {
    // Ten processes holding 15,000 files each: the start-up walk takes
    // seconds (2 to 10 here, with the machine's load).
    let holders: Vec<Child> = (0..10)
        .map(|_| {
            let mut holder = Command::new("python3")
                .args(["-c", FD_HOLDER_PY, "15000"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut held = String::new();
            BufReader::new(holder.stdout.as_mut().unwrap())
                .read_line(&mut held)
                .unwrap();
            assert!(held.trim().parse::<u32>().unwrap() > 1000, "{held}");
            holder
        })
        .collect();
    let agent = Agent::spawn_in(None, &["--format", "json"]);
    std::thread::sleep(Duration::from_millis(300));
    // 4,000 connections a second from then until half a second after the
    // agent is up.
    let mut client = Command::new("python3")
        .args(["-c", CONNECT_LOOP_PY, "4000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client_out = BufReader::new(client.stdout.take().unwrap());
    let mut port = String::new();
    client_out.read_line(&mut port).unwrap();
    let port: u16 = port.trim().parse().unwrap();
    agent.wait_stderr("monitoring connections");
    std::thread::sleep(Duration::from_millis(500));
    writeln!(client.stdin.as_mut().unwrap(), "stop").unwrap();
    let mut count = String::new();
    client_out.read_line(&mut count).unwrap();
    let count: usize = count.trim().parse().unwrap();
    assert!(client.wait().unwrap().success());
    for mut holder in holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    let (port_then_more, port_then_end) =
        (format!("\"port\":{port},"), format!("\"port\":{port}}}"));
    let ours = |line: &String| line.contains(&port_then_more) || line.contains(&port_then_end);
    let kinds = |lines: &[String]| {
        let mut found = std::collections::HashMap::new();
        for line in lines.iter().filter(|l| ours(l)) {
            let event = from_json_line(line).unwrap();
            if event.local.port() == port || event.remote.port() == port {
                *found.entry((event.kind, event.direction)).or_insert(0) += 1;
            }
        }
        found
    };
    wait_until(
        || {
            agent.lines().iter().filter(|l| ours(l)).count() >= 4 * count
                || agent.stderr().contains("could not deliver")
        },
        || {
            format!(
                "{count} connections, seen {:?}\n{}",
                kinds(&agent.lines()),
                agent.stderr()
            )
        },
    );
    let (ok, lines, stderr) = agent.stop();
    assert!(ok, "{stderr}");
    assert!(stderr.contains(", kernel-lost 0,"), "{stderr}");
    let found = kinds(&lines);
    for kind in [EventKind::Connect, EventKind::Disconnect] {
        for direction in [Direction::Outgoing, Direction::Incoming] {
            assert_eq!(found.get(&(kind, direction)), Some(&count), "{found:?}");
        }
    }
    // Records taken during the start-up walk keep their order: each end's
    // connect is numbered before its disconnect.
    let mut connected = std::collections::HashSet::new();
    for event in lines
        .iter()
        .filter(|l| ours(l))
        .map(|l| from_json_line(l).unwrap())
    {
        let end = (event.direction, event.local.port(), event.remote.port());
        match event.kind {
            EventKind::Connect => {
                connected.insert(end);
            }
            _ => assert!(
                connected.contains(&end),
                "{end:?}: disconnect {} before its connect",
                event.sequence
            ),
        }
    }
}

/// One loopback connection held open until a line comes on standard input,
/// then closed by both ends; prints the listening port first.
const HOLD_ONE_PY: &str = "import socket, sys
listener = socket.create_server(('127.0.0.1', 0))
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
print(listener.getsockname()[1], flush=True)
sys.stdin.readline()
client.close()
server.close()
";

/// Empties the connection table of the agent with process id `pid`, as a
/// close program that never ran would leave it: the closes that follow find
/// nothing to report.
fn forget_followed_connections(pid: u32) {
    let bpftool = |args: &[&str]| -> serde_json::Value {
        let out = Command::new("bpftool")
            .arg("-j")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "bpftool {args:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The agent's maps are those its file descriptors hold.
    let held: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .filter_map(|fd| std::fs::read_to_string(fd.unwrap().path()).ok())
        .filter_map(|info| {
            let id = info.lines().find_map(|l| l.strip_prefix("map_id:"))?;
            id.trim().parse().ok()
        })
        .collect();
    let maps = bpftool(&["map", "show"]);
    let table = maps
        .as_array()
        .unwrap()
        .iter()
        .find(|map| map["name"] == "conns" && held.contains(&map["id"].as_u64().unwrap()))
        .expect("the agent's connection table");
    let id = table["id"].to_string();
    let entries = bpftool(&["map", "dump", "id", &id]);
    let entries = entries.as_array().unwrap();
    assert!(!entries.is_empty(), "the agent follows the connection");
    for entry in entries {
        let key: Vec<String> = entry["key"]
            .as_array()
            .unwrap()
            .iter()
            .map(|byte| byte.as_str().unwrap().to_owned())
            .collect();
        let status = Command::new("bpftool")
            .args(["map", "delete", "id", &id, "key"])
            .args(&key)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[test]
fn a_close_the_kernel_never_reported_still_gets_its_disconnect() {
    let ns = Netns::new();
    let agent = Agent::start_in(Some(&ns.0), &["--format", "json", "--no-names"]);
    let mut pair = Command::new("ip")
        .args(["netns", "exec", &ns.0, "python3", "-c", HOLD_ONE_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(pair.stdout.as_mut().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().unwrap();
    let ours = |kind: EventKind| {
        agent
            .events()
            .into_iter()
            .filter(|e| e.kind == kind && (e.local.port() == port || e.remote.port() == port))
            .collect::<Vec<_>>()
    };
    wait_until(
        || ours(EventKind::Connect).len() == 2,
        || format!("{:#?}", agent.lines()),
    );

    forget_followed_connections(agent.child.id());
    writeln!(pair.stdin.as_mut().unwrap(), "close").unwrap();
    assert!(pair.wait().unwrap().success());
    let closed_at = Instant::now();
    // Two walks of the sockets, five seconds apart, find both ends gone.
    wait_until(
        || ours(EventKind::Disconnect).len() == 2,
        || format!("{:#?}\n{}", agent.lines(), agent.stderr()),
    );
    assert!(closed_at.elapsed() < Duration::from_secs(16));
    for disconnect in ours(EventKind::Disconnect) {
        let close = disconnect.close.expect("a disconnect's close");
        // The socket is gone: its counters are not known.
        assert_eq!((close.bytes_sent, close.bytes_received), (0, 0));
    }
    let (ok, _, stderr) = agent.stop();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains(", kernel-lost 0, closes-inferred 2,"),
        "{stderr}"
    );
}
