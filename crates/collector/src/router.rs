//! The API's routes (docs/API.md): which handler answers which path, and the
//! deadline every request runs under.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::MatchedPath;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use connscope_protocol::enroll::{ENROLL_PATH, WHOAMI_PATH};
use connscope_protocol::policy::{AGENT_FIREWALL_PATH, AGENT_POLICY_PATH};
use connscope_protocol::{DROPPED_PATH, INGEST_PATH};

use crate::handlers::{backtest, enroll, firewall, groups, hits, ingest, map, ops, policy, read};
use crate::kit::{ApiError, AppState};
use crate::metrics::Metrics;

pub(crate) fn router(state: AppState) -> Router {
    let deadline = state.request_deadline;
    let metrics = state.metrics.clone();
    Router::new()
        .route(INGEST_PATH, post(ingest::ingest))
        .route(DROPPED_PATH, post(ingest::dropped))
        .route(ENROLL_PATH, post(enroll::enroll))
        .route(WHOAMI_PATH, post(enroll::whoami))
        .route(AGENT_POLICY_PATH, get(policy::assigned))
        .route(AGENT_FIREWALL_PATH, post(policy::report))
        .route("/api/v1/policies/status", get(policy::status))
        .route("/api/v1/drift", get(policy::drift))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/api/v1/hosts", get(read::hosts))
        .route("/api/v1/graph", get(read::graph))
        .route("/api/v1/firewall/check", post(firewall::check_handler))
        .route("/api/v1/firewall/hits", get(hits::hits))
        .route("/api/v1/groups", get(groups::list))
        .route(
            "/api/v1/groups/{name}",
            post(groups::put).delete(groups::remove),
        )
        .route(
            "/api/v1/firewall/backtest",
            get(backtest::backtest_get).post(backtest::backtest_post),
        )
        .route("/api/v1/events/stream", get(read::events_stream))
        .route("/api/v1/stats", get(read::stats))
        .route("/api/v1/health", get(|| async { "ok\n" }))
        .route_layer(axum::middleware::from_fn(
            move |request, next: axum::middleware::Next| timed(metrics.clone(), request, next),
        ))
        .with_state(state)
        .fallback(map::map_ui)
        .layer(axum::middleware::from_fn(
            move |request, next: axum::middleware::Next| within_deadline(deadline, request, next),
        ))
}

/// Records how long a request to a route took (the route's pattern, not
/// the path asked, so the labels stay few). Streams count until their head.
async fn timed(
    metrics: Arc<Metrics>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.observe(&route, &method, started.elapsed());
    response
}

/// Answers `408` when a request (a slow upload, say) is not done within
/// `deadline`: a client that trickles its body holds a connection and a
/// task, so it gets a fixed time like any other. A response that streams
/// (the event stream) is done when its head is.
async fn within_deadline(
    deadline: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request took longer than {} s", deadline.as_secs_f64()),
        )
        .into_response(),
    }
}
