//! The socket-owner walk over every open file on the machine: the
//! hand-written readlink walk the backends use, against the same walk through
//! the `procfs` crate (which opens, reads and stats each file descriptor).
//! This is why `connscope_capture::sockets` keeps its own walk.
//!
//! Run: `cargo bench -p connscope-capture --bench socket_owners` (as root, to
//! see every process's files).

use std::collections::HashMap;
use std::hint::black_box;

use connscope_capture::sockets::socket_owners;
use criterion::{criterion_group, criterion_main, Criterion};
use procfs::process::{all_processes, FDTarget};

/// Socket inode -> lowest pid, through the crate.
fn socket_owners_through_procfs() -> HashMap<u64, u32> {
    let mut owners = HashMap::new();
    for process in all_processes().unwrap().flatten() {
        let pid = process.pid() as u32;
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target {
                owners
                    .entry(inode)
                    .and_modify(|owner: &mut u32| *owner = (*owner).min(pid))
                    .or_insert(pid);
            }
        }
    }
    owners
}

fn walk(c: &mut Criterion) {
    let mut group = c.benchmark_group("socket_owners");
    group.sample_size(20);
    group.bench_function("hand-written", |b| {
        b.iter(|| black_box(socket_owners(|| Ok::<_, ()>(())).unwrap()))
    });
    group.bench_function("procfs crate", |b| {
        b.iter(|| black_box(socket_owners_through_procfs()))
    });
    group.finish();
}

criterion_group!(benches, walk);
criterion_main!(benches);
