//! Shared by the integration tests: flows to plan from, and throw-away network
//! namespaces (unique names, removed on drop) so nothing touches the host's
//! own firewall.

#![allow(dead_code)] // each test binary uses a different part

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use connscope_event::{Protocol, Timestamp};
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{FlowDirection, ObservedFlow};

pub fn flow(
    direction: FlowDirection,
    protocol: Protocol,
    local: &str,
    remote: &str,
    port: u16,
    n: u64,
) -> ObservedFlow {
    FlowBuilder::new(direction, local, remote, port)
        .protocol(protocol)
        .connections(n)
        .seen(
            Timestamp::from_nanos(1_795_548_137_000_000_000),
            Timestamp::from_nanos(1_795_648_137_000_000_000),
        )
        .processes(["/usr/sbin/sshd"])
        .users(["root"])
        .build()
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace that exists while the value lives.
pub struct Netns {
    pub name: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!(
            "csfw-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    pub fn exec(&self, args: &[&str]) -> String {
        ok(&mut self.cmd(args))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
