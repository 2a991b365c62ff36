#![cfg(feature = "system-tests")] // root: network namespaces, nftables and NFLOG

//! A host (a network namespace) runs a connscope policy rendered by
//! `connscope_policy::render` and loaded with `nft -f`; a server namespace
//! sits across a veth. Real client and server processes (python3) connect
//! through it while an NFLOG capture watches the host: the flow the policy
//! misses is reported once, with its process and 4-tuple, in audit mode
//! (where it works) and in enforce mode (where it fails and its SYN
//! retransmissions are counted, not repeated); an inbound connection to a
//! listener the policy misses names the listener; allowed flows give no hit.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use connscope_capture_nflog::{
    AttemptLimits, Chain, FirewallHit, HitKind, HitReport, NflogCapture, NflogConfig,
};
use connscope_event::Protocol;
use connscope_policy::{render, Mode, Policy};

fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace that exists while the value lives.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!(
            "csnf-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    fn exec(&self, args: &[&str]) -> String {
        ok(&mut self.cmd(args))
    }

    fn path(&self) -> std::path::PathBuf {
        format!("/var/run/netns/{}", self.name).into()
    }

    /// A python3 process in the namespace running `code`, its stdout piped.
    fn python(&self, code: &str) -> Process {
        let mut child = self
            .cmd(&["python3", "-c", code])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Process { child, stdout }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A child killed when the test ends, however it ends.
struct Process {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Process {
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    fn pid(&self) -> u32 {
        // `ip netns exec` enters the namespace and execs: the pid is python's.
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A host `10.N.0.2` and a server `10.N.0.1` joined by a veth.
struct Lab {
    host: Netns,
    server: Netns,
    net: u8,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let host = Netns::new("host");
        let server = Netns::new("srv");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let (a, b) = (
            format!("nh{}-{n}", std::process::id()),
            format!("ns{}-{n}", std::process::id()),
        );
        ok(Command::new("ip").args([
            "link",
            "add",
            &a,
            "netns",
            &host.name,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &server.name,
        ]));
        // Addresses private to the two namespaces; the number only keeps
        // parallel tests' output apart.
        let net = 100 + (n % 100) as u8;
        host.exec(&["ip", "addr", "add", &format!("10.{net}.0.2/24"), "dev", &a]);
        host.exec(&["ip", "link", "set", &a, "up"]);
        server.exec(&["ip", "addr", "add", &format!("10.{net}.0.1/24"), "dev", &b]);
        server.exec(&["ip", "link", "set", &b, "up"]);
        host.exec(&[
            "ip",
            "addr",
            "add",
            &format!("fd00:{net}::2/64"),
            "dev",
            &a,
            "nodad",
        ]);
        server.exec(&[
            "ip",
            "addr",
            "add",
            &format!("fd00:{net}::1/64"),
            "dev",
            &b,
            "nodad",
        ]);
        Lab {
            host,
            server,
            net,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn host_ip(&self) -> String {
        format!("10.{}.0.2", self.net)
    }

    fn server_ip(&self) -> String {
        format!("10.{}.0.1", self.net)
    }

    fn host_ip6(&self) -> String {
        format!("fd00:{}::2", self.net)
    }

    fn server_ip6(&self) -> String {
        format!("fd00:{}::1", self.net)
    }

    /// The host may reach the server's 445 and offer 22; nothing else.
    fn policy(&self) -> Policy {
        Policy::parse(&format!(
            "format = 1\nname = \"ws\"\ntarget = {{ host = \"ws\" }}\n\n\
             [[outbound]]\nprotocol = \"tcp\"\nports = [445]\npeers = [\"{}\"]\n\n\
             [[inbound]]\nprotocol = \"tcp\"\nports = [22]\nfamily = \"ipv4\"\n",
            self.server_ip()
        ))
        .unwrap()
    }

    fn load(&self, mode: Mode) {
        let path = self.dir.path().join("policy.nft");
        std::fs::write(&path, render(&self.policy(), "ws", mode)).unwrap();
        self.host.exec(&["nft", "-f", path.to_str().unwrap()]);
    }

    /// A python3 server in `ns` on `ip:port`, accepting until killed.
    fn serve(ns: &Netns, ip: &str, port: u16) -> Process {
        let family = family(ip);
        let mut server = ns.python(&format!(
            "import socket\ns=socket.create_server(('{ip}',{port}),family={family})\nprint('ready',flush=True)\n\
             while True:\n    c,_=s.accept()\n    c.close()"
        ));
        assert_eq!(server.line(), "ready");
        server
    }

    /// A python3 client in `ns` connecting to `to`: prints its local port
    /// when connected (then holds the connection 3 s) or `failed PORT`.
    fn connect(ns: &Netns, to: &str, port: u16, timeout: u32) -> Process {
        let family = family(to);
        let any = if to.contains(':') { "::" } else { "0.0.0.0" };
        ns.python(&format!(
            "import socket,time\ns=socket.socket({family})\ns.settimeout({timeout})\ns.bind(('{any}',0))\n\
             p=s.getsockname()[1]\ntry:\n    s.connect(('{to}',{port}))\n    print('connected',p,flush=True)\n    time.sleep(3)\n\
             except OSError:\n    print('failed',p,flush=True)"
        ))
    }

    fn capture(&self, group: u16, quiet: Duration) -> NflogCapture {
        let mut config = NflogConfig::new(group);
        config.netns = Some(self.host.path());
        config.limits = AttemptLimits {
            quiet,
            ..AttemptLimits::default()
        };
        NflogCapture::start(config).unwrap()
    }
}

/// Python's address family constant for `ip`.
fn family(ip: &str) -> &'static str {
    if ip.contains(':') {
        "socket.AF_INET6"
    } else {
        "socket.AF_INET"
    }
}

/// Reports arriving within `wait`.
fn collect(capture: &NflogCapture, wait: Duration) -> Vec<HitReport> {
    let end = Instant::now() + wait;
    let mut reports = Vec::new();
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Ok(report) = capture.hits.recv_timeout(left) {
            reports.push(report);
        }
    }
    reports
}

fn first_hit(capture: &NflogCapture, within: Duration) -> FirewallHit {
    match capture.hits.recv_timeout(within) {
        Ok(HitReport::Hit(hit)) => hit,
        other => panic!("expected a hit within {within:?}, got {other:?}"),
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

fn assert_process(hit: &FirewallHit, pid: u32) {
    let process = hit
        .process
        .as_ref()
        .unwrap_or_else(|| panic!("unattributed: {hit:?}"));
    assert_eq!(process.pid, pid, "{hit:?}");
    assert!(
        process
            .executable
            .as_deref()
            .is_some_and(|exe| exe.contains("python3")),
        "{hit:?}"
    );
    assert_eq!(hit.uid, Some(0), "the test runs as root");
}

#[test]
fn audit_reports_the_missed_flows_once_with_their_processes_and_lets_them_through() {
    let lab = Lab::new();
    let _share = Lab::serve(&lab.server, &lab.server_ip(), 445);
    let _backup = Lab::serve(&lab.server, &lab.server_ip(), 5432);
    let listener = Lab::serve(&lab.host, "0.0.0.0", 8080);
    let _ssh = Lab::serve(&lab.host, "0.0.0.0", 22);
    let group = 4000 + (std::process::id() % 1000) as u16;
    lab.load(Mode::Audit { log_group: group });
    let capture = lab.capture(group, Duration::from_secs(70));

    // The allowed flows, both ways: no hit.
    let mut share = Lab::connect(&lab.host, &lab.server_ip(), 445, 3);
    assert!(share.line().starts_with("connected"));
    let mut ssh = Lab::connect(&lab.server, &lab.host_ip(), 22, 3);
    assert!(ssh.line().starts_with("connected"));
    let quiet = collect(&capture, Duration::from_millis(500));
    assert!(quiet.is_empty(), "allowed flows gave hits: {quiet:?}");

    // The missed outbound flow works and is reported once.
    let mut backup = Lab::connect(&lab.host, &lab.server_ip(), 5432, 3);
    let line = backup.line();
    let port: u16 = line
        .strip_prefix("connected ")
        .expect(&line)
        .parse()
        .unwrap();
    let hit = first_hit(&capture, Duration::from_secs(5));
    assert_eq!(
        (hit.kind, hit.chain, hit.protocol),
        (HitKind::WouldBlock, Chain::Output, Protocol::Tcp)
    );
    assert_eq!(
        (hit.local, hit.remote),
        (addr(&lab.host_ip(), port), addr(&lab.server_ip(), 5432))
    );
    assert_eq!(hit.netns, connscope_capture_nflog_netns(&lab.host));
    assert_eq!(hit.packets, 1);
    assert_process(&hit, backup.pid());

    // An inbound connection to a listener the policy misses names it.
    let mut visitor = Lab::connect(&lab.server, &lab.host_ip(), 8080, 3);
    let line = visitor.line();
    let port: u16 = line
        .strip_prefix("connected ")
        .expect(&line)
        .parse()
        .unwrap();
    let hit = first_hit(&capture, Duration::from_secs(5));
    assert_eq!((hit.kind, hit.chain), (HitKind::WouldBlock, Chain::Input));
    assert_eq!(
        (hit.local, hit.remote),
        (addr(&lab.host_ip(), 8080), addr(&lab.server_ip(), port))
    );
    assert_process(&hit, listener.pid());

    // The same over IPv6.
    let _backup6 = Lab::serve(&lab.server, &lab.server_ip6(), 5432);
    let mut backup6 = Lab::connect(&lab.host, &lab.server_ip6(), 5432, 3);
    let line = backup6.line();
    let port: u16 = line
        .strip_prefix("connected ")
        .expect(&line)
        .parse()
        .unwrap();
    let hit = first_hit(&capture, Duration::from_secs(5));
    assert_eq!((hit.kind, hit.chain), (HitKind::WouldBlock, Chain::Output));
    assert_eq!(
        (hit.local, hit.remote),
        (addr(&lab.host_ip6(), port), addr(&lab.server_ip6(), 5432))
    );
    assert_process(&hit, backup6.pid());

    let rest = collect(&capture, Duration::from_secs(1));
    assert!(rest.is_empty(), "one hit per attempt, got more: {rest:?}");
    let stats = capture.stats();
    assert_eq!((stats.hits, stats.attributed_process), (3, 3), "{stats:?}");
}

#[test]
fn enforce_blocks_the_missed_flow_and_counts_its_retransmissions() {
    let lab = Lab::new();
    let _share = Lab::serve(&lab.server, &lab.server_ip(), 445);
    let _backup = Lab::serve(&lab.server, &lab.server_ip(), 5432);
    let group = 5000 + (std::process::id() % 1000) as u16;
    lab.load(Mode::Enforce { log_group: group });
    // SYNs leave at 0, 1 and 3 s: a quiet window of 2.5 s spans the gaps.
    let capture = lab.capture(group, Duration::from_millis(2500));

    let mut share = Lab::connect(&lab.host, &lab.server_ip(), 445, 3);
    assert!(
        share.line().starts_with("connected"),
        "the allowed flow works when enforced"
    );

    let mut backup = Lab::connect(&lab.host, &lab.server_ip(), 5432, 4);
    let hit = first_hit(&capture, Duration::from_secs(5));
    assert_eq!((hit.kind, hit.chain), (HitKind::Blocked, Chain::Output));
    assert_eq!(hit.remote, addr(&lab.server_ip(), 5432));
    assert_process(&hit, backup.pid());
    let line = backup.line();
    let port: u16 = line.strip_prefix("failed ").expect(&line).parse().unwrap();
    assert_eq!(
        hit.local,
        addr(&lab.host_ip(), port),
        "the connecting socket's end"
    );

    let rest = collect(&capture, Duration::from_secs(4));
    assert_eq!(
        rest.len(),
        1,
        "retransmissions are counted, not repeated: {rest:?}"
    );
    let HitReport::Repeated(ended) = &rest[0] else {
        panic!("expected the attempt's count, got {rest:?}");
    };
    assert_eq!((ended.local, ended.remote), (hit.local, hit.remote));
    assert!(ended.packets >= 3, "SYN and two retransmissions: {ended:?}");
    assert_eq!(capture.stats().hits, 1);
}

fn connscope_capture_nflog_netns(ns: &Netns) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(ns.path()).unwrap().ino()
}
