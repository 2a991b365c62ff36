//! Directions for the tcpspy lines the syslog listener receives.
//!
//! tcpspy does not log who connected. The importer infers it from endpoint
//! statistics, then port numbers ([`EndpointStats`]); the listener uses the
//! same rule, so a line gets the same direction whether it was imported from
//! a file or streamed — without this, a streamed sshd line took the sshd host
//! as the *client* of port 22. The evidence is what the store already holds
//! (its connects of the last [`LEARN_WINDOW`], counted once at start) and
//! every connect line received. A stream sees its evidence in time
//! order, an import all at once: they differ only on an endpoint's first
//! connections before it was seen twice (a service on a port above its
//! client's, see docs/API.md).
//!
//! A long-running listener would count every client's ephemeral port for
//! ever; above [`MAX_ENDPOINTS`] the endpoints seen once are forgotten (the
//! services are seen more often and stay), and the limit grows to twice
//! what is left, so forgetting stays rare when many endpoints are reused.

use std::sync::Arc;
use std::time::Duration;

use connscope_event::{ConnectionEvent, EventKind, Timestamp};
use connscope_store::{EventQuery, Store, StoreError, TimeRange};
use connscope_tcpspy_log::EndpointStats;

/// How far back the store's connects are counted at start: the default raw
/// event retention.
const LEARN_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// How long the listener waits for the store's counts before it goes on
/// without them.
const LEARN_WAIT: Duration = Duration::from_secs(2);
/// Events read from the store per query while learning.
const PAGE: usize = 50_000;
/// Endpoints counted before the single uses are forgotten.
const MAX_ENDPOINTS: usize = 1_000_000;

/// The listener's evidence of which endpoints are services.
#[derive(Debug)]
pub(crate) struct Directions {
    stats: EndpointStats,
    /// Endpoints counted before the single uses are forgotten.
    forget_above: usize,
}

impl Default for Directions {
    fn default() -> Self {
        Directions {
            stats: EndpointStats::default(),
            forget_above: MAX_ENDPOINTS,
        }
    }
}

impl Directions {
    /// Counts the connects `store` holds from `since` on.
    pub fn learn_from_store(store: &dyn Store, since: Timestamp) -> Result<Directions, StoreError> {
        let mut directions = Directions::default();
        let mut from = since;
        loop {
            let page = store.events(&EventQuery {
                range: TimeRange {
                    from,
                    to: TimeRange::ALL.to,
                },
                host: None,
                limit: PAGE,
            })?;
            let full = page.len() == PAGE;
            // A full page may stop in the middle of its last instant: those
            // events are counted with the next page, which starts there.
            let last = page.last().map(|e| e.timestamp);
            let counted = match (full, last) {
                (true, Some(last)) if page[0].timestamp < last => {
                    from = last;
                    page.iter().take_while(|e| e.timestamp < last).count()
                }
                (true, Some(last)) => {
                    from = Timestamp::from_nanos(last.as_nanos().saturating_add(1));
                    page.len()
                }
                _ => page.len(),
            };
            page[..counted].iter().for_each(|e| directions.observe(e));
            if !full {
                return Ok(directions);
            }
        }
    }

    /// Adds the counts of `learned`.
    pub fn merge(&mut self, learned: Directions) {
        self.stats.merge(learned.stats);
        self.bound_memory();
    }

    /// Counts `event` as evidence (when it is a connect) and gives it its
    /// direction, seen from its local end.
    pub fn infer(&mut self, event: &mut ConnectionEvent) {
        self.observe(event);
        event.direction = self.stats.direction(event.local, event.remote);
    }

    fn observe(&mut self, event: &ConnectionEvent) {
        if event.kind != EventKind::Connect {
            return;
        }
        self.stats.observe_connect(event.local, event.remote);
        self.bound_memory();
    }

    fn bound_memory(&mut self) {
        if self.stats.len() > self.forget_above {
            self.stats.forget_single_uses();
            self.forget_above = MAX_ENDPOINTS.max(2 * self.stats.len());
        }
    }

    /// How many endpoints are counted.
    pub fn endpoints(&self) -> usize {
        self.stats.len()
    }
}

/// The store's evidence for directions, being counted ([`Directions::learn_from_store`]).
pub(crate) type Learning = tokio::sync::oneshot::Receiver<Result<Directions, StoreError>>;

/// Starts counting the store's evidence for directions and waits for it at
/// most [`LEARN_WAIT`]: the directions to start with, and the counting
/// still under way, if it is.
pub(crate) async fn learn_directions(store: &Arc<dyn Store>) -> (Directions, Option<Learning>) {
    let store = store.clone();
    let since = Timestamp::from_nanos(
        Timestamp::now()
            .as_nanos()
            .saturating_sub(LEARN_WINDOW.as_nanos() as i64),
    );
    let (sender, mut learning) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _ = sender.send(Directions::learn_from_store(&*store, since));
    });
    match tokio::time::timeout(LEARN_WAIT, &mut learning).await {
        Ok(result) => (learned(result), None),
        Err(_) => {
            tracing::info!("syslog listener: still counting the store's connects for directions; going on without them meanwhile");
            (Directions::default(), Some(learning))
        }
    }
}

/// Adds the store's evidence to `directions` once it is counted.
pub(crate) fn add_learned(directions: &mut Directions, learning: &mut Option<Learning>) {
    if let Some(pending) = learning {
        match pending.try_recv() {
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            result => {
                directions.merge(learned(result));
                *learning = None;
            }
        }
    }
}

/// The store's evidence, or none when it could not be read (directions then
/// rest more on port numbers).
fn learned<E: std::fmt::Display>(result: Result<Result<Directions, StoreError>, E>) -> Directions {
    match result {
        Ok(Ok(directions)) => {
            tracing::info!(
                endpoints = directions.endpoints(),
                "syslog listener: endpoint counts for directions learned from the store"
            );
            directions
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "syslog listener: cannot read the store's connects; directions rest on what arrives");
            Directions::default()
        }
        Err(e) => {
            tracing::warn!(error = %e, "syslog listener: counting the store's connects failed; directions rest on what arrives");
            Directions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::{Direction, Protocol};
    use connscope_store::{AgentId, SqliteStore};

    fn connect(at: i64, local: &str, remote: &str) -> ConnectionEvent {
        let mut e = ConnectionEvent::new(
            EventKind::Connect,
            Timestamp::from_nanos(at),
            Protocol::Tcp,
            Direction::Unknown,
            local.parse().unwrap(),
            remote.parse().unwrap(),
        );
        e.host = "ws1".into();
        e
    }

    #[test]
    fn a_high_port_service_is_learned_from_the_stream() {
        let mut directions = Directions::default();
        let mut first = connect(1, "10.0.0.1:1000", "10.0.0.2:50000");
        directions.infer(&mut first);
        assert_eq!(
            first.direction,
            Direction::Incoming,
            "no evidence yet: the port rule"
        );
        let mut second = connect(2, "10.0.0.1:1001", "10.0.0.2:50000");
        directions.infer(&mut second);
        assert_eq!(second.direction, Direction::Outgoing);
        let mut sshd = connect(3, "10.0.0.2:22", "10.0.0.1:50001");
        directions.infer(&mut sshd);
        assert_eq!(sshd.direction, Direction::Incoming);
    }

    #[tokio::test]
    async fn the_store_s_counts_are_added_when_they_come() {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let mut learning = Some(receiver);
        let mut directions = Directions::default();
        add_learned(&mut directions, &mut learning);
        assert!(learning.is_some(), "still counting");
        let mut learned = Directions::default();
        for port in [1000, 1001] {
            learned.infer(&mut connect(
                1,
                &format!("10.0.0.1:{port}"),
                "10.0.0.2:50000",
            ));
        }
        sender.send(Ok(learned)).unwrap();
        add_learned(&mut directions, &mut learning);
        assert!(learning.is_none());
        let mut line = connect(2, "10.0.0.1:1002", "10.0.0.2:50000");
        directions.infer(&mut line);
        assert_eq!(line.direction, Direction::Outgoing);
    }

    #[test]
    fn clients_seen_once_are_forgotten_above_the_limit() {
        let mut directions = Directions {
            forget_above: 4,
            ..Directions::default()
        };
        for port in 1000..1004 {
            directions.infer(&mut connect(
                1,
                &format!("10.0.0.1:{port}"),
                "10.0.0.2:50000",
            ));
        }
        assert_eq!(directions.endpoints(), 1, "only the service is left");
        assert_eq!(directions.forget_above, MAX_ENDPOINTS);
        let mut line = connect(2, "10.0.0.1:1004", "10.0.0.2:50000");
        directions.infer(&mut line);
        assert_eq!(line.direction, Direction::Outgoing);
    }

    #[test]
    fn the_store_s_connects_are_evidence_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("s.db")).unwrap();
        // More connects in one instant than a page holds, and pages that
        // end in the middle of an instant: each is counted exactly once.
        let events: Vec<ConnectionEvent> = (0..PAGE as i64 + 10)
            .map(|i| {
                let at = if i < PAGE as i64 / 2 { 5 } else { 5 + i % 7 };
                connect(
                    at,
                    &format!("10.0.{}.{}:1000", i / 250, i % 250),
                    "10.9.9.9:50000",
                )
            })
            .chain([connect(100, "10.0.0.1:1000", "10.0.0.3:60000")])
            .collect();
        store
            .ingest(&AgentId("import:ws1".into()), &events)
            .unwrap();
        let learned = Directions::learn_from_store(&store, Timestamp::from_nanos(0)).unwrap();
        let service = "10.9.9.9:50000".parse().unwrap();
        assert_eq!(learned.stats.count(service), PAGE as u32 + 10);
        assert_eq!(learned.endpoints(), PAGE + 10 + 2);

        let later = Directions::learn_from_store(&store, Timestamp::from_nanos(50)).unwrap();
        assert_eq!(later.endpoints(), 2, "only what is in the window");
    }
}
