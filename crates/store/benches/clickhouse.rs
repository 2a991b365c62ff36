//! ClickHouse store benchmark, printed as a table (run: `cargo bench -p
//! connscope-store --features system-tests --bench clickhouse`; starts its
//! own clickhouse-server). `CONNSCOPE_BENCH_EVENTS` (default 2,000,000)
//! events of 50 hosts over 30 days:
//!
//! - ingest through `Store::ingest` (what each collector request does:
//!   dedup lookup, raw events, rollups, addresses, markers) in batches of
//!   5,000, against the peer: one `clickhouse-client` streaming the same
//!   rows into a table of the same schema;
//! - the map's read (`edge_totals`) for the last 24 hours and for the 30
//!   days, against the SQLite store holding the same events;
//! - bytes on disk per event in each backend.

#[path = "../tests/support/clickhouse_server.rs"]
mod clickhouse_server;
#[path = "support/fleet.rs"]
mod fleet;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clickhouse_server::ClickHouseServer;
use connscope_event::{ConnectionEvent, Timestamp};
use connscope_store::{
    AgentId, ClickHouseLocation, ClickHouseStore, RollupQuery, SqliteStore, Store, TimeRange,
};
use fleet::{events_for, BATCH, DAY_NS, START_NS};

const HOSTS: usize = 50;
const DAYS: i64 = 30;

fn batches(total: u64) -> Vec<(AgentId, Vec<ConnectionEvent>)> {
    let per_host = total / HOSTS as u64;
    let per_day = per_host / DAYS as u64;
    let mut out = Vec::new();
    for host in 0..HOSTS {
        let mut seq = 1;
        while seq <= per_host {
            let count = BATCH.min((per_host - seq + 1) as usize);
            out.push((
                AgentId(format!("host-{host}")),
                events_for(host, seq, count, per_day),
            ));
            seq += count as u64;
        }
    }
    out
}

/// `YYYY-MM-DD` of a day counted from the epoch (H. Hinnant's civil_from_days).
fn date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A TabSeparated line of the `events` table for `event` (as the store writes it).
fn tsv(line: &mut String, agent: &str, e: &ConnectionEvent) {
    let hour = connscope_store::hour_start(e.timestamp).as_nanos();
    let opt = |v: Option<String>| v.unwrap_or_else(|| "\\N".into());
    let p = e.process.as_deref();
    let c = e.close.unwrap_or_default();
    let _ = writeln!(
        line,
        "{}\t{hour}\t{}\t{}\t{agent}\t\t\t{}\t0\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t\\N\t\\N",
        date(hour.div_euclid(DAY_NS)),
        e.host,
        e.timestamp.as_nanos(),
        e.sequence,
        e.kind,
        e.protocol,
        e.direction,
        e.netns,
        e.local.ip(),
        e.local.port(),
        e.remote.ip(),
        e.remote.port(),
        opt(p.map(|p| p.pid.to_string())),
        opt(p.and_then(|p| p.executable.clone())),
        opt(p.and_then(|p| p.comm.clone())),
        opt(p.and_then(|p| p.command_line.clone())),
        opt(p.and_then(|p| p.cgroup.clone())),
        opt(e.uid.map(|u| u.to_string())),
        opt(e.user_name.clone()),
        u8::from(e.close.is_some()),
        c.duration_ns,
        c.bytes_sent,
        c.bytes_received,
        opt(c.packets_sent.map(|n| n.to_string())),
        opt(c.packets_received.map(|n| n.to_string())),
        opt(e.failure.map(|f| f.to_string())),
        u8::from(e.preexisting),
    );
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap()
}

fn main() {
    let total: u64 = std::env::var("CONNSCOPE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let batches = batches(total);
    let events: u64 = batches.iter().map(|(_, b)| b.len() as u64).sum();
    let server = ClickHouseServer::start();
    let open = |db: &str| {
        ClickHouseStore::open(&ClickHouseLocation::parse(&server.location(db)).unwrap()).unwrap()
    };
    let store = open("bench");
    let start = Instant::now();
    for (agent, batch) in &batches {
        store.ingest(agent, batch).unwrap();
    }
    let ingest = start.elapsed();

    // The peer: the same rows, one clickhouse-client, one stream.
    drop(open("peer"));
    let mut text = String::new();
    for (agent, batch) in &batches {
        for e in batch {
            tsv(&mut text, &agent.0, e);
        }
    }
    let start = Instant::now();
    let mut client = Command::new("clickhouse-client")
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &server.tcp_port.to_string(),
        ])
        .args(["--query", "INSERT INTO peer.events FORMAT TabSeparated"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(client.wait().unwrap().success());
    let peer = start.elapsed();
    drop(text);
    let peer_rows: u64 = server
        .query("SELECT count() FROM peer.events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(peer_rows, events);

    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let sqlite = SqliteStore::open(dir.path().join("bench.db")).unwrap();
    let start = Instant::now();
    for (agent, batch) in &batches {
        sqlite.ingest(agent, batch).unwrap();
    }
    let sqlite_ingest = start.elapsed();

    let end = START_NS + DAYS * DAY_NS;
    let range = |from: i64| RollupQuery {
        range: TimeRange {
            from: Timestamp::from_nanos(from),
            to: Timestamp::from_nanos(end),
        },
        host: None,
    };
    let mut rows = String::new();
    for (name, from) in [("24 h", end - DAY_NS), ("30 days", START_NS)] {
        let q = range(from);
        let edges = store.edge_totals(&q).unwrap().len();
        assert_eq!(edges, sqlite.edge_totals(&q).unwrap().len());
        let ch = best_of(5, || drop(store.edge_totals(&q).unwrap()));
        let sq = best_of(5, || drop(sqlite.edge_totals(&q).unwrap()));
        let _ = writeln!(
            rows,
            "| graph read (edge_totals) {name}, {edges} edges | {:.1} ms | {:.1} ms |",
            ch.as_secs_f64() * 1e3,
            sq.as_secs_f64() * 1e3
        );
    }
    let ch_bytes: u64 = server
        .query("SELECT sum(bytes) FROM system.parts WHERE active AND database = 'bench'")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let sqlite_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    let rate = |d: Duration| events as f64 / d.as_secs_f64();
    println!("{events} events, {HOSTS} hosts, {DAYS} days, batches of {BATCH}");
    println!("| measure | ClickHouse store | peer |");
    println!("|---|---|---|");
    println!(
        "| ingest, events/s | {:.0} (Store::ingest) | {:.0} (clickhouse-client, one stream); SQLite store {:.0} |",
        rate(ingest),
        rate(peer),
        rate(sqlite_ingest)
    );
    println!(
        "| ingest vs clickhouse-client | {:.2} | 1 |",
        peer.as_secs_f64() / ingest.as_secs_f64()
    );
    print!("{}", rows.replace("ms |\n", "ms (SQLite store) |\n"));
    println!(
        "| bytes on disk per event (all tables) | {:.1} | {:.1} (SQLite store) |",
        ch_bytes as f64 / events as f64,
        sqlite_bytes as f64 / events as f64
    );
}
