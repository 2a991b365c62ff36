#![cfg(feature = "system-tests")] // root: the eBPF agent, network namespaces, tmpfs mounts
//! Fault injection with real parts: a `connscope agent` (eBPF) in one network
//! namespace ships to a `connscope collector` in another, over a veth pair
//! (10.78.N.0/24, inside the test's namespaces only), while a client in the
//! agent's namespace makes real TCP connections to a server beside the
//! collector. Each test injects one fault during that traffic and accounts
//! for every event, the way docs/RELIABILITY.md tabulates it:
//!
//! - sent: events the agent numbered. The agent logs only the service port
//!   (`-e "rport 7070"`), so while it runs this is exactly two events
//!   (connect, disconnect) per connection the client made, which the tests
//!   check where the agent is never down.
//! - stored: distinct sequence numbers in the store; duplicates: events
//!   stored beyond them (must be 0).
//! - dropped: numbers the agent reported lost (spool full, crash), with the reasons.
//! - capture_lost: numbers the agent gave to events lost before it could
//!   number them (kernel, full capture queue) and reported so: an upper bound
//!   of events of the traffic lost (the agent counts them before its rules).
//!   With them, the agent numbered from `2 x connections - capture_lost` to
//!   `2 x connections`.
//! - unexplained: numbers neither stored nor reported: must be 0.
//!
//! `CONNSCOPE_SOAK_CONNECTIONS` scales the traffic (the soak run, scripts/soak,
//! sets it high); each test prints its row of the table (`fault-row: ...`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use connscope_protocol::drop_reason;
use connscope_store::{SqliteStore, Store};

mod namespaces;
use namespaces::{first_line, ip, run, unique_suffix, wait_for_or, Netns, Proc};

const ROLE_ENV: &str = "CONNSCOPE_FAULT_ROLE";
const SERVICE_PORT: u16 = 7070;
const COLLECTOR_PORT: u16 = 8443;
const SYSLOG_PORT: u16 = 5514;
const HOST: &str = "fault-host";

/// Connections per traffic burst (the soak run raises it).
fn burst() -> u32 {
    std::env::var("CONNSCOPE_SOAK_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

/// What a copy of this binary does when started with a role.
#[test]
fn fault_role() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("server") => {
            let listener = TcpListener::bind(("0.0.0.0", SERVICE_PORT)).unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 64];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            }
        }
        Ok(role) if role.starts_with("client:") => {
            // client:ADDR:COUNT, one connection after the other.
            let mut parts = role.splitn(3, ':').skip(1);
            let addr = parts.next().unwrap();
            let count: u32 = parts.next().unwrap().parse().unwrap();
            for _ in 0..count {
                let mut stream = TcpStream::connect((addr, SERVICE_PORT)).unwrap();
                stream.write_all(b"hello").unwrap();
                stream.shutdown(std::net::Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
        }
        Ok(role) if role.starts_with("idle:") => {
            // idle:ADDR:COUNT: open syslog connections that send nothing.
            let mut parts = role.splitn(3, ':').skip(1);
            let addr = parts.next().unwrap();
            let count: u32 = parts.next().unwrap().parse().unwrap();
            let mut open = Vec::new();
            for _ in 0..count {
                if let Ok(stream) = TcpStream::connect_timeout(
                    &format!("{addr}:{SYSLOG_PORT}").parse().unwrap(),
                    Duration::from_secs(2),
                ) {
                    open.push(stream);
                }
            }
            println!("open {}", open.len());
            std::io::stdout().flush().unwrap();
            // Held until killed.
            std::thread::sleep(Duration::from_secs(3600));
        }
        _ => {}
    }
}

/// Peak resident memory of a process, from /proc (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One agent host and the collector host, joined by a veth pair.
struct World {
    dir: tempfile::TempDir,
    collector_ns: Netns,
    host_ns: Netns,
    net: String,
    token: String,
    fingerprint: std::cell::RefCell<String>,
    /// Where the collector's database lives (a small tmpfs for disk-full).
    db_dir: PathBuf,
    spool_max_bytes: Option<u64>,
    syslog: bool,
}

impl World {
    fn build() -> World {
        let suffix = unique_suffix();
        let net = format!("10.78.{}", suffix.parse::<u64>().unwrap() % 250 + 1);
        let collector_ns = Netns::new(format!("cs-fc-{suffix}"));
        let host_ns = Netns::new(format!("cs-fh-{suffix}"));
        let port = format!("fc{suffix}");
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
            &host_ns.0,
        ]);
        ip(&[
            "-n",
            &collector_ns.0,
            "addr",
            "add",
            &format!("{net}.1/24"),
            "dev",
            &port,
        ]);
        ip(&["-n", &collector_ns.0, "link", "set", &port, "up"]);
        ip(&[
            "-n",
            &host_ns.0,
            "addr",
            "add",
            &format!("{net}.2/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &host_ns.0, "link", "set", "eth0", "up"]);
        // The client closes first, so its ports wait in TIME_WAIT: tens of
        // thousands of connections to one server port need the whole port
        // range and reuse (settings of the test's own namespace only).
        run(host_ns.command("sysctl").args([
            "-qw",
            "net.ipv4.ip_local_port_range=1024 65535",
            "net.ipv4.tcp_tw_reuse=1",
        ]));
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("db");
        std::fs::create_dir_all(&db_dir).unwrap();
        World {
            dir,
            collector_ns,
            host_ns,
            net,
            token: format!("fault-token-{suffix}"),
            fingerprint: Default::default(),
            db_dir,
            spool_max_bytes: None,
            syslog: false,
        }
    }

    fn db(&self) -> PathBuf {
        self.db_dir.join("collector.db")
    }

    fn start_collector(&self) -> Proc {
        let mut cmd = self.collector_ns.command(env!("CARGO_BIN_EXE_connscope"));
        cmd.args(["collector", "--db"])
            .arg(self.db())
            .args(["--listen", &format!("{}.1:{COLLECTOR_PORT}", self.net)])
            .args(["--token", &format!("{HOST}={}", self.token)]);
        if self.syslog {
            cmd.args(["--syslog-listen", &format!("{}.1:{SYSLOG_PORT}", self.net)]);
        }
        cmd.stdout(Stdio::piped()).env("CONNSCOPE_LOG", "error");
        let mut proc = Proc::spawn(cmd, "collector");
        let fingerprint = first_line(
            proc.child.stdout.take().unwrap(),
            "the collector's fingerprint",
            |line| line.strip_prefix("fingerprint: ").map(str::to_owned),
        );
        *self.fingerprint.borrow_mut() = fingerprint;
        proc
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn spool_dir(&self) -> PathBuf {
        self.state_dir().join("spool")
    }

    fn start_agent(&self) -> Proc {
        let state = self.state_dir();
        std::fs::create_dir_all(&state).unwrap();
        let token_file = self.dir.path().join("token");
        std::fs::write(&token_file, &self.token).unwrap();
        let mut cmd = self.host_ns.command(env!("CARGO_BIN_EXE_connscope"));
        cmd.args(["agent", "--backend", "ebpf", "--no-default-rules"])
            .args(["-e", &format!("rport {SERVICE_PORT}")])
            .args([
                "--host-name",
                HOST,
                "--format",
                "json",
                "--output",
                "/dev/null",
            ])
            .arg("--state-dir")
            .arg(state.join("state"))
            .args([
                "--collector",
                &format!("https://{}.1:{COLLECTOR_PORT}", self.net),
            ])
            .arg("--collector-token-file")
            .arg(&token_file)
            .args(["--collector-fingerprint", &self.fingerprint.borrow()])
            .arg("--spool-dir")
            .arg(self.spool_dir());
        if let Some(max) = self.spool_max_bytes {
            cmd.args(["--spool-max-bytes", &max.to_string()]);
        }
        cmd.env("CONNSCOPE_LOG", "error").stdout(Stdio::null());
        Proc::spawn(cmd, "agent")
    }

    fn role_binary(&self) -> PathBuf {
        let path = self.dir.path().join("fault-role");
        if !path.exists() {
            std::fs::copy(std::env::current_exe().unwrap(), &path).unwrap();
        }
        path
    }

    fn role(&self, ns: &Netns, role: &str) -> Command {
        let mut cmd = ns.command(self.role_binary());
        cmd.args([
            "--exact",
            "fault_role",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE_ENV, role);
        cmd
    }

    fn start_server(&self) -> Proc {
        let mut cmd = self.role(&self.collector_ns, "server");
        cmd.stdout(Stdio::piped());
        let mut server = Proc::spawn(cmd, "server");
        first_line(
            server.child.stdout.take().unwrap(),
            "the server to listen",
            |line| line.ends_with("ready").then_some(()),
        );
        server
    }

    /// `count` connections from the agent's host, in the background.
    fn traffic(&self, count: u32) -> Proc {
        let mut cmd = self.role(&self.host_ns, &format!("client:{}.1:{count}", self.net));
        cmd.stdout(Stdio::null());
        Proc::spawn(cmd, "client")
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(self.db()).unwrap()
    }

    /// Starts collector, server and agent, and waits until the agent's first
    /// events are stored (its probes are attached) and the warm-up settled:
    /// returns the numbers given out by then.
    fn start(&self) -> (Proc, Proc, Proc, u64) {
        let collector = self.start_collector();
        let server = self.start_server();
        let agent = self.start_agent();
        let store = self.store();
        wait_for_or(
            "the agent's first events",
            Duration::from_secs(120),
            String::new,
            || {
                assert!(self.traffic(1).wait(), "client failed");
                Tally::of(&store, 0).sent > 0
            },
        );
        let baseline = settle_quietly(self);
        (collector, server, agent, baseline)
    }
}

/// Reasons of numbers the agent gave to events lost before numbering.
const CAPTURE_LOSSES: [&str; 2] = [drop_reason::CAPTURE_KERNEL, drop_reason::CAPTURE_QUEUE];

/// The accounting of one fault, a row of docs/RELIABILITY.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Tally {
    /// Numbers the agent gave out: the highest stored or reported.
    sent: u64,
    stored: u64,
    duplicates: u64,
    dropped: u64,
    capture_lost: u64,
    unexplained: u64,
    /// Connections the client made.
    connections: u32,
}

impl Tally {
    /// Summed over the agent's sequence spaces (one per instance of its state).
    fn of(store: &SqliteStore, connections: u32) -> Tally {
        let mut tally = Tally {
            connections,
            ..Tally::default()
        };
        for status in store
            .agents()
            .unwrap()
            .into_iter()
            .filter(|a| a.host == HOST)
        {
            let (stored, dropped) = (status.sequences.ranges(), status.dropped.ranges());
            let first = status.first_sequence.max(1);
            let Some(last) = status.sequences.last().max(status.dropped.last()) else {
                continue;
            };
            // Each number of the space: stored, else reported dropped, else unexplained.
            let mut fate = vec![0u8; (last + 1 - first) as usize];
            let mut mark = |ranges: &[(u64, u64)], f: u8| {
                for &(from, to) in ranges {
                    let (from, to) = (from.max(first), to.min(last));
                    if from <= to {
                        fate[(from - first) as usize..=(to - first) as usize].fill(f);
                    }
                }
            };
            mark(dropped, 1);
            mark(stored, 2);
            let count = |f: u8| fate.iter().filter(|x| **x == f).count() as u64;
            let distinct = count(2);
            let capture_lost: u64 = status
                .gaps()
                .dropped_by_reason
                .iter()
                .filter(|(reason, _)| CAPTURE_LOSSES.contains(&reason.as_str()))
                .map(|(_, count)| count)
                .sum();
            tally.sent += last + 1 - first;
            tally.stored += distinct;
            tally.duplicates += status.events.saturating_sub(distinct);
            tally.dropped += count(1) - capture_lost;
            tally.capture_lost += capture_lost;
            tally.unexplained += count(0);
        }
        tally
    }

    /// The reasons the agent gave for what it dropped, with counts.
    fn reasons(store: &SqliteStore) -> String {
        let mut reasons = std::collections::BTreeMap::<String, u64>::new();
        for status in store
            .agents()
            .unwrap()
            .into_iter()
            .filter(|a| a.host == HOST)
        {
            // Only what is missing: a reported range may cover numbers that arrived.
            for (reason, count) in status.gaps().dropped_by_reason {
                *reasons.entry(reason).or_default() += count;
            }
        }
        let listed: Vec<String> = reasons
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(r, n)| format!("{r}: {n}"))
            .collect();
        if listed.is_empty() {
            return "-".into();
        }
        listed.join(", ")
    }

    /// Everything numbered is stored or reported dropped.
    fn settled(&self) -> bool {
        self.sent > 0 && self.stored + self.dropped + self.capture_lost == self.sent
    }

    fn row(&self, world: &World, fault: &str, peak_rss_kib: u64) {
        println!(
            "fault-row: | {fault} | {} | {} | {} | {} | {} ({}) | {} | {} MiB |",
            self.connections,
            self.sent,
            self.stored,
            self.duplicates,
            self.dropped + self.capture_lost,
            Tally::reasons(&world.store()),
            self.unexplained,
            peak_rss_kib / 1024
        );
    }
}

/// Waits until the numbers given out stop growing and are all stored: the
/// baseline after a warm-up.
fn settle_quietly(world: &World) -> u64 {
    let store = world.store();
    let mut previous = u64::MAX;
    wait_for_or(
        "the warm-up to be stored",
        Duration::from_secs(60),
        String::new,
        || {
            std::thread::sleep(Duration::from_secs(1));
            let tally = Tally::of(&store, 0);
            let quiet = tally.settled() && tally.sent == previous;
            previous = tally.sent;
            quiet
        },
    );
    previous
}

/// Waits until every numbered event is stored or reported dropped and, when
/// the agent was up throughout, until it numbered exactly both events of each
/// of the `connections` made after `baseline`; returns the final tally.
fn settle(world: &World, baseline: u64, connections: u32, agent_up_throughout: bool) -> Tally {
    let store = world.store();
    let expected = baseline + 2 * u64::from(connections);
    let last = std::cell::Cell::new(Tally::default());
    let mut quiet_checks = 0;
    wait_for_or(
        "every event stored or reported dropped",
        Duration::from_secs(300),
        || format!("{:?}, expected {expected} numbered", last.get()),
        || {
            let tally = Tally::of(&store, connections);
            let unchanged = tally == last.get();
            last.set(tally);
            // Nothing new for 3 s once settled (for 30 s if not, past any
            // retry backoff): the agent has shipped all it will.
            quiet_checks = if unchanged { quiet_checks + 1 } else { 0 };
            let quiet = quiet_checks >= if tally.settled() { 15 } else { 150 };
            quiet && (!agent_up_throughout || tally.sent >= expected)
        },
    );
    let tally = last.get();
    assert_eq!(tally.duplicates, 0, "{tally:?}");
    assert_eq!(tally.unexplained, 0, "{tally:?}");
    if agent_up_throughout {
        // Exactly when nothing was lost before numbering.
        assert!(
            (tally.sent - tally.capture_lost..=tally.sent).contains(&expected),
            "two events per connection, {expected}: {tally:?}"
        );
    }
    tally
}

#[test]
fn collector_kill_9_and_restart_loses_nothing() {
    let world = World::build();
    let (collector, _server, _agent, warmup) = world.start();
    let traffic = world.traffic(burst());
    std::thread::sleep(Duration::from_millis(700));
    collector.kill_9();
    std::thread::sleep(Duration::from_secs(2));
    let collector = world.start_collector();
    assert!(traffic.wait());
    let tally = settle(&world, warmup, burst(), true);
    // The agent was up throughout: two events per connection, nothing dropped.
    assert_eq!(tally.dropped, 0, "{tally:?}");
    tally.row(
        &world,
        "collector kill -9, restart",
        peak_rss_kib(collector.pid()),
    );
}

#[test]
fn spool_full_while_the_collector_is_down_is_reported_dropped() {
    let mut world = World::build();
    // A spool for a small part of the traffic (batches grow with the rate).
    let spool_max = (u64::from(burst()) * 16).max(64 * 1024);
    world.spool_max_bytes = Some(spool_max);
    let (collector, _server, _agent, warmup) = world.start();
    collector.stop();
    assert!(world.traffic(3 * burst()).wait());
    // Let the agent spool (and delete) everything before the collector is back.
    std::thread::sleep(Duration::from_secs(3));
    let collector = world.start_collector();
    let tally = settle(&world, warmup, 3 * burst(), true);
    assert!(
        tally.dropped > 0,
        "a 16 KiB spool held everything? {tally:?}"
    );
    tally.row(
        &world,
        &format!("spool full ({} KiB, collector down)", spool_max / 1024),
        peak_rss_kib(collector.pid()),
    );
}

#[test]
fn agent_kill_9_and_restart_leaves_nothing_unexplained() {
    let world = World::build();
    let (collector, _server, agent, warmup) = world.start();
    let traffic = world.traffic(burst());
    std::thread::sleep(Duration::from_millis(700));
    agent.kill_9();
    assert!(traffic.wait());
    let _agent = world.start_agent();
    // After the restart: traffic the new agent sees in full.
    assert!(world.traffic(burst() / 2).wait());
    let tally = settle(&world, warmup, burst() + burst() / 2, false);
    tally.row(
        &world,
        "agent kill -9, restart",
        peak_rss_kib(collector.pid()),
    );
}

#[test]
fn agent_state_wiped_is_a_new_instance_not_duplicates() {
    let world = World::build();
    let (collector, _server, agent, warmup) = world.start();
    assert!(world.traffic(burst() / 2).wait());
    let before = settle(&world, warmup, burst() / 2, true);
    agent.stop();
    std::fs::remove_dir_all(world.state_dir()).unwrap();
    let _agent = world.start_agent();
    // The new agent's probes attach.
    std::thread::sleep(Duration::from_secs(5));
    assert!(world.traffic(burst() / 2).wait());
    let store = world.store();
    let last = std::cell::Cell::new(Tally::default());
    wait_for_or(
        "the new instance's events, stored as new",
        Duration::from_secs(120),
        || format!("{:?} after {before:?}", last.get()),
        || {
            last.set(Tally::of(&store, 0));
            last.get().stored >= before.stored + u64::from(burst())
        },
    );
    let tally = settle(&world, warmup, burst(), false);
    tally.row(&world, "agent state wiped", peak_rss_kib(collector.pid()));
}

#[test]
fn store_disk_full_holds_events_in_the_spool_until_there_is_room() {
    let mut world = World::build();
    let mount = world.db_dir.clone();
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "cs-fault-db"])
        .arg(&mount));
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    world.spool_max_bytes = None;
    let (_collector, _server, _agent, warmup) = world.start();
    // Fill the disk to the last few KiB.
    let filler = mount.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=100000"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    assert!(world.traffic(burst()).wait());
    std::thread::sleep(Duration::from_secs(5));
    let full = Tally::of(&world.store(), 0);
    // Room again: everything spooled must arrive.
    std::fs::remove_file(&filler).unwrap();
    run(Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mount));
    let tally = settle(&world, warmup, burst(), true);
    assert!(
        full.stored < tally.stored,
        "the disk was never full: {full:?} then {tally:?}"
    );
    tally.row(
        &world,
        "store disk full (2 MiB tmpfs), then room",
        peak_rss_kib(_collector.pid()),
    );
}

/// A gzip bomb: `size` bytes of spaces in a small body.
fn gzip_bomb(path: &Path, size: usize) {
    let file = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..size >> 20 {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap();
}

/// The collector's peak under the flood: its documented ingest bound
/// (`concurrent-decompressions` 2 x 280 MB, docs/API.md) plus 80 MiB for
/// everything else it holds.
const FLOOD_PEAK_RSS_KIB: u64 = (2 * 280_000_000 / 1024) + 80 * 1024;

#[test]
fn idle_syslog_connections_and_a_gzip_bomb_flood_do_not_stop_shipping() {
    let mut world = World::build();
    world.syslog = true;
    let (collector, _server, _agent, warmup) = world.start();
    let mut idle = world.role(&world.host_ns, &format!("idle:{}.1:2000", world.net));
    idle.stdout(Stdio::null());
    let _idle = Proc::spawn(idle, "idle syslog connections");
    let bomb = world.dir.path().join("bomb.gz");
    gzip_bomb(&bomb, 1 << 30);
    let bombers: Vec<Proc> = (0..16)
        .map(|_| {
            let mut cmd = world.host_ns.command("curl");
            cmd.args(["-sk", "-o", "/dev/null", "--max-time", "60", "-X", "POST"])
                .args(["-H", &format!("Authorization: Bearer {}", world.token)])
                .args(["-H", "Content-Encoding: gzip"])
                .args(["-H", "Content-Type: application/x-ndjson"])
                .arg("--data-binary")
                .arg(format!("@{}", bomb.display()))
                .arg(format!(
                    "https://{}.1:{COLLECTOR_PORT}/api/v1/ingest",
                    world.net
                ));
            Proc::spawn(cmd, "bomb")
        })
        .collect();
    assert!(world.traffic(burst()).wait());
    for bomber in bombers {
        bomber.wait();
    }
    let tally = settle(&world, warmup, burst(), true);
    let peak = peak_rss_kib(collector.pid());
    tally.row(
        &world,
        "2,000 idle syslog connections + 16 gzip bombs",
        peak,
    );
    assert!(
        peak < FLOOD_PEAK_RSS_KIB,
        "collector peak RSS {} MiB, over {} MiB",
        peak / 1024,
        FLOOD_PEAK_RSS_KIB / 1024
    );
}
