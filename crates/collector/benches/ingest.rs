//! Collector ingest throughput, end to end, against a raw SQLite bulk insert of
//! the same rows on the same machine in the same run.
//!
//! - **end to end**: N simulated agents, each a thread with its own HTTPS
//!   connection (real TLS on loopback, fingerprint-pinned), POST gzip batches
//!   of JSON Lines to a running collector that parses them and stores them in
//!   a `SqliteStore` (dedup ranges, hourly rollups, host addresses and all).
//!   The clock runs from the first request to the last answer; the agents'
//!   encoding (JSON + gzip) is done before and reported on its own line.
//! - **raw insert** (the peer): the same events as plain rows, one per event
//!   with a time index (the store benches' `RawEventTable`, the store's
//!   pragmas), inserted with one prepared statement in transactions of one
//!   batch each: what a straightforward SQLite ingest costs.
//!
//! Run: `cargo bench -p connscope-collector --bench ingest` (options:
//! `-- --agents N --events N --batch N`).

#[path = "../../store/benches/support/raw_event_table.rs"]
mod raw_event_table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope_collector::{Collector, CollectorConfig};
use connscope_event::{
    CloseStats, ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp,
};
use connscope_protocol::batch::encode_body;
use connscope_store::{SqliteStore, Store};
use connscope_transport::{CollectorClient, CollectorTrust};
use raw_event_table::RawEventTable;

struct Options {
    agents: usize,
    events_per_agent: usize,
    batch: usize,
}

fn options() -> Options {
    let mut o = Options {
        agents: 4,
        events_per_agent: 250_000,
        batch: 5_000,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|v| v.parse().ok());
        match args[i].as_str() {
            "--agents" => o.agents = value().expect("--agents N"),
            "--events" => o.events_per_agent = value().expect("--events N"),
            "--batch" => o.batch = value().expect("--batch N"),
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    o
}

/// A plausible stream from one agent: a few processes talking to a few dozen
/// peers, connects and disconnects, so rollups see realistic fan-in.
fn agent_events(agent: usize, count: usize) -> Vec<ConnectionEvent> {
    let exes = [
        "/usr/bin/curl",
        "/usr/sbin/nginx",
        "/usr/lib/postgresql/15/bin/postgres",
        "/usr/bin/ssh",
    ];
    let base = 1_795_000_000_000_000_000i64;
    (0..count)
        .map(|i| {
            let kind = if i % 2 == 0 {
                EventKind::Connect
            } else {
                EventKind::Disconnect
            };
            let local = format!(
                "10.20.{}.{}:{}",
                agent / 250,
                agent % 250 + 1,
                32768 + (i / 2) % 28000
            );
            let remote = format!(
                "10.30.0.{}:{}",
                1 + (i / 2) % 40,
                [443, 5432, 22, 80][(i / 2) % 4]
            );
            let mut ev = ConnectionEvent::new(
                kind,
                Timestamp::from_nanos(base + i as i64 * 1_000_000),
                Protocol::Tcp,
                Direction::Outgoing,
                local.parse().unwrap(),
                remote.parse().unwrap(),
            );
            ev.sequence = i as u64 + 1;
            ev.host = format!("agent{agent}");
            ev.netns = 4026531840;
            ev.process = Some(Arc::new(ProcessInfo {
                pid: 1000 + (i % 7) as u32,
                executable: Some(exes[(i / 2) % exes.len()].to_owned()),
                comm: Some("worker".to_owned()),
                command_line: None,
                cgroup: Some("/system.slice/app.service".to_owned()),
            }));
            ev.uid = Some(33);
            ev.user_name = Some("www-data".to_owned());
            if kind == EventKind::Disconnect {
                ev.close = Some(CloseStats {
                    duration_ns: 2_000_000,
                    bytes_sent: 512,
                    bytes_received: 4096,
                    packets_sent: None,
                    packets_received: None,
                });
            }
            ev
        })
        .collect()
}

/// The peer: the same events as plain SQLite rows, nothing else.
fn raw_insert(dir: &std::path::Path, batches: &[Vec<ConnectionEvent>]) -> Duration {
    let mut table = RawEventTable::open(dir.join("raw.db")).unwrap();
    let start = Instant::now();
    for (agent, batch) in batches.iter().enumerate() {
        table.insert(agent as i64, batch).unwrap();
    }
    start.elapsed()
}

fn main() {
    let o = options();
    let dir = tempfile::tempdir().unwrap();
    let total = o.agents * o.events_per_agent;
    println!(
        "collector ingest: {} agents x {} events, batches of {}, {} events in all",
        o.agents, o.events_per_agent, o.batch, total
    );

    let events: Vec<Vec<ConnectionEvent>> = (0..o.agents)
        .map(|a| agent_events(a, o.events_per_agent))
        .collect();

    // Agent side, done before the clock starts: JSON Lines + gzip per batch.
    let encode_start = Instant::now();
    let bodies: Vec<Vec<Vec<u8>>> = events
        .iter()
        .map(|evs| evs.chunks(o.batch).map(encode_body).collect())
        .collect();
    let encode_time = encode_start.elapsed();
    let compressed: usize = bodies.iter().flatten().map(Vec::len).sum();
    let json_bytes: usize = events
        .iter()
        .flatten()
        .map(|e| connscope_event::json::to_json_line(e).len() + 1)
        .sum();

    // The peer, on its own database file.
    let raw_batches: Vec<Vec<ConnectionEvent>> = events
        .iter()
        .flat_map(|evs| evs.chunks(o.batch).map(<[ConnectionEvent]>::to_vec))
        .collect();
    let raw_time = raw_insert(dir.path(), &raw_batches);
    drop(raw_batches);

    // End to end.
    let db = dir.path().join("collector.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db).unwrap());
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), db.clone());
    config.decompressed_limit = 1 << 30;
    for a in 0..o.agents {
        config
            .tokens
            .insert(&format!("agent{a}"), &format!("bench-token-of-agent-{a}"))
            .unwrap();
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let collector = runtime
        .block_on(Collector::bind(config, store.clone()))
        .unwrap();
    let url = format!("https://{}", collector.local_addr());
    let trust = CollectorTrust::Fingerprint(collector.fingerprint());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(collector.run(async {
        let _ = stop_rx.await;
    }));

    let start = Instant::now();
    let agents: Vec<_> = bodies
        .into_iter()
        .enumerate()
        .map(|(a, batches)| {
            let (url, trust) = (url.clone(), trust.clone());
            std::thread::spawn(move || {
                let mut client =
                    CollectorClient::new(&url, &format!("bench-token-of-agent-{a}"), &trust)
                        .unwrap();
                let mut stored = 0;
                for body in batches {
                    stored += client.post_batch(body).unwrap().stored;
                }
                stored
            })
        })
        .collect();
    let stored: u64 = agents.into_iter().map(|t| t.join().unwrap()).sum();
    let e2e_time = start.elapsed();
    assert_eq!(stored, total as u64, "every event stored once");
    let _ = stop_tx.send(());
    runtime.block_on(server).unwrap();

    let rate = |secs: f64| total as f64 / secs;
    let raw_rate = rate(raw_time.as_secs_f64());
    let e2e_rate = rate(e2e_time.as_secs_f64());
    println!();
    println!("| path | time | events/s | vs raw insert |");
    println!("|---|---:|---:|---:|");
    println!(
        "| raw SQLite bulk insert (peer) | {:.2} s | {:.0} | 1.00 |",
        raw_time.as_secs_f64(),
        raw_rate
    );
    println!(
        "| collector end to end (HTTPS, gzip, parse, SqliteStore) | {:.2} s | {:.0} | {:.2} |",
        e2e_time.as_secs_f64(),
        e2e_rate,
        e2e_rate / raw_rate
    );
    println!(
        "| agent-side encoding (JSON Lines + gzip, not in the above) | {:.2} s | {:.0} | - |",
        encode_time.as_secs_f64(),
        rate(encode_time.as_secs_f64())
    );
    println!();
    println!(
        "wire: {:.1} MiB of JSON Lines sent as {:.1} MiB gzip ({:.1}x)",
        json_bytes as f64 / 1048576.0,
        compressed as f64 / 1048576.0,
        json_bytes as f64 / compressed as f64
    );
}
