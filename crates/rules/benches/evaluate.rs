//! Rule evaluation, the agent's per-connection cost: the compiled program
//! (`RuleSet::matches`) against walking the parse tree
//! (`Rule::matches_by_tree_walk`), on the tcpspy man page's longest example and
//! on an exe rule full of globs. Throughput is reported in evaluations/s.

use std::hint::black_box;
use std::sync::Arc;

use connscope_event::{ConnectionEvent, Direction, EventKind, ProcessInfo, Protocol, Timestamp};
use connscope_rules::{ExeComparisons, RuleSet};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A spread of connections that leave the man page rule at different points.
fn events() -> Vec<ConnectionEvent> {
    let exes = [
        "/usr/sbin/postfix/smtp",
        "/usr/bin/python3.11",
        "/usr/lib/jvm/java-17/bin/java",
        "/home/alice/.local/bin/tool",
        "/opt/app/worker7",
        "/usr/sbin/sshd",
        "/usr/lib/firefox/firefox",
        "/usr/local/bin/custom-agent",
    ];
    let mut out = Vec::new();
    for (i, (remote, uid)) in [
        ("192.0.2.1:25", 1001),
        ("192.0.2.1:25", 1002),
        ("10.1.2.3:25", 1001),
        ("192.0.2.1:443", 1001),
        ("192.0.2.1:25", 1003),
        ("[2001:db8::1]:25", 1002),
        ("198.51.100.7:25", 1002),
        ("203.0.113.9:22", 0),
    ]
    .into_iter()
    .enumerate()
    {
        let local = if remote.starts_with('[') {
            "[2001:db8::2]:40000"
        } else {
            "192.168.1.2:40000"
        };
        let mut ev = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(0),
            Protocol::Tcp,
            Direction::Outgoing,
            local.parse().unwrap(),
            remote.parse().unwrap(),
        );
        ev.uid = Some(uid);
        ev.process = Some(Arc::new(ProcessInfo {
            pid: 100 + i as u32,
            executable: Some(exes[i].to_owned()),
            comm: None,
            ..ProcessInfo::default()
        }));
        out.push(ev);
    }
    out
}

fn bench_rule(c: &mut Criterion, name: &str, rule: &str) {
    let rules = match RuleSet::builder().add_expr("-e #1", rule).build() {
        Ok(rules) => rules,
        Err(err) => {
            eprintln!("skipping {name}: {err}");
            return;
        }
    };
    let events = events();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("compiled", |b| {
        b.iter(|| {
            for ev in &events {
                black_box(rules.matches(black_box(ev)));
            }
        })
    });
    let tree = &rules.rules()[0];
    group.bench_function("tree_walk", |b| {
        b.iter(|| {
            for ev in &events {
                black_box(tree.matches_by_tree_walk(black_box(ev), ExeComparisons::Evaluate));
            }
        })
    });
    group.finish();
}

fn evaluate(c: &mut Criterion) {
    bench_rule(
        c,
        "man_page_numeric_uids",
        "not raddr 10.0.0.0/255.0.0.0 and rport 25 and (user 1001 or user 1002)",
    );
    // Only where users bob and joe exist (the binary's tests create them).
    bench_rule(
        c,
        "man_page_named_users",
        r#"not raddr 10.0.0.0/255.0.0.0 and rport 25 and (user "bob" or user "joe")"#,
    );
    bench_rule(
        c,
        "exe_globs",
        r#"exe "/usr/lib/*/bin/*" or exe "/opt/*/worker[0-9]" or exe "/usr/bin/python3*" or exe "/home/*/.local/bin/*" or exe "/usr/local/bin/*-agent" or exe "/usr/sbin/[a-r]*""#,
    );
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
