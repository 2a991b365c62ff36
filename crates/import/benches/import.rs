//! Import speed, end to end (read, decompress, parse, infer, join, store),
//! against `zcat -f FILES | wc -l` over the same files in the same run: the
//! I/O and decompression limit. Prints a table (run: `cargo bench -p
//! connscope-import`). `CONNSCOPE_BENCH_LINES` overrides the line count.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use connscope_import::{import_files, ImportOptions};
use connscope_store::SqliteStore;
use jiff::tz::TimeZone;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A central syslog of 20 hosts running tcpspy -p: connections to a few
/// dozen services, connect and disconnect lines, some other programs' lines.
fn write_log(out: &mut dyn Write, first: u64, lines: u64) {
    let mut written = 0;
    let mut n = first;
    while written < lines {
        let secs = n / 4;
        let (day, rest) = (1 + (secs / 86_400) % 28, secs % 86_400);
        let stamp = format!(
            "{} {:>2} {:02}:{:02}:{:02}",
            MONTHS[((secs / (28 * 86_400)) % 12) as usize],
            day,
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        );
        let host = n % 20;
        let service = n * 2654435761 % 30;
        let port = [22, 80, 443, 5432, 25, 3306][(service % 6) as usize];
        let eph = 32768 + (n * 7 % 28000);
        if n % 10 == 9 {
            writeln!(
                out,
                "{stamp} ws{host} CRON[{n}]: (root) CMD (run-parts /etc/cron.hourly)"
            )
            .unwrap();
            written += 1;
        } else {
            for action in ["connect", "disconnect"] {
                writeln!(
                    out,
                    "{stamp} ws{host} tcpspy[812]: {action}: proc /usr/bin/prog{}, user user{}, local 10.0.{host}.1:{eph}, remote 10.1.{service}.2:{port}",
                    service % 4,
                    service % 3
                )
                .unwrap();
                written += 2;
            }
        }
        n += 1;
    }
}

fn make_files(dir: &Path, total: u64) -> Vec<PathBuf> {
    let third = total / 3;
    let specs = [
        ("syslog.2.gz", true, 0),
        ("syslog.1", false, 1),
        ("syslog", false, 2),
    ];
    specs
        .iter()
        .map(|&(name, gzip, i)| {
            let path = dir.join(name);
            let file = BufWriter::with_capacity(1 << 20, File::create(&path).unwrap());
            if gzip {
                let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
                write_log(&mut gz, i * third, third);
                gz.finish().unwrap().flush().unwrap();
            } else {
                let mut file = file;
                write_log(&mut file, i * third, third);
                file.flush().unwrap();
            }
            let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000 + i * 86_400);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
            path
        })
        .collect()
}

fn main() {
    let lines: u64 = std::env::var("CONNSCOPE_BENCH_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000_000);
    let dir = tempfile::tempdir().unwrap();
    let files = make_files(dir.path(), lines);
    let sizes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();

    // Peer: the I/O and decompression limit.
    let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let start = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("zcat -f {} | wc -l", list.join(" ")))
        .output()
        .unwrap();
    let peer = start.elapsed();
    let counted: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    let options = ImportOptions {
        time_zone: Some(TimeZone::UTC),
        progress: false,
        ..ImportOptions::default()
    };
    // Three imports into fresh stores, for a median that one busy moment on
    // a shared machine does not decide.
    let mut fresh = Vec::new();
    let mut summary = None;
    for run in 0..3 {
        let store = SqliteStore::open(dir.path().join(format!("bench{run}.db"))).unwrap();
        let start = Instant::now();
        let s = import_files(&store, &files, &options, &mut |e| panic!("{e}")).unwrap();
        fresh.push(start.elapsed());
        assert_eq!(s.lines, counted);
        summary = Some(s);
    }
    fresh.sort();
    let (ours, fastest, slowest) = (fresh[1], fresh[0], fresh[2]);
    let summary = summary.expect("three runs");

    let store = SqliteStore::open(dir.path().join("bench0.db")).unwrap();
    let start = Instant::now();
    let again = import_files(&store, &files, &options, &mut |e| panic!("{e}")).unwrap();
    let repeat = start.elapsed();
    assert_eq!(again.imported, 0);

    let rate = |d: Duration| counted as f64 / d.as_secs_f64();
    println!(
        "Import benchmark: {counted} lines in 3 files (one gzip), {:.0} MB on disk, {} events\n",
        sizes as f64 / 1e6,
        summary.imported
    );
    println!("| | lines/s | time |");
    println!("|---|---:|---:|");
    println!(
        "| `zcat -f FILES | wc -l` (peer: I/O limit) | {:.0} | {:.2} s |",
        rate(peer),
        peer.as_secs_f64()
    );
    println!(
        "| connscope import, end to end, fresh store (median of 3; {:.0}-{:.0}) | {:.0} | {:.2} s |",
        rate(slowest),
        rate(fastest),
        rate(ours),
        ours.as_secs_f64()
    );
    println!(
        "| connscope import of the same files again (all duplicates) | {:.0} | {:.2} s |",
        rate(repeat),
        repeat.as_secs_f64()
    );
    println!("| ratio import / peer | {:.3} | |", rate(ours) / rate(peer));
}
