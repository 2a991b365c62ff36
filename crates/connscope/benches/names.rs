//! What naming costs the agent: its CPU time per 10,000 DNS answers and per
//! 10,000 connections, with naming on (the default) and off (`--no-names`),
//! and the slowdown of a connection workload beside no agent at all. Each
//! run is a fresh network namespace with the real agent (eBPF) writing JSON
//! to /dev/null; runs alternate on and off, medians are printed as a table
//! for docs/BENCHMARKS.md. Needs root.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

const COUNT: usize = 10_000;
const PAIRS: usize = 5;

#[derive(Clone, Copy, PartialEq)]
enum Agent {
    None,
    NamesOff,
    NamesOn,
}

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
        Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        ns
    }

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

    /// CPU seconds of all the agent's threads so far (schedstat: nanoseconds,
    /// where /proc/PID/stat counts 10 ms ticks).
    fn cpu(&self) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap();
        let nanos: u64 = tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        nanos as f64 / 1e9
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// COUNT DNS answers from 127.0.0.1:53, each read by a local process.
fn answers() {
    let server = UdpSocket::bind("127.0.0.1:53").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buffer = [0u8; 512];
    for i in 0..COUNT {
        let name = Name::from_ascii(format!("host{i}.bench.test.")).unwrap();
        let mut answer = Message::query();
        answer.metadata.message_type = MessageType::Response;
        answer.add_query(Query::query(name.clone(), RecordType::A));
        let [_, a, b, c] = (i as u32).to_be_bytes();
        answer.add_answer(Record::from_rdata(
            name,
            60,
            RData::A(A(Ipv4Addr::new(10, a, b, c))),
        ));
        server
            .send_to(&answer.to_vec().unwrap(), client.local_addr().unwrap())
            .unwrap();
        client.recv(&mut buffer).unwrap();
    }
}

/// COUNT loopback connections, connected and closed one after the other.
fn connections() -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..COUNT {
            drop(listener.accept().unwrap());
        }
    });
    let start = Instant::now();
    for _ in 0..COUNT {
        drop(TcpStream::connect(address).unwrap());
    }
    server.join().unwrap();
    start.elapsed()
}

struct Sample {
    cpu_answers: f64,
    cpu_connections: f64,
    workload: f64,
}

fn sample(agent: Agent, pair: usize) -> Sample {
    let ns = Netns::new(&format!("p{pair}{}", agent as u8));
    let running = (agent != Agent::None).then(|| Running::start(&ns, agent == Agent::NamesOn));
    let cpu = || running.as_ref().map_or(0.0, Running::cpu);
    let settle = || std::thread::sleep(Duration::from_millis(700));
    let before = cpu();
    ns.run(answers);
    settle();
    let after_answers = cpu();
    let workload = ns.run(connections);
    settle();
    Sample {
        cpu_answers: after_answers - before,
        cpu_connections: cpu() - after_answers,
        workload: workload.as_secs_f64(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut runs: Vec<(Agent, Sample)> = Vec::new();
    for pair in 0..PAIRS {
        for agent in [Agent::None, Agent::NamesOff, Agent::NamesOn] {
            runs.push((agent, sample(agent, pair)));
        }
    }
    let pick = |agent: Agent, f: fn(&Sample) -> f64| {
        median(
            runs.iter()
                .filter(|(a, _)| *a == agent)
                .map(|(_, s)| f(s))
                .collect(),
        )
    };
    let base = pick(Agent::None, |s| s.workload);
    println!("medians of {PAIRS} runs each, {COUNT} answers and {COUNT} loopback connections");
    println!(
        "| agent | CPU s / 10k DNS answers | CPU s / 10k connections | workload s | slowdown |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!("| none | - | - | {base:.3} | - |");
    for (label, agent) in [
        ("--no-names", Agent::NamesOff),
        ("names on (default)", Agent::NamesOn),
    ] {
        let workload = pick(agent, |s| s.workload);
        println!(
            "| {label} | {:.4} | {:.4} | {workload:.3} | {:+.1}% |",
            pick(agent, |s| s.cpu_answers) * 10_000.0 / COUNT as f64,
            pick(agent, |s| s.cpu_connections) * 10_000.0 / COUNT as f64,
            (workload / base - 1.0) * 100.0
        );
    }
}
