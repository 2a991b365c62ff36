//! `connscope collector --alert-*`: wrong alert settings stop the start
//! with the setting named; right ones (a webhook on loopback, syslog on a
//! Unix datagram socket, from flags and from the settings file) start it.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_connscope");

fn collector(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["collector", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.join("store.db"))
        .stdin(Stdio::null());
    cmd
}

#[test]
fn wrong_alert_settings_fail_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    for (args, expected) in [
        (
            vec!["--alert-webhook", "ftp://hooks.invalid/"],
            "ftp://hooks.invalid/",
        ),
        (
            vec!["--alert-syslog", "tcp://loghost:601"],
            "tcp://loghost:601",
        ),
        (
            vec!["--alert-syslog", "unix:/nonexistent/log"],
            "/nonexistent/log",
        ),
        (
            vec![
                "--alert-syslog",
                "unix:/nonexistent/log",
                "--alert-dedup-window",
                "soon",
            ],
            "dedup-window",
        ),
    ] {
        let out = collector(dir.path()).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn alert_settings_from_flags_and_file_start_the_collector() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("log");
    let _syslog = UnixDatagram::bind(&socket_path).unwrap();
    let settings = dir.path().join("collector.toml");
    std::fs::write(
        &settings,
        format!(
            "[alerts]\nsyslog = \"unix:{}\"\ndedup-window = \"12h\"\nrate = 5\n",
            socket_path.display()
        ),
    )
    .unwrap();
    for extra in [
        vec![
            "--alert-webhook".to_owned(),
            "http://127.0.0.1:9/hook".to_owned(),
        ],
        vec!["--config".to_owned(), settings.display().to_string()],
    ] {
        let mut child = collector(dir.path())
            .args(&extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut said_alerts = false;
        for line in lines {
            let line = line.unwrap();
            said_alerts |= line.starts_with("alerts: on");
            if line.starts_with("fingerprint: ") {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(said_alerts, "{extra:?}");
    }
}
