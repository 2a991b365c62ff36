//! The collector's Prometheus metrics (`GET /metrics`, docs/API.md).
//!
//! Counting happens where it always did, in [`Counters`]; the store keeps
//! what agents sent and lost. A scrape reads both at that moment (a
//! [`Collector`] of `prometheus-client`), so nothing is counted twice and
//! the per-agent figures are exactly what `report hosts` shows. Only the
//! request latencies are kept here, as histograms per route.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connscope_store::{AgentStatus, Store};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::counters::Counters;

/// The content type of the text exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request's route and method, the labels of the latency histogram.
type RouteLabels = [(&'static str, String); 2];

/// The registry a scrape encodes, and the latencies recorded into it.
pub(crate) struct Metrics {
    registry: Registry,
    latencies: Family<RouteLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new(counters: Arc<Counters>, store: Arc<dyn Store>, db: Option<PathBuf>) -> Metrics {
        let mut registry = Registry::default();
        // 1 ms to about 33 s, doubling: a cached count and a year's graph alike.
        let latencies = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "connscope_collector_request_duration_seconds",
            "Time to answer an HTTPS request, by route and method",
            latencies.clone(),
        );
        registry.register_collector(Box::new(Live {
            counters,
            store,
            db,
        }));
        Metrics {
            registry,
            latencies,
        }
    }

    /// Records one request to `route` that took `elapsed`.
    pub fn observe(&self, route: &str, method: &str, elapsed: Duration) {
        self.latencies
            .get_or_create(&[("route", route.to_owned()), ("method", method.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// The text exposition of every metric. Reads the store: call it off
    /// the async reactor.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// What a scrape reads at that moment: the counters and the store.
struct Live {
    counters: Arc<Counters>,
    store: Arc<dyn Store>,
    /// The SQLite store's file, whose size is reported; a ClickHouse
    /// store's size is the server's to report.
    db: Option<PathBuf>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("db", &self.db).finish()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One metric with a value per label value.
fn labelled<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (String, M)>,
    metric_type: prometheus_client::metrics::MetricType,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, metric) in values {
        let labels = [(label, value)];
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Per agent id: the sums over its instances, and its newest event.
#[derive(Default)]
struct AgentFigures {
    events: u64,
    missing: u64,
    unexplained: u64,
    last_seen: f64,
}

fn per_agent(statuses: &[AgentStatus]) -> Vec<(String, AgentFigures)> {
    let mut agents: Vec<(String, AgentFigures)> = Vec::new();
    for status in statuses {
        if agents
            .last()
            .is_none_or(|(agent, _)| *agent != status.agent.0)
        {
            agents.push((status.agent.0.clone(), AgentFigures::default()));
        }
        let figures = &mut agents.last_mut().expect("pushed above").1;
        let gaps = status.gaps();
        figures.events += status.events;
        figures.missing += gaps.missing;
        figures.unexplained += gaps.unexplained;
        let seen = status.last_seen.as_nanos() as f64 / 1e9;
        figures.last_seen = figures.last_seen.max(seen);
    }
    agents
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let e = &mut encoder;
        counter(
            e,
            "connscope_collector_ingest_batches",
            "Agent batches accepted (stored, or all duplicates)",
            load(&c.batches),
        )?;
        counter(
            e,
            "connscope_collector_ingest_events",
            "Events in accepted agent batches: stored plus duplicates",
            load(&c.events_stored) + load(&c.events_duplicate),
        )?;
        counter(
            e,
            "connscope_collector_ingest_duplicate_events",
            "Events of accepted agent batches already stored (resent), not stored again",
            load(&c.events_duplicate),
        )?;
        counter(
            e,
            "connscope_collector_ingest_bytes",
            "Bytes of agent batch bodies received, as sent (compressed)",
            load(&c.ingest_bytes),
        )?;
        let refusals = c.refusals_by_reason();
        labelled(
            e,
            "connscope_collector_ingest_refused_batches",
            "Agent batches refused, by reason (nothing of them stored)",
            "reason",
            refusals
                .into_iter()
                .map(|(reason, n)| (reason.to_owned(), ConstCounter::new(n))),
            MetricType::Counter,
        )?;
        counter(
            e,
            "connscope_collector_unauthorized_requests",
            "Requests refused for a missing, unknown, expired or revoked token",
            load(&c.unauthorized),
        )?;
        counter(
            e,
            "connscope_collector_agent_reported_dropped_events",
            "Events agents reported losing (full spool, kernel, crash)",
            load(&c.events_dropped_by_agents),
        )?;
        labelled(
            e,
            "connscope_collector_syslog_lines",
            "Syslog lines received, by what became of them",
            "result",
            [
                ("stored", load(&c.syslog_events_stored)),
                ("duplicate", load(&c.syslog_events_duplicate)),
                ("ignored", load(&c.syslog_ignored)),
                ("unreadable", load(&c.syslog_unreadable)),
            ]
            .map(|(result, n)| (result.to_owned(), ConstCounter::new(n))),
            MetricType::Counter,
        )?;
        counter(
            e,
            "connscope_collector_syslog_connections_refused",
            "Syslog TCP connections closed at once (over the total or per-source cap)",
            load(&c.syslog_connections_refused),
        )?;
        counter(
            e,
            "connscope_collector_syslog_connections_timed_out",
            "Syslog TCP connections closed for idling or a frame sent too slowly",
            load(&c.syslog_connections_timed_out),
        )?;

        if let Some(db) = &self.db {
            let size = ["", "-wal"]
                .iter()
                .filter_map(|suffix| {
                    let mut path = db.clone().into_os_string();
                    path.push(suffix);
                    std::fs::metadata(path).ok().map(|m| m.len())
                })
                .sum::<u64>();
            gauge(
                e,
                "connscope_collector_store_size_bytes",
                "Size of the SQLite store on disk, write-ahead log included",
                size as f64,
            )?;
        }

        let statuses = match self.store.agents() {
            Ok(statuses) => statuses,
            Err(err) => {
                tracing::warn!(error = %err, "metrics: cannot read the agents from the store");
                return gauge(
                    e,
                    "connscope_collector_store_readable",
                    "1 when the store answered this scrape's per-agent query",
                    0.0,
                );
            }
        };
        gauge(
            e,
            "connscope_collector_store_readable",
            "1 when the store answered this scrape's per-agent query",
            1.0,
        )?;
        let agents = per_agent(&statuses);
        labelled(
            e,
            "connscope_collector_agent_last_seen_timestamp_seconds",
            "Time of the newest event stored from the agent (Unix seconds)",
            "agent",
            agents
                .iter()
                .map(|(a, f)| (a.clone(), ConstGauge::new(f.last_seen))),
            MetricType::Gauge,
        )?;
        labelled(
            e,
            "connscope_collector_agent_stored_events",
            "Events stored from the agent, ever (as report hosts shows)",
            "agent",
            agents
                .iter()
                .map(|(a, f)| (a.clone(), ConstGauge::new(f.events as i64))),
            MetricType::Gauge,
        )?;
        labelled(
            e,
            "connscope_collector_agent_missing_events",
            "Sequence numbers missing from the agent's stored events (report hosts' gaps)",
            "agent",
            agents
                .iter()
                .map(|(a, f)| (a.clone(), ConstGauge::new(f.missing as i64))),
            MetricType::Gauge,
        )?;
        labelled(
            e,
            "connscope_collector_agent_unexplained_missing_events",
            "Of the missing numbers, those the agent did not report dropped",
            "agent",
            agents
                .iter()
                .map(|(a, f)| (a.clone(), ConstGauge::new(f.unexplained as i64))),
            MetricType::Gauge,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connscope_event::Timestamp;
    use connscope_store::{AgentId, SequenceRanges};

    fn status(
        agent: &str,
        stored: &[(u64, u64)],
        dropped: &[(u64, u64)],
        seen: i64,
    ) -> AgentStatus {
        let sequences = SequenceRanges::from_ranges(stored.iter().copied());
        AgentStatus {
            agent: AgentId(agent.into()),
            instance: format!("{agent}-{seen}"),
            lost_state: false,
            boots: 1,
            reused: 0,
            conflicts: 0,
            first_sequence: 1,
            host: agent.into(),
            events: sequences.count(),
            first_seen: Timestamp::from_nanos(0),
            last_seen: Timestamp::from_nanos(seen * 1_000_000_000),
            sequences,
            dropped: SequenceRanges::from_ranges(dropped.iter().copied()),
            dropped_by_reason: Vec::new(),
            downtime: Vec::new(),
        }
    }

    #[test]
    fn an_agent_sums_its_instances_and_keeps_its_newest_time() {
        let statuses = [
            // 1-10 stored but 4-5 (dropped, explained) and 8 (unexplained).
            status("ws1", &[(1, 3), (6, 7), (9, 10)], &[(4, 5)], 100),
            status("ws1", &[(1, 4)], &[], 50),
            status("ws2", &[(1, 1)], &[], 70),
        ];
        let agents = per_agent(&statuses);
        let figures: Vec<(&str, u64, u64, u64, f64)> = agents
            .iter()
            .map(|(a, f)| (a.as_str(), f.events, f.missing, f.unexplained, f.last_seen))
            .collect();
        assert_eq!(figures, [("ws1", 11, 3, 1, 100.0), ("ws2", 1, 0, 0, 70.0)]);
    }
}
