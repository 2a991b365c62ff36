//! The HTTP API (docs/API.md): ingest for agents, queries for the map and
//! reports. Served over TLS only, by hyper, one task per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use connscope_store::{AgentId, Origin, Store, StoreError};
use connscope_transport::protocol::{
    drop_reason, DroppedReport, ErrorResponse, IngestResponse, BOOT_HEADER, DROPPED_PATH,
    FIRST_SEQUENCE_HEADER, INGEST_PATH, INSTANCE_HEADER,
};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::Tokens;
use crate::ingest::{decode_batch, BatchError};
use crate::live::{IngestNotice, Notices};
use crate::{firewall, queries};

/// How long a client may take for the TLS handshake and the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Counters shown at `/api/v1/stats` and in the collector's exit log.
#[derive(Debug, Default)]
pub struct Counters {
    pub batches: AtomicU64,
    pub events_stored: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub batches_refused: AtomicU64,
    pub unauthorized: AtomicU64,
    /// Events agents reported deleted from a full spool.
    pub events_dropped_by_agents: AtomicU64,
    pub syslog_events_stored: AtomicU64,
    pub syslog_events_duplicate: AtomicU64,
    /// Syslog messages of other programs, ignored.
    pub syslog_ignored: AtomicU64,
    /// tcpspy/connscope syslog messages that could not be read.
    pub syslog_unreadable: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub tokens: Arc<Tokens>,
    /// Tokens that may use the query endpoints.
    pub readers: Arc<Tokens>,
    /// Queries need no token (loopback listener without reader tokens).
    pub open_reads: bool,
    pub body_limit: usize,
    pub decompressed_limit: u64,
    pub counters: Arc<Counters>,
    /// Told after every stored batch; followed by `/api/v1/events/stream`.
    pub notices: Notices,
    /// Becomes true when the collector stops (ends the event streams).
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// A refusal, as JSON `{"error": ..., "line": ...}` with a fitting status.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: ErrorResponse,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl ToString) -> ApiError {
        ApiError {
            status,
            body: ErrorResponse {
                error: error.to_string(),
                line: None,
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::InvalidEvent { .. }
            | StoreError::InvalidRange { .. }
            | StoreError::InvalidOrigin(_) => ApiError::new(StatusCode::BAD_REQUEST, e),
            _ => {
                tracing::error!(error = %e, "store error");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)
            }
        }
    }
}

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> ApiError {
        let status = match e {
            BatchError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BatchError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError {
            status,
            body: ErrorResponse {
                error: e.to_string(),
                line: e.line(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(INGEST_PATH, post(ingest))
        .route(DROPPED_PATH, post(dropped))
        .route("/api/v1/hosts", get(hosts))
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/firewall/check", post(firewall::check_handler))
        .route("/api/v1/events/stream", get(events_stream))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/health", get(|| async { "ok\n" }))
        .with_state(state)
        .fallback(map_ui)
}

/// The connection map's web UI (crates/map) on every path that is not an API
/// route. The assets hold no data (the UI asks the API, with a reader token
/// where one is needed), so they are served without one, each with the
/// headers `connscope_map` gives it (Content-Security-Policy and all).
async fn map_ui(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    if method != axum::http::Method::GET && method != axum::http::Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let Some(asset) = connscope_map::asset(uri.path()) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let mut response = Response::new(Body::from(asset.bytes));
    for (name, value) in asset.headers() {
        response
            .headers_mut()
            .insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// Server-sent events: a notice per stored batch (see `live`).
async fn events_stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize_read(&state, &headers) {
        return e.into_response();
    }
    crate::live::follow(&state.notices, state.stop.clone()).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// The agent an ingest request comes from, by its token.
fn authenticate<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a AgentId, ApiError> {
    let agent = bearer(headers).and_then(|token| state.tokens.agent_for(token));
    agent.ok_or_else(|| {
        state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or unknown bearer token")
    })
}

/// Reads the whole body, refusing it past `limit` bytes (as sent, compressed).
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("reading the body: {e}"),
        )),
    }
}

async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let agent = authenticate(&state, &headers)?.clone();
    let origin = batch_origin(&headers)?;
    let body = read_body(body, state.body_limit).await?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let store = state.store.clone();
    let limit = state.decompressed_limit;
    // Decompressing, parsing and SQLite are CPU and disk work: off the reactor.
    let result = tokio::task::spawn_blocking(move || {
        let events = decode_batch(&body, encoding.as_deref(), limit)?;
        let report = store.ingest_from(&agent, &origin, &events)?;
        let notice = IngestNotice::of("agent", &agent.0, &events, &report);
        Ok::<_, ApiError>((report, notice))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let counters = &state.counters;
    match result {
        Ok((report, notice)) => {
            if let Some(notice) = notice {
                state.notices.publish(notice);
            }
            counters.batches.fetch_add(1, Ordering::Relaxed);
            counters
                .events_stored
                .fetch_add(report.stored, Ordering::Relaxed);
            counters
                .events_duplicate
                .fetch_add(report.duplicates, Ordering::Relaxed);
            Ok(Json(IngestResponse {
                stored: report.stored,
                duplicates: report.duplicates,
                conflicts: report.conflicts,
            }))
        }
        Err(e) => {
            counters.batches_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = ?e.body.error, line = ?e.body.line, "refused a batch");
            Err(e)
        }
    }
}

async fn dropped(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let agent = authenticate(&state, &headers)?.clone();
    let body = read_body(body, state.body_limit).await?;
    let report: DroppedReport = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("not a dropped report: {e}"),
        )
    })?;
    tracing::warn!(
        agent = %agent,
        instance = %report.instance,
        reason = %report.reason,
        events = report.events,
        ranges = ?report.ranges,
        down = ?report.down,
        "agent reported events it lost, or a time it was not running"
    );
    // Stored, so `report hosts` can tell this gap from an unexplained one.
    let store = state.store.clone();
    let ranges = report.ranges.clone();
    let (instance, reason) = dropped_origin(&report);
    let down = report.down.clone();
    tokio::task::spawn_blocking(move || {
        store.record_dropped_from(&agent, &instance, &reason, &ranges)?;
        if !down.is_empty() {
            store.record_downtime(&agent, &instance, &down)?;
        }
        Ok::<_, StoreError>(())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    state
        .counters
        .events_dropped_by_agents
        .fetch_add(report.events, Ordering::Relaxed);
    Ok(StatusCode::NO_CONTENT)
}

/// The sequence space of an ingest request, from its origin headers
/// (docs/API.md); a request without them is an agent from before instance
/// ids, whose events share one space per agent as before.
fn batch_origin(headers: &HeaderMap) -> Result<Origin, ApiError> {
    let text = |name: &str| -> Result<Option<&str>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, format!("header {name}: not text"))
                })
            })
            .transpose()
    };
    let instance = text(INSTANCE_HEADER)?;
    let boot = text(BOOT_HEADER)?;
    let first = text(FIRST_SEQUENCE_HEADER)?;
    let (instance, boot, first) = match (instance, boot, first) {
        (None, None, None) => return Ok(Origin::legacy()),
        (Some(i), Some(b), Some(f)) => (i, b, f),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                "send all of {INSTANCE_HEADER}, {BOOT_HEADER} and {FIRST_SEQUENCE_HEADER}, or none"
            ),
            ))
        }
    };
    let first_sequence = first.parse().map_err(|_| {
        let shown: String = first.chars().take(40).collect();
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("header {FIRST_SEQUENCE_HEADER}: not a sequence number: {shown:?}"),
        )
    })?;
    if instance.is_empty() || boot.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("headers {INSTANCE_HEADER} and {BOOT_HEADER} must not be empty"),
        ));
    }
    // The store checks the rest (length and characters) with a clear error.
    Ok(Origin {
        instance: instance.to_owned(),
        boot: boot.to_owned(),
        first_sequence,
    })
}

/// The instance and reason a dropped report is filed under; a report of
/// an agent from before instance ids means its full spool.
fn dropped_origin(report: &DroppedReport) -> (String, String) {
    let reason = if report.reason.is_empty() {
        drop_reason::SPOOL_FULL
    } else {
        &report.reason
    };
    (report.instance.clone(), reason.to_owned())
}

/// Queries take a reader token; agent tokens only write.
pub(crate) fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.open_reads || bearer(headers).is_some_and(|t| state.readers.agent_for(t).is_some()) {
        return Ok(());
    }
    state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or unknown reader token",
    ))
}

async fn hosts(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<queries::HostRow>>, ApiError> {
    authorize_read(&state, &headers)?;
    let store = state.store.clone();
    let rows = tokio::task::spawn_blocking(move || queries::hosts(store.as_ref()))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(Json(rows))
}

async fn graph(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<queries::GraphParams>, QueryRejection>,
) -> Result<Json<connscope_query::Graph>, ApiError> {
    authorize_read(&state, &headers)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let (range, filter) = params
        .resolve(connscope_event::Timestamp::now())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let store = state.store.clone();
    let graph = tokio::task::spawn_blocking(move || queries::graph(store.as_ref(), range, &filter))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(Json(graph))
}

#[derive(Serialize, Deserialize)]
struct StatsBody {
    batches: u64,
    events_stored: u64,
    events_duplicate: u64,
    batches_refused: u64,
    unauthorized: u64,
    events_dropped_by_agents: u64,
    syslog_events_stored: u64,
    syslog_events_duplicate: u64,
    syslog_ignored: u64,
    syslog_unreadable: u64,
}

async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StatsBody>, ApiError> {
    authorize_read(&state, &headers)?;
    let c = &state.counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Ok(Json(StatsBody {
        batches: load(&c.batches),
        events_stored: load(&c.events_stored),
        events_duplicate: load(&c.events_duplicate),
        batches_refused: load(&c.batches_refused),
        unauthorized: load(&c.unauthorized),
        events_dropped_by_agents: load(&c.events_dropped_by_agents),
        syslog_events_stored: load(&c.syslog_events_stored),
        syslog_events_duplicate: load(&c.syslog_events_duplicate),
        syslog_ignored: load(&c.syslog_ignored),
        syslog_unreadable: load(&c.syslog_unreadable),
    }))
}

/// Accepts TLS connections until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move { serve_connection(tcp, peer, acceptor, router).await });
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
) {
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = TowerToHyperService::new(router);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
