//! What naming costs: the agent's own CPU per 10,000 DNS answers and per
//! 10,000 connections with naming on (the default) and off (`--no-names`),
//! and what it costs the *workload*, in points of the same workload with no
//! agent at all.
//!
//! Wall time of a loopback burst, the first measure, moved by 6 % from run
//! to run on a shared VM; so does the CPU time of a whole run (the host
//! slows the vCPUs unevenly). So the two sides are measured at the same
//! moment: each round makes two sides, each a client's host (a network
//! namespace and a cgroup of its own with its own client thread), and the
//! two client threads (on one core) take turns, one operation here, one
//! there, at a fixed rate. An operation resolves a fresh name at the side's
//! DNS server, connects to the answered address, sends a request, reads the
//! response and closes: what naming watches. The servers run on a host of
//! their own per side (a namespace and a cgroup over a veth pair), as a
//! workstation's DNS and web servers are elsewhere; `NAMES_BENCH_SERVERS=local`
//! runs them on the client's host instead (127.0.0.1:53, loopback), where
//! the agent's hooks also see every packet the servers receive: both ends
//! of every connection watched, the worst case. An operation's cost is the
//! CPU time of the workload's threads (client, DNS server, web server; user
//! and kernel, where the agent's hooks run, whichever thread the kernel
//! charges a packet's receive to), as the mean and as the sum of the
//! medians per operation, query and connection (a median ignores the
//! interrupts and preemptions other work adds to a few operations), and its
//! latency.
//!
//! A round runs the workload first with no agent (the peer; the difference
//! between its two sides is the method's noise), then with the agent
//! (eBPF, JSON to /dev/null) on each client's host, names on in one and
//! `--no-names` in the other, which one alternating by round. Each agent
//! attaches its packet hooks to its own side's cgroup (`--packet-cgroup`):
//! on the root cgroup the names-on agent's hooks would run for the other
//! side's packets too, and their cost would fall on both sides. Each agent's
//! CPU per 10,000 answers and connections is read from its threads'
//! schedstat while only its namespace is busy. Needs root; prints the
//! tables for docs/BENCHMARKS.md.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// DNS answers and connections for the agent's CPU per 10,000.
const COUNT: usize = 10_000;
/// The fixed-rate workload: operations and their rate.
const STEADY_OPS: usize = 6_000;
const STEADY_RATE: f64 = 1_000.0;
/// The core the workload's threads share (the agents may run on any).
const WORKLOAD_CPU: usize = 1;
/// The bytes of the request and of the response.
const MESSAGE: usize = 64;
/// The two sides' cgroups, and those of their servers' hosts.
const SIDES: [&str; 2] = ["a", "b"];
const SERVER_SIDES: [&str; 2] = ["a-servers", "b-servers"];

/// Where the workload's servers run (`NAMES_BENCH_SERVERS`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Placement {
    /// `remote`, the default: on another host (a namespace and a cgroup of
    /// their own, over a veth pair), as for a workstation whose DNS and web
    /// servers are elsewhere. The agent watches the client's host only.
    Remote,
    /// `local`: on the client's host (its namespace and cgroup), so the
    /// agent's hooks also run for every packet the servers receive: both
    /// ends of every connection on the watched host, the worst case.
    Local,
}

impl Placement {
    fn from_env() -> Placement {
        match std::env::var("NAMES_BENCH_SERVERS").as_deref() {
            Ok("local") => Placement::Local,
            Ok("remote") | Err(_) => Placement::Remote,
            Ok(other) => panic!("NAMES_BENCH_SERVERS: {other:?} is neither remote nor local"),
        }
    }

    /// Where the client sends its queries.
    fn resolver(self) -> SocketAddr {
        match self {
            Placement::Remote => SocketAddr::from((SERVERS_ADDRESS, 53)),
            Placement::Local => SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
        }
    }

    /// The address the DNS server gives name number `i`: a fresh one per
    /// name, so every operation teaches the agent a new one (loopback
    /// addresses on the client's host; addresses of the servers' host,
    /// routed to it, otherwise).
    fn address_of(self, i: usize) -> Ipv4Addr {
        let [_, a, b, c] = (i as u32).to_be_bytes();
        match self {
            Placement::Remote => Ipv4Addr::new(10, 128 + a, b, c),
            Placement::Local => Ipv4Addr::new(127, 1 + a, b, c),
        }
    }
}

/// The veth addresses between a client's host and its servers' host.
const CLIENT_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
const SERVERS_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 2);
/// The servers' host answers for all of 10.128/9 (local route): the answers.
const ANSWERED: &str = "10.128.0.0/9";

/// The bench's own cgroup v2 subtree: a threaded domain the whole process
/// moves into, with a threaded cgroup per side. The agents attach their
/// packet hooks to their side's cgroup (`--packet-cgroup`), so the names-on
/// agent's hooks run for its side's sockets only, while one process still
/// runs both sides at the same moment on one core.
struct Cgroups {
    /// Where the hierarchy is mounted.
    mount: PathBuf,
    /// The bench's domain, inside the hierarchy (`/nabPID`).
    domain: String,
    /// The process's cgroup before, to go back to.
    home: String,
}

impl Cgroups {
    fn new() -> Cgroups {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mount = mounts
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
            })
            .expect("a cgroup v2 hierarchy is mounted");
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let home = own
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .expect("the process's cgroup v2")
            .to_owned();
        let cgroups = Cgroups {
            mount,
            domain: format!("/nab{}", std::process::id()),
            home,
        };
        std::fs::create_dir(cgroups.path(&cgroups.domain)).unwrap();
        for side in SIDES.iter().chain(&SERVER_SIDES) {
            let dir = cgroups.path(&cgroups.side(side));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("cgroup.type"), "threaded").unwrap();
        }
        std::fs::write(
            cgroups.path(&cgroups.domain).join("cgroup.procs"),
            std::process::id().to_string(),
        )
        .unwrap();
        cgroups
    }

    fn path(&self, cgroup: &str) -> PathBuf {
        self.mount.join(cgroup.trim_start_matches('/'))
    }

    /// A side's cgroup, inside the hierarchy.
    fn side(&self, side: &str) -> String {
        format!("{}/{side}", self.domain)
    }

    /// Moves the calling thread into `cgroup`: the sockets it makes from then
    /// on, and the threads it starts, are that cgroup's.
    fn enter(&self, cgroup: &str) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        std::fs::write(self.path(cgroup).join("cgroup.threads"), tid.to_string()).unwrap();
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = std::fs::write(
            self.path(&self.home).join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for side in SIDES.iter().chain(&SERVER_SIDES) {
            let _ = std::fs::remove_dir(self.path(&self.side(side)));
        }
        let _ = std::fs::remove_dir(self.path(&self.domain));
    }
}

/// One side of the workload: a network namespace and a cgroup.
struct Netns {
    name: String,
    cgroup: String,
}

impl Netns {
    fn new(tag: &str, cgroup: String) -> Netns {
        let name = format!("nab{}{tag}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success());
        let ns = Netns { name, cgroup };
        assert!(Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        ns
    }

    /// Puts the calling thread into the namespace and the cgroup.
    fn enter(&self, cgroups: &Cgroups) {
        let file = File::open(format!("/run/netns/{}", self.name)).unwrap();
        // SAFETY: a namespace fd; this thread only.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        cgroups.enter(&self.cgroup);
    }

    /// Runs `f` on a thread inside the namespace and the cgroup; threads it
    /// starts and sockets it makes are in them too.
    fn run<T: Send>(&self, cgroups: &Cgroups, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    self.enter(cgroups);
                    f()
                })
                .join()
                .unwrap()
        })
    }
}

/// `ip ARGS`, which must succeed.
fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {args:?}: {status}");
}

/// One side of the workload: the client's host, where the agent runs, and
/// the host of its servers (the same one with [`Placement::Local`]).
struct Hosts {
    client: Netns,
    servers: Option<Netns>,
    placement: Placement,
}

impl Hosts {
    fn new(tag: &str, side: usize, cgroups: &Cgroups, placement: Placement) -> Hosts {
        let client = Netns::new(tag, cgroups.side(SIDES[side]));
        let servers = (placement == Placement::Remote).then(|| {
            let servers = Netns::new(&format!("{tag}s"), cgroups.side(SERVER_SIDES[side]));
            let (c, s) = (client.name.as_str(), servers.name.as_str());
            ip(&[
                "-n", c, "link", "add", "v", "type", "veth", "peer", "name", "v", "netns", s,
            ]);
            for (ns, address) in [(c, CLIENT_ADDRESS), (s, SERVERS_ADDRESS)] {
                ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    "v",
                ]);
                ip(&["-n", ns, "link", "set", "v", "up"]);
            }
            ip(&["-n", s, "route", "add", "local", ANSWERED, "dev", "lo"]);
            ip(&[
                "-n",
                c,
                "route",
                "add",
                ANSWERED,
                "via",
                &SERVERS_ADDRESS.to_string(),
            ]);
            servers
        });
        Hosts {
            client,
            servers,
            placement,
        }
    }

    fn servers(&self) -> &Netns {
        self.servers.as_ref().unwrap_or(&self.client)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

struct Running {
    child: Child,
    state: tempfile::TempDir,
}

impl Running {
    fn start(ns: &Netns, names: bool) -> Running {
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("stderr");
        // Another build's agent, to measure it with this method.
        let agent = std::env::var("NAMES_BENCH_AGENT")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_connscope").to_owned());
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &ns.name, &agent, "agent"])
            .args([
                "--no-default-rules",
                "--backend",
                "ebpf",
                "--format",
                "json",
            ])
            .args(["--packet-cgroup", &ns.cgroup])
            .args(["--output", "/dev/null", "--state-dir"])
            .arg(state.path().join("state"))
            .args(if names { &[][..] } else { &["--no-names"][..] })
            .env("CONNSCOPE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        let child = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("monitoring connections")
        {
            assert!(Instant::now() < deadline, "the agent did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Running { child, state }
    }

    /// Stops the agent; its names summary at exit: the DNS answers it
    /// learned, those the kernel side counted as dropped (a full ring), and
    /// the line itself.
    fn names_summary(mut self) -> (u64, u64, String) {
        self.stop();
        let log = std::fs::read_to_string(self.state.path().join("stderr")).unwrap();
        let count = |summary: &str, suffix: &str| -> Option<u64> {
            summary
                .split(", ")
                .find_map(|part| part.strip_suffix(suffix)?.rsplit(' ').next()?.parse().ok())
        };
        log.lines()
            .find_map(|line| {
                let summary = line.split_once("names: ")?.1;
                let learned = count(summary, " answers")?;
                let dropped = count(summary, " answers dropped by the kernel")?;
                Some((learned, dropped, summary.to_owned()))
            })
            .unwrap_or_else(|| panic!("no names summary in the agent's log:\n{log}"))
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    fn cpu(&self) -> f64 {
        process_cpu(self.child.id())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CPU seconds of all threads of a process so far (schedstat: nanoseconds,
/// where /proc/PID/stat counts 10 ms ticks). The agent runs under `ip netns
/// exec`, which execs it: the child's pid is the agent's.
fn process_cpu(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .map(|task| thread_cpu(&task.path().join("schedstat")))
        .sum()
}

fn thread_cpu(schedstat: &std::path::Path) -> f64 {
    std::fs::read_to_string(schedstat)
        .ok()
        .and_then(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |nanos| nanos as f64 / 1e9)
}

/// Puts the calling thread on the workload's CPU: every thread of both
/// sides shares one core, so a core slower or busier than the other (a
/// shared VM's host decides) cannot fall on one side only.
fn pin() {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(WORKLOAD_CPU, &mut set) };
    // SAFETY: the set is valid for its size; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// CPU seconds of the calling thread (user and kernel).
fn this_thread_cpu() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-parameter.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) },
        0
    );
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

fn answer(query: &Message, address: Ipv4Addr) -> Vec<u8> {
    let mut response = Message::query();
    response.metadata.id = query.metadata.id;
    response.metadata.message_type = MessageType::Response;
    let name = query.queries[0].name.clone();
    response.add_query(Query::query(name.clone(), RecordType::A));
    response.add_answer(Record::from_rdata(name, 60, RData::A(A(address))));
    response.to_vec().unwrap()
}

/// The workload's servers in one namespace: DNS on port 53 (name
/// `hN.bench.test` is `placement.address_of(N)`) and a request/response
/// server on every address. Their threads report the CPU time of each
/// query and each connection they served.
struct Servers {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<f64>>>,
}

impl Servers {
    /// Call inside the namespace.
    fn start(placement: Placement) -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let dns = UdpSocket::bind("0.0.0.0:53").unwrap();
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dns_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin();
                let mut served = Vec::new();
                let mut buffer = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let start = this_thread_cpu();
                    let (n, from) = dns.recv_from(&mut buffer).unwrap();
                    let Ok(query) = Message::from_vec(&buffer[..n]) else {
                        continue; // the wake-up of finish()
                    };
                    let label = query.queries[0].name.iter().next().unwrap();
                    let i: usize = std::str::from_utf8(&label[1..]).unwrap().parse().unwrap();
                    dns.send_to(&answer(&query, placement.address_of(i)), from)
                        .unwrap();
                    served.push(this_thread_cpu() - start);
                }
                served
            })
        };
        let tcp_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin();
                let mut served = Vec::new();
                let mut buffer = [0u8; MESSAGE];
                while !stop.load(Ordering::Relaxed) {
                    let start = this_thread_cpu();
                    let (mut stream, _) = listener.accept().unwrap();
                    if stream.read_exact(&mut buffer).is_ok() {
                        let _ = stream.write_all(&buffer);
                        let _ = stream.read(&mut buffer); // the client's close
                        drop(stream);
                        served.push(this_thread_cpu() - start);
                    }
                }
                served
            })
        };
        Servers {
            port,
            stop,
            threads: vec![dns_thread, tcp_thread],
        }
    }

    /// Stops the servers (call inside the namespace, it wakes them with a
    /// datagram and a connection); the CPU seconds of each query and each
    /// connection served.
    fn finish(self) -> [Vec<f64>; 2] {
        self.stop.store(true, Ordering::Relaxed);
        let waker = UdpSocket::bind("127.0.0.1:0").unwrap();
        waker.send_to(b"", "127.0.0.1:53").unwrap();
        // Refused when the server saw the flag on its own first.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let mut served = self.threads.into_iter().map(|t| t.join().unwrap());
        [served.next().unwrap(), served.next().unwrap()]
    }
}

/// One resolve-then-connect operation: a DNS query for name `i`, a connect
/// to the answer, a request and its response, the close. Returns its time
/// and the client's CPU seconds for it.
fn operation(resolver: &UdpSocket, port: u16, i: usize) -> (Duration, f64) {
    let start = Instant::now();
    let cpu = this_thread_cpu();
    let mut query = Message::query();
    query.metadata.id = i as u16;
    query.add_query(Query::query(
        Name::from_ascii(format!("h{i}.bench.test.")).unwrap(),
        RecordType::A,
    ));
    resolver.send(&query.to_vec().unwrap()).unwrap();
    let mut buffer = [0u8; 512];
    let n = resolver.recv(&mut buffer).unwrap();
    let response = Message::from_vec(&buffer[..n]).unwrap();
    let RData::A(A(address)) = response.answers[0].data else {
        panic!("not an A record")
    };
    let mut stream = TcpStream::connect(SocketAddr::new(IpAddr::V4(address), port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut message = [7u8; MESSAGE];
    stream.write_all(&message).unwrap();
    stream.read_exact(&mut message).unwrap();
    drop(stream);
    (start.elapsed(), this_thread_cpu() - cpu)
}

/// One measure of a side, where more is worse.
type Measure = dyn Fn(&Side) -> f64;

/// What one side of the alternating workload cost.
struct Side {
    /// Workload CPU seconds per operation: the mean, and the sum of the
    /// medians of the client's operations, the DNS server's queries and the
    /// web server's connections (immune to the interrupts and preemptions a
    /// shared machine adds to a few operations).
    cpu_per_op: f64,
    median_cpu_per_op: f64,
    p50: f64,
    p99: f64,
}

/// STEADY_OPS resolve-then-connect operations at STEADY_RATE, alternating
/// between the two sides one operation at a time, so both see the same
/// moment of the machine. Each side has its own client thread (in its
/// namespace and cgroup, on the same core as the other); they hand the turn
/// to each other, outside the measured operation.
fn alternating(cgroups: &Cgroups, sides: [&Hosts; 2], first_name: usize) -> [Side; 2] {
    let servers = sides.map(|hosts| {
        hosts
            .servers()
            .run(cgroups, || Servers::start(hosts.placement))
    });
    let ports = [servers[0].port, servers[1].port];
    let turn = (Mutex::new(0usize), Condvar::new());
    let start = Instant::now();
    let measured = std::thread::scope(|scope| {
        let clients = [0, 1].map(|side| {
            let (turn, hosts, port) = (&turn, sides[side], ports[side]);
            scope.spawn(move || {
                pin();
                hosts.client.enter(cgroups);
                let resolver = UdpSocket::bind("0.0.0.0:0").unwrap();
                resolver.connect(hosts.placement.resolver()).unwrap();
                let mut measured = Vec::with_capacity(STEADY_OPS / 2);
                let (lock, changed) = turn;
                loop {
                    let mut n = lock.lock().unwrap();
                    while *n < STEADY_OPS && *n % 2 != side {
                        n = changed.wait(n).unwrap();
                    }
                    if *n >= STEADY_OPS {
                        return measured;
                    }
                    let due = start + Duration::from_secs_f64(*n as f64 / STEADY_RATE);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    measured.push(operation(&resolver, port, first_name + *n));
                    *n += 1;
                    changed.notify_all();
                }
            })
        });
        clients.map(|client| client.join().unwrap())
    });
    let mut served = sides
        .into_iter()
        .zip(servers)
        .map(|(hosts, s)| hosts.servers().run(cgroups, || s.finish()));
    let served = [served.next().unwrap(), served.next().unwrap()];
    let side = |index: usize| {
        let (mut latencies, client): (Vec<Duration>, Vec<f64>) =
            measured[index].iter().copied().unzip();
        let [dns, web] = &served[index];
        let total: f64 = [&client, dns, web]
            .iter()
            .map(|v| v.iter().sum::<f64>())
            .sum();
        latencies.sort();
        Side {
            cpu_per_op: total / client.len() as f64,
            median_cpu_per_op: [client, dns.clone(), web.clone()]
                .into_iter()
                .map(median)
                .sum(),
            p50: latencies[latencies.len() / 2].as_secs_f64(),
            p99: latencies[latencies.len() * 99 / 100].as_secs_f64(),
        }
    };
    [side(0), side(1)]
}

/// COUNT DNS answers from 127.0.0.1:53, each read by a local process.
fn answers() {
    let server = UdpSocket::bind("127.0.0.1:53").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buffer = [0u8; 512];
    for i in 0..COUNT {
        let mut query = Message::query();
        query.add_query(Query::query(
            Name::from_ascii(format!("host{i}.bench.test.")).unwrap(),
            RecordType::A,
        ));
        server
            .send_to(
                &answer(&query, Placement::Local.address_of(i)),
                client.local_addr().unwrap(),
            )
            .unwrap();
        client.recv(&mut buffer).unwrap();
    }
}

/// COUNT loopback connections to addresses no answer named, at 2,000 a
/// second, each with a request and its response.
fn connections() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut buffer = [0u8; MESSAGE];
        for _ in 0..COUNT {
            let (mut stream, _) = listener.accept().unwrap();
            stream.read_exact(&mut buffer).unwrap();
            stream.write_all(&buffer).unwrap();
        }
    });
    let start = Instant::now();
    for n in 0..COUNT {
        let due = start + Duration::from_secs_f64(n as f64 / 2_000.0);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut stream = TcpStream::connect(address).unwrap();
        let mut message = [7u8; MESSAGE];
        stream.write_all(&message).unwrap();
        stream.read_exact(&mut message).unwrap();
    }
    server.join().unwrap();
}

/// The agent's own CPU seconds for COUNT answers and COUNT connections.
struct AgentCpu {
    answers: f64,
    connections: f64,
}

fn agent_cpu(cgroups: &Cgroups, ns: &Netns, agent: &Running) -> AgentCpu {
    // The agent's last records wait up to 50 ms in the ring buffer and an
    // unnamed connect up to 500 ms for its ClientHello.
    let settle = || std::thread::sleep(Duration::from_millis(700));
    settle();
    let before = agent.cpu();
    ns.run(cgroups, answers);
    settle();
    let after_answers = agent.cpu();
    ns.run(cgroups, connections);
    settle();
    AgentCpu {
        answers: after_answers - before,
        connections: agent.cpu() - after_answers,
    }
}

/// One round: the alternating workload with no agent (two namespaces, a
/// control of the method: their difference is its noise), then with names
/// on in one namespace and `--no-names` in the other (which one alternates
/// by round).
struct Round {
    none: [Side; 2],
    /// The side names were on in (0 is a).
    on_side: usize,
    off: Side,
    on: Side,
    off_cpu: AgentCpu,
    on_cpu: AgentCpu,
}

fn round(cgroups: &Cgroups, index: usize, placement: Placement) -> Round {
    let sides = [
        Hosts::new(&format!("r{index}a"), 0, cgroups, placement),
        Hosts::new(&format!("r{index}b"), 1, cgroups, placement),
    ];
    let none = alternating(cgroups, [&sides[0], &sides[1]], 0);
    let on_side = index % 2;
    let on_agent = Running::start(&sides[on_side].client, true);
    let off_agent = Running::start(&sides[1 - on_side].client, false);
    let on_cpu = agent_cpu(cgroups, &sides[on_side].client, &on_agent);
    let off_cpu = agent_cpu(cgroups, &sides[1 - on_side].client, &off_agent);
    let [a, b] = alternating(cgroups, [&sides[0], &sides[1]], COUNT);
    // Every answer of the answers phase and of the workload on the names-on
    // side is learned, or counted as dropped: a run whose agent named
    // nothing cannot pass for cheap.
    let expected = (COUNT + STEADY_OPS / 2) as u64;
    let (learned, dropped, summary) = on_agent.names_summary();
    eprintln!("  names-on agent: {summary}");
    assert!(
        learned + dropped >= expected,
        "the names-on agent learned {learned} DNS answers and counted {dropped} dropped, of {expected}"
    );
    let (on, off) = if on_side == 0 { (a, b) } else { (b, a) };
    Round {
        on_side,
        none,
        off,
        on,
        off_cpu,
        on_cpu,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// "median [min, max]" of `values`, each formatted by `show`.
fn spread(values: Vec<f64>, show: impl Fn(f64) -> String) -> String {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{} [{}, {}]", show(median(values)), show(low), show(high))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count: usize = std::env::var("NAMES_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let placement = Placement::from_env();
    let cgroups = Cgroups::new();
    let rounds: Vec<Round> = (0..count)
        .map(|index| {
            eprintln!("round {index}");
            round(&cgroups, index, placement)
        })
        .collect();
    drop(cgroups);

    let of = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
    let secs = |v: f64| format!("{v:.4}");
    let micros = |v: f64| format!("{:.1}", v * 1e6);
    let points = |v: f64| format!("{v:+.1}");
    let measures: [(&str, &Measure); 4] = [
        ("CPU / op, sum of medians", &|s| s.median_cpu_per_op),
        ("CPU / op, mean", &|s| s.cpu_per_op),
        ("latency p50", &|s| s.p50),
        ("latency p99", &|s| s.p99),
    ];

    println!("{count} rounds, servers {placement:?}; median [min, max] of the rounds");
    println!("\nThe agent's own CPU ({COUNT} answers, {COUNT} connections at 2,000/s):\n");
    println!("| agent | CPU s / 10k DNS answers | CPU s / 10k connections |");
    println!("|---|---:|---:|");
    let scale = 10_000.0 / COUNT as f64;
    println!(
        "| --no-names | {} | {} |",
        spread(of(&|r| r.off_cpu.answers * scale), secs),
        spread(of(&|r| r.off_cpu.connections * scale), secs)
    );
    println!(
        "| names on | {} | {} |",
        spread(of(&|r| r.on_cpu.answers * scale), secs),
        spread(of(&|r| r.on_cpu.connections * scale), secs)
    );
    println!(
        "\nThe workload, µs per resolve-connect-request-close operation ({STEADY_OPS} at {STEADY_RATE}/s, alternating between two namespaces):\n"
    );
    println!(
        "| agent | {} |",
        measures.map(|(label, _)| label).join(" | ")
    );
    println!("|---|---:|---:|---:|---:|");
    let row = |label: &str, side: &dyn Fn(&Round) -> &Side| {
        let cells: Vec<String> = measures
            .iter()
            .map(|(_, measure)| spread(of(&|r| measure(side(r))), micros))
            .collect();
        println!("| {label} | {} |", cells.join(" | "));
    };
    row("none (peer), namespace a", &|r| &r.none[0]);
    row("none (peer), namespace b", &|r| &r.none[1]);
    row("--no-names", &|r| &r.off);
    row("names on", &|r| &r.on);

    println!("\nSlowdown in points of the no-agent cost (per round, then median [min, max]):\n");
    println!(
        "| measure | no agent: a - b (noise) | --no-names | names on | names on - off | names on - off, each side against its own no-agent run |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, measure) in measures {
        let base = |r: &Round| (measure(&r.none[0]) + measure(&r.none[1])) / 2.0;
        let pts = |f: &dyn Fn(&Round) -> f64| of(&|r| f(r) / base(r) * 100.0);
        // Side a runs its operation first in each pair, which can make it
        // steadily dearer or cheaper than b (the noise column's median): the
        // last column takes each side's slowdown against that side's own
        // no-agent run, so that order effect cancels within each round.
        let own = |r: &Round, side: &Side, index: usize| {
            (measure(side) / measure(&r.none[index]) - 1.0) * 100.0
        };
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            spread(pts(&|r| measure(&r.none[0]) - measure(&r.none[1])), points),
            spread(pts(&|r| measure(&r.off) - base(r)), points),
            spread(pts(&|r| measure(&r.on) - base(r)), points),
            spread(pts(&|r| measure(&r.on) - measure(&r.off)), points),
            spread(
                of(&|r| own(r, &r.on, r.on_side) - own(r, &r.off, 1 - r.on_side)),
                points
            ),
        );
    }
}
