//! A bounded queue drained by one thread: how every channel delivers
//! without making `send` wait. When the receiver is slow or down and the
//! queue is full, new alerts are dropped and counted in the log, never
//! queued without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use crate::AlertError;

/// Alerts waiting per channel at most.
pub(crate) const QUEUE_CAPACITY: usize = 1024;

pub(crate) struct Queue<T> {
    name: String,
    tx: SyncSender<T>,
    dropped: AtomicU64,
}

impl<T: Send + 'static> Queue<T> {
    /// Starts the thread; it ends when the queue is dropped and drained.
    pub(crate) fn spawn(
        name: String,
        mut work: impl FnMut(T) + Send + 'static,
    ) -> Result<Queue<T>, AlertError> {
        let (tx, rx) = sync_channel::<T>(QUEUE_CAPACITY);
        std::thread::Builder::new()
            .name(format!("alert {name}"))
            .spawn(move || {
                for item in rx {
                    work(item);
                }
            })
            .map_err(AlertError::Thread)?;
        Ok(Queue {
            name,
            tx,
            dropped: AtomicU64::new(0),
        })
    }

    pub(crate) fn push(&self, item: T) {
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // 1, 2, 4, 8...: a long outage is a few lines, not one per alert.
                if dropped.is_power_of_two() {
                    tracing::warn!(channel = %self.name, dropped, "alert queue full: alerts dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!(channel = %self.name, "alert thread gone: alert dropped");
            }
        }
    }
}
