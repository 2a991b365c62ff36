//! The agent's local listener (`--metrics-listen 127.0.0.1:9464`):
//! `/metrics` for Prometheus and `/healthz`, plain HTTP.
//!
//! Plain and without a token because it is meant for the host itself (a
//! node exporter's neighbour): it shows counts, no events, and the default
//! is loopback. A scrape reads the agent's own counters and the shipping
//! output's spool at that moment, so the figures are the ones the agent
//! logs on SIGUSR1, never a second bookkeeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::header;
use axum::routing::get;
use axum::Router;
use connscope_agent::StatisticsReader;
use connscope_transport::ShippingMonitor;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// What a scrape reads.
struct AgentMetrics {
    statistics: StatisticsReader,
    shipping: Option<ShippingMonitor>,
}

impl std::fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentMetrics")
    }
}

fn one<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: M,
) -> Result<(), std::fmt::Error> {
    let metric_type = metric.metric_type();
    metric.encode(encoder.encode_descriptor(name, help, None, metric_type)?)
}

fn labelled<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    metric_type: MetricType,
    values: impl IntoIterator<Item = (String, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, metric) in values {
        metric.encode(family.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

fn seconds_since(t: Option<SystemTime>, now: SystemTime) -> f64 {
    t.and_then(|t| now.duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Collector for AgentMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = (self.statistics)();
        let e = &mut encoder;
        let kinds = [
            ("connect", s.emitted_by_kind.connect),
            ("disconnect", s.emitted_by_kind.disconnect),
            ("connect-failed", s.emitted_by_kind.connect_failed),
            ("would-block", s.emitted_by_kind.would_block),
            ("blocked", s.emitted_by_kind.blocked),
        ];
        labelled(
            e,
            "connscope_agent_events",
            "Events numbered and handed to the outputs, by kind",
            "kind",
            MetricType::Counter,
            kinds.map(|(k, n)| (k.to_owned(), ConstCounter::new(n))),
        )?;
        one(
            e,
            "connscope_agent_captured_events",
            "Events the capture backend delivered",
            ConstCounter::new(s.captured),
        )?;
        one(
            e,
            "connscope_agent_kernel_lost_events",
            "Events lost on the kernel side (ring buffer or connection table full)",
            ConstCounter::new(s.kernel_lost),
        )?;
        one(
            e,
            "connscope_agent_inferred_closes",
            "Disconnects inferred for closes the kernel never reported (socket found gone)",
            ConstCounter::new(s.closes_inferred),
        )?;
        one(
            e,
            "connscope_agent_queue_dropped_events",
            "Events dropped because the outputs were too slow",
            ConstCounter::new(s.queue_dropped),
        )?;
        one(
            e,
            "connscope_agent_rule_dropped_events",
            "Events the tcpspy rules did not select",
            ConstCounter::new(s.rule_dropped),
        )?;
        one(
            e,
            "connscope_agent_unrecorded_events",
            "Events dropped because their sequence numbers could not be written",
            ConstCounter::new(s.unrecorded),
        )?;
        labelled(
            e,
            "connscope_agent_output_errors",
            "Batches or flushes an output failed",
            "output",
            MetricType::Counter,
            s.outputs
                .iter()
                .map(|o| (o.name.clone(), ConstCounter::new(o.errors))),
        )?;
        let Some(shipping) = &self.shipping else {
            return Ok(());
        };
        let h = shipping.read();
        let now = SystemTime::now();
        one(
            e,
            "connscope_agent_spool_batches",
            "Batches waiting in the spool",
            ConstGauge::new(h.spool.batches as i64),
        )?;
        one(
            e,
            "connscope_agent_spool_events",
            "Events waiting in the spool",
            ConstGauge::new(h.spool.events as i64),
        )?;
        one(
            e,
            "connscope_agent_spool_bytes",
            "Bytes of the spool on disk",
            ConstGauge::new(h.spool.bytes as i64),
        )?;
        one(
            e,
            "connscope_agent_spool_oldest_age_seconds",
            "Age of the oldest batch waiting in the spool (0: empty)",
            ConstGauge::new(seconds_since(h.oldest_waiting, now)),
        )?;
        let lag = if h.spool.batches == 0 {
            0.0
        } else {
            // Waiting since the collector last took a batch, or since the
            // oldest batch was written if it never did.
            seconds_since(h.last_success.max(h.oldest_waiting), now)
        };
        one(
            e,
            "connscope_agent_shipping_lag_seconds",
            "How long batches have waited without the collector taking one (0: spool empty)",
            ConstGauge::new(lag),
        )?;
        let last = h
            .last_success
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        one(
            e,
            "connscope_agent_shipping_last_success_timestamp_seconds",
            "When the collector last took a batch (Unix seconds; 0: not yet)",
            ConstGauge::new(last),
        )?;
        one(
            e,
            "connscope_agent_shipped_batches",
            "Batches the collector took",
            ConstCounter::new(h.batches_sent),
        )?;
        one(
            e,
            "connscope_agent_shipped_events",
            "Events the collector stored from this agent's batches",
            ConstCounter::new(h.events_stored),
        )?;
        one(
            e,
            "connscope_agent_shipping_errors",
            "Sends that failed and will be retried (collector down, network)",
            ConstCounter::new(h.failures),
        )?;
        one(
            e,
            "connscope_agent_shipping_rejected_batches",
            "Batches the collector refused for good (set aside, reported dropped)",
            ConstCounter::new(h.batches_rejected),
        )?;
        Ok(())
    }
}

/// Binds `addr` now (a busy port is an error at start) and serves
/// `/metrics` and `/healthz` on a thread of its own.
pub fn serve(
    addr: SocketAddr,
    statistics: StatisticsReader,
    shipping: Option<ShippingMonitor>,
) -> std::io::Result<()> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("--metrics-listen {addr}: {e}")))?;
    listener.set_nonblocking(true)?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentMetrics {
        statistics,
        shipping,
    }));
    let registry = Arc::new(registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tracing::info!(%addr, "serving /metrics and /healthz");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let metrics = move || {
                    let registry = registry.clone();
                    async move {
                        let mut text = String::new();
                        match prometheus_client::encoding::prometheus_text::encode(
                            &mut text, &registry,
                        ) {
                            Ok(()) => (
                                axum::http::StatusCode::OK,
                                [(
                                    header::CONTENT_TYPE,
                                    "text/plain; version=0.0.4; charset=utf-8",
                                )],
                                text,
                            ),
                            Err(_) => (
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                                "encoding the metrics failed\n".to_owned(),
                            ),
                        }
                    }
                };
                let router = Router::new()
                    .route("/metrics", get(metrics))
                    .route("/healthz", get(|| async { "ok\n" }));
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => return tracing::error!(error = %e, "metrics listener"),
                };
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            });
        })?;
    Ok(())
}
