//! connscope's agent against the real tcpspy, on the same loopback workloads
//! in one run; prints a Markdown table (docs/BENCHMARKS.md, "Agent vs tcpspy").
//!
//! A lab rather than a benchmark of one crate, so it is its own tool: it runs
//! the `connscope` binary as a separate process, which no crate below it
//! should depend on. Run as root, after a release build of both:
//! `cargo build --release -p connscope -p agent-vs-tcpspy && target/release/agent-vs-tcpspy`
//! (`--help` lists the settings below). The agent is the `connscope` next to this tool's
//! executable; `BENCH_CONNSCOPE=PATH` runs another connscope binary (an older
//! build, for before/after figures from one run).
//! `BENCH_WORKLOADS=steady,idle` runs only the workloads whose names contain
//! one of the words; `BENCH_MONITORS="connscope ebpf,tcpspy -p -I 10"` only
//! the monitors with those exact labels (the unmonitored baseline always runs:
//! slowdown is measured against it).
//! A second table measures the workload slowdown under the eBPF agent from
//! pairs of runs without and with it (`BENCH_SLOWDOWN_PAIRS`, default 21; 0
//! leaves it out), with BPF run-time statistics off as in production, twice:
//! with the CPUs' idle states as configured, and with every CPU kept polling
//! (see `CpuIdle`: only then is the difference the agent's CPU cost).
//!
//! Every run starts from the same kernel state: the TIME_WAIT sockets earlier
//! runs left are removed first (`ss -K`). One workload asks for the other
//! state a busy host can be in, its TIME_WAIT table full, by setting
//! `net.ipv4.tcp_max_tw_buckets` to 0 while it runs (put back afterwards).
//!
//! Every workload runs in this process, so its ground truth is exact: the
//! 4-tuple of every connection it made, and its own executable on both ends.
//! Loopback hands the same ephemeral port out again within a run (a reset
//! leaves no TIME_WAIT, and `tcp_tw_reuse` recycles the others), so one
//! 4-tuple can stand for several connections: both sides are counted as
//! multisets, never as sets.
//!
//! Each monitor is started fresh for each workload, and the workload starts
//! only once the monitor has reported what was open before it (the idle
//! sockets), so start-up work is not billed to the workload. Afterwards the
//! monitor is stopped with SIGTERM and its output read once it has exited:
//! connscope drains its backend and flushes on SIGTERM, so nothing is judged
//! before it is written. Each monitor is judged on
//! - recall of connects and disconnects (both ends of each connection),
//! - accounted loss: events the monitor itself counted as lost (connscope's
//!   kernel-lost + queue-dropped), so that a miss is either counted or a bug,
//! - process attribution (share of found connects naming this executable;
//!   tcpspy prints at most 30 bytes of it, so a 30-byte prefix counts),
//! - CPU seconds per 10,000 connections: the monitor's utime+stime from ready
//!   until its output went quiet after the workload, plus for eBPF the run
//!   time of its BPF programs (`kernel.bpf_stats_enabled`, on for these runs;
//!   that part is also shown on its own); what it spends from SIGTERM to exit
//!   (once per run, like its start) is shown apart,
//! - peak RSS (VmHWM), and the workload's own rate next to the unmonitored one.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread;
use std::time::{Duration, Instant};

use connscope_event::json::from_json_line;
use connscope_event::{EventKind, Family};
use connscope_tcpspy_log::{Exe, Message, Parser};

const USAGE: &str = "\
agent-vs-tcpspy: connscope's agent against the real tcpspy on loopback workloads

Run as root, after `cargo build --release -p connscope -p agent-vs-tcpspy`:
    target/release/agent-vs-tcpspy

Prints a Markdown table (also written to $TMPDIR/connscope-agent-vs-tcpspy.md).
Environment:
    BENCH_CONNSCOPE=PATH       the connscope binary (default: next to this tool)
    BENCH_WORKLOADS=w1,w2      only workloads whose names contain one of the words
    BENCH_MONITORS=m1,m2       only the monitors with these exact labels
    BENCH_SLOWDOWN_PAIRS=N     runs without/with the eBPF agent for the slowdown table (default 21; 0: none)
";

/// The agent under test, found once before the first run.
static CONNSCOPE: LazyLock<PathBuf> = LazyLock::new(connscope_binary);

/// `BENCH_CONNSCOPE`, else the `connscope` built next to this tool
/// (`target/release/`).
fn connscope_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("BENCH_CONNSCOPE") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("the running executable has a path");
    let beside = exe.with_file_name("connscope");
    assert!(
        beside.is_file(),
        "no connscope binary at {} (build it with `cargo build --release -p connscope`, or set BENCH_CONNSCOPE)",
        beside.display()
    );
    beside
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Close {
    /// SO_LINGER 0: a reset, no TIME_WAIT.
    Reset,
    /// Orderly FIN from both ends.
    Fin,
}

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    connections: usize,
    /// Connections per second, or as fast as possible.
    rate: Option<u32>,
    close: Close,
    family: Family,
    idle_sockets: usize,
    /// Files held open meanwhile (duplicates of a few sockets), like the
    /// processes of a busy desktop; the agent's start-up reads them all.
    held_files: usize,
    netns: bool,
    /// Run with the kernel's TIME_WAIT table full (`tcp_max_tw_buckets`
    /// reached): closing sockets skip TIME_WAIT, as on a host that has been
    /// closing connections faster than TIME_WAIT lets them go.
    time_wait_full: bool,
    /// Start this long after the monitor is launched instead of once it is
    /// ready: a burst during its start-up, as a user trying it out makes.
    start_after_launch: Option<Duration>,
    /// Connections come in spikes of this many, with this pause after each.
    spikes: Option<(usize, Duration)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Monitor {
    None,
    Ebpf,
    SockDiag,
    Tcpspy(u32),
}

impl Monitor {
    fn label(self) -> String {
        match self {
            Monitor::None => "(none)".into(),
            Monitor::Ebpf => "connscope ebpf".into(),
            Monitor::SockDiag => "connscope sockdiag -I 10".into(),
            Monitor::Tcpspy(ms) => format!("tcpspy -p -I {ms}"),
        }
    }
}

/// What one workload run produced.
struct Truth {
    clients: Vec<SocketAddr>,
    server: SocketAddr,
    elapsed: Duration,
}

/// Loopback server address for run `n`: a fresh one each time, so TIME_WAIT
/// sockets of one run never collide with the next.
fn server_ip(family: Family, n: u32) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(127, 10, (n >> 8) as u8, n as u8)),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

fn run_workload(w: &Workload, run: u32) -> Truth {
    forget_time_wait();
    let listener = TcpListener::bind(SocketAddr::new(server_ip(w.family, run), 0)).unwrap();
    let server = listener.local_addr().unwrap();
    // std listens with a backlog of 128: a burst overflows it, and each
    // dropped SYN costs the client a 1 s retransmission. Ask for the most.
    // SAFETY: listen(2) again on our own listening socket only resizes it.
    unsafe { libc::listen(listener.as_raw_fd(), 65_535) };
    let done = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let done = done.clone();
        let close = w.close;
        thread::spawn(move || {
            while let Ok((stream, _)) = listener.accept() {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                if close == Close::Fin {
                    // Wait for the client's FIN, so TIME_WAIT stays client-side
                    // on a fresh address.
                    let _ = std::io::Read::read(&mut &stream, &mut [0u8; 1]);
                }
                drop(stream);
            }
        })
    };
    let mut clients = Vec::with_capacity(w.connections);
    let start = Instant::now();
    for i in 0..w.connections {
        if let Some(rate) = w.rate {
            let paused = w
                .spikes
                .map_or(Duration::ZERO, |(spike, pause)| pause * (i / spike) as u32);
            let due = start + paused + Duration::from_secs_f64(i as f64 / f64::from(rate));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        if let Some((spike, pause)) = w.spikes {
            if i > 0 && i % spike == 0 {
                thread::sleep(pause);
            }
        }
        let stream = TcpStream::connect(server).unwrap();
        clients.push(stream.local_addr().unwrap());
        if w.close == Close::Reset {
            set_linger_zero(&stream);
        }
        drop(stream);
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(server);
    acceptor.join().unwrap();
    wait_all_closed(server.port());
    Truth {
        clients,
        server,
        elapsed,
    }
}

/// Waits until no socket of this run is still closing. Loopback packets are
/// partly handled later by ksoftirqd, so the last FINs and resets may land
/// after the workload returns; a disconnect cannot be reported before it has
/// happened. TIME_WAIT entries are not sockets any more: they do not count.
fn wait_all_closed(server_port: u16) {
    const TIME_WAIT: &str = "06";
    let deadline = Instant::now() + Duration::from_secs(10);
    let port = format!(":{server_port:04X}");
    // thread-self: the workload may run in another network namespace.
    let closing = || {
        ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
            .iter()
            .flat_map(|table| {
                fs::read_to_string(table)
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 3
                    && (fields[1].ends_with(&port) || fields[2].ends_with(&port))
                    && fields[3] != TIME_WAIT
            })
    };
    while closing() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Removes the TIME_WAIT sockets earlier runs left at either end of the
/// bench's server addresses, so each run starts from the same kernel state,
/// that of a first run: a FIN burst leaves 20,000 of them for a minute, once
/// they fill the kernel's table (131,072 here) closing skips TIME_WAIT and
/// the rate quadruples, and every one of them is a line tcpspy parses at
/// each poll. The workload that wants a full table asks for it
/// (`time_wait_full`).
fn forget_time_wait() {
    let killed = Command::new("ss")
        .args(["-K", "state", "time-wait"])
        .arg("( src 127.10.0.0/16 or dst 127.10.0.0/16 )")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run ss");
    assert!(killed.success(), "ss -K failed");
}

/// A sysctl set while this lives; the old value is put back on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

/// 0: the TIME_WAIT table is full from the start.
const MAX_TW_BUCKETS: &str = "/proc/sys/net/ipv4/tcp_max_tw_buckets";
/// 1: the kernel times every BPF program run (`run_time_ns` in fdinfo).
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        fs::write(path, value).unwrap_or_else(|e| panic!("set {path}: {e}"));
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(self.path, self.old.trim());
    }
}

fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and option struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

/// Sockets one helper process holds; below the hard RLIMIT_NOFILE here
/// (20,000), which root cannot raise in this container.
const IDLE_PER_HELPER: usize = 10_000;

/// `count` idle established sockets (count/2 connections), held open by
/// helper processes (this binary with `--hold-idle N`) until dropped.
fn idle_sockets(count: usize) -> Vec<Child> {
    let mut helpers = Vec::new();
    let mut left = count;
    while left > 0 {
        let n = left.min(IDLE_PER_HELPER);
        helpers.push(helper(&["--hold-idle", &n.to_string()]));
        left -= n;
    }
    helpers
}

/// Helper mode: hold `count` sockets until standard input closes.
fn hold_idle(count: usize) {
    raise_nofile();
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count / 2 {
        sockets.push(TcpStream::connect(addr).unwrap());
        sockets.push(listener.accept().unwrap().0);
    }
    println!("ready");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}

const FILES_PER_HELPER: usize = 15_000;

/// `count` open files, held by helper processes (this binary with
/// `--hold-files N`) until dropped.
fn held_files(count: usize) -> Vec<Child> {
    (0..count.div_ceil(FILES_PER_HELPER))
        .map(|i| {
            let n = (count - i * FILES_PER_HELPER).min(FILES_PER_HELPER);
            helper(&["--hold-files", &n.to_string()])
        })
        .collect()
}

/// Starts this binary with `args` and waits for its "ready".
fn helper(args: &[&str]) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    child
}

/// Helper mode: hold one connection and `count` duplicates of its socket
/// until standard input closes.
fn hold_files(count: usize) {
    raise_nofile();
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _server = listener.accept().unwrap();
    let held: Vec<TcpStream> = (0..count).map(|_| client.try_clone().unwrap()).collect();
    println!("ready");
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    drop(held);
}

struct Running {
    child: Child,
    output: PathBuf,
    stderr: PathBuf,
}

/// Starts `monitor` and returns once it is ready and has reported the
/// `preexisting` sockets open before it started.
fn start_monitor(
    monitor: Monitor,
    dir: &Path,
    netns_all: bool,
    preexisting: usize,
) -> Option<Running> {
    let running = launch_monitor(monitor, dir, netns_all)?;
    wait_ready(monitor, &running, preexisting);
    Some(running)
}

fn launch_monitor(monitor: Monitor, dir: &Path, netns_all: bool) -> Option<Running> {
    let output = dir.join("out");
    let stderr = dir.join("err");
    let mut command = match monitor {
        Monitor::None => return None,
        Monitor::Ebpf | Monitor::SockDiag => {
            let mut c = Command::new(&*CONNSCOPE);
            c.args(["agent", "--no-default-rules", "-p", "--format", "json"]);
            c.arg("--output").arg(&output);
            c.arg("--state-dir").arg(dir.join("state"));
            if monitor == Monitor::SockDiag {
                c.args(["--backend", "sockdiag", "-I", "10"]);
            } else {
                c.args(["--backend", "ebpf"]);
            }
            if netns_all && monitor == Monitor::Ebpf {
                c.args(["--netns", "all"]);
            }
            c.stdout(Stdio::null());
            c
        }
        Monitor::Tcpspy(ms) => {
            // Line-buffered, so nothing is lost in stdio at SIGTERM.
            let mut c = Command::new("stdbuf");
            c.args(["-oL", "/usr/sbin/tcpspy", "-d", "-p", "-I", &ms.to_string()]);
            c.stdout(fs::File::create(&output).unwrap());
            c
        }
    };
    command.stderr(fs::File::create(&stderr).unwrap());
    let child = command.spawn().unwrap();
    Some(Running {
        child,
        output,
        stderr,
    })
}

/// Waits until `running` is ready and has reported the `preexisting` sockets.
fn wait_ready(monitor: Monitor, running: &Running, preexisting: usize) {
    // Ready: connscope says so; tcpspy needs one interval to take its
    // first snapshot.
    let deadline = Instant::now() + Duration::from_secs(30);
    match monitor {
        Monitor::Tcpspy(ms) => thread::sleep(Duration::from_millis(u64::from(ms) * 2 + 200)),
        _ => {
            while !fs::read_to_string(&running.stderr)
                .unwrap_or_default()
                .contains("monitoring connections")
            {
                assert!(Instant::now() < deadline, "monitor did not start");
                thread::sleep(Duration::from_millis(20));
            }
            // Ready means capturing; the connections open before are still
            // being named and written (20,000 take a few hundred ms of both
            // cores). Let that finish, or the workload pays for it.
            while line_count(&running.output) < preexisting {
                assert!(
                    Instant::now() < deadline,
                    "monitor did not report the preexisting sockets"
                );
                thread::sleep(Duration::from_millis(20));
            }
            wait_quiet(&running.output, Duration::from_millis(300));
        }
    }
}

fn line_count(path: &Path) -> usize {
    fs::read(path)
        .map(|text| text.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// Sends SIGTERM and reaps the monitor, killing it after `patience`;
/// returns the CPU seconds it used over its whole life, drain included.
fn stop_monitor(running: &mut Running, patience: Duration) -> f64 {
    let pid = running.child.id() as libc::pid_t;
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + patience;
    // SAFETY: all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    loop {
        // SAFETY: our own child; status and usage are valid to write.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("monitor {pid} ignored SIGTERM for {patience:?}: killed");
            // SAFETY: as above; then a blocking reap.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::wait4(pid, &mut status, 0, &mut usage);
            }
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// VmHWM of a live process. (Not the reaped child's ru_maxrss: that keeps
/// this bench's own size from before the exec.)
fn peak_rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU time a process has used so far (all its threads, exited ones too),
/// seconds, to the nanosecond: its process CPU clock. (Not /proc/PID/stat:
/// that truncates utime and stime to 10 ms ticks each, and against the exact
/// total wait4 reports at the end, that truncation alone added up to 20 ms,
/// a sixth of a whole steady run's cost.)
fn cpu_seconds(pid: u32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is valid to write; the pid is our own unreaped child.
    let rc = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    assert_eq!(
        rc,
        0,
        "clock_getcpuclockid: {}",
        std::io::Error::from_raw_os_error(rc)
    );
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a timespec to write to.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime: {}", std::io::Error::last_os_error());
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Sum of `run_time_ns` over the BPF programs the process holds.
fn bpf_run_seconds(pid: u32) -> f64 {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0.0;
    };
    let mut total = 0u64;
    for entry in dir.flatten() {
        let info = fs::read_to_string(entry.path()).unwrap_or_default();
        if !info.contains("prog_type:") {
            continue;
        }
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("run_time_ns:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total as f64 / 1e9
}

/// Waits until the output file stops growing for `quiet`.
fn wait_quiet(path: &Path, quiet: Duration) {
    let mut last = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len != last.0 {
            last = (len, Instant::now());
        } else if last.1.elapsed() >= quiet {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

struct Seen {
    /// (kind, local, remote, exe matches)
    events: Vec<(EventKind, SocketAddr, SocketAddr, bool)>,
    /// connscope's own exit statistics; zero for tcpspy.
    kernel_lost: u64,
    queue_dropped: u64,
}

fn read_output(monitor: Monitor, run: &Running, exe: &str) -> Seen {
    let text = fs::read(&run.output).unwrap_or_default();
    let mut events = Vec::new();
    match monitor {
        Monitor::Tcpspy(_) => {
            let mut parser = Parser::default();
            for line in text.split(|&b| b == b'\n') {
                let Ok(record) = parser.parse_foreground_line(line) else {
                    continue;
                };
                if let Message::Connection(c) = record.message {
                    let exe_ok = match &c.exe {
                        Some(Exe::Path { path, .. }) => {
                            exe.as_bytes().starts_with(path.as_bytes()) && !path.is_empty()
                        }
                        _ => false,
                    };
                    events.push((c.kind, c.local.addr, c.remote.addr, exe_ok));
                }
            }
        }
        _ => {
            for line in String::from_utf8_lossy(&text).lines() {
                if let Ok(e) = from_json_line(line) {
                    let exe_ok = e.executable() == Some(exe);
                    events.push((e.kind, e.local, e.remote, exe_ok));
                }
            }
        }
    }
    let stderr = fs::read_to_string(&run.stderr).unwrap_or_default();
    Seen {
        events,
        kernel_lost: exit_counter(&stderr, "kernel-lost"),
        queue_dropped: exit_counter(&stderr, "queue-dropped"),
    }
}

/// A counter from connscope's last statistics line
/// (`captured N, kernel-lost N, closes-inferred N, queue-dropped N, ...`).
fn exit_counter(stderr: &str, name: &str) -> u64 {
    stderr
        .rsplit(&format!("{name} "))
        .next()
        .and_then(|t| t.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

struct Row {
    workload: String,
    monitor: String,
    /// Connection ends expected: twice the connections.
    ends: usize,
    connect_recall: f64,
    disconnect_recall: f64,
    attribution: f64,
    cpu_per_10k: f64,
    /// The BPF programs' share of `cpu_per_10k` (eBPF only).
    bpf_per_10k: f64,
    /// CPU time from SIGTERM to exit, once per run (not in `cpu_per_10k`).
    exit_cpu_ms: f64,
    rss_mib: f64,
    rate: f64,
    slowdown: f64,
    kernel_lost: u64,
    queue_dropped: u64,
}

/// (connect recall, disconnect recall, attribution). Each end of each
/// 4-tuple is expected as often as the workload made that 4-tuple; events
/// beyond that (duplicates) earn nothing.
fn score(truth: &Truth, seen: &Seen) -> (f64, f64, f64) {
    let mut made: HashMap<SocketAddr, usize> = HashMap::new();
    for &client in &truth.clients {
        *made.entry(client).or_default() += 1;
    }
    // Per (client address, server end?): how many of the expected are left.
    let mut connects_left: HashMap<(SocketAddr, bool), usize> = HashMap::new();
    let mut disconnects_left = connects_left.clone();
    for (&client, &n) in &made {
        for server_end in [true, false] {
            connects_left.insert((client, server_end), n);
            disconnects_left.insert((client, server_end), n);
        }
    }
    let (mut connects, mut disconnects, mut attributed) = (0usize, 0usize, 0usize);
    for &(kind, local, remote, exe_ok) in &seen.events {
        // Client end: local = client, remote = server; server end reversed.
        let key = if local == truth.server {
            (remote, true)
        } else if remote == truth.server {
            (local, false)
        } else {
            continue;
        };
        let (left, found) = match kind {
            EventKind::Connect => (&mut connects_left, &mut connects),
            EventKind::Disconnect => (&mut disconnects_left, &mut disconnects),
            EventKind::ConnectFailed | EventKind::WouldBlock | EventKind::Blocked => continue,
        };
        let Some(left) = left.get_mut(&key).filter(|left| **left > 0) else {
            continue;
        };
        *left -= 1;
        *found += 1;
        if kind == EventKind::Connect {
            attributed += usize::from(exe_ok);
        }
    }
    let expected = 2.0 * truth.clients.len() as f64;
    let attribution = if connects == 0 {
        f64::NAN
    } else {
        attributed as f64 / connects as f64
    };
    (
        connects as f64 / expected,
        disconnects as f64 / expected,
        attribution,
    )
}

/// Enters a fresh network namespace (loopback up) on this thread only.
fn with_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    thread::spawn(move || {
        let ns = fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace fd affects only this thread.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
    .join()
    .unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return print!("{USAGE}");
    }
    if let Some(i) = args.iter().position(|a| a == "--hold-idle") {
        return hold_idle(args[i + 1].parse().unwrap());
    }
    if let Some(i) = args.iter().position(|a| a == "--hold-files") {
        return hold_files(args[i + 1].parse().unwrap());
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    LazyLock::force(&CONNSCOPE);
    raise_nofile();
    let bpf_stats = Sysctl::set(BPF_STATS, "1");
    let exe = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let netns = format!("cs-bench-{}", std::process::id());
    let ok = |c: &mut Command| assert!(c.status().unwrap().success());
    ok(Command::new("ip").args(["netns", "add", &netns]));
    ok(Command::new("ip").args(["netns", "exec", &netns, "ip", "link", "set", "lo", "up"]));

    // A max-rate IPv4 burst closed by reset; each workload says how it differs.
    const BURST: Workload = Workload {
        name: "",
        connections: 20_000,
        rate: None,
        close: Close::Reset,
        family: Family::Ipv4,
        idle_sockets: 0,
        held_files: 0,
        netns: false,
        time_wait_full: false,
        start_after_launch: None,
        spikes: None,
    };
    let workloads = [
        Workload {
            name: "burst 20k, RST close, max rate",
            ..BURST
        },
        Workload {
            name: "burst 20k, FIN close, max rate",
            close: Close::Fin,
            ..BURST
        },
        Workload {
            name: "burst 20k, FIN close, max rate, TIME_WAIT table full",
            close: Close::Fin,
            time_wait_full: true,
            ..BURST
        },
        Workload {
            name: "steady 2,000/s for 3 s",
            connections: 6_000,
            rate: Some(2_000),
            close: Close::Fin,
            ..BURST
        },
        Workload {
            name: "IPv6 burst 20k, RST",
            family: Family::Ipv6,
            ..BURST
        },
        Workload {
            name: "20k new beside 20k idle sockets",
            idle_sockets: 20_000,
            ..BURST
        },
        Workload {
            name: "netns burst 20k, RST (ebpf --netns all)",
            netns: true,
            ..BURST
        },
        // A new user's first try: the agent launched, a loop 0.3 s later,
        // on a host whose processes hold 150k files (the start-up walk of
        // /proc/*/fd reads them all while the burst goes on).
        Workload {
            name: "start-up: 8,000 at 4,000/s from 0.3 s after launch, 150k files open",
            connections: 8_000,
            rate: Some(4_000),
            close: Close::Fin,
            held_files: 150_000,
            start_after_launch: Some(Duration::from_millis(300)),
            ..BURST
        },
        Workload {
            name: "bursty: 5 spikes of 2,000 at 8,000/s, 1 s apart",
            connections: 10_000,
            rate: Some(8_000),
            close: Close::Fin,
            spikes: Some((2_000, Duration::from_secs(1))),
            ..BURST
        },
    ];
    let monitors = [
        Monitor::None,
        Monitor::Ebpf,
        Monitor::SockDiag,
        Monitor::Tcpspy(10),
        Monitor::Tcpspy(1000),
    ];
    let workload_filter = Filter::from_env("BENCH_WORKLOADS");
    let monitor_filter = Filter::from_env("BENCH_MONITORS");
    let slowdown_pairs: usize = std::env::var("BENCH_SLOWDOWN_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let mut slowdowns = Vec::new();
    let mut rows = Vec::new();
    let mut run = 1u32;
    let bench_start = Instant::now();
    for w in workloads.iter().filter(|w| workload_filter.selects(w.name)) {
        let _time_wait_full = w.time_wait_full.then(|| Sysctl::set(MAX_TW_BUCKETS, "0"));
        let mut idle = idle_sockets(w.idle_sockets);
        idle.extend(held_files(w.held_files));
        let mut baseline_rate = f64::NAN;
        for &monitor in &monitors {
            if w.netns && monitor == Monitor::SockDiag {
                continue; // a poller sees only its own namespace: refuses
            }
            if monitor != Monitor::None && !monitor_filter.selects_exactly(&monitor.label()) {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let running = match w.start_after_launch {
                Some(delay) => {
                    let running = launch_monitor(monitor, dir.path(), w.netns);
                    thread::sleep(delay);
                    running
                }
                None => start_monitor(monitor, dir.path(), w.netns, w.idle_sockets),
            };
            let pid = running.as_ref().map(|r| r.child.id());
            // Start-up (naming the idle sockets) is not the workload's cost,
            // except where the workload starts during it.
            let cpu_before = pid.map_or(0.0, cpu_seconds);
            let bpf_before = pid.map_or(0.0, bpf_run_seconds);
            let truth = run_where_it_belongs(w, &netns, run);
            run += 1;
            let rate = truth.clients.len() as f64 / truth.elapsed.as_secs_f64();
            let Some(mut running) = running else {
                baseline_rate = rate;
                rows.push(Row {
                    workload: w.name.into(),
                    monitor: monitor.label(),
                    ends: 0,
                    connect_recall: f64::NAN,
                    disconnect_recall: f64::NAN,
                    attribution: f64::NAN,
                    cpu_per_10k: f64::NAN,
                    bpf_per_10k: f64::NAN,
                    exit_cpu_ms: f64::NAN,
                    rss_mib: f64::NAN,
                    rate,
                    slowdown: 0.0,
                    kernel_lost: 0,
                    queue_dropped: 0,
                });
                continue;
            };
            if w.start_after_launch.is_some() {
                wait_ready(monitor, &running, w.idle_sockets);
            }
            // Once the output is quiet, the CPU time so far is the cost of the
            // connections; then SIGTERM, reaped within `patience`.
            let (quiet, patience) = match monitor {
                // It only sees what is open when it polls: give it its last
                // polls. A swamped tcpspy handles SIGTERM only after its
                // current scan: 10 s, then it is killed (what it printed is
                // kept).
                Monitor::Tcpspy(ms) => (u64::from(ms) * 3 + 300, Duration::from_secs(10)),
                // connscope writes what it captured within its 50 ms tick.
                // Its SIGTERM still drains the backend, so no kill (its
                // output would be cut short, the count unfair).
                _ => (300, Duration::from_secs(120)),
            };
            wait_quiet(&running.output, Duration::from_millis(quiet));
            // BPF programs run inside the workload's own syscalls and softirqs:
            // their time is complete once the workload is.
            let bpf = bpf_run_seconds(running.child.id()) - bpf_before;
            let rss = peak_rss_mib(running.child.id());
            let cpu_at_stop = cpu_seconds(running.child.id());
            let cpu = cpu_at_stop - cpu_before + bpf;
            let exit_cpu = stop_monitor(&mut running, patience) - cpu_at_stop;
            let seen = read_output(monitor, &running, &exe);
            let (connect_recall, disconnect_recall, attribution) = score(&truth, &seen);
            rows.push(Row {
                workload: w.name.into(),
                monitor: monitor.label(),
                ends: 2 * truth.clients.len(),
                connect_recall,
                disconnect_recall,
                attribution,
                cpu_per_10k: cpu / truth.clients.len() as f64 * 10_000.0,
                bpf_per_10k: if monitor == Monitor::Ebpf {
                    bpf / truth.clients.len() as f64 * 10_000.0
                } else {
                    f64::NAN
                },
                exit_cpu_ms: exit_cpu * 1e3,
                rss_mib: rss,
                rate,
                slowdown: 1.0 - rate / baseline_rate,
                kernel_lost: seen.kernel_lost,
                queue_dropped: seen.queue_dropped,
            });
            eprintln!(
                "done: {} / {} ({:.0?} so far)",
                w.name,
                monitor.label(),
                bench_start.elapsed()
            );
        }
        if slowdown_pairs > 0 && w.rate.is_none() {
            for idle in [CpuIdle::AsConfigured, CpuIdle::Polling] {
                let _awake = (idle == CpuIdle::Polling).then(KeepCpusAwake::new);
                slowdowns.push(measure_slowdown(w, idle, &netns, &mut run, slowdown_pairs));
            }
            eprintln!(
                "done: {} / slowdown ({:.0?} so far)",
                w.name,
                bench_start.elapsed()
            );
        }
        for mut helper in idle {
            drop(helper.stdin.take());
            helper.wait().unwrap();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    drop(bpf_stats);

    let mut table = markdown(&rows);
    if !slowdowns.is_empty() {
        table.push('\n');
        table.push_str(&slowdown_markdown(&slowdowns, slowdown_pairs));
    }
    println!("{table}");
    let mut file =
        fs::File::create(std::env::temp_dir().join("connscope-agent-vs-tcpspy.md")).unwrap();
    file.write_all(table.as_bytes()).unwrap();
}

/// Runs `w` in the bench's network namespace when it asks for one, here
/// otherwise.
fn run_where_it_belongs(w: &Workload, netns: &str, run: u32) -> Truth {
    if !w.netns {
        return run_workload(w, run);
    }
    let w = *w;
    with_netns(netns, move || run_workload(&w, run))
}

/// The workload's own rate without and with the eBPF agent, in pairs of runs.
struct Slowdown {
    workload: String,
    idle: CpuIdle,
    without: Vec<f64>,
    with: Vec<f64>,
}

/// One run per monitor (the table above) cannot show a few percent: a burst
/// lasts a quarter of a second and a shared 2-core machine moves that by
/// more. So runs go in pairs, one without the agent and one with it (started
/// before, its start-up not timed), and the slowdown is the median of the
/// pairs' slowdowns: each pair sees the same moment of the machine. Every
/// other pair runs with the agent first, so neither side always follows
/// the other, and a stopped agent's teardown (the kernel frees its maps
/// in the background) is given time to finish before the next run. BPF
/// run-time statistics are off meanwhile, as in production: timing every
/// program run costs the workload a few percent of its own.
fn measure_slowdown(
    w: &Workload,
    idle: CpuIdle,
    netns: &str,
    run: &mut u32,
    pairs: usize,
) -> Slowdown {
    let mut result = Slowdown {
        workload: w.name.into(),
        idle,
        without: Vec::new(),
        with: Vec::new(),
    };
    let _stats_off = Sysctl::set(BPF_STATS, "0");
    let rate_of_next = |run: &mut u32| {
        let truth = run_where_it_belongs(w, netns, *run);
        *run += 1;
        truth.clients.len() as f64 / truth.elapsed.as_secs_f64()
    };
    let with_agent = |run: &mut u32| {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = start_monitor(Monitor::Ebpf, dir.path(), w.netns, w.idle_sockets)
            .expect("the eBPF agent starts");
        let rate = rate_of_next(run);
        stop_monitor(&mut agent, Duration::from_secs(120));
        thread::sleep(Duration::from_millis(300));
        rate
    };
    for pair in 0..pairs {
        if pair % 2 == 0 {
            result.without.push(rate_of_next(run));
            result.with.push(with_agent(run));
        } else {
            result.with.push(with_agent(run));
            result.without.push(rate_of_next(run));
        }
    }
    result
}

/// What an idle CPU does during a slowdown pair.
///
/// As configured, this guest halts it (haltpoll), and waking a halted vCPU
/// takes microseconds: a loopback burst, its client and acceptor waking each
/// other, waits on that more than it computes. The agent keeps the CPUs
/// busier and so less often halted, which hides its own cost and can even
/// make the workload faster. Kept polling, no CPU ever halts, on both sides
/// of every pair: the difference is then what the agent costs in CPU time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CpuIdle {
    AsConfigured,
    Polling,
}

impl CpuIdle {
    fn label(self) -> &'static str {
        match self {
            CpuIdle::AsConfigured => "as configured",
            CpuIdle::Polling => "kept polling",
        }
    }
}

/// Keeps every CPU out of its halting idle states while it lives: a
/// latency request of 0 µs through /dev/cpu_dma_latency (PM QoS), withdrawn
/// when the file is closed.
struct KeepCpusAwake {
    _request: fs::File,
}

impl KeepCpusAwake {
    fn new() -> KeepCpusAwake {
        let mut request = fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .expect("open /dev/cpu_dma_latency (run as root)");
        request.write_all(&0i32.to_ne_bytes()).unwrap();
        KeepCpusAwake { _request: request }
    }
}

/// The values at a quarter, half and three quarters of the sorted values.
fn quartiles(values: &[f64]) -> [f64; 3] {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: usize| sorted[(sorted.len() - 1) * q / 4];
    [at(1), at(2), at(3)]
}

fn slowdown_markdown(slowdowns: &[Slowdown], pairs: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| workload | idle CPUs | conn/s without (median of {pairs}) | conn/s with connscope ebpf (median of {pairs}) | slowdown, median of {pairs} pairs | slowdown, middle half of the pairs |"
    );
    out.push_str("|---|---|---:|---:|---:|---:|\n");
    for s in slowdowns {
        let per_pair: Vec<f64> = s
            .without
            .iter()
            .zip(&s.with)
            .map(|(without, with)| (1.0 - with / without) * 100.0)
            .collect();
        let [low, mid, high] = quartiles(&per_pair);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {mid:.1}% | {low:.1}% to {high:.1}% |",
            s.workload,
            s.idle.label(),
            quartiles(&s.without)[1],
            quartiles(&s.with)[1],
        );
    }
    out
}

/// A comma-separated list of words from an environment variable; selects
/// the names containing (or equal to) any of them, or everything when the
/// variable is unset or empty.
struct Filter(Vec<String>);

impl Filter {
    fn from_env(variable: &str) -> Filter {
        let words = std::env::var(variable).unwrap_or_default();
        Filter(
            words
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    fn selects(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|w| name.contains(w.as_str()))
    }

    fn selects_exactly(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|w| name == w)
    }
}

/// Soft RLIMIT_NOFILE up to the hard one.
fn raise_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    rl.rlim_cur = rl.rlim_max;
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        panic!(
            "cannot raise RLIMIT_NOFILE: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn markdown(rows: &[Row]) -> String {
    let pct = |v: f64| {
        if v.is_nan() {
            "–".to_owned()
        } else {
            format!("{:.1}%", v * 100.0)
        }
    };
    // Rounding hides a few misses in 40,000: say how many.
    let recall = |v: f64, ends: usize| {
        let missed = ((1.0 - v) * ends as f64).round();
        if v.is_nan() || missed == 0.0 {
            pct(v)
        } else {
            format!("{} ({missed} missed)", pct(v))
        }
    };
    let num = |v: f64, d: usize| {
        if v.is_nan() {
            "–".to_owned()
        } else {
            format!("{v:.d$}")
        }
    };
    let mut out = String::new();
    out.push_str("| workload | monitor | connects found | disconnects found | process named | CPU s / 10k conn | CPU at exit, ms | peak RSS MiB | workload conn/s | slowdown | accounted loss (kernel-lost + queue-dropped) |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} |",
            r.workload,
            r.monitor,
            recall(r.connect_recall, r.ends),
            recall(r.disconnect_recall, r.ends),
            pct(r.attribution),
            if r.bpf_per_10k.is_nan() {
                num(r.cpu_per_10k, 3)
            } else {
                format!("{:.3} (BPF {:.3})", r.cpu_per_10k, r.bpf_per_10k)
            },
            num(r.exit_cpu_ms, 1),
            num(r.rss_mib, 1),
            r.rate,
            if r.monitor == "(none)" {
                "–".to_owned()
            } else {
                pct(r.slowdown)
            },
            if r.monitor.starts_with("connscope") {
                format!(
                    "{} ({} + {})",
                    r.kernel_lost + r.queue_dropped,
                    r.kernel_lost,
                    r.queue_dropped
                )
            } else {
                "–".to_owned()
            },
        );
    }
    out
}
