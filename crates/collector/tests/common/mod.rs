//! What the collector's integration tests share: a real collector on its own
//! runtime thread, and bounded waiting.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connscope_collector::{Collector, CollectorConfig, Counters};
use connscope_protocol::Fingerprint;
use connscope_store::Store;

/// A collector running on its own runtime thread, stopped on drop.
pub struct Running {
    pub addr: SocketAddr,
    /// The syslog listener's address, when the config asked for one.
    pub syslog: Option<SocketAddr>,
    pub fingerprint: Fingerprint,
    pub cert: PathBuf,
    pub counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn start(config: CollectorConfig, store: Arc<dyn Store>) -> Running {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let collector = Collector::bind(config, store).await.unwrap();
                ready_tx
                    .send((
                        collector.local_addr(),
                        collector.syslog_addr(),
                        collector.fingerprint(),
                        collector.certificate_path().to_owned(),
                        collector.counters(),
                    ))
                    .unwrap();
                collector
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let (addr, syslog, fingerprint, cert, counters) =
            ready_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        Running {
            addr,
            syslog,
            fingerprint,
            cert,
            counters,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `curl` against this collector, trusting its certificate: (status,
    /// body) of `path` with `token` as the bearer, `extra` curl arguments (a
    /// method, a body) first.
    pub fn curl(&self, path: &str, token: Option<&str>, extra: &[&str]) -> (u16, String) {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(extra)
            .args(["--silent", "--show-error", "--max-time", "60", "--cacert"])
            .arg(&self.cert)
            .args(["--write-out", "\n%{http_code}"])
            .arg(format!("{}{path}", self.url()));
        if let Some(token) = token {
            cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        let out = cmd.output().expect("curl is installed");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, status) = text.rsplit_once('\n').unwrap();
        (status.trim().parse().unwrap(), body.to_owned())
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `condition` until it holds, failing the test after a minute.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
