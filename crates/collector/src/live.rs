//! Live notices for `GET /api/v1/events/stream`: after every batch that
//! stored something (an agent's, or a flush of syslog messages) the collector
//! says so, in a few bytes, to whoever follows the stream.
//!
//! A notice carries counts and the batch's time span, not the events: the map
//! only needs to know *that* and *when* to refetch its aggregated graph, and a
//! stream of raw events would cost every follower what the store already did.
//!
//! Ingest must never wait for a slow reader, so the notices go through a
//! bounded [`tokio::sync::broadcast`] channel: `send` never blocks, and a
//! follower that falls more than [`CAPACITY`] notices behind loses the oldest
//! and gets a `resync` event instead (refetch everything).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use connscope_event::ConnectionEvent;
use connscope_store::IngestReport;
use futures_util::stream::{self, Stream, StreamExt};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// How many notices a follower may fall behind before it is told to resync.
pub const CAPACITY: usize = 256;
/// A comment line this often keeps proxies and idle timeouts from closing the stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What one stored batch changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestNotice {
    /// `agent` (HTTPS ingest) or `syslog`.
    pub source: &'static str,
    /// The agent id the events are stored under (`syslog@HOST` for syslog).
    pub agent: String,
    /// Events newly stored.
    pub stored: u64,
    /// Events of the batch already stored before.
    pub duplicates: u64,
    /// Earliest event time in the batch (RFC 3339).
    pub first: String,
    /// Latest event time in the batch (RFC 3339).
    pub last: String,
}

impl IngestNotice {
    /// The notice for a stored batch, or `None` when it stored nothing new
    /// (a resent batch changes nothing a follower could see).
    pub fn of(
        source: &'static str,
        agent: &str,
        events: &[ConnectionEvent],
        report: &IngestReport,
    ) -> Option<IngestNotice> {
        if report.stored == 0 {
            return None;
        }
        let first = events.iter().map(|e| e.timestamp).min()?;
        let last = events.iter().map(|e| e.timestamp).max()?;
        Some(IngestNotice {
            source,
            agent: agent.to_owned(),
            stored: report.stored,
            duplicates: report.duplicates,
            first: first.to_string(),
            last: last.to_string(),
        })
    }
}

/// The sending side, shared by the ingest handler and the syslog writer.
#[derive(Debug, Clone)]
pub struct Notices {
    sender: broadcast::Sender<IngestNotice>,
}

impl Default for Notices {
    fn default() -> Notices {
        Notices {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Notices {
    /// Tells every follower; never waits (nobody following is fine too).
    pub fn publish(&self, notice: IngestNotice) {
        let _ = self.sender.send(notice);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<IngestNotice> {
        self.sender.subscribe()
    }
}

/// One follower's event stream: `ready` first, then an `ingest` event per
/// notice (JSON data), `resync` after lost notices; ends when the collector
/// stops.
pub(crate) fn follow(
    notices: &Notices,
    stop: watch::Receiver<bool>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = notices.subscribe();
    let ready = stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let updates = stream::unfold((receiver, stop), |(mut receiver, mut stop)| async move {
        if *stop.borrow() {
            return None;
        }
        let event = tokio::select! {
            received = receiver.recv() => match received {
                Ok(notice) => notice_event(&notice),
                Err(broadcast::error::RecvError::Lagged(lost)) => Event::default()
                    .event("resync")
                    .data(format!("{{\"lost\":{lost}}}")),
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            _ = stop.changed() => return None,
        };
        Some((Ok(event), (receiver, stop)))
    });
    Sse::new(ready.chain(updates)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

fn notice_event(notice: &IngestNotice) -> Event {
    let data = serde_json::to_string(notice).expect("a notice is plain data");
    Event::default().event("ingest").data(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::test_support::EventBuilder;
    use connscope_event::Timestamp;

    fn event(ns: i64) -> ConnectionEvent {
        EventBuilder::connect("10.0.0.1:40000", "10.0.0.2:22")
            .at_nanos(ns)
            .build()
    }

    #[test]
    fn a_notice_spans_the_batch_and_only_new_events_count() {
        let events = [
            event(3_000_000_000),
            event(1_000_000_000),
            event(2_000_000_000),
        ];
        let report = IngestReport {
            stored: 2,
            duplicates: 1,
            ..IngestReport::default()
        };
        let notice = IngestNotice::of("agent", "web1", &events, &report).unwrap();
        assert_eq!(
            notice.first,
            Timestamp::from_nanos(1_000_000_000).to_string()
        );
        assert_eq!(
            notice.last,
            Timestamp::from_nanos(3_000_000_000).to_string()
        );
        assert_eq!((notice.stored, notice.duplicates), (2, 1));
        let resent = IngestReport {
            stored: 0,
            duplicates: 3,
            ..IngestReport::default()
        };
        assert_eq!(IngestNotice::of("agent", "web1", &events, &resent), None);
    }

    #[tokio::test]
    async fn a_lagging_follower_gets_resync_and_publishing_never_waits() {
        let notices = Notices::default();
        let mut slow = notices.subscribe();
        let report = IngestReport {
            stored: 1,
            duplicates: 0,
            ..IngestReport::default()
        };
        let notice = IngestNotice::of("agent", "a", &[event(1)], &report).unwrap();
        // Far more than the channel holds, with nobody reading: must not block.
        for _ in 0..CAPACITY * 4 {
            notices.publish(notice.clone());
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(n)) if n == (CAPACITY * 3) as u64
        ));
        assert_eq!(slow.recv().await.unwrap(), notice);
    }
}
