//! What naming costs: the agent's own CPU per 10,000 DNS answers and per
//! 10,000 connections with naming on (the default) and off (`--no-names`),
//! and what it costs the *workload* beside no agent at all.
//!
//! Wall time of a loopback burst was the first measure and its run-to-run
//! noise (about 6 %) swamped the effect, so the workload is now steady and
//! measured where naming could hurt it:
//!
//! - a **resolve-then-connect client at a fixed rate**: each operation asks
//!   the namespace's DNS server (a responder on 127.0.0.1:53) for a fresh
//!   name, connects to the answered address, does one request/response and
//!   closes; the cost is the CPU time of the workload's threads (client,
//!   server, DNS responder: user and kernel, where the packet filter and the
//!   copies to the agent's packet socket land) per operation, as a mean
//!   and as the sum of the medians per client operation, DNS query and
//!   connection served (a median is immune to the interrupts and
//!   preemptions other work on a shared machine adds to a few operations),
//!   and the latency of each operation (p50, p99);
//! - the same operations **at saturation** for a fixed time: operations per
//!   second.
//!
//! Each sample is a fresh network namespace and, but for the peer, a fresh
//! agent (eBPF, JSON to /dev/null). Rounds run no agent, names off and names
//! on in a rotating order, so drift of a shared machine falls on all three;
//! each round's slowdown of names on and off is taken beside that round's
//! no-agent run, and the table gives medians with their min-max spread.
//! Needs root; writes the table for docs/BENCHMARKS.md.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// DNS answers and connections for the agent's CPU per 10,000.
const COUNT: usize = 10_000;
/// The fixed-rate workload: operations and their rate.
const STEADY_OPS: usize = 4_000;
const STEADY_RATE: f64 = 1_000.0;
/// How long the saturation phase runs.
const SATURATION: Duration = Duration::from_secs(3);
/// The bytes of the request and of the response.
const MESSAGE: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Agent {
    None,
    NamesOff,
    NamesOn,
}

const AGENTS: [Agent; 3] = [Agent::None, Agent::NamesOff, Agent::NamesOn];

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("nab{}{tag}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success());
        let ns = Netns(name);
        assert!(Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        ns
    }

    /// Runs `f` on a thread inside the namespace; threads it starts and
    /// sockets it makes are in it too.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.0)).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a namespace fd; this thread only.
                    assert_eq!(
                        unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                        0
                    );
                    f()
                })
                .join()
                .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Running {
    child: Child,
    _state: tempfile::TempDir,
}

impl Running {
    fn start(ns: &Netns, names: bool) -> Running {
        let state = tempfile::tempdir().unwrap();
        let log = state.path().join("stderr");
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                &ns.0,
                env!("CARGO_BIN_EXE_connscope"),
                "agent",
            ])
            .args([
                "--no-default-rules",
                "--backend",
                "ebpf",
                "--format",
                "json",
            ])
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
        Running {
            child,
            _state: state,
        }
    }

    fn cpu(&self) -> f64 {
        process_cpu(self.child.id())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
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

/// The address the DNS responder gives name number `i`: a fresh loopback
/// address per name, so every operation teaches the agent a new one.
fn address_of(i: usize) -> Ipv4Addr {
    let [_, a, b, c] = (i as u32).to_be_bytes();
    Ipv4Addr::new(127, 1 + a, b, c)
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

/// The workload's servers in one namespace: DNS on 127.0.0.1:53 (name
/// `hN.bench.test` is `address_of(N)`) and a request/response server on
/// every loopback address. Their threads report the CPU time of each query
/// and each connection they served.
struct Servers {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<f64>>>,
}

impl Servers {
    /// Call inside the namespace.
    fn start() -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let dns = UdpSocket::bind("127.0.0.1:53").unwrap();
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dns_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
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
                    dns.send_to(&answer(&query, address_of(i)), from).unwrap();
                    served.push(this_thread_cpu() - start);
                }
                served
            })
        };
        let tcp_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
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

struct Workload {
    /// Workload CPU seconds per operation at the fixed rate: the mean, and
    /// the sum of the medians of the client's operations, the DNS server's
    /// queries and the web server's connections (robust against the
    /// interrupts and preemptions of a shared machine).
    cpu_per_op: f64,
    median_cpu_per_op: f64,
    p50: Duration,
    p99: Duration,
    /// Operations per second at saturation.
    saturated: f64,
}

/// The fixed-rate phase and the saturation phase, inside the namespace.
fn workload(first_name: usize) -> Workload {
    let servers = Servers::start();
    let resolver = UdpSocket::bind("127.0.0.1:0").unwrap();
    resolver.connect("127.0.0.1:53").unwrap();
    let mut latencies = Vec::with_capacity(STEADY_OPS);
    let mut client = Vec::with_capacity(STEADY_OPS);
    let start = Instant::now();
    for n in 0..STEADY_OPS {
        let due = start + Duration::from_secs_f64(n as f64 / STEADY_RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let (latency, cpu) = operation(&resolver, servers.port, first_name + n);
        latencies.push(latency);
        client.push(cpu);
    }
    let [dns, web] = servers.finish();
    let cpu: f64 = [&client, &dns, &web]
        .iter()
        .map(|v| v.iter().sum::<f64>())
        .sum();
    let median_cpu = [client, dns, web].into_iter().map(median).sum();
    latencies.sort();

    let servers = Servers::start();
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < SATURATION {
        operation(&resolver, servers.port, first_name + STEADY_OPS + done);
        done += 1;
    }
    let saturated = done as f64 / start.elapsed().as_secs_f64();
    servers.finish();
    Workload {
        cpu_per_op: cpu / STEADY_OPS as f64,
        median_cpu_per_op: median_cpu,
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
        saturated,
    }
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
            .send_to(&answer(&query, address_of(i)), client.local_addr().unwrap())
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

/// One measure of a sample, where more is worse.
type Cost = dyn Fn(&Sample) -> f64;

struct Sample {
    cpu_answers: f64,
    cpu_connections: f64,
    workload: Workload,
}

fn sample(agent: Agent, round: usize) -> Sample {
    let ns = Netns::new(&format!("r{round}{}", agent as u8));
    let running = (agent != Agent::None).then(|| Running::start(&ns, agent == Agent::NamesOn));
    let cpu = || running.as_ref().map_or(0.0, Running::cpu);
    // The agent's last records wait up to 50 ms in the ring buffer and an
    // unnamed connect up to 500 ms for its ClientHello.
    let settle = || std::thread::sleep(Duration::from_millis(700));
    settle();
    let before = cpu();
    ns.run(answers);
    settle();
    let after_answers = cpu();
    ns.run(connections);
    settle();
    let after_connections = cpu();
    let workload = ns.run(|| workload(COUNT));
    Sample {
        cpu_answers: after_answers - before,
        cpu_connections: after_connections - after_answers,
        workload,
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
    let rounds: usize = std::env::var("NAMES_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(9);
    let mut runs: Vec<[Sample; 3]> = Vec::new();
    for round in 0..rounds {
        let mut samples: [Option<Sample>; 3] = [None, None, None];
        for k in 0..3 {
            let agent = AGENTS[(round + k) % 3];
            eprintln!("round {round}: {agent:?}");
            samples[agent as usize] = Some(sample(agent, round));
        }
        runs.push(samples.map(Option::unwrap));
    }

    let of = |agent: Agent, f: &Cost| -> Vec<f64> {
        runs.iter().map(|r| f(&r[agent as usize])).collect()
    };
    // Each round's cost beside that round's no-agent run, in percent.
    let slowdown = |agent: Agent, cost: &Cost| -> Vec<f64> {
        runs.iter()
            .map(|r| (cost(&r[agent as usize]) / cost(&r[Agent::None as usize]) - 1.0) * 100.0)
            .collect()
    };
    let points = |cost: &Cost| -> Vec<f64> {
        slowdown(Agent::NamesOn, cost)
            .into_iter()
            .zip(slowdown(Agent::NamesOff, cost))
            .map(|(on, off)| on - off)
            .collect()
    };
    let secs = |v: f64| format!("{v:.4}");
    let micros = |v: f64| format!("{:.1}", v * 1e6);
    let percent = |v: f64| format!("{v:+.1}");
    let whole = |v: f64| format!("{v:.0}");
    let costs: [(&str, &Cost); 5] = [
        ("workload CPU / op, median op", &|s| {
            s.workload.median_cpu_per_op
        }),
        ("workload CPU / op, mean", &|s| s.workload.cpu_per_op),
        ("latency p50", &|s| s.workload.p50.as_secs_f64()),
        ("latency p99", &|s| s.workload.p99.as_secs_f64()),
        ("1 / saturated ops/s", &|s| 1.0 / s.workload.saturated),
    ];

    println!(
        "{rounds} rounds (no agent, --no-names, names on; rotating order); median [min, max] of the rounds"
    );
    println!("\nThe agent's own CPU:\n");
    println!("| agent | CPU s / 10k DNS answers | CPU s / 10k connections |");
    println!("|---|---:|---:|");
    for (label, agent) in [
        ("--no-names", Agent::NamesOff),
        ("names on", Agent::NamesOn),
    ] {
        println!(
            "| {label} | {} | {} |",
            spread(
                of(agent, &|s| s.cpu_answers * 10_000.0 / COUNT as f64),
                secs
            ),
            spread(
                of(agent, &|s| s.cpu_connections * 10_000.0 / COUNT as f64),
                secs
            ),
        );
    }
    println!(
        "\nThe workload ({STEADY_OPS} resolve-connect-request-close operations at {STEADY_RATE} a second, then {} s at saturation):\n",
        SATURATION.as_secs()
    );
    println!("| agent | CPU µs / op, median op | CPU µs / op, mean | p50 µs | p99 µs | saturated ops/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (label, agent) in [
        ("none (peer)", Agent::None),
        ("--no-names", Agent::NamesOff),
        ("names on", Agent::NamesOn),
    ] {
        println!(
            "| {label} | {} | {} | {} | {} | {} |",
            spread(of(agent, &|s| s.workload.median_cpu_per_op), micros),
            spread(of(agent, &|s| s.workload.cpu_per_op), micros),
            spread(of(agent, &|s| s.workload.p50.as_secs_f64()), micros),
            spread(of(agent, &|s| s.workload.p99.as_secs_f64()), micros),
            spread(of(agent, &|s| s.workload.saturated), whole),
        );
    }
    println!("\nSlowdown beside no agent, % (per round, then median [min, max]); names on minus off in points:\n");
    println!("| cost | --no-names | names on | on - off, points |");
    println!("|---|---:|---:|---:|");
    for (label, cost) in costs {
        println!(
            "| {label} | {} | {} | {} |",
            spread(slowdown(Agent::NamesOff, cost), percent),
            spread(slowdown(Agent::NamesOn, cost), percent),
            spread(points(cost), percent),
        );
    }
}
