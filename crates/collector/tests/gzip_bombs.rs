//! Parallel gzip bombs against a running collector: the memory of
//! decompression is bounded as a whole, not per request (issue 14, 4). Its
//! own test binary, so the peak resident size measured is this collector's.

mod common;

use std::io::Write;
use std::sync::Arc;

use common::Running;
use connscope_collector::CollectorConfig;
use connscope_store::SqliteStore;

const TOKEN: &str = "token-of-agent-web1";
const MIB: u64 = 1 << 20;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn sixteen_parallel_gzip_bombs_share_one_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 64 * MIB;
    let mut config = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("c.db"));
    config.tokens.insert("web1", TOKEN).unwrap();
    config.decompressed_limit = limit;
    let store = Arc::new(SqliteStore::open(dir.path().join("c.db")).unwrap());
    let collector = Running::start(config, store);

    // Twice the limit of spaces, in a body of a few hundred KiB.
    let bomb = dir.path().join("bomb.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&bomb).unwrap(),
        flate2::Compression::best(),
    );
    let chunk = vec![b' '; MIB as usize];
    for _ in 0..2 * limit / MIB {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap();

    let before = status_kib("VmRSS:");
    let curls: Vec<std::process::Child> = (0..16)
        .map(|_| {
            std::process::Command::new("curl")
                .args(["--silent", "--max-time", "120", "--output", "/dev/null"])
                .args(["--write-out", "%{http_code}", "--cacert"])
                .arg(&collector.cert)
                .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
                .args(["--header", "Content-Encoding: gzip"])
                .arg("--data-binary")
                .arg(format!("@{}", bomb.display()))
                .arg(format!("{}/api/v1/ingest", collector.url()))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for curl in curls {
        let out = curl.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "413");
    }
    let grown_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    eprintln!(
        "peak resident growth for 16 parallel bombs of a {limit}-byte limit: {grown_mib} MiB"
    );
    // Two decompressions at once (the default), each buffer at most twice
    // the limit while it grows: far below sixteen of them.
    assert!(grown_mib < 5 * limit / MIB, "peak grew by {grown_mib} MiB");
}
