//! Reading firewall hits from a SQLite store, printed as a table (run:
//! `cargo bench -p connscope-store --bench hits`; `CONNSCOPE_BENCH_EVENTS=N`
//! for another store size): `Store::firewall_hits` over a fleet's day of
//! connections (the ingest bench's workload) holding a few hundred hits,
//! with the blocks' hit counts of schema 10 (only blocks holding hits are
//! decoded), against the peer: the same store with the counts cleared, as
//! the blocks of a store from before schema 10 are, so every block of the
//! day is decoded (what the read did before the counts). Same machine,
//! same run; medians of 5 reads.

#[path = "support/fleet.rs"]
mod fleet;

use std::time::{Duration, Instant};

use connscope_event::test_support::EventBuilder;
use connscope_event::{EventKind, Timestamp};
use connscope_store::{AgentId, FirewallHitQuery, SqliteStore, Store, TimeRange};
use fleet::{events_for, BATCH, DAY_NS, START_NS};

const HOSTS: usize = 100;
const HITS: u64 = 300;

fn median_read(store: &SqliteStore, query: &FirewallHitQuery) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut hits = 0;
    for _ in 0..5 {
        let start = Instant::now();
        hits = store
            .firewall_hits(query)
            .unwrap()
            .iter()
            .map(|h| h.count)
            .sum();
        times.push(start.elapsed());
    }
    times.sort();
    (times[2], hits)
}

fn main() {
    let total: usize = std::env::var("CONNSCOPE_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir_in(
        std::env::var_os("CONNSCOPE_BENCH_DIR").unwrap_or_else(|| std::env::temp_dir().into()),
    )
    .unwrap();
    let path = dir.path().join("hits.db");
    let store = SqliteStore::open(&path).unwrap();
    let per_host = (total / HOSTS) as u64;
    let mut next = vec![1u64; HOSTS];
    let (mut made, mut h) = (0, 0);
    while made < total {
        let n = BATCH.min(total - made);
        let batch = events_for(h, next[h], n, per_host);
        store
            .ingest(&AgentId(format!("host{h:03}")), &batch)
            .unwrap();
        next[h] += n as u64;
        made += n;
        h = (h + 1) % HOSTS;
    }
    // The hits: a batch of their own per host that had any, as an agent
    // ships NFLOG records between connections.
    for i in 0..HITS {
        let h = (i % 10) as usize;
        let hit = EventBuilder::connect(format!("10.0.{h}.1:41000"), "10.9.9.9:873")
            .kind(if i % 3 == 0 {
                EventKind::Blocked
            } else {
                EventKind::WouldBlock
            })
            .at_nanos(START_NS + (i as i64 + 1) * (DAY_NS / (HITS as i64 + 2)))
            .host(format!("host{h:03}"))
            .user("root")
            .process(700, "/usr/bin/rsync")
            .build();
        store
            .ingest(&AgentId(format!("host{h:03}")), &[hit])
            .unwrap();
    }
    let query = FirewallHitQuery {
        range: TimeRange {
            from: Timestamp::from_nanos(START_NS),
            to: Timestamp::from_nanos(START_NS + DAY_NS),
        },
        host: None,
    };
    let conn = rusqlite::Connection::open(&path).unwrap();
    let blocks = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let all_blocks = blocks("SELECT count(*) FROM event_blocks");
    let hit_blocks = blocks("SELECT count(*) FROM event_blocks WHERE firewall_hits > 0");
    let (counted, found) = median_read(&store, &query);
    conn.execute("UPDATE event_blocks SET firewall_hits = NULL", [])
        .unwrap();
    let (peer, peer_found) = median_read(&store, &query);
    assert_eq!(
        (found, peer_found),
        (HITS, HITS),
        "both reads find every hit"
    );

    println!("Firewall hits over a day of {total} connection events and {HITS} hits ({all_blocks} blocks, {hit_blocks} with hits)\n");
    println!("| read of the day's hits | blocks decoded | median of 5 |");
    println!("|---|---:|---:|");
    println!(
        "| every block of the range decoded (peer: blocks without counts, as before schema 10) | {all_blocks} | {:.1} ms |",
        peer.as_secs_f64() * 1e3
    );
    println!(
        "| blocks with hits only (schema 10 counts, partial index) | {hit_blocks} | {:.1} ms |",
        counted.as_secs_f64() * 1e3
    );
    println!(
        "| ratio peer / counted | | {:.0}x |",
        peer.as_secs_f64() / counted.as_secs_f64()
    );
}
