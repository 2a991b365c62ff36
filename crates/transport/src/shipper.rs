//! The shipper thread: oldest spooled batch -> collector -> delete, forever.
//!
//! It is the only reader of the spool, so batches go out in order, one at a
//! time, and a batch is deleted only after the collector answered that it is
//! stored (at least once; the collector deduplicates by sequence). Failures
//! back off exponentially with jitter, so a fleet of agents does not hammer a
//! collector that just came back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::client::CollectorClient;
use crate::spool::Spool;

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle shipper looks at the stop flag.
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Counters since the shipper started.
#[derive(Debug, Default)]
pub struct ShipperCounters {
    pub batches_sent: AtomicU64,
    pub events_stored: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub failures: AtomicU64,
    pub batches_rejected: AtomicU64,
    /// When the collector last took a batch (Unix nanoseconds; 0: not yet).
    pub last_success_unix_nanos: AtomicU64,
}

/// Exponential backoff with full jitter between `MIN_BACKOFF` and `MAX_BACKOFF`.
struct Backoff {
    current: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            current: MIN_BACKOFF,
        }
    }

    fn reset(&mut self) {
        self.current = MIN_BACKOFF;
    }

    fn next_wait(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(MAX_BACKOFF);
        // Jitter from the clock's low bits: good enough to spread a fleet out,
        // and no random number generator to depend on.
        let noise = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let fraction = 0.5 + f64::from(noise % 1000) / 2000.0;
        ceiling.mul_f64(fraction)
    }
}

struct Control {
    stop: AtomicBool,
    /// When stopping: keep sending until the spool is empty or this passes.
    flush_until: Mutex<Option<Instant>>,
}

impl Control {
    fn should_exit(&self, spool: &Spool) -> bool {
        if !self.stop.load(Ordering::Acquire) {
            return false;
        }
        let deadline = *self.flush_until.lock().unwrap_or_else(|e| e.into_inner());
        match deadline {
            Some(deadline) => Instant::now() >= deadline || spool.stats().batches == 0,
            None => true,
        }
    }

    /// Sleeps `wait`, waking early when the stop's flush time is over.
    fn sleep(&self, wait: Duration) {
        let until = Instant::now() + wait;
        loop {
            let now = Instant::now();
            let flush_over = self.stop.load(Ordering::Acquire)
                && self
                    .flush_until
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none_or(|deadline| now >= deadline);
            if now >= until || flush_over {
                return;
            }
            std::thread::sleep((until - now).min(IDLE_WAIT));
        }
    }
}

/// The running shipper thread; stopping it leaves unsent batches in the spool.
pub struct Shipper {
    control: Arc<Control>,
    counters: Arc<ShipperCounters>,
    spool: Arc<Spool>,
    thread: Option<JoinHandle<()>>,
}

impl Shipper {
    pub fn start(spool: Arc<Spool>, client: CollectorClient) -> std::io::Result<Shipper> {
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            flush_until: Mutex::new(None),
        });
        let counters = Arc::new(ShipperCounters::default());
        let thread = std::thread::Builder::new().name("shipper".into()).spawn({
            let (spool, control, counters) = (spool.clone(), control.clone(), counters.clone());
            move || run(&spool, client, &control, &counters)
        })?;
        Ok(Shipper {
            control,
            counters,
            spool,
            thread: Some(thread),
        })
    }

    pub fn counters(&self) -> &ShipperCounters {
        &self.counters
    }

    /// The counters, to read from another thread (the agent's `/metrics`).
    pub fn shared_counters(&self) -> Arc<ShipperCounters> {
        self.counters.clone()
    }

    /// Stops the thread after trying for at most `flush_for` to send what is
    /// spooled; whatever is left stays on disk for the next start.
    pub fn stop(mut self, flush_for: Duration) {
        self.halt(flush_for);
    }

    fn halt(&mut self, flush_for: Duration) {
        *self
            .control
            .flush_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + flush_for);
        self.control.stop.store(true, Ordering::Release);
        self.spool.close();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the shipper thread panicked");
            }
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.halt(Duration::ZERO);
    }
}

fn run(spool: &Spool, mut client: CollectorClient, control: &Control, counters: &ShipperCounters) {
    let mut backoff = Backoff::new();
    let mut failing = false;
    while !control.should_exit(spool) {
        if !report_dropped(spool, &mut client, counters) {
            let wait = backoff.next_wait();
            control.sleep(wait);
            continue;
        }
        let batch = match spool.next_batch(IDLE_WAIT) {
            Ok(Some(batch)) => batch,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool");
                control.sleep(backoff.next_wait());
                continue;
            }
        };
        let info = batch.info;
        match client.post_batch_from(batch.body, info.origin.as_deref()) {
            Ok(answer) => {
                if failing {
                    tracing::info!("collector reachable again");
                    failing = false;
                }
                backoff.reset();
                counters.batches_sent.fetch_add(1, Ordering::Relaxed);
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                counters
                    .last_success_unix_nanos
                    .store(now, Ordering::Relaxed);
                counters
                    .events_stored
                    .fetch_add(answer.stored, Ordering::Relaxed);
                counters
                    .events_duplicate
                    .fetch_add(answer.duplicates, Ordering::Relaxed);
                if answer.conflicts > 0 {
                    tracing::error!(
                        conflicts = answer.conflicts,
                        first_sequence = info.first_sequence,
                        last_sequence = info.last_sequence,
                        "the collector holds other events under some of these sequence numbers"
                    );
                }
                if let Err(e) = spool.acknowledge(info.id) {
                    tracing::error!(error = %e, "cannot delete a shipped batch (it will be sent again)");
                }
            }
            Err(e) if e.is_permanent() => {
                counters.batches_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    error = %e,
                    first_sequence = info.first_sequence,
                    last_sequence = info.last_sequence,
                    "the collector refused a batch; kept in the spool's rejected/ folder \
                     and reported as dropped"
                );
                if let Err(e) = spool.reject(info.id) {
                    tracing::error!(error = %e, "cannot set the refused batch aside");
                    control.sleep(backoff.next_wait());
                }
            }
            Err(e) => {
                spool.release(info.id);
                counters.failures.fetch_add(1, Ordering::Relaxed);
                let wait = backoff.next_wait();
                if !failing {
                    tracing::warn!(error = %e, retry_in = ?wait, "cannot ship to the collector; events stay spooled");
                    failing = true;
                } else {
                    tracing::debug!(error = %e, retry_in = ?wait, "still cannot ship");
                }
                control.sleep(wait);
            }
        }
    }
}

/// Sends the spool's unreported drops, one report per instance and reason;
/// false when the collector could not take one (to retry after a wait).
fn report_dropped(spool: &Spool, client: &mut CollectorClient, counters: &ShipperCounters) -> bool {
    for report in spool.dropped_reports() {
        if let Err(e) = client.post_dropped(&report) {
            counters.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot report dropped events; will retry");
            return false;
        }
        tracing::info!(
            events = report.events,
            reason = %report.reason,
            "reported dropped events to the collector"
        );
        if let Err(e) = spool.dropped_reported(&report) {
            tracing::error!(error = %e, "cannot update the spool's dropped record");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_ceiling_and_resets() {
        let mut backoff = Backoff::new();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = backoff.next_wait();
            assert!(last <= MAX_BACKOFF);
        }
        assert!(last >= MAX_BACKOFF / 2, "{last:?}");
        backoff.reset();
        assert!(backoff.next_wait() <= MIN_BACKOFF);
    }
}
