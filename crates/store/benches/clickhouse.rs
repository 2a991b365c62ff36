//! ClickHouse store benchmark, printed as a table (run: `cargo bench -p
//! connscope-store --features system-tests --bench clickhouse`; starts its
//! own clickhouse-server, Debian's 18.16). `CONNSCOPE_BENCH_EVENTS`
//! (default 2,000,000) events of 50 hosts over `CONNSCOPE_BENCH_DAYS`
//! (default 30) days:
//!
//! - ingest through `Store::ingest`, one caller, batches of 5,000; and the
//!   collector's request path: 8 requests in flight (an agent each at a
//!   time), each decoding its gzip JSON Lines body with the collector's
//!   codec and storing it, as the collector's handler does, so the store's
//!   writer groups them; against the peer, one `clickhouse-client`
//!   streaming the same rows into a table of the same schema;
//! - the data set multiplied server-side to `CONNSCOPE_BENCH_COPIES` times
//!   (default 50: 100 million events) with `INSERT ... SELECT` into the
//!   tables the store reads (events, rollups, ranges, spaces, batch hours):
//!   each copy the same hosts, times and edges with its own sequence numbers
//!   and batches, i.e. a fleet 50 times as busy; then the fold job over it;
//! - the map's read (`edge_totals`) for the last 24 hours and for all the
//!   days, before folding (ingested size) and after (multiplied size),
//!   against the SQLite store holding the same events at the ingested
//!   size and at `CONNSCOPE_BENCH_SQLITE_COPIES` times it (default 5,
//!   through `Store::ingest`; its graph read does not grow with events
//!   over the same edges and hours, so a tenth stands for the whole);
//! - bytes on disk per event in each backend.

#[path = "../tests/support/clickhouse_server.rs"]
mod clickhouse_server;
#[path = "support/fleet.rs"]
mod fleet;

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clickhouse_server::ClickHouseServer;
use connscope_event::{ConnectionEvent, Timestamp};
use connscope_protocol::batch::{decode_body, encode_body};
use connscope_store::{
    AgentId, ClickHouseLocation, ClickHouseStore, Origin, RollupQuery, SqliteStore, Store,
    TimeRange,
};
use fleet::{events_for, BATCH, DAY_NS, START_NS};

const HOSTS: usize = 50;
/// The days the events span (`CONNSCOPE_BENCH_DAYS`, default 30): fewer
/// packs the same events closer, as a busier fleet's batches are (each
/// batch then touches fewer of the tables' daily partitions).
fn days() -> i64 {
    env("CONNSCOPE_BENCH_DAYS", 30).max(1) as i64
}

fn batches(total: u64) -> Vec<(AgentId, Vec<ConnectionEvent>)> {
    let per_host = total / HOSTS as u64;
    let per_day = per_host / days() as u64;
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

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One round of the ingest comparison.
struct Round {
    collector: Duration,
    collector_cpu: Cpu,
    peer: Duration,
    peer_cpu: Cpu,
    same: Duration,
    same_cpu: Cpu,
}

/// CPU seconds: of the inserting side (this process, or the
/// clickhouse-client children it waited for) and of the server.
struct Cpu {
    client: f64,
    server: f64,
}

impl Cpu {
    fn now(server: &ClickHouseServer) -> Cpu {
        let ticks = procfs::ticks_per_second() as f64;
        let me = procfs::process::Process::myself().unwrap().stat().unwrap();
        let theirs = procfs::process::Process::new(server.pid() as i32)
            .unwrap()
            .stat()
            .unwrap();
        Cpu {
            client: (me.utime + me.stime) as f64 / ticks + (me.cutime + me.cstime) as f64 / ticks,
            server: (theirs.utime + theirs.stime) as f64 / ticks,
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            client: self.client - before.client,
            server: self.server - before.server,
        }
    }
}

/// clickhouse-client running `query` on the bench's server.
fn clickhouse_client(server: &ClickHouseServer, query: &str) -> Command {
    let mut client = Command::new("clickhouse-client");
    client
        .args(["--host", "127.0.0.1", "--port"])
        .arg(server.tcp_port.to_string())
        .args(["--query", query]);
    client
}

/// Streams `rows` (TabSeparated) into `table` with one clickhouse-client.
fn client_insert(server: &ClickHouseServer, table: &str, rows: &[u8]) -> Duration {
    let start = Instant::now();
    let mut client = clickhouse_client(server, &format!("INSERT INTO {table} FORMAT TabSeparated"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    client.stdin.take().unwrap().write_all(rows).unwrap();
    assert!(client.wait().unwrap().success());
    start.elapsed()
}

/// The tables an ingest writes.
const INGEST_TABLES: [&str; 7] = [
    "events",
    "edge_rollups",
    "host_addresses",
    "spaces",
    "event_keys",
    "sequence_ranges",
    "batch_hours",
];

/// The peer on the same rows: every row the store wrote into `from`
/// (read out first, untimed), inserted into `to` (a store schema made by
/// `create`) by clickhouse-client, one stream per table.
fn same_rows(
    server: &ClickHouseServer,
    from: &str,
    to: &str,
    create: &dyn Fn(&str),
) -> (Duration, Cpu) {
    let tables: Vec<(&str, Vec<u8>)> = INGEST_TABLES
        .iter()
        .map(|table| {
            let out = clickhouse_client(
                server,
                &format!("SELECT * FROM {from}.{table} FORMAT TabSeparated"),
            )
            .output()
            .unwrap();
            assert!(out.status.success(), "{table}");
            (*table, out.stdout)
        })
        .collect();
    create(to);
    quiesce(server);
    let before = Cpu::now(server);
    let start = Instant::now();
    // A table the ingest left empty (content keys of numbered events) has
    // nothing to insert.
    for (table, rows) in tables.iter().filter(|(_, rows)| !rows.is_empty()) {
        client_insert(server, &format!("{to}.{table}"), rows);
    }
    let took = start.elapsed();
    let cpu = Cpu::now(server).since(&before);
    for (table, _) in &tables {
        let count = |db: &str| scalar(server, &format!("SELECT count() FROM {db}.{table}"));
        assert_eq!(count(to), count(from), "{table}");
    }
    (took, cpu)
}

/// Requests in flight in the collector path.
const SENDERS: usize = HOSTS;

/// The agents' request bodies (gzip JSON Lines), encoded before any clock
/// or CPU count starts: encoding is the agents' work, not the collector's.
fn bodies(batches: &[(AgentId, Vec<ConnectionEvent>)]) -> Vec<(AgentId, Vec<u8>)> {
    batches
        .iter()
        .map(|(agent, events)| (agent.clone(), encode_body(events)))
        .collect()
}

/// The collector's request path: `SENDERS` threads, each posting whole
/// agents' batches in order (an agent waits for each answer), each batch
/// decoded from its gzip body with the collector's codec, then stored.
fn ingest_as_collector(store: &ClickHouseStore, bodies: &[(AgentId, Vec<u8>)]) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for sender in 0..SENDERS {
            scope.spawn(move || {
                for (agent, body) in bodies {
                    let index: usize = agent.0.trim_start_matches("host-").parse().unwrap();
                    if index % SENDERS != sender {
                        continue;
                    }
                    let events = decode_body(body, Some("gzip"), 1 << 30, |_| Ok(())).unwrap();
                    let events = Arc::new(events);
                    let report = store
                        .ingest_shared(agent, &Origin::legacy(), events.clone())
                        .unwrap();
                    assert_eq!(report.stored, events.len() as u64);
                }
            });
        }
    });
    start.elapsed()
}

/// The `events` columns, with `sequence` shifted by copy `k`.
const EVENT_COLUMNS: &str = "day, hour, host, ts, agent, instance, boot, sequence + k * {shift},
    content_key, kind, protocol, direction, netns, local_ip, local_port, remote_ip, remote_port,
    pid, executable, comm, command_line, cgroup, uid, user_name, closed, duration_ns,
    bytes_sent, bytes_received, packets_sent, packets_received, failure, preexisting,
    remote_name, remote_name_source";

/// Copies `database`'s data `copies - 1` more times server-side: the same
/// hosts, times and edges; each copy its own sequence numbers (shifted by
/// `shift`) and batch keys, in every table the store reads.
fn multiply(server: &ClickHouseServer, database: &str, copies: u64, shift: u64) {
    let k = format!(
        "ARRAY JOIN arrayMap(x -> toUInt64(x + 1), range({})) AS k",
        copies - 1
    );
    let statements = [
        format!(
            "INSERT INTO {database}.events SELECT {} FROM {database}.events {k}",
            EVENT_COLUMNS.replace("{shift}", &shift.to_string())
        ),
        format!(
            "INSERT INTO {database}.sequence_ranges SELECT agent, instance, boot,
             first_seq + k * {shift}, last_seq + k * {shift} FROM {database}.sequence_ranges {k}"
        ),
        format!(
            "INSERT INTO {database}.spaces SELECT agent, instance, boot, cityHash64(batch_key, k),
             first_sequence, host, events, first_ts, last_ts, stored_at FROM {database}.spaces {k}"
        ),
        format!(
            "INSERT INTO {database}.edge_rollups SELECT day, hour, host, direction, local_ip,
             remote_ip, service_port, protocol, executable, user_name, cityHash64(batch_key, k),
             connections, failures, bytes_sent, bytes_received, first_seen, last_seen
             FROM {database}.edge_rollups {k}"
        ),
        format!(
            "INSERT INTO {database}.batch_hours SELECT hour, cityHash64(batch_key, k)
             FROM {database}.batch_hours {k}"
        ),
    ];
    // Through clickhouse-client: a statement may take minutes.
    for sql in &statements {
        let status = clickhouse_client(server, sql).status().unwrap();
        assert!(status.success(), "{sql}");
    }
}

/// Waits until the server has merged no parts for a second: an ingest
/// measured right after another would otherwise share the CPU with the
/// merging of the other's parts.
fn quiesce(server: &ClickHouseServer) {
    let mut idle = 0;
    while idle < 5 {
        let merges = server.query("SELECT count() FROM system.merges").unwrap();
        idle = if merges.trim() == "0" { idle + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for the server's mutations (the fold's deletions) to finish.
fn settle(server: &ClickHouseServer) {
    while server
        .query("SELECT count() FROM system.mutations WHERE is_done = 0")
        .unwrap()
        .trim()
        != "0"
    {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scalar(server: &ClickHouseServer, sql: &str) -> u64 {
    server.query(sql).unwrap().trim().parse().unwrap()
}

/// The map's read for the last 24 hours and for all the days, best of 5.
fn reads(store: &dyn Store) -> [(usize, Duration); 2] {
    let end = START_NS + days() * DAY_NS;
    [end - DAY_NS, START_NS].map(|from| {
        let q = RollupQuery {
            range: TimeRange {
                from: Timestamp::from_nanos(from),
                to: Timestamp::from_nanos(end),
            },
            host: None,
        };
        let edges = store.edge_totals(&q).unwrap().len();
        (edges, best_of(5, || drop(store.edge_totals(&q).unwrap())))
    })
}

/// The connections of the 30 days, summed over edges (what every read
/// must agree on).
fn connections(store: &dyn Store) -> u64 {
    store
        .edge_totals(&RollupQuery {
            range: TimeRange::ALL,
            host: None,
        })
        .unwrap()
        .iter()
        .map(|t| t.counts.connections)
        .sum()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let total = env("CONNSCOPE_BENCH_EVENTS", 2_000_000);
    let copies = env("CONNSCOPE_BENCH_COPIES", 50).max(1);
    let sqlite_copies = env("CONNSCOPE_BENCH_SQLITE_COPIES", 5).max(1);
    let batches = batches(total);
    let events: u64 = batches.iter().map(|(_, b)| b.len() as u64).sum();
    let per_host = total / HOSTS as u64;
    let server = ClickHouseServer::start();
    let open = |db: &str| {
        ClickHouseStore::open(&ClickHouseLocation::parse(&server.location(db)).unwrap()).unwrap()
    };
    let mut table = Vec::new();
    let mut row = |measure: &str, ours: String, peer: String| {
        let line = format!("| {measure} | {ours} | {peer} |");
        eprintln!("{line}");
        table.push(line);
    };

    // Ingest: one caller, then rounds of the collector's path and its
    // peers, interleaved so the machine's load falls on all of them alike.
    let serial = open("serial");
    let start = Instant::now();
    for (agent, batch) in &batches {
        serial.ingest(agent, batch).unwrap();
    }
    let serial_time = start.elapsed();
    drop(serial);
    let mut text = String::new();
    for (agent, batch) in &batches {
        for e in batch {
            tsv(&mut text, &agent.0, e);
        }
    }
    let bodies = bodies(&batches);
    let rounds = env("CONNSCOPE_BENCH_ROUNDS", 3).max(1);
    let mut measured = Vec::new();
    let mut store = None;
    for round in 0..rounds {
        let last = round + 1 == rounds;
        let db = if last {
            "bench".to_owned()
        } else {
            format!("bench_{round}")
        };
        let ours = open(&db);
        quiesce(&server);
        let before = Cpu::now(&server);
        let collector = ingest_as_collector(&ours, &bodies);
        let collector_cpu = Cpu::now(&server).since(&before);
        let peer_db = format!("peer_{round}");
        drop(open(&peer_db));
        quiesce(&server);
        let before = Cpu::now(&server);
        let peer = client_insert(&server, &format!("{peer_db}.events"), text.as_bytes());
        let peer_cpu = Cpu::now(&server).since(&before);
        assert_eq!(
            scalar(&server, &format!("SELECT count() FROM {peer_db}.events")),
            events
        );
        let same_db = format!("same_{round}");
        let (same, same_cpu) = same_rows(&server, &db, &same_db, &|db| drop(open(db)));
        for db in [&peer_db, &same_db] {
            server.query(&format!("DROP DATABASE {db}")).unwrap();
        }
        if last {
            store = Some(ours);
        } else {
            drop(ours);
            server.query(&format!("DROP DATABASE {db}")).unwrap();
        }
        measured.push(Round {
            collector,
            collector_cpu,
            peer,
            peer_cpu,
            same,
            same_cpu,
        });
    }
    drop(text);
    drop(bodies);
    let store = store.unwrap();
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = measured.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let list = |f: &dyn Fn(&Round) -> f64| {
        measured
            .iter()
            .map(|r| format!("{:.2}", f(r)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let secs = |d: Duration| d.as_secs_f64();
    row(
        &format!("ingest, events/s (median of {rounds} rounds)"),
        format!(
            "{:.0} (collector path, {SENDERS} in flight); {:.0} (`Store::ingest`, one caller, once)",
            median(&|r| rate(events, r.collector)),
            rate(events, serial_time)
        ),
        format!(
            "{:.0} (clickhouse-client, the events, one stream); {:.0} (clickhouse-client, the same rows the store wrote, a stream per table)",
            median(&|r| rate(events, r.peer)),
            median(&|r| rate(events, r.same)),
        ),
    );
    row(
        "collector path vs clickhouse-client inserting the same rows (rounds)",
        format!(
            "**{:.2}** ({})",
            median(&|r| secs(r.same) / secs(r.collector)),
            list(&|r| secs(r.same) / secs(r.collector))
        ),
        "1".into(),
    );
    row(
        "collector path vs clickhouse-client inserting the events only (rounds)",
        format!(
            "{:.2} ({}); one caller {:.2}",
            median(&|r| secs(r.peer) / secs(r.collector)),
            list(&|r| secs(r.peer) / secs(r.collector)),
            median(&|r| secs(r.peer)) / secs(serial_time)
        ),
        "1".into(),
    );
    let per_million = |c: f64| c * 1e6 / events as f64;
    row(
        "CPU seconds per million events: client side / server (median)",
        format!(
            "{:.2} / {:.2} (collector path: decode, rows, requests)",
            median(&|r| per_million(r.collector_cpu.client)),
            median(&|r| per_million(r.collector_cpu.server)),
        ),
        format!(
            "{:.2} / {:.2} (clickhouse-client, events); {:.2} / {:.2} (same rows)",
            median(&|r| per_million(r.peer_cpu.client)),
            median(&|r| per_million(r.peer_cpu.server)),
            median(&|r| per_million(r.same_cpu.client)),
            median(&|r| per_million(r.same_cpu.server)),
        ),
    );

    // SQLite at the ingested size.
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let sqlite = SqliteStore::open(dir.path().join("bench.db")).unwrap();
    let start = Instant::now();
    for (agent, batch) in &batches {
        sqlite.ingest(agent, batch).unwrap();
    }
    let sqlite_ingest = start.elapsed();
    drop(batches);
    row(
        "SQLite store ingest, events/s (one caller)",
        "".into(),
        format!("{:.0}", rate(events, sqlite_ingest)),
    );
    let expected = connections(&sqlite);
    assert_eq!(connections(&store), expected);
    let unfolded = reads(&store);
    let sqlite_small = reads(&sqlite);
    for (i, name) in ["24 h".to_owned(), format!("{} days", days())]
        .iter()
        .enumerate()
    {
        assert_eq!(unfolded[i].0, sqlite_small[i].0);
        row(
            &format!(
                "graph read {name}, {events} events, {} edges, not folded",
                sqlite_small[i].0
            ),
            ms(unfolded[i].1),
            format!("{} (SQLite store)", ms(sqlite_small[i].1)),
        );
    }
    let sqlite_bytes_small = dir_bytes(dir.path());
    drop(sqlite);
    drop(dir);

    const CH_BYTES: &str =
        "SELECT sum(bytes) FROM system.parts WHERE active AND database = 'bench'";
    let ch_bytes_small = scalar(&server, CH_BYTES);

    // The multiplied data set.
    let start = Instant::now();
    multiply(&server, "bench", copies, per_host);
    let multiply_time = start.elapsed();
    let big = events * copies;
    assert_eq!(scalar(&server, "SELECT count() FROM bench.events"), big);
    let start = Instant::now();
    assert_eq!(connections(&store), expected * copies);
    let unfolded_big = start.elapsed();
    row(
        &format!("graph read, whole range, {big} events, not folded (once)"),
        ms(unfolded_big),
        "".into(),
    );
    // As the collector's loop does: a run stopped by the fold's time limit
    // keeps the hours it folded, and the next run goes on from there.
    let start = Instant::now();
    let now = Timestamp::from_nanos(START_NS + (days() + 2) * DAY_NS);
    let mut runs = 1;
    let report = loop {
        match store.fold_rollups(now) {
            Ok(report) => break report,
            Err(e) => {
                eprintln!("fold run {runs}: {e}");
                runs += 1;
            }
        }
    };
    let fold_big = start.elapsed();
    store
        .fold_rollups(Timestamp::from_nanos(now.as_nanos() + 3_600_000_000_000))
        .unwrap();
    settle(&server);
    assert_eq!(connections(&store), expected * copies);
    let folded_big = reads(&store);
    row(
        &format!("data set x{copies}: INSERT ... SELECT, then the fold job"),
        format!(
            "{:.1} s, then {:.1} s ({runs} runs; {} hours, {} days; the last run {} hours, {} batches)",
            multiply_time.as_secs_f64(),
            fold_big.as_secs_f64(),
            scalar(&server, "SELECT uniqExact(hour) FROM bench.folded_hours"),
            scalar(&server, "SELECT uniqExact(hour) FROM bench.folded_days"),
            report.hours_folded,
            report.batches_folded,
        ),
        "".into(),
    );
    let ch_bytes = scalar(&server, CH_BYTES);

    // SQLite at its own multiple, through its ingest, generated as it goes.
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let sqlite = SqliteStore::open(dir.path().join("big.db")).unwrap();
    let per_day = per_host / days() as u64;
    let start = Instant::now();
    for copy in 0..sqlite_copies {
        for host in 0..HOSTS {
            let agent = AgentId(format!("host-{host}"));
            let mut seq = 1;
            while seq <= per_host {
                let count = BATCH.min((per_host - seq + 1) as usize);
                let mut batch = events_for(host, seq, count, per_day);
                for e in &mut batch {
                    e.sequence += copy * per_host;
                }
                sqlite.ingest(&agent, &batch).unwrap();
                seq += count as u64;
            }
        }
    }
    let sqlite_big_ingest = start.elapsed();
    let sqlite_big = events * sqlite_copies;
    assert_eq!(connections(&sqlite), expected * sqlite_copies);
    let sqlite_big_reads = reads(&sqlite);
    for (i, name) in ["24 h".to_owned(), format!("{} days", days())]
        .iter()
        .enumerate()
    {
        assert_eq!(folded_big[i].0, sqlite_big_reads[i].0);
        row(
            &format!("graph read {name}, {} edges", folded_big[i].0),
            format!("{} ({big} events)", ms(folded_big[i].1)),
            format!(
                "{} (SQLite store, {sqlite_big} events)",
                ms(sqlite_big_reads[i].1)
            ),
        );
    }
    row(
        "bytes on disk per event (all tables)",
        format!(
            "{:.1} ({big} events); {:.1} ({events} events)",
            ch_bytes as f64 / big as f64,
            ch_bytes_small as f64 / events as f64
        ),
        format!(
            "{:.1} (SQLite store, {sqlite_big} events); {:.1} ({events} events)",
            dir_bytes(dir.path()) as f64 / sqlite_big as f64,
            sqlite_bytes_small as f64 / events as f64
        ),
    );
    row(
        &format!("SQLite store ingest of {sqlite_big} events"),
        "".into(),
        format!("{:.0} events/s", rate(sqlite_big, sqlite_big_ingest)),
    );
    drop(sqlite);
    drop(dir);

    println!(
        "{events} events ingested, {HOSTS} hosts, {} days, batches of {BATCH}",
        days()
    );
    println!("| measure | ClickHouse store | peer |");
    println!("|---|---|---|");
    for line in table {
        println!("{line}");
    }
}
