#![cfg(feature = "system-tests")] // root: the eBPF agent, NFLOG, nftables in network namespaces
//! The agent managing its host's firewall from a policy file (a host without
//! a collector): a real agent in a workstation namespace, a server namespace,
//! real `curl`. In audit mode the flow the policy misses connects and arrives
//! as a would-block event with curl as its executable within 5 seconds; in
//! enforce mode it fails and arrives as blocked. Tampering is undone, the
//! break-glass command removes the table at once and keeps it away until
//! lifted, and the host's own table survives every step byte for byte.
//! Shipping to a real collector, an enforced policy that allows nothing of
//! the collector's still lets the agent reach it (the golden rule), the
//! blocked events reach its store, and while the collector is down nothing
//! changes on the host and the events wait in the spool.

mod namespaces;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use connscope_event::{ConnectionEvent, EventKind};
use connscope_store::{EventQuery, SqliteStore, Store, TimeRange};
use namespaces::{first_line, run, unique_suffix, wait_for_or, JsonAgent, Netns, Proc};

const WAIT: Duration = Duration::from_secs(30);
const HIT_WAIT: Duration = Duration::from_secs(5);
const SHARE: &str = "10.79.0.1:445";
const BACKUP: &str = "10.79.0.1:5432";

const POLICY: &str = r#"
format = 1
name = "workstations"
target = { host = "ws" }

[[outbound]]
protocol = "tcp"
ports = [445]
peers = ["10.79.0.1"]
"#;

const SITE: &str = "table inet site {\n\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n\t\ttcp dport 9 counter accept comment \"site rule\"\n\t}\n}\n";

struct Lab {
    ws: Netns,
    srv: Netns,
    dir: tempfile::TempDir,
}

const COLLECTOR: &str = "10.79.0.1:8443";
const TOKEN: &str = "agent-firewall-test-token";

/// Answers every connection with an empty HTTP 200.
fn http_server(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
}

impl Lab {
    fn new() -> Lab {
        let suffix = unique_suffix();
        let ws = Netns::new(format!("afw{suffix}"));
        let srv = Netns::new(format!("afs{suffix}"));
        let ipn = |ns: &Netns, args: &[&str]| {
            run(Command::new("ip").args(["-n", &ns.0]).args(args));
        };
        ipn(
            &srv,
            &[
                "link", "add", "s0", "type", "veth", "peer", "name", "w0", "netns", &ws.0,
            ],
        );
        ipn(&srv, &["addr", "add", "10.79.0.1/24", "dev", "s0"]);
        ipn(&srv, &["link", "set", "s0", "up"]);
        ipn(&ws, &["addr", "add", "10.79.0.2/24", "dev", "w0"]);
        ipn(&ws, &["link", "set", "w0", "up"]);
        for addr in [SHARE, BACKUP] {
            let addr: SocketAddr = addr.parse().unwrap();
            http_server(srv.within(|| TcpListener::bind(addr)).unwrap());
        }
        let lab = Lab {
            ws,
            srv,
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(lab.path("policy.toml"), POLICY).unwrap();
        std::fs::write(lab.path("site.nft"), SITE).unwrap();
        lab.nft(&["-f", lab.path("site.nft").to_str().unwrap()]);
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn nft(&self, args: &[&str]) -> Option<String> {
        let out = self.ws.command("nft").args(args).output().unwrap();
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    }

    fn site(&self) -> String {
        self.nft(&["list", "table", "inet", "site"]).unwrap()
    }

    fn ours(&self) -> Option<String> {
        self.nft(&["-s", "list", "table", "inet", "connscope"])
    }

    /// curl from the workstation: whether the request got its answer.
    fn curl(&self, to: &str) -> bool {
        self.ws
            .command("curl")
            .args(["-s", "-o", "/dev/null", "--connect-timeout", "2"])
            .arg(format!("http://{to}/"))
            .status()
            .unwrap()
            .success()
    }

    fn connscope(&self, args: &[&str]) -> Command {
        let mut command = self.ws.command(env!("CARGO_BIN_EXE_connscope"));
        command.args(args);
        command
    }

    /// The collector in the server namespace; its certificate's fingerprint.
    fn collector(&self) -> (Proc, String) {
        let mut command = self.srv.command(env!("CARGO_BIN_EXE_connscope"));
        command
            .args(["collector", "--db"])
            .arg(self.path("collector.db"))
            .args(["--listen", COLLECTOR, "--token", &format!("ws={TOKEN}")])
            .stdout(Stdio::piped())
            .env("CONNSCOPE_LOG", "warn");
        let mut proc = Proc::spawn(command, "collector");
        let fingerprint = first_line(
            proc.child.stdout.take().unwrap(),
            "the collector's fingerprint",
            |line| line.strip_prefix("fingerprint: ").map(str::to_owned),
        );
        (proc, fingerprint)
    }

    fn stored(&self, kind: EventKind, remote: &str) -> usize {
        let Ok(store) = SqliteStore::open(self.path("collector.db")) else {
            return 0;
        };
        let query = EventQuery {
            range: TimeRange::ALL,
            host: Some("ws".into()),
            limit: 100_000,
        };
        let remote: SocketAddr = remote.parse().unwrap();
        store
            .events(&query)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.kind == kind && e.remote == remote)
            .count()
    }

    fn agent(&self, staging: &str) -> JsonAgent {
        self.agent_with(staging, &[])
    }

    fn agent_with(&self, staging: &str, more: &[&str]) -> JsonAgent {
        let output = self.path("events.jsonl");
        let stderr = self.path(&format!("agent-{staging}.stderr"));
        let mut command = self.connscope(&[
            "agent",
            "--no-default-rules",
            "--backend",
            "ebpf",
            "--format",
            "json",
            "-p",
            "--host-name",
            "ws",
            "--manage-firewall",
            "--staging",
            staging,
            "--policy-poll",
            "1",
            "--admin-network",
            "10.79.0.0/24",
        ]);
        command
            .arg("--policy-file")
            .arg(self.path("policy.toml"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--output")
            .arg(&output)
            .args(more);
        JsonAgent::start(command, output, stderr, WAIT)
    }
}

/// The first event of `kind` to `remote` within 5 seconds of now.
fn first_hit(agent: &JsonAgent, kind: EventKind, remote: &str) -> ConnectionEvent {
    let remote: SocketAddr = remote.parse().unwrap();
    let started = Instant::now();
    let found = agent.first(&format!("a {kind:?} event to {remote}"), HIT_WAIT, |e| {
        e.kind == kind && e.remote == remote
    });
    assert!(started.elapsed() <= HIT_WAIT);
    found
}

fn executable(event: &ConnectionEvent) -> Option<&str> {
    event.process.as_ref()?.executable.as_deref()
}

#[test]
fn missed_flows_are_reported_in_audit_and_blocked_in_enforce_and_the_table_is_kept() {
    let lab = Lab::new();
    let site = lab.site();

    // Audit: the missed flow connects and is reported as a would-block.
    let agent = lab.agent("audit");
    wait_for_or(
        "the audit table",
        WAIT,
        || agent.log(),
        || lab.ours().is_some(),
    );
    assert!(lab.curl(SHARE), "the allowed flow works");
    assert!(lab.curl(BACKUP), "the missed flow works in audit mode");
    let hit = first_hit(&agent, EventKind::WouldBlock, BACKUP);
    assert!(
        executable(&hit).is_some_and(|e| e.ends_with("/curl")),
        "{hit:?}"
    );
    assert_eq!(hit.host, "ws");
    assert!(hit.sequence > 0, "numbered like any event");
    assert!(
        !agent
            .events()
            .iter()
            .any(|e| e.kind == EventKind::WouldBlock && e.remote.port() == 445),
        "the allowed flow is not a would-block"
    );
    assert_eq!(lab.site(), site);
    agent.stop();
    assert!(
        lab.ours().is_some(),
        "a stopped agent leaves the table loaded"
    );

    // Enforce: the missed flow fails and is reported as blocked.
    let agent = lab.agent("enforce");
    wait_for_or(
        "the enforcing table",
        WAIT,
        || agent.log(),
        || lab.ours().is_some_and(|t| t.contains("policy drop")),
    );
    assert!(lab.curl(SHARE), "the allowed flow works when enforced");
    assert!(!lab.curl(BACKUP), "the missed flow is refused");
    let hit = first_hit(&agent, EventKind::Blocked, BACKUP);
    assert!(
        executable(&hit).is_some_and(|e| e.ends_with("/curl")),
        "{hit:?}"
    );
    let loaded = lab.ours().unwrap();
    assert_eq!(lab.site(), site);

    // Tampering is undone within seconds.
    for tamper in ["flush table inet connscope", "delete table inet connscope"] {
        lab.nft(&tamper.split(' ').collect::<Vec<_>>()).unwrap();
        wait_for_or(
            &format!("the table restored after {tamper}"),
            Duration::from_secs(5),
            || agent.log(),
            || lab.ours().as_deref() == Some(loaded.as_str()),
        );
    }
    assert!(agent.log().contains("tampered"), "{}", agent.log());

    // Break-glass: gone at once, stays gone, comes back when lifted.
    let state = lab.path("state");
    let off = lab
        .connscope(&[
            "agent",
            "firewall",
            "--state-dir",
            state.to_str().unwrap(),
            "off",
        ])
        .output()
        .unwrap();
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert_eq!(lab.ours(), None);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.ours(), None, "the agent honours the break-glass");
    assert!(lab.curl(BACKUP), "nothing blocks after break-glass");
    assert!(agent.log().contains("broken-glass"), "{}", agent.log());
    let on = lab
        .connscope(&[
            "agent",
            "firewall",
            "--state-dir",
            state.to_str().unwrap(),
            "on",
        ])
        .output()
        .unwrap();
    assert!(on.status.success());
    wait_for_or(
        "the table back after `firewall on`",
        Duration::from_secs(5),
        || agent.log(),
        || lab.ours().as_deref() == Some(loaded.as_str()),
    );
    agent.stop();
    assert_eq!(lab.site(), site);
}

#[test]
fn blocked_events_reach_the_collector_through_the_golden_rule_and_wait_out_its_outage() {
    let lab = Lab::new();
    // Nothing of the collector's port is in the policy: only 445 is allowed.
    let (collector, fingerprint) = lab.collector();
    let url = format!("https://{COLLECTOR}");
    let agent = lab.agent_with(
        "enforce",
        &[
            "--collector",
            &url,
            "--collector-token",
            TOKEN,
            "--collector-fingerprint",
            &fingerprint,
        ],
    );
    wait_for_or(
        "the enforcing table",
        WAIT,
        || agent.log(),
        || lab.ours().is_some_and(|t| t.contains("policy drop")),
    );
    let loaded = lab.ours().unwrap();
    assert!(loaded.contains("golden:collector"), "{loaded}");
    assert!(!lab.curl(BACKUP), "the missed flow is refused");
    wait_for_or(
        "the blocked event in the collector's store",
        WAIT,
        || agent.log(),
        || lab.stored(EventKind::Blocked, BACKUP) >= 1,
    );

    // The collector goes away: nothing changes on the host; the next
    // blocked attempt waits in the spool and arrives when it is back.
    collector.stop();
    assert!(!lab.curl(BACKUP));
    first_hit(&agent, EventKind::Blocked, BACKUP);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.ours().as_deref(),
        Some(loaded.as_str()),
        "the table is kept"
    );
    assert!(lab.curl(SHARE), "and the allowed flow still works");
    let before = lab.stored(EventKind::Blocked, BACKUP);
    let (_collector, _) = lab.collector();
    wait_for_or(
        "the spooled blocked event delivered",
        WAIT,
        || agent.log(),
        || lab.stored(EventKind::Blocked, BACKUP) > before,
    );
    assert_eq!(lab.stored(EventKind::Blocked, BACKUP), 2);
    agent.stop();
}

#[test]
fn a_restart_without_a_collector_keeps_enforcing_the_kept_policy_and_says_so() {
    let lab = Lab::new();
    let agent = lab.agent("enforce");
    wait_for_or(
        "the enforcing table",
        WAIT,
        || agent.log(),
        || lab.ours().is_some_and(|t| t.contains("policy drop")),
    );
    let loaded = lab.ours().unwrap();
    agent.stop();
    // As after a reboot: the kernel's table is gone, the state directory is not.
    lab.nft(&["delete", "table", "inet", "connscope"]).unwrap();

    // Now managed by a collector that does not answer (none is running).
    let mut command = lab.connscope(&[
        "agent",
        "--no-default-rules",
        "--backend",
        "ebpf",
        "--format",
        "json",
        "--host-name",
        "ws",
        "--manage-firewall",
        "--admin-network",
        "10.79.0.0/24",
        "--collector",
        &format!("https://{COLLECTOR}"),
        "--collector-token",
        TOKEN,
        "--collector-fingerprint",
        &"ab".repeat(32),
    ]);
    let stderr = lab.path("agent-restart.stderr");
    command
        .arg("--state-dir")
        .arg(lab.path("state"))
        .arg("--output")
        .arg(lab.path("restart.jsonl"));
    let agent = JsonAgent::spawn(command, lab.path("restart.jsonl"), stderr);
    wait_for_or(
        "the kept policy loaded again",
        WAIT,
        || agent.log(),
        || lab.ours().is_some(),
    );
    let restored = lab.ours().unwrap();
    // The same policy, now with the collector's golden rule.
    let without_golden: String = restored
        .lines()
        .filter(|l| !l.contains("golden:collector"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(without_golden, loaded);
    assert!(
        restored.contains("ip daddr 10.79.0.1 tcp dport 8443"),
        "{restored}"
    );
    wait_for_or(
        "the agent saying so",
        WAIT,
        || agent.log(),
        || agent.log().contains("kept from disk"),
    );
    assert!(!lab.curl(BACKUP), "still enforced");
    agent.stop();
}
