//! Directions for the tcpspy lines the syslog listener receives.
//!
//! tcpspy does not log who connected. The importer infers it from endpoint
//! statistics, then port numbers ([`EndpointStats`]); the listener uses the
//! same rule, so a line gets the same direction whether it was imported from
//! a file or streamed — without this, a streamed sshd line took the sshd host
//! as the *client* of port 22. The evidence is what the store already holds
//! (its connects of the last [`LEARN_WINDOW`], counted once at start) and
//! every connect line received since. A stream sees its evidence in time
//! order, an import all at once: they differ only on an endpoint's first
//! connections before it was seen twice (a service on a port above its
//! client's, see docs/API.md).
//!
//! A long-running listener would count every client's ephemeral port for
//! ever; above [`MAX_ENDPOINTS`] the endpoints seen once are forgotten (the
//! services are seen more often and stay).

use std::time::Duration;

use connscope_event::{ConnectionEvent, EventKind, Timestamp};
use connscope_store::{EventQuery, Store, StoreError, TimeRange};
use connscope_tcpspy_log::EndpointStats;

/// How far back the store's connects are counted at start: the default raw
/// event retention.
pub(crate) const LEARN_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// Events read from the store per query while learning.
const PAGE: usize = 50_000;
/// Endpoints counted before the single uses are forgotten.
pub(crate) const MAX_ENDPOINTS: usize = 1_000_000;

/// The listener's evidence of which endpoints are services.
#[derive(Debug, Default)]
pub(crate) struct Directions {
    stats: EndpointStats,
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
        if self.stats.len() > MAX_ENDPOINTS {
            self.stats.forget_single_uses();
        }
    }

    /// How many endpoints are counted.
    pub fn endpoints(&self) -> usize {
        self.stats.len()
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
