#![cfg(feature = "system-tests")] // root: network namespaces, eBPF agents, servers in namespaces
//! `connscope demo` as a newcomer runs it: the office it builds reaches the
//! store host by host (each from its own agent), with the groups, the
//! services, an IPv6 edge to the dual-stack intranet server, DNS answered by
//! dnsmasq and the hidden flow; Ctrl-C (SIGINT) leaves no namespace, link or
//! process behind; two demos never collide and a dead demo's leftovers go.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One demo at a time from this file: each runs eight eBPF agents.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running `connscope demo`, interrupted (SIGINT) and waited for on drop.
struct Demo {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    dir: std::path::PathBuf,
}

impl Demo {
    fn start(dir: &Path, port: u16) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_connscope"))
            .args(["demo", "--duration", "240", "--dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CONNSCOPE_LOG", "warn")
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let lines = out.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("demo: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        Demo {
            child,
            out,
            dir: dir.to_owned(),
        }
    }

    fn prefix(&self) -> String {
        format!("csdemo-{}-", self.child.id())
    }

    fn printed(&self, text: &str) -> bool {
        self.out.lock().unwrap().iter().any(|l| l.contains(text))
    }

    fn wait_for_line(&mut self, text: &str, timeout: Duration) {
        wait_for(&format!("the demo to print {text:?}"), timeout, || {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the demo ended early:\n{}",
                self.out.lock().unwrap().join("\n")
            );
            self.printed(text)
        });
    }

    /// Ctrl-C, as a terminal sends it (to the foreground process group, which
    /// the demo leads here); the demo must end well within a minute.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        signal(-(self.child.id() as i32), libc::SIGINT);
        self.wait_stopped("SIGINT")
    }

    /// SIGTERM to the demo alone, as a service manager stops it.
    fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id() as i32, libc::SIGTERM);
        self.wait_stopped("SIGTERM")
    }

    fn wait_stopped(&mut self, on: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not stop on {on}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn db(&self) -> String {
        self.dir.join("connscope.db").to_string_lossy().into_owned()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            self.interrupt();
        }
    }
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) of a process (group) this test started.
    unsafe { libc::kill(pid, signal) };
}

fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn connscope_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "connscope {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn namespaces_with(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// Every process in the namespaces and every child of the demo.
fn processes_of(demo: &Demo) -> BTreeSet<u32> {
    let mut pids = BTreeSet::new();
    for ns in namespaces_with(&demo.prefix()) {
        let out = Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .unwrap();
        pids.extend(
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    let pid = demo.child.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    pids.extend(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    pids
}

fn alive(pid: u32) -> bool {
    // A zombie is dead; its /proc entry stays until it is reaped.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.rsplit(") ").next().unwrap_or("").starts_with('Z'))
        .unwrap_or(false)
}

/// Nothing of the demo is left: namespaces, their /etc files, its lock,
/// links named after it, the processes it ran.
fn assert_nothing_left(prefix: &str, pid: u32, processes: &BTreeSet<u32>, dir: &Path) {
    assert_eq!(
        namespaces_with(prefix),
        Vec::<String>::new(),
        "namespaces left"
    );
    let etc: Vec<_> = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(etc.is_empty(), "/etc/netns entries left: {etc:?}");
    assert!(!Path::new(&format!("/run/connscope-demo/{pid}.lock")).exists());
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(prefix), "links left: {links}");
    let left: Vec<_> = processes.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "processes left: {left:?}");
    let pgrep = Command::new("pgrep")
        .args(["-f", &dir.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        pgrep.stdout.is_empty(),
        "processes naming the demo's directory left: {}",
        String::from_utf8_lossy(&pgrep.stdout)
    );
}

fn is_v6(ip: &Value) -> bool {
    ip.as_str().is_some_and(|ip| ip.contains(':'))
}

#[test]
fn the_demo_office_reaches_the_store_host_by_host_and_ctrl_c_leaves_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Demo::start(dir.path(), free_port());
    demo.wait_for_line("Something to find", Duration::from_secs(120));
    assert!(demo.printed("The map:       https://127.0.0.1:"));
    assert!(demo.printed("fingerprint SHA256:"));
    assert!(
        demo.printed("CLIENT_HOST"),
        "the first report edges is printed"
    );
    let namespaces = namespaces_with(&demo.prefix());
    assert_eq!(
        namespaces.len(),
        10,
        "8 hosts, the router, the internet: {namespaces:?}"
    );

    // The hidden flow comes 20 s into the schedule.
    let db = demo.db();
    let hidden = |edge: &Value| {
        edge["client_host"] == "ws-3"
            && edge["server_ip"] == "198.51.100.7"
            && edge["server_port"] == 8022
    };
    wait_for(
        "the hidden flow in the store",
        Duration::from_secs(90),
        || {
            let edges = connscope_json(&["report", "edges", "--db", &db]);
            edges.as_array().unwrap().iter().any(hidden)
        },
    );
    let processes = processes_of(&demo);
    assert!(
        processes.len() >= 8 + 1 + 7,
        "8 agents, the collector, 7 servers (and clients now and then): {processes:?}"
    );

    let status = demo.interrupt();
    assert!(status.success(), "the demo ends well on Ctrl-C: {status}");
    assert!(demo.printed("Stopped; the office's namespaces are removed"));
    assert_nothing_left(&demo.prefix(), demo.child.id(), &processes, dir.path());

    // Each host's events come from its own agent.
    let hosts = connscope_json(&["report", "hosts", "--db", &db]);
    let hosts = hosts.as_array().unwrap();
    let with_events: Vec<&str> = hosts
        .iter()
        .filter(|h| h["events"].as_u64().unwrap_or(0) > 0 && h["agent"] == h["host"])
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert!(
        with_events.len() >= 7,
        "hosts with their own agents' events: {hosts:?}"
    );
    for host in [
        "ws-1", "ws-2", "ws-3", "ws-4", "fs", "intranet", "dns", "printer",
    ] {
        assert!(with_events.contains(&host), "{host} in {with_events:?}");
    }

    // The groups, with their members.
    let groups = connscope_json(&["groups", "list", "--db", &db]);
    let members = |name: &str| -> Vec<String> {
        let group = groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap_or_else(|| panic!("group {name} in {groups}"));
        serde_json::from_value(group["hosts"].clone()).unwrap()
    };
    assert_eq!(members("workstations"), ["ws-1", "ws-2", "ws-3", "ws-4"]);
    assert_eq!(members("servers"), ["dns", "fs", "intranet"]);
    assert_eq!(members("printers"), ["printer"]);

    // The services, joined from both ends where both are office hosts.
    let edges = connscope_json(&["report", "edges", "--db", &db]);
    let edges = edges.as_array().unwrap();
    let services: BTreeSet<(String, u64, String)> = edges
        .iter()
        .map(|e| {
            (
                e["server_host"].as_str().unwrap_or("").to_owned(),
                e["server_port"].as_u64().unwrap(),
                e["protocol"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("fs", 445, "tcp"),
        ("intranet", 80, "tcp"),
        ("dns", 53, "udp"),
        ("printer", 9100, "tcp"),
        ("", 443, "tcp"),
        ("", 8022, "tcp"),
    ];
    for (host, port, protocol) in expected {
        assert!(
            services.contains(&(host.to_owned(), port, protocol.to_owned())),
            "{host}:{port}/{protocol} in {services:?}"
        );
    }
    let to_intranet = |v6: bool| {
        edges.iter().any(|e| {
            e["server_host"] == "intranet"
                && e["server_port"] == 80
                && is_v6(&e["server_ip"]) == v6
                && e["client_host"].as_str().unwrap().starts_with("ws-")
                && e["logged_by"] == "both"
        })
    };
    assert!(
        to_intranet(true),
        "an IPv6 edge to [::]:80, seen by both ends"
    );
    assert!(to_intranet(false), "an IPv4 edge to the same listener");
    assert!(edges.iter().any(hidden), "the hidden flow");

    // DNS: the workstations asked dnsmasq, and it answered from the zone.
    assert!(edges.iter().any(|e| e["server_host"] == "dns"
        && e["server_port"] == 53
        && e["client_host"].as_str().unwrap().starts_with("ws-")));
    let log = std::fs::read_to_string(dir.path().join("servers/dnsmasq.log")).unwrap();
    assert!(
        log.contains("query[A] fs.office.lan from 10.17.0.10"),
        "{log}"
    );
    assert!(log.contains("config fs.office.lan is 10.17.0.10"), "{log}");
    assert!(
        log.contains("config intranet.office.lan is fd00:17::20"),
        "{log}"
    );
}

#[test]
fn two_demos_never_collide_and_a_dead_demos_leftovers_are_removed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A dead demo's leftovers: a namespace and its /etc files, under the
    // pid of a process that has ended and no lock.
    let mut ended = Command::new("true").spawn().unwrap();
    let dead = ended.id();
    ended.wait().unwrap();
    let stale = format!("csdemo-{dead}-ws-1");
    assert!(Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap()
        .success());
    std::fs::create_dir_all(format!("/etc/netns/{stale}")).unwrap();
    std::fs::write(format!("/etc/netns/{stale}/resolv.conf"), "").unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = Demo::start(dir.path(), free_port());
    first.wait_for_line("== Agents:", Duration::from_secs(120));
    assert!(first.printed(&format!(
        "Removed the leftovers of demos that no longer run (pids [{dead}])"
    )));
    assert_eq!(
        namespaces_with(&format!("csdemo-{dead}-")),
        Vec::<String>::new()
    );
    assert!(!Path::new(&format!("/etc/netns/{stale}")).exists());

    // The same directory: refused, saying why, and the first is untouched.
    let same_dir = Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(["demo", "--duration", "5", "--dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!same_dir.status.success());
    let stderr = String::from_utf8_lossy(&same_dir.stderr);
    assert!(
        stderr.contains(&format!(
            "another connscope demo (pid {}) is running with --dir {}",
            first.child.id(),
            dir.path().display()
        )),
        "{stderr}"
    );
    assert_eq!(namespaces_with(&first.prefix()).len(), 10);

    // Another directory and port: a second office beside the first, under
    // its own names.
    let other_dir = tempfile::tempdir().unwrap();
    let mut second = Demo::start(other_dir.path(), free_port());
    second.wait_for_line("== Agents:", Duration::from_secs(120));
    assert_ne!(first.prefix(), second.prefix());
    assert_eq!(namespaces_with(&second.prefix()).len(), 10);

    // Killed outright, the second demo runs no clean-up, but its children
    // die with it; its namespaces stay until the next demo starts.
    let second_processes = processes_of(&second);
    signal(second.child.id() as i32, libc::SIGKILL);
    second.child.wait().unwrap();
    wait_for(
        "the killed demo's processes to end",
        Duration::from_secs(30),
        || second_processes.iter().all(|p| !alive(*p)),
    );
    assert_eq!(namespaces_with(&second.prefix()).len(), 10);

    // The next demo (in the killed one's directory, whose lock died with it)
    // removes them, and leaves the first demo's alone; SIGTERM stops it cleanly.
    let mut third = Demo::start(other_dir.path(), free_port());
    third.wait_for_line("== Agents:", Duration::from_secs(120));
    assert!(third.printed(&format!(
        "Removed the leftovers of demos that no longer run (pids [{}])",
        second.child.id()
    )));
    assert_nothing_left(
        &second.prefix(),
        second.child.id(),
        &second_processes,
        Path::new("/nonexistent"),
    );
    let third_processes = processes_of(&third);
    assert!(third.terminate().success());
    assert_nothing_left(
        &third.prefix(),
        third.child.id(),
        &third_processes,
        other_dir.path(),
    );
    assert_eq!(namespaces_with(&first.prefix()).len(), 10);
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first demo still runs"
    );

    let first_processes = processes_of(&first);
    assert!(first.interrupt().success());
    assert_nothing_left(
        &first.prefix(),
        first.child.id(),
        &first_processes,
        dir.path(),
    );
}
