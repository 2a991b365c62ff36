//! [`Alerts`]: the collector's one [`AlertSink`]. It puts each drift alert
//! through the [`Gate`] (dedup per edge, rate limit) and hands what is to
//! be told to every channel. A small timer thread tells the rate limit's
//! summary when its period ends, even if no further alert comes to carry it.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::gate::{Gate, Verdict};
use crate::{Alert, AlertError, AlertSink, Channel, DriftAlert, MoreDrift};

/// An edge is told once per day by default.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Alerts per minute, all edges together, before the rest are summarised.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 10;

/// How much is told.
#[derive(Debug, Clone, Copy)]
pub struct AlertSettings {
    /// An edge already told is not told again within this time.
    pub dedup_window: Duration,
    /// At most this many alerts per `rate_period`; 0 tells none one by one
    /// (only the summaries).
    pub rate: u32,
    /// One minute from the collector's flags; shorter in tests.
    pub rate_period: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            dedup_window: DEFAULT_DEDUP_WINDOW,
            rate: DEFAULT_RATE_PER_MINUTE,
            rate_period: Duration::from_secs(60),
        }
    }
}

struct Shared {
    gate: Mutex<GateState>,
    wake: Condvar,
    channels: Vec<Box<dyn Channel>>,
}

struct GateState {
    gate: Gate,
    stopping: bool,
}

pub struct Alerts {
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
}

impl Alerts {
    pub fn new(
        settings: AlertSettings,
        channels: Vec<Box<dyn Channel>>,
    ) -> Result<Alerts, AlertError> {
        let gate = Gate::new(
            settings.dedup_window,
            settings.rate,
            settings.rate_period,
            Instant::now(),
        );
        let shared = Arc::new(Shared {
            gate: Mutex::new(GateState {
                gate,
                stopping: false,
            }),
            wake: Condvar::new(),
            channels,
        });
        let timer_shared = shared.clone();
        let timer = std::thread::Builder::new()
            .name("alert summaries".into())
            .spawn(move || tell_summaries(&timer_shared))
            .map_err(AlertError::Thread)?;
        Ok(Alerts {
            shared,
            timer: Some(timer),
        })
    }
}

impl Shared {
    fn tell(&self, alert: Alert) {
        for channel in &self.channels {
            channel.deliver(alert.clone());
        }
    }

    fn tell_summary(&self, summary: Option<MoreDrift>) {
        if let Some(summary) = summary {
            self.tell(Alert::MoreDrift(summary));
        }
    }
}

/// The timer thread: sleeps until a waiting summary is due, tells it.
fn tell_summaries(shared: &Shared) {
    let mut state = shared.gate.lock().expect("alert gate poisoned");
    loop {
        if state.stopping {
            let pending = state.gate.take_pending();
            drop(state);
            shared.tell_summary(pending);
            return;
        }
        let now = Instant::now();
        match state.gate.summary_deadline() {
            Some(deadline) if deadline <= now => {
                let summary = state.gate.due(now);
                drop(state);
                shared.tell_summary(summary);
                state = shared.gate.lock().expect("alert gate poisoned");
            }
            Some(deadline) => {
                state = shared
                    .wake
                    .wait_timeout(state, deadline - now)
                    .expect("alert gate poisoned")
                    .0;
            }
            None => state = shared.wake.wait(state).expect("alert gate poisoned"),
        }
    }
}

impl AlertSink for Alerts {
    fn send(&self, alert: &DriftAlert) {
        let (verdict, summary) = {
            let mut state = self.shared.gate.lock().expect("alert gate poisoned");
            state.gate.admit(alert, Instant::now())
        };
        self.shared.tell_summary(summary);
        match verdict {
            Verdict::Tell => self.shared.tell(Alert::Drift(alert.clone())),
            // The timer may be waiting with no deadline: give it one.
            Verdict::Suppressed => self.shared.wake.notify_all(),
            Verdict::Duplicate => {}
        }
    }
}

impl Drop for Alerts {
    /// Tells the summary still waiting, so a shutdown loses no count.
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.gate.lock() {
            state.stopping = true;
        }
        self.shared.wake.notify_all();
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }
}
