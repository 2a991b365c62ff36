//! The collector's batch decode, printed as a table (run: `cargo bench -p
//! connscope-store --bench decode`): `connscope_protocol::batch::decode_body`
//! on the agents' gzip JSON Lines bodies of the ClickHouse bench's fleet
//! (batches of 5,000 events), in CPU seconds per million events, against
//! peers measured on the same bodies in the same run, rounds interleaved:
//! inflating the body alone (flate2, as the codec does); inflating it and
//! checking each line's JSON syntax with serde_json (`IgnoredAny`: nothing
//! built, the floor of any serde_json parse); and inflating it and parsing
//! each line into a generic `serde_json::Value`.
//!
//! `CONNSCOPE_BENCH_EVENTS` (default 500,000) events, `CONNSCOPE_BENCH_ROUNDS`
//! (default 5) rounds; medians.

#[path = "support/fleet.rs"]
mod fleet;

use std::hint::black_box;
use std::io::Read as _;

use serde::de::IgnoredAny;

use connscope_protocol::batch::{decode_body, encode_body};
use fleet::{events_for, BATCH};

const HOSTS: usize = 50;
/// Events per host per day as the ClickHouse bench spreads them (2,000,000
/// events over 50 hosts and 30 days).
const PER_DAY: u64 = 2_000_000 / HOSTS as u64 / 30;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds this process has used (user and system).
fn cpu_seconds() -> f64 {
    let stat = procfs::process::Process::myself().unwrap().stat().unwrap();
    (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64
}

fn inflate(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 6);
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Parses each non-empty line of `text` as a `T`; how many there were.
fn parse_lines<T: serde::de::DeserializeOwned>(text: &[u8]) -> usize {
    let mut parsed = 0;
    for line in text.split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
        black_box(serde_json::from_slice::<T>(line).unwrap());
        parsed += 1;
    }
    parsed
}

fn main() {
    let total = env("CONNSCOPE_BENCH_EVENTS", 500_000);
    let rounds = env("CONNSCOPE_BENCH_ROUNDS", 5).max(1);
    let mut bodies = Vec::new();
    let mut events = 0u64;
    let mut text_bytes = 0usize;
    'fill: for host in 0.. {
        let mut seq = 1;
        // A host's first 40 batches: its sequence numbers and times go on.
        for _ in 0..40 {
            let batch = events_for(host % HOSTS, seq, BATCH, PER_DAY);
            seq += BATCH as u64;
            events += batch.len() as u64;
            let body = encode_body(&batch);
            text_bytes += inflate(&body).len();
            bodies.push(body);
            if events >= total {
                break 'fill;
            }
        }
    }
    let gzip_bytes: usize = bodies.iter().map(Vec::len).sum();

    type Path<'a> = (&'a str, Box<dyn Fn(&[u8]) -> usize>);
    let paths: [Path; 4] = [
        (
            "`decode_body` (inflate, split, parse, validate into `ConnectionEvent`s)",
            Box::new(|body| {
                decode_body(body, Some("gzip"), 1 << 30, |_| Ok(()))
                    .unwrap()
                    .len()
            }),
        ),
        (
            "peer: inflate, then a `serde_json::Value` per line",
            Box::new(|body| parse_lines::<serde_json::Value>(&inflate(body))),
        ),
        (
            "floor: inflate, then serde_json's syntax check per line (`IgnoredAny`)",
            Box::new(|body| parse_lines::<IgnoredAny>(&inflate(body))),
        ),
        ("floor: inflate only", Box::new(|body| inflate(body).len())),
    ];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for _ in 0..rounds {
        for (i, (_, path)) in paths.iter().enumerate() {
            let before = cpu_seconds();
            let mut seen = 0;
            for body in &bodies {
                seen += black_box(path(body));
            }
            cpu[i].push(cpu_seconds() - before);
            assert!(seen > 0);
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let per_million = |s: f64| s * 1e6 / events as f64;
    let ours = median(&cpu[0]);
    println!(
        "{events} events in {} bodies of {BATCH}: {:.1} MiB of JSON Lines, {:.1} MiB gzip; median of {rounds} rounds",
        bodies.len(),
        text_bytes as f64 / (1 << 20) as f64,
        gzip_bytes as f64 / (1 << 20) as f64,
    );
    println!("| path | CPU s per million events (rounds) | vs `decode_body` |");
    println!("|---|---:|---:|");
    for (i, (name, _)) in paths.iter().enumerate() {
        let rounds: Vec<String> = cpu[i]
            .iter()
            .map(|s| format!("{:.2}", per_million(*s)))
            .collect();
        println!(
            "| {name} | {:.2} ({}) | {:.2} |",
            per_million(median(&cpu[i])),
            rounds.join(", "),
            median(&cpu[i]) / ours
        );
    }
}
