#![cfg(feature = "system-tests")] // root: an eBPF agent and a collector in a network namespace
//! Enrollment, hashed tokens, metrics and health with the real parts: a
//! collector and an eBPF agent in a network namespace of their own (loopback
//! only), traffic made there, and Debian's `promtool` judging both metrics
//! outputs.
//!
//! 1. `collector enroll` prints one line; run as printed (`agent enroll`)
//!    on a fresh agent config it writes the token file (0600) and the
//!    collector's URL and fingerprint; the agent, started with what the
//!    config says, ships.
//! 2. A used one-time, an expired and a revoked enrollment token are
//!    refused, each with its reason; a revoked agent token is refused by
//!    the running collector within seconds.
//! 3. While events flow, both `/metrics` pass `promtool check metrics`, the
//!    counters move, and once the agent stopped they match the store:
//!    events stored = ingest events - duplicates, per-agent gaps = `report
//!    hosts`, the agent's shipped events = the collector's stored ones.
//! 4. The store file holds digests, never the secrets.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod namespaces;
use namespaces::{first_line, unique_suffix, wait_for_or, Netns, Proc};

const COLLECTOR: &str = "127.0.0.1:8443";
const AGENT_METRICS: &str = "127.0.0.1:9464";

fn connscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_connscope"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `curl` inside the namespace: (HTTP status, body).
fn curl(ns: &Netns, args: &[&str]) -> (u16, String) {
    let out = output(
        ns.command("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .args(args),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of one series (`name` or `name{labels}`, as printed) in a scrape.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn promtool_accepts(text: &str, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refuses the {what} metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `collector enroll` against the store: the one line it prints.
fn enroll_line(db: &Path, args: &[&str]) -> String {
    let out = ok(connscope()
        .args(["collector", "enroll", "--db"])
        .arg(db)
        .args(["--url", &format!("https://{COLLECTOR}")])
        .args(args));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one line to run on the host: {out}");
    lines[0].to_owned()
}

/// Runs an enrollment line as printed, in the namespace, with the agent's
/// files in `dir`.
fn run_enroll(ns: &Netns, line: &str, dir: &Path) -> Output {
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&words[..3], ["connscope", "agent", "enroll"], "{line}");
    output(
        ns.command(env!("CARGO_BIN_EXE_connscope"))
            .args(&words[1..])
            .arg("--config")
            .arg(dir.join("agent.toml"))
            .arg("--token-file")
            .arg(dir.join("agent.token")),
    )
}

fn refused_because(out: &Output, reason: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted, expected: {reason}");
    assert!(err.contains(reason), "expected {reason:?} in: {err}");
}

/// The token id `tokens list` shows for the first row matching `kind` and `agent`.
fn token_id(db: &Path, kind: &str, agent: &str, state: &str) -> String {
    let list = ok(connscope()
        .args(["collector", "tokens", "list", "--db"])
        .arg(db));
    list.lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols[1] == kind && cols[2] == agent && cols.last() == Some(&state))
        .unwrap_or_else(|| panic!("no {state} {kind} token of {agent} in:\n{list}"))[0]
        .to_owned()
}

/// Opens and closes `count` TCP connections to the collector, inside the namespace.
fn traffic(ns: &Netns, count: u32) {
    let port = COLLECTOR.rsplit_once(':').unwrap().1;
    let script =
        format!("for i in $(seq {count}); do exec 3<>/dev/tcp/127.0.0.1/{port} && exec 3>&-; done");
    ok(ns.command("bash").args(["-c", &script]));
}

#[test]
fn enrolled_agent_ships_and_both_metrics_match_the_store() {
    let suffix = unique_suffix();
    let ns = Netns::new(format!("cs-fo-{suffix}"));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("collector.db");
    let agent_dir = dir.path().join("etc");

    let mut cmd = ns.command(env!("CARGO_BIN_EXE_connscope"));
    cmd.args(["collector", "--listen", COLLECTOR, "--db"])
        .arg(&db)
        .stdout(Stdio::piped())
        .env("CONNSCOPE_LOG", "warn");
    let mut collector = Proc::spawn(cmd, "collector");
    let fingerprint = first_line(
        collector.child.stdout.take().unwrap(),
        "the collector's fingerprint",
        |line| line.strip_prefix("fingerprint: ").map(str::to_owned),
    );
    wait_for_or(
        "the collector's /healthz",
        Duration::from_secs(20),
        String::new,
        || curl(&ns, &[&format!("https://{COLLECTOR}/healthz")]).0 == 200,
    );
    let (status, body) = curl(&ns, &[&format!("https://{COLLECTOR}/readyz")]);
    assert_eq!(status, 503, "no agent can send yet: {body}");
    assert!(body.contains("ingest is off"), "{body}");

    // 1. Enrollment as printed, on a fresh agent config.
    let line = enroll_line(&db, &["ws-fo"]);
    let enrolled = run_enroll(&ns, &line, &agent_dir);
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    let said = String::from_utf8_lossy(&enrolled.stdout);
    assert!(
        said.contains("enrolled as agent ws-fo") && said.contains("connection checked"),
        "{said}"
    );
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(agent_dir.join("agent.toml")).unwrap()).unwrap();
    let key = |k: &str| config[k].as_str().unwrap().to_owned();
    assert_eq!(key("collector"), format!("https://{COLLECTOR}"));
    assert_eq!(key("collector_fingerprint"), fingerprint);
    let token_file = key("collector_token_file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the token file is private");
    let agent_token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let enroll_secret = line.rsplit('.').next().unwrap().to_owned();
    // Whether ingest is on is cached for 2 s, like a token's verdict.
    wait_for_or("/readyz", Duration::from_secs(5), String::new, || {
        curl(&ns, &[&format!("https://{COLLECTOR}/readyz")]).0 == 200
    });

    // 2. Tokens that must not work, each with its reason.
    refused_because(
        &run_enroll(&ns, &line, &dir.path().join("again")),
        "already used",
    );
    let short = enroll_line(&db, &["ws-late", "--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    refused_because(
        &run_enroll(&ns, &short, &dir.path().join("late")),
        "expired",
    );
    let revoked = enroll_line(&db, &["ws-gone"]);
    let id = token_id(&db, "enroll", "ws-gone", "active");
    ok(connscope()
        .args(["collector", "tokens", "revoke", &id, "--db"])
        .arg(&db));
    refused_because(
        &run_enroll(&ns, &revoked, &dir.path().join("gone")),
        "revoked",
    );

    // The agent, started with what the written config says.
    let state = dir.path().join("state");
    let mut cmd = ns.command(env!("CARGO_BIN_EXE_connscope"));
    cmd.args([
        "agent",
        "--backend",
        "ebpf",
        "--netns",
        "self",
        "--host-name",
        "ws-fo",
    ])
    .args(["--state-dir", state.to_str().unwrap()])
    .args(["--metrics-listen", AGENT_METRICS])
    .args(["--collector", &key("collector")])
    .args(["--collector-token-file", &token_file])
    .args(["--collector-fingerprint", &key("collector_fingerprint")])
    .env("CONNSCOPE_LOG", "warn");
    let agent = Proc::spawn(cmd, "agent");
    let agent_metrics = || curl(&ns, &[&format!("http://{AGENT_METRICS}/metrics")]).1;
    let collector_metrics = || curl(&ns, &[&format!("https://{COLLECTOR}/metrics")]).1;
    wait_for_or(
        "the agent's /healthz",
        Duration::from_secs(60),
        String::new,
        || curl(&ns, &[&format!("http://{AGENT_METRICS}/healthz")]).0 == 200,
    );

    // 3. Scrapes while events flow: counters move, promtool accepts both.
    let connects = |text: &str| series(text, "connscope_agent_events_total{kind=\"connect\"}");
    let ingested = |text: &str| series(text, "connscope_collector_ingest_events_total");
    traffic(&ns, 50);
    wait_for_or(
        "events at the collector",
        Duration::from_secs(60),
        collector_metrics,
        || ingested(&collector_metrics()).unwrap_or(0.0) >= 50.0,
    );
    let (agent_before, collector_before) = (agent_metrics(), collector_metrics());
    promtool_accepts(&agent_before, "agent");
    promtool_accepts(&collector_before, "collector");
    traffic(&ns, 50);
    wait_for_or(
        "the counters to move",
        Duration::from_secs(60),
        agent_metrics,
        || {
            connects(&agent_metrics()) >= Some(connects(&agent_before).unwrap() + 50.0)
                && ingested(&collector_metrics())
                    >= Some(ingested(&collector_before).unwrap() + 50.0)
        },
    );
    let agent_during = agent_metrics();
    assert!(
        series(&agent_during, "connscope_agent_kernel_lost_events_total").is_some(),
        "{agent_during}"
    );
    assert!(
        series(&agent_during, "connscope_agent_spool_oldest_age_seconds").is_some(),
        "{agent_during}"
    );
    let last_ok = series(
        &agent_during,
        "connscope_agent_shipping_last_success_timestamp_seconds",
    )
    .unwrap();
    assert!(last_ok > 1.7e9, "{agent_during}");

    // Stopped, the agent has shipped all: the counters match the store.
    let agent_final = agent_metrics();
    agent.stop();
    let after = collector_metrics();
    promtool_accepts(&after, "collector");
    let events = ingested(&after).unwrap();
    let duplicates = series(&after, "connscope_collector_ingest_duplicate_events_total").unwrap();
    let hosts: serde_json::Value = serde_json::from_str(&ok(connscope()
        .args(["report", "hosts", "--format", "json", "--db"])
        .arg(&db)))
    .unwrap();
    let ws = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["agent"] == "ws-fo")
        .unwrap_or_else(|| panic!("ws-fo in report hosts: {hosts}"));
    let stored = ws["events"].as_u64().unwrap() as f64;
    assert_eq!(events - duplicates, stored, "{after}");
    let per_agent = |name: &str| series(&after, &format!("{name}{{agent=\"ws-fo\"}}")).unwrap();
    assert_eq!(per_agent("connscope_collector_agent_stored_events"), stored);
    assert_eq!(
        per_agent("connscope_collector_agent_missing_events"),
        ws["missing"].as_u64().unwrap() as f64
    );
    assert_eq!(
        per_agent("connscope_collector_agent_unexplained_missing_events"),
        ws["unexplained"].as_u64().unwrap() as f64
    );
    assert!(per_agent("connscope_collector_agent_last_seen_timestamp_seconds") > 1.7e9);
    let shipped = series(&agent_final, "connscope_agent_shipped_events_total").unwrap();
    assert!(shipped <= stored && shipped > 0.0, "{agent_final}");
    let batches = series(&after, "connscope_collector_ingest_batches_total").unwrap();
    assert!(
        batches >= 1.0 && series(&after, "connscope_collector_ingest_bytes_total").unwrap() > 0.0
    );
    assert!(
        after.contains("connscope_collector_request_duration_seconds_count{route=\"/api/v1/ingest\",method=\"POST\"}"),
        "{after}"
    );

    // A revoked agent token is refused by the running collector at once.
    let whoami = |token: &str| {
        curl(
            &ns,
            &[
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {token}"),
                &format!("https://{COLLECTOR}/api/v1/whoami"),
            ],
        )
    };
    assert_eq!(whoami(&agent_token).0, 200);
    let id = token_id(&db, "agent", "ws-fo", "active");
    ok(connscope()
        .args(["collector", "tokens", "revoke", &id, "--db"])
        .arg(&db));
    wait_for_or(
        "the revocation to reach the collector",
        Duration::from_secs(5),
        String::new,
        || whoami(&agent_token) == (401, r#"{"error":"the token was revoked"}"#.to_owned()),
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(connscope()
        .args(["collector", "tokens", "list", "--format", "json", "--db"])
        .arg(&db)))
    .unwrap();
    let states: Vec<(String, String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let text = |k: &str| t[k].as_str().unwrap().to_owned();
            (text("kind"), text("agent"), text("state"))
        })
        .collect();
    let row = |kind: &str, agent: &str, state: &str| (kind.into(), agent.into(), state.into());
    assert_eq!(
        states,
        [
            row("enrollment", "ws-fo", "used"),
            row("agent", "ws-fo", "revoked"),
            row("enrollment", "ws-late", "expired"),
            row("enrollment", "ws-gone", "revoked"),
        ],
        "{listed}"
    );
    assert!(
        !listed.to_string().contains(&agent_token),
        "a listing shows no secret"
    );
    collector.child.kill().unwrap();
    collector.child.wait().unwrap();

    // 4. The store keeps digests, never the secrets.
    let mut bytes = std::fs::read(&db).unwrap();
    bytes.extend(std::fs::read(db.with_extension("db-wal")).unwrap_or_default());
    let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for secret in [&agent_token, &enroll_secret] {
        assert!(!holds(secret.as_bytes()), "a secret is in the store file");
        let digest = connscope_protocol::Fingerprint::of(secret.as_bytes());
        assert!(holds(digest.as_bytes()), "its digest is");
    }
}
