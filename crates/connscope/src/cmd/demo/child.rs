//! The demo's child processes: each one stopped when the demo stops, whatever
//! way it stops.
//!
//! Dropping a [`Child`] stops it with SIGTERM (then SIGKILL after a grace
//! period), which covers a normal end, an error and a panic. A demo killed
//! with SIGKILL runs no destructor, so every child is also started with the
//! kernel's parent-death signal: the kernel sends it SIGTERM when the demo
//! dies. `ip netns exec` keeps that setting when it executes its program.
//!
//! Children run in process groups of their own, so a Ctrl-C in the terminal
//! reaches the demo alone, which then stops them in order: the agents must
//! flush to a collector that still runs.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a child may take to stop on SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// From now on SIGINT and SIGTERM ask the demo to stop ([`stop_requested`]).
pub fn stop_on_signals() -> Result<()> {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::Handler(request_stop))
        }
        .context("installing the signal handler")?;
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM has come.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// A running child process, stopped when dropped.
pub struct Child {
    what: String,
    child: std::process::Child,
}

impl Child {
    /// Starts `command`, which dies with the demo.
    pub fn spawn(mut command: Command, what: impl Into<String>) -> Result<Child> {
        let what = what.into();
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        command.process_group(0);
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {what} ({command:?})"))?;
        Ok(Child { what, child })
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    pub fn stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Whether it is still running (reaps it when it has ended).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn terminate(&self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
    }

    /// Waits until it has ended, killing it at `deadline`.
    fn reap(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(what = %self.what, "did not stop on SIGTERM; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.running() {
            self.terminate();
            self.reap(Instant::now() + GRACE);
        }
    }
}

/// Stops all of `children` at once: SIGTERM to each, then one grace period
/// for all (dropping them one by one would wait for each in turn).
pub fn stop_all(children: &mut Vec<Child>) {
    for child in children.iter_mut() {
        if child.running() {
            child.terminate();
        }
    }
    let deadline = Instant::now() + GRACE;
    for child in children.iter_mut() {
        child.reap(deadline);
    }
    children.clear();
}
