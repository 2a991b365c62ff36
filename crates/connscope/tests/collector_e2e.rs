#![cfg(feature = "system-tests")] // root: eBPF agents in network namespaces
//! The whole path with real parts: three hosts as network namespaces, each
//! running `connscope agent` (eBPF, `--netns self`) shipping over HTTPS to
//! `connscope collector` in a fourth namespace, joined by veth pairs to a
//! bridge in the collector's namespace (10.77.N.0/24, inside the test's
//! namespaces only).
//!
//! 1. A server in host B, clients in A and C: the stored graph has exactly
//!    the client -> service edges, with the right executables on both ends.
//! 2. The collector stops; 10,000 more connections are made; it restarts:
//!    every event arrives, none twice (gap-free sequence ranges, exact counts).
//! 3. An agent is killed with SIGKILL while connections are being made and
//!    spooled; whatever its spool held arrives after it restarts.
//!
//! Client and server are copies of this test binary under their own names
//! (re-run with a role in the environment), so each end has a distinct
//! executable to look for in the graph.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use connscope_query::{build_graph, GraphFilter};
use connscope_store::{SqliteStore, Store, TimeRange};

mod namespaces;
use namespaces::{first_line, ip, unique_suffix, wait_for, wait_for_or, Netns, Proc};

const ROLE_ENV: &str = "CONNSCOPE_E2E_ROLE";
const SERVICE_PORT: u16 = 7070;
/// A second service on the same server, used only while the agents start up.
const WARMUP_PORT: u16 = 7071;
const COLLECTOR_PORT: u16 = 8443;

/// What a copy of this binary does when started with a role.
#[test]
fn e2e_role() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("server") => {
            let serve = |listener: TcpListener| {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let mut buf = [0u8; 64];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                }
            };
            let service = TcpListener::bind(("0.0.0.0", SERVICE_PORT)).unwrap();
            let warmup = TcpListener::bind(("0.0.0.0", WARMUP_PORT)).unwrap();
            std::thread::spawn(move || serve(warmup));
            println!("ready");
            std::io::stdout().flush().unwrap();
            serve(service);
        }
        Ok(client) if client.starts_with("client:") => {
            // client:ADDR:PORT:COUNT
            let mut parts = client.splitn(4, ':').skip(1);
            let addr = parts.next().unwrap();
            let port: u16 = parts.next().unwrap().parse().unwrap();
            let count: u32 = parts.next().unwrap().parse().unwrap();
            for _ in 0..count {
                let mut stream = TcpStream::connect((addr, port)).unwrap();
                stream.write_all(b"hello").unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
        }
        _ => {} // not started as a role: nothing to do
    }
}

struct Host {
    name: &'static str,
    ns: Netns,
    addr: String,
    token: String,
}

struct World {
    dir: tempfile::TempDir,
    collector_ns: Netns,
    hosts: Vec<Host>,
    fingerprint: std::cell::RefCell<String>,
    net: String,
}

impl World {
    fn build() -> World {
        let suffix = unique_suffix();
        // A /24 per test run from the suffix, so parallel runs never share one.
        let net = format!("10.77.{}", suffix.parse::<u64>().unwrap() % 250 + 1);
        let collector_ns = Netns::new(format!("cs-coll-{suffix}"));
        ip(&[
            "-n",
            &collector_ns.0,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
        ]);
        ip(&[
            "-n",
            &collector_ns.0,
            "addr",
            "add",
            &format!("{net}.1/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &collector_ns.0, "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for (i, name) in ["host-a", "host-b", "host-c"].into_iter().enumerate() {
            let ns = Netns::new(format!("cs-{name}-{suffix}"));
            let port = format!("p-{name}");
            ip(&[
                "-n",
                &collector_ns.0,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &ns.0,
            ]);
            ip(&[
                "-n",
                &collector_ns.0,
                "link",
                "set",
                &port,
                "master",
                "br0",
                "up",
            ]);
            let addr = format!("{net}.{}", 11 + i);
            ip(&[
                "-n",
                &ns.0,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
            hosts.push(Host {
                name,
                ns,
                addr,
                token: format!("e2e-token-of-{name}-{suffix}"),
            });
        }
        World {
            dir: tempfile::tempdir().unwrap(),
            collector_ns,
            hosts,
            fingerprint: Default::default(),
            net,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("collector.db")
    }

    fn collector_url(&self) -> String {
        format!("https://{}.1:{COLLECTOR_PORT}", self.net)
    }

    /// Starts the collector and waits until it prints its fingerprint.
    fn start_collector(&self) -> Proc {
        self.start_collector_with(&[])
    }

    /// [`World::start_collector`] with more flags.
    fn start_collector_with(&self, flags: &[&str]) -> Proc {
        let mut cmd = self.collector_ns.command(env!("CARGO_BIN_EXE_connscope"));
        cmd.args(["collector", "--db"])
            .arg(self.db())
            .args(["--listen", &format!("{}.1:{COLLECTOR_PORT}", self.net)])
            .args(flags);
        for host in &self.hosts {
            cmd.args(["--token", &format!("{}={}", host.name, host.token)]);
        }
        cmd.stdout(Stdio::piped()).env("CONNSCOPE_LOG", "warn");
        let mut proc = Proc::spawn(cmd, "collector");
        let fingerprint = first_line(
            proc.child.stdout.take().unwrap(),
            "the collector's fingerprint",
            |line| line.strip_prefix("fingerprint: ").map(str::to_owned),
        );
        let mut known = self.fingerprint.borrow_mut();
        if !known.is_empty() {
            assert_eq!(
                fingerprint, *known,
                "the certificate is kept across restarts"
            );
        }
        *known = fingerprint;
        drop(known);
        proc
    }

    fn start_agent(&self, host: &Host) -> Proc {
        self.start_agent_with_token(host, &host.token)
    }

    /// [`World::start_agent`] with another host's token, as a copied
    /// configuration would have it.
    fn start_agent_with_token(&self, host: &Host, token: &str) -> Proc {
        let mut cmd = self.agent_command(host, token);
        cmd.env("CONNSCOPE_LOG", "warn").stdout(Stdio::null());
        Proc::spawn(cmd, host.name)
    }

    /// Starts an agent and waits until it says it is monitoring (its probes
    /// are attached), without making any connection to find out: a warm-up
    /// would go on until one connection gets through, hiding lost ones.
    fn start_agent_ready(&self, host: &Host, token: &str) -> Proc {
        let mut cmd = self.agent_command(host, token);
        cmd.env("CONNSCOPE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut proc = Proc::spawn(cmd, host.name);
        first_line(
            proc.child.stderr.take().unwrap(),
            "the agent to start monitoring",
            |line| line.contains("monitoring connections").then_some(()),
        );
        proc
    }

    /// `connscope agent` in `host`, shipping to the collector with `token`.
    fn agent_command(&self, host: &Host, token: &str) -> Command {
        let state = self.dir.path().join(host.name);
        std::fs::create_dir_all(&state).unwrap();
        let token_file = state.join("token");
        std::fs::write(&token_file, token).unwrap();
        let mut cmd = host.ns.command(env!("CARGO_BIN_EXE_connscope"));
        cmd.args([
            "agent",
            "--backend",
            "ebpf",
            "--host-name",
            host.name,
            "--state-dir",
        ])
        .arg(state.join("state"))
        .args([
            "--collector",
            &self.collector_url(),
            "--collector-token-file",
        ])
        .arg(&token_file)
        .args([
            "--collector-fingerprint",
            &self.fingerprint.borrow(),
            "--spool-dir",
        ])
        .arg(self.spool_dir(host));
        cmd
    }

    fn spool_dir(&self, host: &Host) -> PathBuf {
        self.dir.path().join(host.name).join("spool")
    }

    /// A copy of this binary named `name`, so its processes are recognisable.
    fn role_binary(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if !path.exists() {
            std::fs::copy(std::env::current_exe().unwrap(), &path).unwrap();
        }
        path
    }

    fn role(&self, host: &Host, binary: &Path, role: &str) -> Command {
        let mut cmd = host.ns.command(binary);
        cmd.args(["--exact", "e2e_role", "--nocapture", "--test-threads", "1"])
            .env(ROLE_ENV, role);
        cmd
    }

    fn connect(&self, from: &Host, to: &Host, count: u32) {
        self.connect_as("e2e-client", SERVICE_PORT, from, to, count);
    }

    /// `count` connections to `port` from a client process whose executable
    /// is a copy of this binary named `client`.
    fn connect_as(&self, client: &str, port: u16, from: &Host, to: &Host, count: u32) {
        let client = self.role_binary(client);
        let status = self
            .role(from, &client, &format!("client:{}:{port}:{count}", to.addr))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "client in {} failed", from.name);
    }
}

/// Stored events and sequence ranges of an agent.
fn agent_status(store: &SqliteStore, agent: &str) -> (u64, Vec<(u64, u64)>) {
    store
        .agents()
        .unwrap()
        .into_iter()
        .find(|a| a.agent.0 == agent)
        .map(|a| (a.events, a.sequences.ranges().to_vec()))
        .unwrap_or_default()
}

/// Connections counted on the client->service edge from `client` to `server`.
fn service_connections(store: &SqliteStore, client: &str, server: &str) -> u64 {
    let graph = build_graph(store, TimeRange::ALL, &GraphFilter::default()).unwrap();
    graph
        .edges
        .iter()
        .filter(|e| {
            e.source == format!("host:{client}")
                && e.target == format!("service:{server}:{SERVICE_PORT}/tcp")
        })
        .map(|e| e.connections)
        .sum()
}

#[test]
fn three_hosts_ship_to_a_collector_through_outage_and_crash() {
    let world = World::build();
    let collector = world.start_collector();
    let agents: Vec<Proc> = world.hosts.iter().map(|h| world.start_agent(h)).collect();
    let mut agents: Vec<Option<Proc>> = agents.into_iter().map(Some).collect();
    let (a, b, c) = (&world.hosts[0], &world.hosts[1], &world.hosts[2]);

    let server_bin = world.role_binary("e2e-server");
    let mut server_cmd = world.role(b, &server_bin, "server");
    server_cmd.stdout(Stdio::piped());
    let mut server = Proc::spawn(server_cmd, "server");
    first_line(
        server.child.stdout.take().unwrap(),
        "the server in host B to listen",
        |line| line.ends_with("ready").then_some(()),
    );
    // The agents attach their probes at start: warm up on another port until
    // both ends of both clients' connections are seen, so everything on the
    // service port below is made with all probes in place.
    let store = SqliteStore::open(world.db()).unwrap();
    let warmup_by_both_ends = |client: &str| {
        let graph = build_graph(&store, TimeRange::ALL, &GraphFilter::default()).unwrap();
        graph.edges.iter().any(|e| {
            e.source == format!("host:{client}")
                && e.target == format!("service:host-b:{WARMUP_PORT}/tcp")
                && !e.client_processes.is_empty()
                && !e.server_processes.is_empty()
        })
    };
    wait_for("the agents to report", Duration::from_secs(120), || {
        world.connect_as("e2e-warmup", WARMUP_PORT, a, b, 1);
        world.connect_as("e2e-warmup", WARMUP_PORT, c, b, 1);
        warmup_by_both_ends("host-a") && warmup_by_both_ends("host-c")
    });

    // 1. Exactly the expected edges, with the right processes.
    world.connect(a, b, 5);
    world.connect(c, b, 3);
    let client_exe = std::fs::canonicalize(world.role_binary("e2e-client")).unwrap();
    let server_exe = std::fs::canonicalize(&server_bin).unwrap();
    let collector_node = format!("external:{}.1", world.net);
    let last_graph = std::cell::RefCell::new(String::new());
    wait_for_or(
        "the eight new connections",
        Duration::from_secs(60),
        || last_graph.borrow().clone(),
        || {
            let graph = build_graph(&store, TimeRange::ALL, &GraphFilter::default()).unwrap();
            *last_graph.borrow_mut() = format!("{graph:#?}");
            let between_hosts: Vec<_> = graph
                .edges
                .iter()
                .filter(|e| e.port == SERVICE_PORT)
                .collect();
            let by = |processes: &[connscope_query::ProcessUse], exe: &Path| -> u64 {
                processes
                    .iter()
                    .filter(|p| Path::new(&p.executable) == exe)
                    .map(|p| p.connections)
                    .sum()
            };
            between_hosts.len() == 2
                && between_hosts.iter().all(|e| {
                    let expected = if e.source == "host:host-a" { 5 } else { 3 };
                    // Exactly the connections made, each seen at both ends
                    // with the right executable.
                    e.connections == expected
                        && by(&e.client_processes, &client_exe) == expected
                        && by(&e.server_processes, &server_exe) == expected
                })
        },
    );
    let graph = build_graph(&store, TimeRange::ALL, &GraphFilter::default()).unwrap();
    let mut pairs: Vec<(String, String)> = graph
        .edges
        .iter()
        .map(|e| (e.source.to_string(), e.target.to_string()))
        .collect();
    pairs.sort();
    pairs.dedup();
    let service = format!("service:host-b:{SERVICE_PORT}/tcp");
    let warmup = format!("service:host-b:{WARMUP_PORT}/tcp");
    for (source, target) in &pairs {
        // Besides the service edges, only the agents' own shipping to the
        // collector (which is no monitored host) may appear.
        let expected = ((target == &service || target == &warmup)
            && (source == "host:host-a" || source == "host:host-c"))
            || (target == &collector_node && source.starts_with("host:host-"));
        assert!(
            expected,
            "unexpected edge {source} -> {target}; all: {pairs:?}"
        );
    }
    let before_a = service_connections(&store, "host-a", "host-b");

    // 2. Collector outage: 10,000 connections while it is down.
    collector.stop();
    world.connect(a, b, 10_000);
    let collector = world.start_collector();
    wait_for("all 10,000 connections", Duration::from_secs(300), || {
        service_connections(&store, "host-a", "host-b") == before_a + 10_000
    });
    for spooling in &world.hosts[..2] {
        let host = spooling.name;
        wait_for("the spool to drain", Duration::from_secs(120), || {
            std::fs::read_dir(world.spool_dir(spooling))
                .map(|d| {
                    d.filter_map(Result::ok)
                        .all(|e| e.path().extension().is_none_or(|x| x != "batch"))
                })
                .unwrap_or(true)
        });
        let (events, ranges) = agent_status(&store, host);
        assert_eq!(ranges.len(), 1, "{host}: gap-free, got {ranges:?}");
        assert_eq!(ranges[0].0, 1);
        assert_eq!(events, ranges[0].1, "{host}: each sequence stored once");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        service_connections(&store, "host-a", "host-b"),
        before_a + 10_000,
        "no connection counted twice"
    );

    // 3. kill -9 of agent A mid-stream, with the collector down so its spool fills.
    collector.stop();
    let writer = {
        let client = world.role_binary("e2e-client");
        Proc::spawn(
            world.role(
                a,
                &client,
                &format!("client:{}:{SERVICE_PORT}:3000", b.addr),
            ),
            "client",
        )
    };
    std::thread::sleep(Duration::from_millis(800));
    agents[0].take().unwrap().kill_9();
    let mut writer = writer;
    let _ = writer.child.wait();
    // What the dead agent acknowledged as spooled: every batch file left.
    let spooled: Vec<(u64, u64)> = {
        let spool = connscope_transport::Spool::open(world.spool_dir(a), u64::MAX).unwrap();
        spool
            .batches()
            .iter()
            .map(|b| (b.first_sequence, b.last_sequence))
            .collect()
    };
    assert!(
        !spooled.is_empty(),
        "the agent had spooled something before it was killed"
    );
    agents[0] = Some(world.start_agent(a));
    let _collector = world.start_collector();
    wait_for(
        "the spooled batches of the killed agent",
        Duration::from_secs(180),
        || {
            let (_, ranges) = agent_status(&store, "host-a");
            spooled
                .iter()
                .all(|(first, last)| ranges.iter().any(|(f, l)| f <= first && last <= l))
        },
    );
    let (events, ranges) = agent_status(&store, "host-a");
    let distinct: u64 = ranges.iter().map(|(f, l)| l - f + 1).sum();
    assert_eq!(events, distinct, "nothing stored twice after the crash");
}

/// Runs the server role in host B and waits until it listens.
fn start_server(world: &World) -> Proc {
    let b = &world.hosts[1];
    let mut cmd = world.role(b, &world.role_binary("e2e-server"), "server");
    cmd.stdout(Stdio::piped());
    let mut server = Proc::spawn(cmd, "server");
    first_line(
        server.child.stdout.take().unwrap(),
        "the server in host B to listen",
        |line| line.ends_with("ready").then_some(()),
    );
    server
}

/// Connections `from`'s agent stored to `port` (host B runs no agent in
/// the tests below, so it is no named host: any target counts).
fn connections_from(store: &SqliteStore, from: &Host, port: u16) -> u64 {
    build_graph(store, TimeRange::ALL, &GraphFilter::default())
        .unwrap()
        .edges
        .iter()
        .filter(|e| e.source == format!("host:{}", from.name) && e.port == port)
        .map(|e| e.connections)
        .sum()
}

/// Connects from `from` on the warm-up port until its agent has shipped
/// one more, so later connections are made with its probes in place.
fn warm_up(world: &World, store: &SqliteStore, from: &Host) {
    let before = connections_from(store, from, WARMUP_PORT);
    wait_for("the agent to report", Duration::from_secs(120), || {
        world.connect_as("e2e-warmup", WARMUP_PORT, from, &world.hosts[1], 1);
        std::thread::sleep(Duration::from_millis(500));
        connections_from(store, from, WARMUP_PORT) > before
    });
}

/// Issue 14.1: an agent whose state directory was wiped numbers from 1
/// again. Its new connections are a new sequence space (an agent restart
/// with lost state), never "duplicates" of the old ones.
#[test]
fn a_wiped_state_directory_is_a_new_instance_not_duplicates() {
    let world = World::build();
    let _collector = world.start_collector();
    let _server = start_server(&world);
    let store = SqliteStore::open(world.db()).unwrap();
    let (a, b) = (&world.hosts[0], &world.hosts[1]);

    let agent = world.start_agent(a);
    warm_up(&world, &store, a);
    world.connect(a, b, 200);
    wait_for("the first 200 connections", Duration::from_secs(60), || {
        connections_from(&store, a, SERVICE_PORT) == 200
    });
    agent.stop();

    std::fs::remove_dir_all(world.dir.path().join(a.name).join("state")).unwrap();
    let _agent = world.start_agent_ready(a, &a.token);
    world.connect(a, b, 200);
    let hosts = || format!("{:#?}", store.agents().unwrap());
    wait_for_or(
        "the 200 connections made after the state was wiped",
        Duration::from_secs(60),
        hosts,
        || connections_from(&store, a, SERVICE_PORT) == 400,
    );
    let instances: Vec<_> = store
        .agents()
        .unwrap()
        .into_iter()
        .filter(|s| s.agent.0 == "host-a")
        .collect();
    assert_eq!(instances.len(), 2, "{}", hosts());
    assert!(!instances[0].lost_state && instances[1].lost_state);
    assert_ne!(instances[0].instance, instances[1].instance);
    for instance in &instances {
        assert_eq!(instance.sequences.ranges()[0].0, 1, "{}", hosts());
        assert_eq!(instance.gaps().missing, 0, "{}", hosts());
    }
}

/// What `report hosts` would say of host A, summed over its states:
/// (missing, dropped), and the whole status for messages.
fn losses_of_a(store: &SqliteStore) -> ((u64, u64), String) {
    let agents: Vec<_> = store
        .agents()
        .unwrap()
        .into_iter()
        .filter(|s| s.agent.0 == "host-a")
        .collect();
    let sums = agents.iter().fold((0, 0), |(m, d), s| {
        let gaps = s.gaps();
        (m + gaps.missing, d + gaps.dropped)
    });
    (sums, format!("{agents:#?}"))
}

/// Issue 14.7: after a kill -9 of an agent busy numbering, the numbers it
/// had handed out or reserved and not stored are reported (lost in a
/// crash), so the gap they leave is explained, not "missing".
#[test]
fn a_killed_agent_explains_its_gap() {
    let world = World::build();
    let _collector = world.start_collector();
    let _server = start_server(&world);
    let store = SqliteStore::open(world.db()).unwrap();
    let (a, b) = (&world.hosts[0], &world.hosts[1]);

    let agent = world.start_agent(a);
    warm_up(&world, &store, a);
    let client = Proc::spawn(
        world.role(
            a,
            &world.role_binary("e2e-client"),
            &format!("client:{}:{SERVICE_PORT}:20000", b.addr),
        ),
        "client",
    );
    std::thread::sleep(Duration::from_millis(1000));
    agent.kill_9();
    client.kill_9();
    let _agent = world.start_agent(a);
    warm_up(&world, &store, a);
    let last = std::cell::RefCell::new(String::new());
    wait_for_or(
        "the gap left by the crash to be explained",
        Duration::from_secs(60),
        || last.borrow().clone(),
        || {
            let ((missing, dropped), status) = losses_of_a(&store);
            *last.borrow_mut() = status;
            missing > 0 && missing == dropped
        },
    );
    // The time it was down, when connections went unseen, is reported too.
    wait_for_or(
        "the downtime window",
        Duration::from_secs(30),
        || format!("{:#?}", store.agents().unwrap()),
        || {
            store
                .agents()
                .unwrap()
                .iter()
                .any(|s| s.agent.0 == "host-a" && !s.downtime.is_empty())
        },
    );
}

/// Issue 14.5 (agent side): batches the collector refuses (here every one:
/// a body limit smaller than any batch, larger than a dropped report) are reported as dropped, so
/// `report hosts` shows the agent and its loss, explained.
#[test]
fn refused_batches_are_reported_as_dropped() {
    let world = World::build();
    let _collector = world.start_collector_with(&["--body-limit", "160"]);
    let _server = start_server(&world);
    let store = SqliteStore::open(world.db()).unwrap();
    let (a, b) = (&world.hosts[0], &world.hosts[1]);
    let _agent = world.start_agent(a);
    // Nothing arrives to wait for: give the probes time, then connect.
    std::thread::sleep(Duration::from_secs(3));
    world.connect(a, b, 50);
    let last = std::cell::RefCell::new(String::new());
    wait_for_or(
        "the refused batches to be reported",
        Duration::from_secs(60),
        || last.borrow().clone(),
        || {
            let ((missing, dropped), status) = losses_of_a(&store);
            *last.borrow_mut() = status;
            missing >= 50 && missing == dropped
        },
    );
}

/// Copies a directory tree (the agent's state: two small files).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Issue 14.1: an agent state restored from a snapshot numbers again from
/// where the snapshot was. Same instance, numbers going back: its new
/// connections are stored, and the reuse is reported.
#[test]
fn a_state_restored_from_a_snapshot_loses_nothing() {
    let world = World::build();
    let _collector = world.start_collector();
    let _server = start_server(&world);
    let store = SqliteStore::open(world.db()).unwrap();
    let (a, b) = (&world.hosts[0], &world.hosts[1]);
    let state = world.dir.path().join(a.name).join("state");
    let snapshot = world.dir.path().join("snapshot");

    let mut made = 0;
    for round in 0..3 {
        if round == 2 {
            std::fs::remove_dir_all(&state).unwrap();
            copy_dir(&snapshot, &state);
        }
        let agent = world.start_agent_ready(a, &a.token);
        world.connect(a, b, 100);
        made += 100;
        wait_for_or(
            "this round's connections",
            Duration::from_secs(60),
            || format!("{:#?}", store.agents().unwrap()),
            || connections_from(&store, a, SERVICE_PORT) == made,
        );
        agent.stop();
        if round == 0 {
            copy_dir(&state, &snapshot);
        }
    }
    let states: Vec<_> = store
        .agents()
        .unwrap()
        .into_iter()
        .filter(|s| s.agent.0 == "host-a")
        .collect();
    assert_eq!(states.len(), 1, "one state: {states:#?}");
    assert_eq!(states[0].boots, 3);
    assert!(states[0].reused > 0, "{states:#?}");
}

/// Issues 13.7 and 14.1: a token copied to a second host. By default the
/// token speaks for its first host only, so the copy's batches are refused as
/// a host mismatch and counted, while its events wait in its spool; once the
/// token may speak for both, they arrive as a new state (both numbered from
/// 1, nothing taken for a duplicate).
#[test]
fn a_token_copied_to_a_second_host_is_refused_then_shows_both() {
    let world = World::build();
    let collector = world.start_collector();
    let _server = start_server(&world);
    let store = SqliteStore::open(world.db()).unwrap();
    let (a, b, c) = (&world.hosts[0], &world.hosts[1], &world.hosts[2]);
    let _agent_a = world.start_agent_ready(a, &a.token);
    world.connect(a, b, 100);
    wait_for("host A's connections", Duration::from_secs(60), || {
        connections_from(&store, a, SERVICE_PORT) == 100
    });
    let _agent_c = world.start_agent_ready(c, &a.token);
    world.connect(c, b, 100);
    wait_for_or(
        "host C's batches refused under host A's token",
        Duration::from_secs(60),
        || format!("{:#?}", store.refusals().unwrap()),
        || {
            store
                .refusals()
                .unwrap()
                .iter()
                .any(|r| r.agent.0 == "host-a" && r.reason == "host-mismatch")
        },
    );
    assert_eq!(connections_from(&store, c, SERVICE_PORT), 0);

    drop(collector);
    let _collector = world.start_collector_with(&["--token-hosts", "host-a=host-a,host-c"]);
    wait_for_or(
        "host C's spooled connections once its host is allowed",
        Duration::from_secs(60),
        || format!("{:#?}", store.agents().unwrap()),
        || connections_from(&store, c, SERVICE_PORT) == 100,
    );
    let states: Vec<_> = store
        .agents()
        .unwrap()
        .into_iter()
        .filter(|s| s.agent.0 == "host-a")
        .collect();
    let hosts: Vec<&str> = states.iter().map(|s| s.host.as_str()).collect();
    assert_eq!(hosts, ["host-a", "host-c"], "{states:#?}");
    assert!(states[1].lost_state);
}
