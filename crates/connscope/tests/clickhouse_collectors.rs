#![cfg(feature = "system-tests")] // starts clickhouse-server and connscope collectors
//! Several stateless collectors on one ClickHouse store, with real parts: a
//! `clickhouse-server` of the test's own, `connscope collector` processes
//! on loopback serving one certificate, and three agents' shipping paths
//! (`connscope-transport`'s `ShippingOutput`: the agent's spool, shipper
//! and client, each with its own spool directory) listing both collectors.
//!
//! The fault: one collector is killed with SIGKILL in the middle of
//! 100,000 events. The agents fail over to the other; the store ends with
//! every event exactly once and no gap, which `report hosts` says too.

#[path = "../../store/tests/support/clickhouse_server.rs"]
mod clickhouse_server;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clickhouse_server::ClickHouseServer;
use connscope_collector::TlsSettings;
use connscope_event::test_support::EventBuilder;
use connscope_event::ConnectionEvent;
use connscope_store::{ClickHouseLocation, ClickHouseStore, Store};
use connscope_transport::{CollectorTrust, ShippingConfig, ShippingOutput};

const AGENTS: usize = 3;
const EVENTS: u64 = 100_000;
const BATCH: u64 = 500;

/// A `connscope collector` process, killed on drop.
struct CollectorProcess {
    child: Child,
    url: String,
}

impl CollectorProcess {
    fn start(store: &str, cert: &Path, key: &Path, log: &Path) -> CollectorProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_connscope"));
        cmd.args(["collector", "--store", store, "--listen", "127.0.0.1:0"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        for i in 0..AGENTS {
            cmd.args(["--token", &format!("{}={}", agent(i), token(i))]);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("the collector prints where it listens")
                .unwrap();
            if let Some(url) = line.strip_prefix("listening: ") {
                break url.to_owned();
            }
        };
        // Keep reading, so the collector never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        CollectorProcess { child, url }
    }

    fn kill_9(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent(i: usize) -> String {
    format!("agent-{i}")
}

fn token(i: usize) -> String {
    format!("tok-agent-{i}-0123456789abcdef")
}

/// Agent `i`'s events `first..=last`, numbered, 10 ms apart from `start`.
fn events(i: usize, first: u64, last: u64, start: i64) -> Vec<ConnectionEvent> {
    (first..=last)
        .map(|n| {
            EventBuilder::connect(
                format!("10.9.{i}.1:{}", 20_000 + n % 40_000).as_str(),
                "10.9.100.1:443",
            )
            .at_nanos(start + n as i64 * 10_000_000)
            .sequence(n)
            .host(agent(i))
            .build()
        })
        .collect()
}

fn stored_events(server: &ClickHouseServer) -> u64 {
    server
        .query("SELECT count() FROM connscope.events FINAL")
        .map(|n| n.trim().parse().unwrap_or(0))
        .unwrap_or(0)
}

#[test]
fn a_collector_killed_mid_stream_loses_and_doubles_nothing() {
    let server = ClickHouseServer::start();
    let location = server.location("connscope");
    let dir = tempfile::tempdir().unwrap();
    // One certificate for both collectors (made as a SQLite collector makes its own).
    let identity =
        connscope_collector::tls::load_or_generate(&TlsSettings::default(), &dir.path().join("x"))
            .unwrap();
    assert!(identity.generated);
    let cert = dir.path().join(connscope_collector::tls::GENERATED_CERT);
    let key = dir.path().join(connscope_collector::tls::GENERATED_KEY);
    let log = |name: &str| dir.path().join(name);
    let mut first = CollectorProcess::start(&location, &cert, &key, &log("first.log"));
    let second = CollectorProcess::start(&location, &cert, &key, &log("second.log"));
    let logs = || {
        ["first.log", "second.log"]
            .map(|name| std::fs::read_to_string(log(name)).unwrap_or_default())
            .join("\n")
    };

    let per_agent = EVENTS.div_ceil(AGENTS as u64);
    let mut outputs: Vec<ShippingOutput> = (0..AGENTS)
        .map(|i| {
            ShippingOutput::start(&ShippingConfig {
                url: format!("{},{}", first.url, second.url),
                token: token(i),
                trust: CollectorTrust::Fingerprint(identity.fingerprint),
                spool_dir: dir.path().join(format!("spool-{i}")),
                spool_max_bytes: connscope_transport::DEFAULT_SPOOL_MAX_BYTES,
            })
            .unwrap()
        })
        .collect();
    // Within the last hour: the collector refuses events from the future.
    let start = connscope_event::Timestamp::now().as_nanos() - 3_600_000_000_000;
    let mut killed_at = None;
    let mut next = 1;
    while next <= per_agent {
        let last = (next + BATCH - 1).min(per_agent);
        for (i, output) in outputs.iter_mut().enumerate() {
            output.send(&events(i, next, last, start)).unwrap();
        }
        next = last + 1;
        // Half-way through, with the first collector busy storing: SIGKILL.
        if killed_at.is_none() && next > per_agent / 2 {
            let started = Instant::now();
            while stored_events(&server) == 0 && started.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(20));
            }
            first.kill_9();
            killed_at = Some(stored_events(&server));
        }
        // The agents' pace: a batch per agent every few milliseconds.
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed_at = killed_at.unwrap();
    assert!(
        killed_at > 0 && killed_at < EVENTS,
        "killed with {killed_at} stored: not in the middle\n{}",
        logs()
    );
    let started = Instant::now();
    while outputs.iter().any(|o| o.stats().spool.batches > 0) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "spools did not drain\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats: Vec<_> = outputs.iter().map(|o| o.stats()).collect();
    drop(outputs);

    let store = ClickHouseStore::open(&ClickHouseLocation::parse(&location).unwrap()).unwrap();
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), AGENTS, "{agents:?}");
    for (i, status) in agents.iter().enumerate() {
        assert_eq!(status.agent.0, agent(i));
        assert_eq!(status.events, per_agent, "{status:?}");
        assert_eq!(status.sequences.ranges(), &[(1, per_agent)]);
        assert_eq!(status.gaps().missing, 0);
    }
    assert_eq!(stored_events(&server), per_agent * AGENTS as u64);
    let rollup_connections: u64 = store
        .edge_totals(&connscope_store::RollupQuery {
            range: connscope_store::TimeRange::ALL,
            host: None,
        })
        .unwrap()
        .iter()
        .map(|t| t.counts.connections)
        .sum();
    assert_eq!(rollup_connections, per_agent * AGENTS as u64);
    // The report reads the same from the store: each agent, nothing missing.
    let report = Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(["report", "hosts", "--store", &location, "--format", "json"])
        .output()
        .unwrap();
    assert!(report.status.success(), "{report:?}");
    let text = String::from_utf8(report.stdout).unwrap();
    for i in 0..AGENTS {
        assert!(text.contains(&agent(i)), "{text}");
    }
    println!(
        "fault-row: collectors=2 killed-with={killed_at} stored={} duplicates-resent={} failures={}",
        per_agent * AGENTS as u64,
        stats.iter().map(|s| s.events_duplicate).sum::<u64>(),
        stats.iter().map(|s| s.failures).sum::<u64>(),
    );
}
