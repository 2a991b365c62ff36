//! Importing a tcpspy log set like one found on a central log server: two
//! hosts in one syslog, rotated (`.1`), gzipped (`.2.gz`), across New Year,
//! with other programs' lines and garbled tcpspy lines.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use connscope_event::{Direction, EventKind};
use connscope_import::{import_files, ImportOptions, ImportSummary, LineError};
use connscope_query::join::load_edges;
use connscope_store::{EventQuery, SqliteStore, Store, TimeRange};
use jiff::tz::TimeZone;

const OLDEST: &str = "\
Dec 30 10:00:00 ws1 tcpspy[100]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40000, remote 10.0.0.2:ssh
Dec 30 10:00:00 srv tcpspy[200]: connect: proc /usr/sbin/sshd, user root, local 10.0.0.2:22, remote 10.0.0.1:40000
Dec 30 10:00:01 srv sshd[300]: Accepted publickey for joe from 10.0.0.1 port 40000 ssh2
Dec 30 10:05:00 ws1 tcpspy[100]: disconnect: proc (unknown), user joe, local 10.0.0.1:40000, remote 10.0.0.2:ssh
Dec 30 10:05:00 srv tcpspy[200]: disconnect: proc /usr/sbin/sshd, user root, local 10.0.0.2:ssh, remote 10.0.0.1:40000
Dec 31 12:00:00 ws1 tcpspy[100]: connect: proc /usr/bin/curl, user joe, local 10.0.0.1:40010, remote 192.0.2.10:https
Dec 31 12:00:02 ws1 tcpspy[100]: disconnect: proc /usr/bin/curl, user joe, local 10.0.0.1:40010, remote 192.0.2.10:443
Dec 31 12:00:03 ws1 tcpspy[100]: connect: proc /usr/bin/x, user joe, local 10.0.0.1:nosuchsvc, remote 192.0.2.10:443
";

const ROTATED: &str = "\
Dec 31 23:59:50 ws1 tcpspy[101]: tcpspy started, monitoring connections
Dec 31 23:59:58 ws1 tcpspy[101]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40001, remote 10.0.0.2:ssh
Dec 31 23:59:58 srv tcpspy[200]: connect: proc /usr/sbin/sshd, user root, local 10.0.0.2:ssh, remote 10.0.0.1:40001
Jan  1 00:00:05 ws1 tcpspy[101]: disconnect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40001, remote 10.0.0.2:ssh
Jan  1 00:00:05 srv tcpspy[200]: disconnect: proc /usr/sbin/sshd, user root, local 10.0.0.2:ssh, remote 10.0.0.1:40001
Jan  1 00:00:06 srv tcpspy[200]: connect: bogus
";

const CURRENT: &str = "\
Jan  2 08:00:00 srv tcpspy[200]: connect: proc /usr/sbin/named, user bind, local 10.0.0.2:40500, remote 198.51.100.7:domain
Jan  2 08:00:01 srv tcpspy[200]: disconnect: proc /usr/sbin/named, user bind, local 10.0.0.2:40500, remote 198.51.100.7:53
garbage
Jan  2 09:00:00 ws1 tcpspy[101]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40002, remote 10.0.0.2:ssh
Jan  2 09:00:00 srv tcpspy[200]: connect: proc /usr/sbin/sshd, user root, local 10.0.0.2:ssh, remote 10.0.0.1:40002

";

fn write_file(path: &Path, text: &str, gzip: bool, mtime: &str) {
    let file = File::create(path).unwrap();
    if gzip {
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap();
    } else {
        let mut file = file;
        file.write_all(text.as_bytes()).unwrap();
    }
    set_mtime(path, mtime);
}

fn set_mtime(path: &Path, mtime: &str) {
    let t: jiff::Timestamp = mtime.parse().unwrap();
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_second() as u64);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

fn log_set(dir: &Path) -> Vec<PathBuf> {
    let files = [
        (
            dir.join("syslog.2.gz"),
            OLDEST,
            true,
            "2025-12-31T23:00:00Z",
        ),
        (dir.join("syslog.1"), ROTATED, false, "2026-01-01T00:10:00Z"),
        (dir.join("syslog"), CURRENT, false, "2026-01-02T12:00:00Z"),
    ];
    files
        .into_iter()
        .map(|(path, text, gzip, mtime)| {
            write_file(&path, text, gzip, mtime);
            path
        })
        .collect()
}

fn import(store: &SqliteStore, paths: &[PathBuf]) -> (ImportSummary, Vec<LineError>) {
    import_in(TimeZone::UTC, store, paths)
}

fn import_in(
    time_zone: TimeZone,
    store: &SqliteStore,
    paths: &[PathBuf],
) -> (ImportSummary, Vec<LineError>) {
    let options = ImportOptions {
        time_zone: Some(time_zone),
        progress: false,
        batch_size: 3,
    };
    let mut errors = Vec::new();
    let summary = import_files(store, paths, &options, &mut |e| errors.push(e.clone())).unwrap();
    (summary, errors)
}

#[test]
fn a_rotated_gzipped_log_set_across_new_year() {
    let dir = tempfile::tempdir().unwrap();
    let paths = log_set(dir.path());
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let (summary, errors) = import(&store, &paths);

    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let at = |name: &str, line: u64| format!("{}:{line}:", dir.path().join(name).display());
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert!(
        messages[0].starts_with(&at("syslog.2.gz", 8)),
        "{}",
        messages[0]
    );
    assert!(
        messages[0].contains("local port: unknown service name \"nosuchsvc\""),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].starts_with(&at("syslog.1", 6)),
        "{}",
        messages[1]
    );
    assert!(messages[2].starts_with(&at("syslog", 3)), "{}", messages[2]);
    assert_eq!(
        summary,
        ImportSummary {
            files: 3,
            lines: 8 + 6 + 6,
            events_read: 14,
            imported: 14,
            duplicates: 0,
            skipped: 3, // sshd, the start notice, the blank line
            errors: 3,
            joined: 6,
        }
    );

    // Years across New Year, durations from the joined connect/disconnect.
    let events = store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: Some("ws1".into()),
            limit: 100,
        })
        .unwrap();
    let times: Vec<String> = events
        .iter()
        .map(|e| e.timestamp.to_string()[..19].to_owned())
        .collect();
    assert_eq!(
        times,
        [
            "2025-12-30T10:00:00",
            "2025-12-30T10:05:00",
            "2025-12-31T12:00:00",
            "2025-12-31T12:00:02",
            "2025-12-31T23:59:58",
            "2026-01-01T00:00:05",
            "2026-01-02T09:00:00",
        ]
    );
    let over_new_year = &events[5];
    assert_eq!(over_new_year.kind, EventKind::Disconnect);
    assert_eq!(over_new_year.close.unwrap().duration_ns, 7_000_000_000);
    assert!(events.iter().all(|e| e.direction == Direction::Outgoing));
    let srv = store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: Some("srv".into()),
            limit: 100,
        })
        .unwrap();
    let directions: Vec<Direction> = srv.iter().map(|e| e.direction).collect();
    assert_eq!(
        directions
            .iter()
            .filter(|d| **d == Direction::Incoming)
            .count(),
        5
    );
    assert_eq!(
        directions
            .iter()
            .filter(|d| **d == Direction::Outgoing)
            .count(),
        2,
        "named to port 53"
    );

    // Edges: the ssh connections logged on both ends count once each.
    let edges = load_edges(&store, TimeRange::ALL).unwrap();
    let described: Vec<String> = edges
        .iter()
        .map(|e| {
            format!(
                "{}/{} -> {}/{}:{} n={} both={}",
                e.client_host.as_deref().unwrap_or("-"),
                e.client_ip,
                e.server_host.as_deref().unwrap_or("-"),
                e.server_ip,
                e.server_port,
                e.connections,
                e.logged_by_client && e.logged_by_server
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            "ws1/10.0.0.1 -> srv/10.0.0.2:22 n=3 both=true",
            "ws1/10.0.0.1 -> -/192.0.2.10:443 n=1 both=false",
            "srv/10.0.0.2 -> -/198.51.100.7:53 n=1 both=false",
        ]
    );
    let ssh = &edges[0];
    assert_eq!(ssh.client_processes[0].executable, "/usr/bin/ssh");
    assert_eq!(ssh.server_processes[0].executable, "/usr/sbin/sshd");
    assert_eq!(ssh.first_seen.to_string(), "2025-12-30T10:00:00.000000000Z");

    let agents: Vec<String> = store
        .agents()
        .unwrap()
        .iter()
        .map(|a| format!("{} {} {}", a.agent, a.host, a.events))
        .collect();
    assert_eq!(agents, ["import:srv srv 7", "import:ws1 ws1 7"]);
}

#[test]
fn importing_again_adds_nothing_even_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let paths = log_set(dir.path());
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let (first, _) = import(&store, &paths);
    assert_eq!(first.imported, 14);

    // Same files again.
    let (again, _) = import(&store, &paths);
    assert_eq!((again.imported, again.duplicates), (0, 14));
    // And again with another --tz, which moves every classic time. (A zone
    // west of UTC would move syslog.2.gz's mtime, 00:10 on New Year's Day
    // UTC, into the old year and with it the year of its lines: those would
    // be other events.)
    for zone in ["Pacific/Kiritimati", "Asia/Tokyo"] {
        let (elsewhere, _) = import_in(TimeZone::get(zone).unwrap(), &store, &paths);
        assert_eq!(
            (elsewhere.imported, elsewhere.duplicates),
            (0, 14),
            "{zone}"
        );
    }

    // logrotate ran: syslog.1 -> syslog.2.gz, syslog -> syslog.1 (mtimes kept);
    // then the new syslog got more lines. Only the new lines are new.
    let rotated = dir.path().join("rotated");
    std::fs::create_dir(&rotated).unwrap();
    write_file(
        &rotated.join("syslog.3.gz"),
        OLDEST,
        true,
        "2025-12-31T23:00:00Z",
    );
    write_file(
        &rotated.join("syslog.2.gz"),
        ROTATED,
        true,
        "2026-01-01T00:10:00Z",
    );
    write_file(
        &rotated.join("syslog.1"),
        CURRENT,
        false,
        "2026-01-02T12:00:00Z",
    );
    write_file(
        &rotated.join("syslog"),
        "Jan  3 07:00:00 ws1 tcpspy[101]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40003, remote 10.0.0.2:ssh\n",
        false,
        "2026-01-03T07:00:00Z",
    );
    let rotated_paths: Vec<PathBuf> = ["syslog.3.gz", "syslog.2.gz", "syslog.1", "syslog"]
        .iter()
        .map(|n| rotated.join(n))
        .collect();
    let (after_rotation, _) = import(&store, &rotated_paths);
    assert_eq!(
        (after_rotation.imported, after_rotation.duplicates),
        (1, 14)
    );
    let total: u64 = store.agents().unwrap().iter().map(|a| a.events).sum();
    assert_eq!(total, 15);
}

#[test]
fn rfc3339_lines_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("messages");
    write_file(
        &path,
        "2026-11-24T20:10:19.688815+01:00 vm tcpspy[11277]: connect: proc /usr/bin/ssh, user root, local 10.1.0.1:50786, remote 10.1.0.2:22\n",
        false,
        "2026-11-24T20:00:00Z",
    );
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let (summary, errors) = import(&store, &[path, dir.path().join("missing")]);
    assert_eq!((summary.imported, summary.errors), (1, 1));
    assert!(
        errors[0].to_string().contains("missing: cannot read"),
        "{}",
        errors[0]
    );
    let events = store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: 10,
        })
        .unwrap();
    assert_eq!(
        events[0].timestamp.to_string(),
        "2026-11-24T19:10:19.688815000Z"
    );
}

fn event_times(store: &SqliteStore) -> Vec<String> {
    store
        .events(&EventQuery {
            range: TimeRange::ALL,
            host: None,
            limit: 100,
        })
        .unwrap()
        .iter()
        .map(|e| e.timestamp.to_string()[..19].to_owned())
        .collect()
}

/// A CET host's `syslog.1`, imported on a machine in UTC without `--tz`:
/// the mtime's UTC date (Jan 3) is a day before the last line's (Jan 4).
#[test]
fn a_cet_file_read_in_utc_keeps_its_year() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("syslog.1");
    write_file(
        &path,
        "\
Dec 28 09:00:00 ws1 tcpspy[100]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40000, remote 10.0.0.2:ssh
Jan  4 00:00:08 ws1 tcpspy[100]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:40001, remote 10.0.0.2:ssh
",
        false,
        "2026-01-03T23:00:08Z",
    );
    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let (summary, errors) = import(&store, &[path]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(summary.imported, 2);
    assert_eq!(
        event_times(&store),
        ["2025-12-28T09:00:00", "2026-01-04T00:00:08"]
    );
}

/// What `tracing` logs while `f` runs on this thread.
fn logged_during(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);
    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = log.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}

/// Without `--tz`, a file whose last line is an hour after its mtime (read
/// in this machine's zone, whichever it is) is named once in a warning; a
/// file that agrees with its mtime, or any file with `--tz`, is not.
#[test]
fn lines_and_mtime_disagreeing_warn_once_per_file_without_tz() {
    let dir = tempfile::tempdir().unwrap();
    let mtime: jiff::Timestamp = "2026-03-10T12:00:00Z".parse().unwrap();
    let line_at = |t: jiff::Timestamp, port: u16| {
        let local = t.to_zoned_datetime(TimeZone::system());
        format!(
            "{} ws1 tcpspy[100]: connect: proc /usr/bin/ssh, user joe, local 10.0.0.1:{port}, remote 10.0.0.2:ssh\n",
            local.strftime("%b %e %H:%M:%S")
        )
    };
    let hour = jiff::SignedDuration::from_hours(1);
    let off = dir.path().join("from-another-zone");
    let agrees = dir.path().join("from-here");
    let off_text = [
        line_at(mtime - hour, 40000),
        line_at(mtime, 40001),
        line_at(mtime + hour, 40002),
    ]
    .concat();
    write_file(&off, &off_text, false, &mtime.to_string());
    let agrees_text = [line_at(mtime - hour, 40003), line_at(mtime, 40004)].concat();
    write_file(&agrees, &agrees_text, false, &mtime.to_string());
    let paths = [off.clone(), agrees.clone()];

    let store = SqliteStore::open(dir.path().join("store.db")).unwrap();
    let options = ImportOptions {
        time_zone: None,
        ..ImportOptions::default()
    };
    let log = logged_during(|| {
        import_files(&store, &paths, &options, &mut |e| panic!("{e}")).unwrap();
    });
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&off.display().to_string()), "{log}");
    assert!(warnings[0].contains("--tz"), "{log}");

    let store = SqliteStore::open(dir.path().join("store2.db")).unwrap();
    let options = ImportOptions {
        time_zone: Some(TimeZone::system()),
        ..ImportOptions::default()
    };
    let log = logged_during(|| {
        import_files(&store, &paths, &options, &mut |e| panic!("{e}")).unwrap();
    });
    assert!(!log.contains("WARN"), "{log}");
}
