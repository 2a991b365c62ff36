//! The spool's promise under kill -9: every batch `push` acknowledged is on disk
//! after the process dies at any point, and nothing else is half there.
//!
//! The test runs itself a second time as a child process (selected by an
//! environment variable) that spools as fast as it can and prints each
//! acknowledged sequence; the parent SIGKILLs it mid-stream and reopens the spool.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use connscope_event::{ConnectionEvent, Direction, EventKind, Protocol, Timestamp};
use connscope_transport::Spool;

const CHILD_ENV: &str = "CONNSCOPE_SPOOL_KILL9_DIR";
const BATCH: u64 = 25;

fn batch(first: u64) -> Vec<ConnectionEvent> {
    (first..first + BATCH)
        .map(|seq| {
            let mut ev = ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(seq as i64),
                Protocol::Tcp,
                Direction::Incoming,
                "10.9.0.2:22".parse().unwrap(),
                "10.9.0.1:50000".parse().unwrap(),
            );
            ev.sequence = seq;
            ev.host = "crash".into();
            ev
        })
        .collect()
}

#[test]
fn spooled_batches_survive_kill_9() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        // The child: spool forever, acknowledging each batch on stdout.
        let spool = Spool::open(dir, 1 << 30).unwrap();
        let mut out = std::io::stdout().lock();
        let mut next = 1;
        loop {
            spool.push(&batch(next)).unwrap();
            writeln!(out, "{}", next + BATCH - 1).unwrap();
            out.flush().unwrap();
            next += BATCH;
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "spooled_batches_survive_kill_9", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged < 200 * BATCH && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(line)) => {
                if let Ok(n) = line.trim().parse() {
                    acknowledged = n;
                }
            }
            _ => break,
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements still in the pipe count too: they were printed after a push returned.
    for line in lines.map_while(Result::ok) {
        if let Ok(n) = line.trim().parse() {
            acknowledged = n;
        }
    }
    assert!(acknowledged >= BATCH, "the child acknowledged nothing");

    let spool = Spool::open(dir.path(), 1 << 30).unwrap();
    let mut sequences = Vec::new();
    while let Some(b) = spool.next_batch(Duration::from_millis(1)).unwrap() {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&b.body[..])
            .read_to_string(&mut text)
            .unwrap();
        for line in text.lines() {
            sequences.push(
                connscope_event::json::from_json_line(line)
                    .unwrap()
                    .sequence,
            );
        }
        spool.acknowledge(b.info.id).unwrap();
    }
    // Everything acknowledged is there, in order, once; at most the one batch
    // being written at the kill may also have made it.
    assert!(
        sequences.len() as u64 >= acknowledged,
        "lost events: {} < {acknowledged}",
        sequences.len()
    );
    assert!(sequences.len() as u64 <= acknowledged + BATCH);
    assert!(sequences.iter().copied().eq(1..=sequences.len() as u64));
    assert!(spool.dropped().is_empty());
}
