//! `connscope import` on hostile files, as a real process: a line without
//! end and a gzip bomb of such lines must cost bounded memory and bounded
//! error output, and every good line around them must still be imported.
//! Peak memory is the child's own (wait4's rusage), so tests running beside
//! this one do not count.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Bytes of each over-long line: big enough that holding it (or quoting it)
/// shows in the peak, small enough for a debug build to read quickly.
const LONG: usize = 40 << 20;
/// What an import of a few lines peaks at, with room to spare (about 16 MiB
/// measured); holding one over-long line would take at least LONG more.
const PEAK_LIMIT_KIB: i64 = 40 << 10;
/// Per error line: file, line, column, message and a quote of a few hundred bytes.
const ERROR_LINE_LIMIT: usize = 600;

const GOOD: [&str; 4] = [
    "Jan  4 10:00:00 ws1 tcpspy[812]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40000, remote 10.0.0.2:ssh",
    "Jan  4 10:00:01 ws1 tcpspy[812]: disconnect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40000, remote 10.0.0.2:ssh",
    "Jan  4 10:00:02 ws1 tcpspy[812]: connect: proc /usr/bin/curl, user joe, local 10.0.0.1:40001, remote 10.0.0.3:https",
    "Jan  4 10:00:05 ws1 tcpspy[812]: disconnect: proc /usr/bin/curl, user joe, local 10.0.0.1:40001, remote 10.0.0.3:https",
];
/// The start of a tcpspy line whose executable never ends.
const ENDLESS: &[u8] = b"Jan  4 10:00:03 ws1 tcpspy[812]: connect: proc /usr/bin/";

fn write_long_line(out: &mut dyn Write, newline: bool) {
    out.write_all(ENDLESS).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..LONG >> 20 {
        out.write_all(&chunk).unwrap();
    }
    if newline {
        out.write_all(b"\n").unwrap();
    }
}

fn write_good(out: &mut dyn Write, lines: &[&str]) {
    for line in lines {
        writeln!(out, "{line}").unwrap();
    }
}

struct Run {
    code: i32,
    stderr: String,
    peak_rss_kib: i64,
}

fn import(dir: &Path, file: &Path) -> Run {
    let stderr_path = dir.join("stderr");
    // Reaped below by wait4, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_connscope"))
        .args(["import", "--tz", "UTC", "--db"])
        .arg(dir.join("store.db"))
        .arg(file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; waiting for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(
        pid,
        child.id() as i32,
        "{}",
        std::io::Error::last_os_error()
    );
    assert!(libc::WIFEXITED(status), "import died: {status:#x}");
    Run {
        code: libc::WEXITSTATUS(status),
        stderr: std::fs::read_to_string(&stderr_path).unwrap(),
        peak_rss_kib: usage.ru_maxrss,
    }
}

fn assert_bounded(run: &Run, errors: usize) {
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        errors + 1,
        "errors, then the summary: {lines:#?}"
    );
    for line in &lines {
        assert!(
            line.len() <= ERROR_LINE_LIMIT,
            "{} bytes: {}...",
            line.len(),
            &line[..ERROR_LINE_LIMIT]
        );
    }
    assert!(
        run.peak_rss_kib < PEAK_LIMIT_KIB,
        "peak RSS {} KiB",
        run.peak_rss_kib
    );
}

#[test]
fn lines_without_end_are_skipped_and_reported_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syslog");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    write_good(&mut file, &GOOD[..2]);
    write_long_line(&mut file, true);
    write_good(&mut file, &GOOD[2..3]);
    writeln!(file, "Jan  4 10:00:04 ws1 tcpspy[812]: connect: bogus").unwrap();
    write_good(&mut file, &GOOD[3..]);
    // The last line never ends at all.
    write_long_line(&mut file, false);
    file.flush().unwrap();
    drop(file);

    let run = import(dir.path(), &path);
    assert_bounded(&run, 3);
    let log = path.display();
    let size = ENDLESS.len() + LONG;
    for line in [3, 7] {
        let at = format!("{log}:{line}:");
        let error = run.stderr.lines().find(|l| l.starts_with(&at));
        let error = error.unwrap_or_else(|| panic!("no error at line {line}: {}", run.stderr));
        assert!(
            error.contains(&format!("line of {size} bytes"))
                && error.contains(&format!("(bytes 1-200 of {size})")),
            "{error}"
        );
    }
    assert!(run.stderr.contains(&format!("{log}:5:")), "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "7 lines: 4 events imported, 0 already in the store, 0 lines skipped (other programs, status lines), 3 errors"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_gzip_bomb_is_read_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syslog.2.gz");
    let mut gzip = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&path).unwrap())
        .spawn()
        .unwrap();
    {
        let mut input = std::io::BufWriter::new(gzip.stdin.take().unwrap());
        write_good(&mut input, &GOOD[..1]);
        write_long_line(&mut input, true);
        write_long_line(&mut input, true);
        write_good(&mut input, &GOOD[1..]);
    }
    assert!(gzip.wait().unwrap().success());
    let compressed = std::fs::metadata(&path).unwrap().len();
    assert!(compressed < (LONG / 100) as u64, "{compressed} bytes");

    let run = import(dir.path(), &path);
    assert_bounded(&run, 2);
    assert!(
        run.stderr.contains("6 lines: 4 events imported"),
        "{}",
        run.stderr
    );
}
