//! From received packets to stored events: each packet's envelope and tcpspy
//! message read, its direction inferred, and the events stored per sending
//! host in batches (by count or after a short delay).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use connscope_event::{ConnectionEvent, Timestamp};
use connscope_store::{AgentId, EventKey, KeyedEvent, Store, StoreError};
use connscope_tcpspy_log::{Message, Origin, Parser};
use tokio::sync::mpsc;

use super::direction::{add_learned, learn_directions, Directions};
use super::envelope::{parse_envelope, resolve_classic, EnvelopeTime};
use crate::counters::Counters;
use crate::drift::DriftCheck;
use crate::kit::cut_echo;
use crate::live::{IngestNotice, Notices};

/// Events are stored in batches of at most this many...
const BATCH_EVENTS: usize = 2000;
/// ...or after this long, whichever comes first.
const BATCH_DELAY: Duration = Duration::from_millis(100);

/// A syslog message as it came in.
pub(super) struct Received {
    pub packet: Vec<u8>,
    pub peer: IpAddr,
    pub at: Timestamp,
}

/// What one received message turned into.
pub(super) enum Outcome {
    Event {
        host: String,
        event: Box<KeyedEvent>,
    },
    /// A tcpspy/connscope status message: nothing to store.
    Notice,
    Ignored,
    Unreadable(String),
}

pub(super) fn interpret(
    parser: &mut Parser<'_>,
    directions: &mut Directions,
    received: &Received,
) -> Outcome {
    let envelope = match parse_envelope(&received.packet) {
        Ok(envelope) => envelope,
        // Not syslog at all: not ours to judge, like another program's line.
        Err(_) => return Outcome::Ignored,
    };
    let Some(origin) = envelope.program.and_then(Origin::from_tag) else {
        return Outcome::Ignored;
    };
    // An empty HOSTNAME says no more than a missing one: the sender's address.
    let host = envelope
        .host
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| received.peer.to_string());
    if let Err(reason) = crate::auth::check_host_name(&host) {
        return Outcome::Unreadable(format!("host {host:?}: {reason}"));
    }
    let timestamp = match envelope.time {
        EnvelopeTime::Exact(t) => t,
        EnvelopeTime::Missing => received.at,
        EnvelopeTime::Classic(c) => match resolve_classic(c, received.at) {
            Some(t) => t,
            None => return Outcome::Unreadable(format!("time {c} does not exist here")),
        },
    };
    match parser.parse_message(origin, envelope.message) {
        Ok(Message::Connection(c)) => {
            let mut event = c.to_event(timestamp, &host);
            let key = EventKey::of_event(&event);
            directions.infer(&mut event);
            Outcome::Event {
                event: Box::new(KeyedEvent {
                    key,
                    key_time: event.timestamp,
                    event,
                }),
                host,
            }
        }
        Ok(Message::Notice(_)) => Outcome::Notice,
        Err(e) => Outcome::Unreadable(format!("from {host}: {e}")),
    }
}

pub(super) async fn write_events(
    mut rx: mpsc::Receiver<Received>,
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    notices: Notices,
    drift: DriftCheck,
) {
    let mut parser = Parser::default();
    let (mut directions, mut learning) = learn_directions(&store).await;
    let mut pending: BTreeMap<String, Vec<KeyedEvent>> = BTreeMap::new();
    let mut pending_count = 0;
    loop {
        let next = if pending_count == 0 {
            rx.recv().await
        } else {
            match tokio::time::timeout(BATCH_DELAY, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(&mut pending, &store, &counters, &notices, &drift).await;
                    pending_count = 0;
                    continue;
                }
            }
        };
        let Some(received) = next else { break };
        add_learned(&mut directions, &mut learning);
        match interpret(&mut parser, &mut directions, &received) {
            Outcome::Event { host, event } => {
                pending.entry(host).or_default().push(*event);
                pending_count += 1;
            }
            Outcome::Notice => {}
            Outcome::Ignored => {
                counters.syslog_ignored.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Unreadable(reason) => {
                counters.syslog_unreadable.fetch_add(1, Ordering::Relaxed);
                let reason = cut_echo(reason);
                tracing::warn!(%reason, "unreadable tcpspy syslog message");
            }
        }
        if pending_count >= BATCH_EVENTS {
            flush(&mut pending, &store, &counters, &notices, &drift).await;
            pending_count = 0;
        }
    }
    flush(&mut pending, &store, &counters, &notices, &drift).await;
}

async fn flush(
    pending: &mut BTreeMap<String, Vec<KeyedEvent>>,
    store: &Arc<dyn Store>,
    counters: &Counters,
    notices: &Notices,
    drift: &DriftCheck,
) {
    for (host, events) in std::mem::take(pending) {
        let agent = AgentId(format!("syslog@{host}"));
        let (store, drift) = (store.clone(), drift.clone());
        let result = tokio::task::spawn_blocking(move || {
            let report = store.ingest_keyed(&agent, &events)?;
            let events: Vec<ConnectionEvent> = events.into_iter().map(|k| k.event).collect();
            let notice = IngestNotice::of("syslog", &agent.0, &events, &report);
            if report.stored > 0 {
                drift.check_batch(store.as_ref(), &events);
            }
            Ok::<_, StoreError>((report, notice))
        })
        .await;
        match result {
            Ok(Ok((report, notice))) => {
                if let Some(notice) = notice {
                    notices.publish(notice);
                }
                counters
                    .syslog_events_stored
                    .fetch_add(report.stored, Ordering::Relaxed);
                counters
                    .syslog_events_duplicate
                    .fetch_add(report.duplicates, Ordering::Relaxed);
            }
            Ok(Err(e)) => tracing::error!(%host, error = %e, "cannot store syslog events"),
            Err(e) => tracing::error!(%host, error = %e, "syslog store task failed"),
        }
    }
}
