//! Shared by the integration tests: flows to plan from, and throw-away network
//! namespaces (unique names, removed on drop) so nothing touches the host's
//! own firewall.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use connscope_event::{Protocol, Timestamp};
use connscope_firewall::test_support::FlowBuilder;
use connscope_firewall::{FlowDirection, ObservedFlow};
use nix::sched::{setns, CloneFlags};

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

/// Runs `f` on a thread that has entered `ns`; sockets made there stay in it.
pub fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        setns(&file, CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Connects, exchanges a byte with the server thread, and reports success.
pub fn try_connect(ns: &Netns, to: SocketAddr) -> Result<SocketAddr, String> {
    in_ns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"x").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok(s.local_addr().unwrap())
    })
}

/// Serves echo-one-byte on `listener` until it is dropped with the test.
pub fn serve(listener: TcpListener) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    });
}

pub fn listen(ns: &Netns, addr: &str) -> SocketAddr {
    let addr: SocketAddr = addr.parse().unwrap();
    let listener = in_ns(ns, move || TcpListener::bind(addr).unwrap());
    let local = listener.local_addr().unwrap();
    serve(listener);
    local
}
