//! Every loss of the spool is reported with its reason and its agent state,
//! and the spool stays within its bound (issue 14.5, 14.7, 14.8).

use std::process::Command;

use connscope_event::{ConnectionEvent, Direction, EventKind, Protocol, Timestamp};
use connscope_protocol::{drop_reason, BatchOrigin, DroppedReport};
use connscope_transport::{Spool, SpoolError};

fn events(first: u64, count: u64) -> Vec<ConnectionEvent> {
    (first..first + count)
        .map(|seq| {
            let mut ev = ConnectionEvent::new(
                EventKind::Connect,
                Timestamp::from_nanos(1_800_000_000_000_000_000 + seq as i64),
                Protocol::Tcp,
                Direction::Outgoing,
                format!("10.0.0.1:{}", 1024 + seq % 60_000).parse().unwrap(),
                "10.0.0.2:22".parse().unwrap(),
            );
            ev.sequence = seq;
            ev.host = "h".into();
            ev
        })
        .collect()
}

fn origin(instance: &str) -> BatchOrigin {
    BatchOrigin {
        instance: instance.into(),
        boot: "b0".into(),
        first_sequence: 1,
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.metadata().unwrap().len())
                .sum()
        })
        .unwrap_or(0)
}

/// 14.5: batches the collector refused are reported as dropped (refused),
/// and `rejected/` never takes the spool past its bound.
#[test]
fn refused_batches_are_reported_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let one = {
        let probe = tempfile::tempdir().unwrap();
        let spool = Spool::open(probe.path(), u64::MAX).unwrap();
        spool.set_origin(origin("aa"));
        spool.push(&events(1, 20)).unwrap();
        spool.batches()[0].file_bytes
    };
    let max = one * 4;
    let spool = Spool::open(dir.path(), max).unwrap();
    spool.set_origin(origin("aa"));
    for i in 0..10 {
        spool.push(&events(1 + i * 20, 20)).unwrap();
        let batch = spool
            .next_batch(std::time::Duration::from_millis(10))
            .unwrap()
            .unwrap();
        assert_eq!(batch.info.origin.as_deref(), Some(&origin("aa")));
        spool.reject(batch.info.id).unwrap();
        let on_disk = spool.stats().bytes + dir_bytes(&dir.path().join("rejected"));
        assert!(on_disk <= max, "{on_disk} > {max} after {i} refusals");
    }
    assert_eq!(
        spool.dropped_reports(),
        [DroppedReport {
            instance: "aa".into(),
            reason: drop_reason::REFUSED.into(),
            events: 200,
            ranges: vec![(1, 200)],
            down: Vec::new(),
        }]
    );
    drop(spool);
    // The bound holds for what an earlier run left in rejected/ too.
    let spool = Spool::open(dir.path(), one * 2).unwrap();
    assert!(dir_bytes(&dir.path().join("rejected")) <= one * 2);
    assert_eq!(spool.dropped().events, 200, "the report survives a restart");
}

/// 14.8: a second agent cannot share a spool directory.
#[test]
fn a_spool_directory_has_one_user() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let err = Spool::open(dir.path(), 1 << 20).err().unwrap();
    assert!(matches!(err, SpoolError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("another agent"), "{err}");
    drop(spool);
    // Free again once closed. (A process another test forks at that moment
    // holds a copy of the descriptor until it executes: allow for it.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while let Err(err) = Spool::open(dir.path(), 1 << 20) {
        assert!(std::time::Instant::now() < deadline, "{err}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// 14.8: the dropped count saturates instead of wrapping at 2^64.
#[test]
fn the_dropped_count_saturates() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    for first in [1, 100] {
        spool
            .record_lost("aa", drop_reason::CRASH, first, first + 1, u64::MAX - 1)
            .unwrap();
    }
    assert_eq!(spool.dropped().events, u64::MAX);
    assert_eq!(spool.stats().unreported_dropped, u64::MAX);
}

/// Unmounts the tmpfs it mounted.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// 14.7: when the agent's own disk is full, the batch it could not spool
/// is reported as dropped (spool-write-failed), not left as a gap.
#[test]
#[cfg_attr(
    not(feature = "system-tests"),
    ignore = "root: mounts a tmpfs; scripts/test runs it"
)]
fn a_batch_the_full_disk_could_not_take_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount(dir.path().join("small"));
    std::fs::create_dir(&mount.0).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=96k", "tmpfs"])
        .arg(&mount.0)
        .status()
        .unwrap();
    assert!(status.success(), "mounting a small tmpfs (needs root)");
    let spool = Spool::open(&mount.0, u64::MAX).unwrap();
    spool.set_origin(origin("aa"));
    let mut next = 1;
    let lost = loop {
        let batch = events(next, 200);
        next += 200;
        match spool.push(&batch) {
            Ok(_) => assert!(next < 1_000_000, "the disk never filled"),
            Err(_) => break (next - 200, next - 1),
        }
    };
    let reports = spool.dropped_reports();
    let write_failed: Vec<_> = reports
        .iter()
        .filter(|r| r.reason == drop_reason::SPOOL_WRITE)
        .collect();
    assert_eq!(write_failed.len(), 1, "{reports:?}");
    assert_eq!(write_failed[0].instance, "aa");
    assert_eq!(write_failed[0].ranges, [lost]);
    assert_eq!(write_failed[0].events, 200);
}
