#![cfg(feature = "system-tests")] // root: the capability checks pass only as root, setpriv drops them
//! `connscope doctor` on this host: all is well against a running collector,
//! and each broken condition we can create fails with the reason and a fix:
//! no config file, a wrong fingerprint, an unreachable collector, an unreadable
//! spool, missing capabilities.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_connscope");

/// A collector on loopback, stopped on drop.
struct Collector {
    child: Child,
    url: String,
    fingerprint: String,
}

impl Collector {
    fn start(dir: &Path) -> Collector {
        let mut child = Command::new(BIN)
            .args(["collector", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.join("store.db"))
            .args(["--token", "ws-doc=tok-ws-doc-0123456789abcdef"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut url = None;
        let fingerprint = loop {
            let line = lines.next().expect("collector stopped").unwrap();
            if let Some(rest) = line.strip_prefix("listening: ") {
                url = Some(rest.to_owned());
            }
            if let Some(rest) = line.strip_prefix("fingerprint: ") {
                break rest.to_owned();
            }
        };
        Collector {
            child,
            url: url.unwrap(),
            fingerprint,
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent's settings in `dir`: this collector, a token, a spool of its own.
fn config(dir: &Path, url: &str, fingerprint: &str) -> PathBuf {
    let token = dir.join("agent.token");
    std::fs::write(&token, "tok-ws-doc-0123456789abcdef\n").unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "collector = \"{url}\"\ncollector_token_file = \"{}\"\n\
             collector_fingerprint = \"{fingerprint}\"\nstate_dir = \"{}\"\n",
            token.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

/// Runs doctor (through `wrapper` when given); exit success and stdout.
fn doctor(wrapper: &[&str], config: &Path) -> (bool, String) {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    };
    let out = cmd
        .args(["doctor", "--timeout-seconds", "3", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn a_good_host_passes() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    let config = config(dir.path(), &collector.url, &collector.fingerprint);
    let (ok, report) = doctor(&[], &config);
    assert!(ok, "{report}");
    for topic in [
        "kernel",
        "btf",
        "capabilities",
        "tracepoints",
        "config",
        "token",
        "collector",
        "spool",
    ] {
        assert!(
            report.contains(&format!("ok   {topic}: ")),
            "{topic} is not ok:\n{report}"
        );
    }
    assert!(
        report.contains("the agent can run on this host"),
        "{report}"
    );
}

#[test]
fn a_missing_config_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, report) = doctor(&[], &dir.path().join("agent.toml"));
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL config:") && report.contains("No such file"),
        "{report}"
    );
    assert!(
        report.contains("fix: install the connscope package"),
        "{report}"
    );
}

#[test]
fn a_wrong_fingerprint_fails() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    let wrong = format!("SHA256:{}", "ab".repeat(32));
    assert_ne!(wrong, collector.fingerprint);
    let config = config(dir.path(), &collector.url, &wrong);
    let (ok, report) = doctor(&[], &config);
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL collector:") && report.contains("the certificate does not match"),
        "{report}"
    );
}

#[test]
fn an_unreachable_collector_fails() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = config(
        dir.path(),
        &format!("https://127.0.0.1:{port}"),
        &format!("SHA256:{}", "ab".repeat(32)),
    );
    let (ok, report) = doctor(&[], &config);
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL collector:") && report.contains("is unreachable"),
        "{report}"
    );
}

#[test]
fn an_unreadable_spool_fails() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    let config = config(dir.path(), &collector.url, &collector.fingerprint);
    // The spool's place is taken by a file: the agent could not use it.
    std::fs::create_dir(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/spool"), "not a directory").unwrap();
    let (ok, report) = doctor(&[], &config);
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL spool:") && report.contains("cannot be read"),
        "{report}"
    );
}

#[test]
fn missing_capabilities_fail() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(dir.path());
    let config = config(dir.path(), &collector.url, &collector.fingerprint);
    let (ok, report) = doctor(&["setpriv", "--bounding-set=-all,+bpf"], &config);
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL capabilities:")
            && report.contains("CAP_PERFMON CAP_NET_ADMIN")
            && !report.contains("CAP_BPF CAP"),
        "{report}"
    );
}
