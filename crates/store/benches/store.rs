//! Store benchmark, printed as a table (run: `cargo bench -p connscope-store`):
//! ingest throughput through `Store::ingest` (validation, dedup by sequence
//! ranges, raw events packed in blocks, rollups, host addresses) against a
//! raw SQLite bulk insert of the same events as one row each
//! (`RawEventTable`: 26 columns and a time index, the store's pragmas, same
//! transaction size) on the same machine in the same run.
//!
//! The graph query over a store built this way is measured by
//! connscope-query's `graph` bench.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/raw_event_table.rs"]
mod raw_event_table;

use std::hint::black_box;
use std::time::{Duration, Instant};

use connscope_event::ConnectionEvent;
use connscope_store::{AgentId, SqliteStore, Store};
use fleet::{events_for, BATCH};
use raw_event_table::RawEventTable;

/// The peer: the same events as plain rows of a table of their own, one
/// prepared statement, one transaction per batch.
fn raw_insert(path: &std::path::Path, batches: &[Vec<ConnectionEvent>]) -> Duration {
    let mut table = RawEventTable::open(path).unwrap();
    let start = Instant::now();
    for batch in batches {
        table.insert(1, batch).unwrap();
    }
    start.elapsed()
}

fn store_ingest(store: &SqliteStore, batches: &[(AgentId, Vec<ConnectionEvent>)]) -> Duration {
    let start = Instant::now();
    for (agent, batch) in batches {
        black_box(store.ingest(agent, batch).unwrap());
    }
    start.elapsed()
}

/// Batches of `BATCH` events, round-robin over `hosts` agents.
fn workload(total: usize, hosts: usize) -> Vec<(AgentId, Vec<ConnectionEvent>)> {
    let per_host = (total / hosts) as u64;
    let mut next = vec![1u64; hosts];
    let mut out = Vec::new();
    let mut made = 0;
    let mut h = 0;
    while made < total {
        let n = BATCH.min(total - made);
        out.push((
            AgentId(format!("host{h:03}")),
            events_for(h, next[h], n, per_host),
        ));
        next[h] += n as u64;
        made += n;
        h = (h + 1) % hosts;
    }
    out
}

fn main() {
    let dir = tempfile::tempdir_in(
        std::env::var_os("CONNSCOPE_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()),
    )
    .unwrap();
    println!("Store benchmarks (batches of {BATCH} events)\n");
    ingest(dir.path());
}

/// (a) ingest vs raw insert.
fn ingest(dir: &std::path::Path) {
    let n = 500_000;
    let work = workload(n, 100);
    let raw_batches: Vec<Vec<ConnectionEvent>> = work.iter().map(|(_, b)| b.clone()).collect();
    let raw = raw_insert(&dir.join("raw.db"), &raw_batches);
    let store = SqliteStore::open(dir.join("a.db")).unwrap();
    let ours = store_ingest(&store, &work);
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("| (a) ingest, {n} events | events/s | time |");
    println!("|---|---:|---:|");
    println!(
        "| raw SQLite bulk insert (peer) | {:.0} | {:.2} s |",
        rate(raw),
        raw.as_secs_f64()
    );
    println!(
        "| Store::ingest (dedup, rollups, addresses) | {:.0} | {:.2} s |",
        rate(ours),
        ours.as_secs_f64()
    );
    println!("| ratio Store / raw | {:.2} | |", rate(ours) / rate(raw));
    let again = store_ingest(&store, &work);
    println!(
        "| Store::ingest of the same batches again (all duplicates) | {:.0} | {:.2} s |\n",
        rate(again),
        again.as_secs_f64()
    );
}
