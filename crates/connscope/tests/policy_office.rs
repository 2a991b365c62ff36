#![cfg(feature = "system-tests")] // root: eBPF agents, nftables and a collector in network namespaces
//! Issue 21's acceptance: the whole policy loop in a small office of
//! network namespaces on one bridge: two workstations and a server, each
//! with a real agent managing its firewall, the collector on the server,
//! and an "internet" namespace without an agent.
//!
//! 1. The office works for a while (the "week", compressed): workstations
//!    use the server's application and the internet's web server; the
//!    server takes backups from nobody yet.
//! 2. `policy draft --group workstations` from that history, `policy push`,
//!    `policy stage`: every workstation loads it in audit mode.
//! 3. A rare backup job the draft never saw (ws-1 -> server:2222, its own
//!    executable) still works, and a would-block event naming that
//!    executable reaches the collector's hits endpoint (the map's data)
//!    within 5 seconds.
//! 4. The collector is killed: nothing changes on the hosts; another
//!    would-block happens meanwhile and is delivered once it is back.
//! 5. `policy enforce`: the observed flows keep working; the backup job is
//!    refused and reported as blocked.
//! 6. `policy rollback`: the workstations' tables are again exactly the
//!    audit-mode tables.
//! 7. Drift: a new service on the server, reached from the internet, makes
//!    exactly one alert at a webhook receiver, with the edge, process and
//!    user.
//!
//! Throughout, a table of the host's own (`table ip keep`) survives every
//! step byte for byte.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod namespaces;
use namespaces::{first_line, ip, run, unique_suffix, wait_for, wait_for_or, Netns, Proc};

const NET: &str = "10.29.0";
const SERVER: &str = "10.29.0.20";
const INTERNET: &str = "10.29.0.30";
const COLLECTOR_PORT: u16 = 8443;
const WEBHOOK_PORT: u16 = 9911;
const APP: u16 = 8080;
const BACKUP: u16 = 2222;
const WEB: u16 = 443;
const NEW_SERVICE: u16 = 9090;
const READ_TOKEN: &str = "office-reader-secret";
const WAIT: Duration = Duration::from_secs(60);
/// What the issue allows from a would-block to the map.
const HIT_LATENCY: Duration = Duration::from_secs(5);

/// A table of the host's own that every step must leave alone.
const KEEP: &str = "table ip keep {\n\tchain c {\n\t\ttype filter hook input priority 10; policy accept;\n\t\ttcp dport 7 counter\n\t}\n}\n";

/// Echo servers, one per port argument; each connection gets its byte back.
const SERVE: &str = r#"
import socket, sys, threading
def serve(s):
    while True:
        c, _ = s.accept()
        def echo(c):
            try:
                c.recv(1); c.sendall(b"x"); c.recv(1)
            finally:
                c.close()
        threading.Thread(target=echo, args=(c,), daemon=True).start()
for port in sys.argv[1:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(port)))
    s.listen()
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"#;

/// One connection with a byte each way; exit status 0 when it worked.
const CONNECT: &str = r#"
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[3]))
s.connect((sys.argv[1], int(sys.argv[2])))
s.sendall(b"x")
assert s.recv(1) == b"x"
s.close()
"#;

/// A webhook receiver: each POST body on one line of standard output.
const WEBHOOK: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        sys.stdout.write(body.decode().replace("\n", " ") + "\n"); sys.stdout.flush()
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
print("listening", flush=True)
http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

struct Host {
    name: &'static str,
    ns: Netns,
}

/// The office: a bridge in its own namespace and a veth to each host.
struct Office {
    hosts: Vec<Host>,
    _lan: Netns,
}

impl Office {
    fn build(suffix: &str) -> Office {
        let lan = Netns::new(format!("cspo-lan-{suffix}"));
        ip(&["-n", &lan.0, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan.0, "link", "set", "br0", "up"]);
        let mut hosts = Vec::new();
        for (name, last) in [("ws-1", 11), ("ws-2", 12), ("srv", 20), ("internet", 30)] {
            let ns = Netns::new(format!("cspo-{name}-{suffix}"));
            let port = format!("v{last}");
            ip(&[
                "-n", &lan.0, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns.0,
            ]);
            ip(&["-n", &lan.0, "link", "set", &port, "master", "br0", "up"]);
            let address = format!("{NET}.{last}");
            ip(&[
                "-n",
                &ns.0,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
            hosts.push(Host { name, ns });
        }
        Office { hosts, _lan: lan }
    }

    fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap()
    }
}

fn connscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
}

fn connects(from: &Netns, exe: &Path, to: &str, port: u16, timeout: f64) -> bool {
    from.command(exe)
        .args(["-c", CONNECT, to, &port.to_string(), &timeout.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Starts a Python program in `ns` and waits for its "listening" line; the
/// rest of its output goes to `lines`.
fn python_server(
    ns: &Netns,
    exe: &Path,
    script: &str,
    args: &[&str],
) -> (Proc, Arc<Mutex<Vec<String>>>) {
    let mut cmd = ns.command(exe);
    cmd.args(["-u", "-c", script])
        .args(args)
        .stdout(Stdio::piped());
    let mut proc = Proc::spawn(cmd, "python server");
    let out = proc.child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line == "listening" {
                let _ = tx.send(());
            } else {
                keep.lock().unwrap().push(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the server listens");
    (proc, lines)
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    run(ns.command("nft").args(args))
}

fn connscope_table(ns: &Netns) -> Option<String> {
    let out = ns
        .command("nft")
        .args(["-s", "list", "table", "inet", "connscope"])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The office's collector, on the server (as in a small office), with a
/// reader's token for the API and the webhook receiver beside it.
fn start_collector(office: &Office, db: &Path, tokens: &[(&str, String)]) -> (Proc, String) {
    let srv = office.host("srv");
    let mut cmd = srv.ns.command(env!("CARGO_BIN_EXE_connscope"));
    cmd.args([
        "collector",
        "--listen",
        &format!("{SERVER}:{COLLECTOR_PORT}"),
        "--db",
    ])
    .arg(db)
    .args(["--read-token", &format!("reader={READ_TOKEN}")])
    .args([
        "--alert-webhook",
        &format!("http://{SERVER}:{WEBHOOK_PORT}/drift"),
    ])
    .stdout(Stdio::piped())
    .env("CONNSCOPE_LOG", "warn");
    for (host, token) in tokens {
        cmd.args(["--token", &format!("{host}={token}")])
            .args(["--token-hosts", &format!("{host}={host}")]);
    }
    let mut proc = Proc::spawn(cmd, "collector");
    let fingerprint = first_line(
        proc.child.stdout.take().unwrap(),
        "the collector's fingerprint",
        |line| line.strip_prefix("fingerprint: ").map(str::to_owned),
    );
    (proc, fingerprint)
}

/// A GET of the collector's API from the server's namespace, as JSON.
fn api(office: &Office, path: &str) -> serde_json::Value {
    let out = office
        .host("srv")
        .ns
        .command("curl")
        .args(["-sk", "--max-time", "5", "-H"])
        .arg(format!("Authorization: Bearer {READ_TOKEN}"))
        .arg(format!("https://{SERVER}:{COLLECTOR_PORT}{path}"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The hits the collector serves (what the map draws) of `host` to `port`
/// of `kind`, with `executable`: their count.
fn hits(office: &Office, host: &str, kind: &str, port: u16, executable: &Path) -> u64 {
    let body = api(office, "/api/v1/firewall/hits?from=-1h");
    body["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| {
            h["host"] == host
                && h["kind"] == kind
                && h["port"] == port
                && h["executable"].as_str() == executable.to_str()
        })
        .map(|h| h["count"].as_u64().unwrap_or(0))
        .sum()
}

fn ok_connscope(args: &[&str]) -> String {
    let out = connscope().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "connscope {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until every host in `hosts` has loaded the newest assignment.
fn wait_loaded(db: &str, hosts: &[&str]) {
    wait_for_or(
        "every host loading the newest assignment",
        WAIT,
        || ok_connscope(&["policy", "status", "--db", db]),
        || {
            let status: serde_json::Value = serde_json::from_str(&ok_connscope(&[
                "policy", "status", "--db", db, "--format", "json",
            ]))
            .unwrap();
            hosts.iter().all(|host| {
                status["hosts"].as_array().unwrap().iter().any(|h| {
                    h["host"] == *host
                        && h["state"] == "loaded"
                        && !h["revision"].is_null()
                        && h["loaded_revision"] == h["revision"]
                })
            })
        },
    );
}

#[test]
fn the_office_drafts_stages_enforces_and_rolls_back_a_policy_and_hears_of_drift() {
    let suffix = unique_suffix();
    let office = Office::build(&suffix);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("office.db");
    let db_s = db.to_str().unwrap().to_owned();
    let python = std::fs::canonicalize("/usr/bin/python3").unwrap();
    // The rare job gets its own executable, so its events can be told apart.
    let backup_job = dir.path().join("backup-job");
    std::fs::copy(&python, &backup_job).unwrap();

    // The hosts' own tables, which every step must leave alone.
    for name in ["ws-1", "srv"] {
        let ns = &office.host(name).ns;
        let mut nft_f = ns.command("nft");
        nft_f.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = nft_f.spawn().unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), KEEP.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }
    let keep_ws = nft(
        &office.host("ws-1").ns,
        &["-s", "list", "table", "ip", "keep"],
    );
    let keep_srv = nft(
        &office.host("srv").ns,
        &["-s", "list", "table", "ip", "keep"],
    );
    let keep_intact = || {
        assert_eq!(
            nft(
                &office.host("ws-1").ns,
                &["-s", "list", "table", "ip", "keep"]
            ),
            keep_ws
        );
        assert_eq!(
            nft(
                &office.host("srv").ns,
                &["-s", "list", "table", "ip", "keep"]
            ),
            keep_srv
        );
        for name in ["ws-1", "srv"] {
            let tables = nft(&office.host(name).ns, &["list", "tables"]);
            let mut tables: Vec<&str> = tables.lines().collect();
            tables.sort();
            assert!(
                tables == ["table inet connscope", "table ip keep"] || tables == ["table ip keep"],
                "{name}: {tables:?}"
            );
        }
    };

    // Services: the server's application and backup port, the internet's web.
    let srv = &office.host("srv").ns;
    let internet = &office.host("internet").ns;
    let _services = python_server(
        srv,
        &python,
        SERVE,
        &[&APP.to_string(), &BACKUP.to_string()],
    );
    let _web = python_server(internet, &python, SERVE, &[&WEB.to_string()]);
    let (_webhook, alerts) =
        python_server(srv, &python, WEBHOOK, &[SERVER, &WEBHOOK_PORT.to_string()]);

    let tokens: Vec<(&str, String)> = ["ws-1", "ws-2", "srv"]
        .iter()
        .map(|h| (*h, format!("{h}-agent-token-{suffix}")))
        .collect();
    let (collector, fingerprint) = start_collector(&office, &db, &tokens);

    let mut agents = Vec::new();
    for (host, token) in &tokens {
        let state = dir.path().join(format!("state-{host}"));
        let stderr = dir.path().join(format!("agent-{host}.log"));
        let mut cmd = office
            .host(host)
            .ns
            .command(env!("CARGO_BIN_EXE_connscope"));
        cmd.args(["agent", "--backend", "ebpf", "--host-name", host])
            .args(["--manage-firewall", "--policy-poll", "1"])
            .args(["--admin-network", &format!("{NET}.0/24")])
            .args(["--collector", &format!("https://{SERVER}:{COLLECTOR_PORT}")])
            .args(["--collector-token", token])
            .args(["--collector-fingerprint", &fingerprint])
            .arg("--state-dir")
            .arg(&state)
            .env("CONNSCOPE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        agents.push((Proc::spawn(cmd, "agent"), stderr));
    }
    for (_, log) in &agents {
        wait_for_or(
            "the agents capturing",
            WAIT,
            || std::fs::read_to_string(log).unwrap_or_default(),
            || {
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .contains("monitoring connections")
            },
        );
    }

    // 1. The week, compressed: what the workstations and the server do.
    let ws1 = &office.host("ws-1").ns;
    let ws2 = &office.host("ws-2").ns;
    for _ in 0..4 {
        for ws in [ws1, ws2] {
            assert!(connects(ws, &python, SERVER, APP, 3.0));
            assert!(connects(ws, &python, INTERNET, WEB, 3.0));
        }
        assert!(connects(srv, &python, INTERNET, WEB, 3.0));
    }
    let store_has_the_week = || {
        let store = connscope_store::SqliteStore::open(&db).unwrap();
        let events = connscope_store::Store::events(
            &store,
            &connscope_store::EventQuery {
                range: connscope_store::TimeRange::ALL,
                host: None,
                limit: usize::MAX,
            },
        )
        .unwrap();
        ["ws-1", "ws-2"].iter().all(|h| {
            events
                .iter()
                .filter(|e| {
                    e.host == *h
                        && e.kind == connscope_event::EventKind::Connect
                        && e.remote.port() == APP
                })
                .count()
                >= 4
        }) && events
            .iter()
            .any(|e| e.host == "srv" && e.local.port() == APP)
    };
    wait_for("the week in the store", WAIT, store_has_the_week);

    // 2. Groups, drafts, versions, staging.
    ok_connscope(&[
        "groups",
        "add",
        "workstations",
        "--names",
        "ws-*",
        "--db",
        &db_s,
    ]);
    ok_connscope(&["groups", "add", "servers", "--hosts", "srv", "--db", &db_s]);
    let ws_toml = dir.path().join("workstations.toml");
    let srv_toml = dir.path().join("servers.toml");
    ok_connscope(&[
        "policy",
        "draft",
        "--db",
        &db_s,
        "--group",
        "workstations",
        "--from",
        "-1h",
        "-o",
        ws_toml.to_str().unwrap(),
    ]);
    ok_connscope(&[
        "policy",
        "draft",
        "--db",
        &db_s,
        "--group",
        "servers",
        "--from",
        "-1h",
        "-o",
        srv_toml.to_str().unwrap(),
    ]);
    assert!(!std::fs::read_to_string(&ws_toml)
        .unwrap()
        .contains(&BACKUP.to_string()));
    ok_connscope(&["policy", "push", ws_toml.to_str().unwrap(), "--db", &db_s]);
    ok_connscope(&["policy", "push", srv_toml.to_str().unwrap(), "--db", &db_s]);
    let staged = ok_connscope(&["policy", "stage", "--group", "workstations", "--db", &db_s]);
    assert!(
        staged.contains("would block"),
        "the backtest figure is shown: {staged}"
    );
    ok_connscope(&["policy", "stage", "--group", "servers", "--db", &db_s]);
    wait_loaded(&db_s, &["ws-1", "ws-2", "srv"]);
    let audit_tables = [connscope_table(ws1).unwrap(), connscope_table(ws2).unwrap()];
    assert!(
        audit_tables[0].contains("connscope would-block"),
        "{}",
        audit_tables[0]
    );
    keep_intact();

    // 3. The rare backup job: it works, and its would-block reaches the
    //    collector's hits (the map's data) within 5 s, naming its program.
    assert!(
        connects(ws1, &backup_job, SERVER, BACKUP, 3.0),
        "audit blocks nothing"
    );
    let made = Instant::now();
    wait_for_or(
        "the backup job's would-block at the collector",
        HIT_LATENCY,
        || api(&office, "/api/v1/firewall/hits?from=-1h").to_string(),
        || hits(&office, "ws-1", "would-block", BACKUP, &backup_job) >= 1,
    );
    eprintln!(
        "would-block at the collector {:?} after the connection",
        made.elapsed()
    );
    for ws in [ws1, ws2] {
        assert!(connects(ws, &python, SERVER, APP, 3.0));
    }

    // 4. The collector is lost: nothing changes on the hosts, and a
    //    would-block meanwhile waits in the spool.
    collector.kill_9();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(connscope_table(ws1).unwrap(), audit_tables[0]);
    assert_eq!(connscope_table(ws2).unwrap(), audit_tables[1]);
    assert!(connects(ws1, &backup_job, SERVER, BACKUP, 3.0));
    assert!(connects(ws1, &python, SERVER, APP, 3.0));
    keep_intact();
    let (collector, _) = start_collector(&office, &db, &tokens);
    wait_for_or(
        "the spooled would-block delivered",
        WAIT,
        || api(&office, "/api/v1/firewall/hits?from=-1h").to_string(),
        || hits(&office, "ws-1", "would-block", BACKUP, &backup_job) >= 2,
    );

    // 5. Enforce: refused while the backtest shows the backup job, then
    //    accepted; the observed work goes on, the backup job is refused
    //    and reported as blocked.
    let refused = connscope()
        .args([
            "policy",
            "enforce",
            "--group",
            "workstations",
            "--db",
            &db_s,
        ])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "{}",
        String::from_utf8_lossy(&refused.stdout)
    );
    ok_connscope(&[
        "policy",
        "enforce",
        "--group",
        "workstations",
        "--db",
        &db_s,
        "--accept-blocked",
    ]);
    wait_loaded(&db_s, &["ws-1", "ws-2"]);
    let enforced = connscope_table(ws1).unwrap();
    assert!(enforced.contains("connscope blocked"), "{enforced}");
    for ws in [ws1, ws2] {
        assert!(
            connects(ws, &python, SERVER, APP, 3.0),
            "observed work goes on"
        );
        assert!(
            connects(ws, &python, INTERNET, WEB, 3.0),
            "observed work goes on"
        );
    }
    assert!(
        !connects(ws1, &backup_job, SERVER, BACKUP, 2.0),
        "the missed flow is blocked"
    );
    wait_for_or(
        "the backup job's block at the collector",
        HIT_LATENCY,
        || api(&office, "/api/v1/firewall/hits?from=-1h").to_string(),
        || hits(&office, "ws-1", "blocked", BACKUP, &backup_job) >= 1,
    );
    keep_intact();
    // Losing the collector in enforce mode changes nothing either.
    collector.kill_9();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(connscope_table(ws1).unwrap(), enforced);
    assert!(connects(ws1, &python, SERVER, APP, 3.0));
    let (_collector, _) = start_collector(&office, &db, &tokens);

    // 6. Rollback: the audit tables again, exactly.
    ok_connscope(&[
        "policy",
        "rollback",
        "--group",
        "workstations",
        "--db",
        &db_s,
    ]);
    wait_loaded(&db_s, &["ws-1", "ws-2"]);
    assert_eq!(connscope_table(ws1).unwrap(), audit_tables[0]);
    assert_eq!(connscope_table(ws2).unwrap(), audit_tables[1]);
    assert!(
        connects(ws1, &backup_job, SERVER, BACKUP, 3.0),
        "audit again"
    );
    keep_intact();

    // 7. Drift: a new service on the server, used from the internet: one
    //    alert, however many connections, with edge, process and user.
    let _new = python_server(srv, &python, SERVE, &[&NEW_SERVICE.to_string()]);
    for _ in 0..3 {
        assert!(connects(internet, &python, SERVER, NEW_SERVICE, 3.0));
    }
    let about_new = || -> Vec<serde_json::Value> {
        alerts
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|a| a["port"] == NEW_SERVICE)
            .collect()
    };
    wait_for_or(
        "the drift alert",
        WAIT,
        || format!("{:?}", alerts.lock().unwrap()),
        || !about_new().is_empty(),
    );
    assert!(connects(internet, &python, SERVER, NEW_SERVICE, 3.0));
    std::thread::sleep(Duration::from_secs(5));
    let told = about_new();
    assert_eq!(told.len(), 1, "{told:?}");
    let alert = &told[0];
    assert_eq!(alert["host"], "srv");
    assert_eq!(alert["direction"], "incoming");
    assert_eq!(alert["remote"], INTERNET);
    assert_eq!(alert["executable"].as_str(), python.to_str());
    assert_eq!(alert["user"], "root");
    keep_intact();
}
