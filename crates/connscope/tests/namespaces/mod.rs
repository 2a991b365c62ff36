//! What the system tests that run hosts as network namespaces share: the
//! namespaces and processes they make (cleaned up on drop, also on panic),
//! names unique per run, and polling with a deadline.
//!
//! Each test binary uses a part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

/// A network namespace made by this test, deleted on drop (also on panic).
pub struct Netns(pub String);

impl Netns {
    pub fn new(name: String) -> Netns {
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0]).arg(program);
        cmd
    }

    /// Runs `f` on a thread inside the namespace (sockets made there stay
    /// in it).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: a namespace fd; setns changes this thread only.
                    assert_eq!(
                        unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
                        0
                    );
                    f()
                })
                .join()
                .unwrap()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process this test started, killed on drop.
pub struct Proc {
    pub child: Child,
    pub what: String,
}

impl Proc {
    pub fn spawn(mut cmd: Command, what: &str) -> Proc {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        Proc {
            child,
            what: what.to_owned(),
        }
    }

    /// The pid of the process `ip netns exec` became (it execs, keeping the pid).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    /// SIGTERM and wait (bounded), as a service manager would stop it.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                std::mem::forget(self);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} did not stop on SIGTERM", self.what);
    }

    pub fn wait(mut self) -> bool {
        let ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        std::mem::forget(self);
        ok
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    wait_for_or(what, timeout, String::new, condition);
}

/// Polls `condition`; on timeout, fails with `state()` to show what was there.
pub fn wait_for_or(
    what: &str,
    timeout: Duration,
    state: impl Fn() -> String,
    mut condition: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            state()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first line of `out` that `pick` takes (what it made of it), waiting up
/// to a minute for `what`. The rest of `out` is read and dropped, so the
/// process never writes into a closed pipe.
pub fn first_line<T: Send + 'static>(
    out: impl Read + Send + 'static,
    what: &str,
    pick: impl Fn(&str) -> Option<T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(picked) = pick(&line) {
                let _ = tx.send(picked);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A `connscope agent` writing its events as JSON lines to `output` and its
/// log to `stderr`; stopped when dropped.
pub struct JsonAgent {
    proc: Option<Proc>,
    output: std::path::PathBuf,
    stderr: std::path::PathBuf,
}

impl JsonAgent {
    /// Runs `command` (an agent told `--output output`), its log (at
    /// `info`) in `stderr`.
    pub fn spawn(
        mut command: Command,
        output: std::path::PathBuf,
        stderr: std::path::PathBuf,
    ) -> JsonAgent {
        command
            .env("CONNSCOPE_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        JsonAgent {
            proc: Some(Proc::spawn(command, "agent")),
            output,
            stderr,
        }
    }

    /// [`JsonAgent::spawn`], then waits until the agent monitors connections.
    pub fn start(
        command: Command,
        output: std::path::PathBuf,
        stderr: std::path::PathBuf,
        timeout: Duration,
    ) -> JsonAgent {
        let agent = JsonAgent::spawn(command, output, stderr);
        wait_for_or(
            "the agent",
            timeout,
            || agent.log(),
            || agent.log().contains("monitoring connections"),
        );
        agent
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn events(&self) -> Vec<connscope_event::ConnectionEvent> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| connscope_event::json::from_json_line(line).ok())
            .collect()
    }

    /// The first event `which` picks, waited for up to `timeout`.
    pub fn first(
        &self,
        what: &str,
        timeout: Duration,
        which: impl Fn(&connscope_event::ConnectionEvent) -> bool,
    ) -> connscope_event::ConnectionEvent {
        let mut found = None;
        wait_for_or(
            what,
            timeout,
            || format!("{:#?}\n{}", self.events(), self.log()),
            || {
                found = self.events().into_iter().find(&which);
                found.is_some()
            },
        );
        found.unwrap()
    }

    pub fn stop(mut self) {
        self.proc.take().unwrap().stop();
    }
}

impl Drop for JsonAgent {
    fn drop(&mut self) {
        if let Some(proc) = self.proc.take() {
            proc.stop();
        }
    }
}
