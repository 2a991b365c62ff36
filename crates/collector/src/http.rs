//! The HTTP API (docs/API.md): ingest for agents, queries for the map and
//! reports. Served over TLS only, by hyper, one task per connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
use crate::binding::{BindingError, HostBindings};
use crate::handlers::{firewall, queries};
use crate::ingest::{decode_batch, BatchError};
use crate::live::{IngestNotice, Notices};

/// How long a client may take for the TLS handshake and the request head.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of a client's input an error message quotes, at most: enough to
/// recognise it, never a copy of a huge request.
const MAX_ECHO: usize = 300;

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
    /// Syslog TCP connections closed at once: over the total or per-source cap.
    pub syslog_connections_refused: AtomicU64,
    /// Syslog TCP connections closed for idling or for a frame sent too slowly.
    pub syslog_connections_timed_out: AtomicU64,
    /// Refused ingest batches by (agent, reason); their sum is `batches_refused`.
    pub refusals: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Counters {
    /// Counts one batch of `agent` refused for `reason`.
    pub fn refuse(&self, agent: &AgentId, reason: &'static str) {
        self.batches_refused.fetch_add(1, Ordering::Relaxed);
        *self
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((agent.0.clone(), reason))
            .or_default() += 1;
    }
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
    /// Permits to decompress and parse an ingest body: with the decompressed
    /// limit, the bound of ingest memory whatever the number of requests.
    pub decompressions: Arc<tokio::sync::Semaphore>,
    /// The host names each agent may write events for.
    pub bindings: Arc<HostBindings>,
    /// How long one request may take, body included.
    pub request_deadline: Duration,
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
                error: cut_echo(error.to_string()),
                line: None,
            },
        }
    }
}

/// Cuts an error message (which may quote the request) to [`MAX_ECHO`] bytes.
pub(crate) fn cut_echo(mut text: String) -> String {
    if text.len() > MAX_ECHO {
        let total = text.len();
        let end = (0..=MAX_ECHO)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text.truncate(end);
        text.push_str(&format!("... ({total} bytes in all)"));
    }
    text
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
                error: cut_echo(e.to_string()),
                line: e.line(),
            },
        }
    }
}

impl From<BindingError> for ApiError {
    fn from(e: BindingError) -> ApiError {
        match e {
            BindingError::Store(e) => e.into(),
            other => ApiError::new(StatusCode::FORBIDDEN, other),
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
    let deadline = state.request_deadline;
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
        .layer(axum::middleware::from_fn(
            move |request, next: axum::middleware::Next| within_deadline(deadline, request, next),
        ))
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

/// The token of `Authorization: Bearer TOKEN`; the scheme in any case (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

/// The agent an ingest request comes from, by its token.
fn authenticate<'a>(state: &'a AppState, headers: &HeaderMap) -> Result<&'a AgentId, ApiError> {
    if state.tokens.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "HTTPS ingest is off: no agent tokens configured on this collector",
        ));
    }
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
    match store_batch(&state, &agent, &headers, body).await {
        Ok(report) => Ok(Json(report)),
        Err(Refusal { reason, error }) => {
            state.counters.refuse(&agent, reason);
            tracing::warn!(%agent, reason, error = ?error.body.error, line = ?error.body.line, "refused a batch");
            record_refusal(&state, agent, reason).await;
            Err(error)
        }
    }
}

/// Keeps the count of a refusal in the store too, so `/api/v1/hosts` shows
/// it after a restart. A store that cannot take it is logged, not answered:
/// the agent gets the refusal it caused.
async fn record_refusal(state: &AppState, agent: AgentId, reason: &'static str) {
    let store = state.store.clone();
    let at = connscope_event::Timestamp::now();
    let recorded =
        tokio::task::spawn_blocking(move || store.record_refusal(&agent, reason, at)).await;
    match recorded {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot record a refusal"),
        Err(e) => tracing::error!(error = %e, "refusal recording task failed"),
    }
}

/// A refused batch: the answer, and the reason it is counted under.
struct Refusal {
    reason: &'static str,
    error: ApiError,
}

impl From<BatchError> for Refusal {
    fn from(e: BatchError) -> Refusal {
        let reason = match e {
            BatchError::Encoding(_) => "bad-encoding",
            BatchError::Gzip(_) => "bad-gzip",
            BatchError::TooLarge { .. } => "too-large",
            BatchError::Line { .. } => "bad-event",
            BatchError::Empty => "empty",
        };
        Refusal {
            reason,
            error: e.into(),
        }
    }
}

impl From<BindingError> for Refusal {
    fn from(e: BindingError) -> Refusal {
        let reason = match e {
            BindingError::Store(_) => "store-error",
            _ => "host-mismatch",
        };
        Refusal {
            reason,
            error: e.into(),
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        let reason = match e {
            StoreError::InvalidEvent { .. } | StoreError::InvalidRange { .. } => "bad-event",
            _ => "store-error",
        };
        Refusal {
            reason,
            error: e.into(),
        }
    }
}

/// Reads, decodes, checks and stores one batch of `agent`.
async fn store_batch(
    state: &AppState,
    agent: &AgentId,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestResponse, Refusal> {
    let origin = batch_origin(headers).map_err(|error| Refusal {
        reason: "bad-origin",
        error,
    })?;
    let body = read_body(body, state.body_limit)
        .await
        .map_err(|error| Refusal {
            reason: if error.status == StatusCode::PAYLOAD_TOO_LARGE {
                "too-large"
            } else {
                "unreadable-body"
            },
            error,
        })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let permit = state
        .decompressions
        .clone()
        .acquire_owned()
        .await
        .expect("the decompression semaphore is never closed");
    let (store, tokens, bindings) = (
        state.store.clone(),
        state.tokens.clone(),
        state.bindings.clone(),
    );
    let limit = state.decompressed_limit;
    let agent_id = agent.clone();
    // Decompressing, parsing and SQLite are CPU and disk work: off the reactor.
    let (report, notice) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let events = decode_batch(&body, encoding.as_deref(), limit)?;
        bindings.check(&tokens, store.as_ref(), &agent_id, &events)?;
        let report = store.ingest_from(&agent_id, &origin, &events)?;
        let notice = IngestNotice::of("agent", &agent_id.0, &events, &report);
        Ok::<_, Refusal>((report, notice))
    })
    .await
    .map_err(|e| Refusal {
        reason: "internal",
        error: ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e),
    })??;
    if let Some(notice) = notice {
        state.notices.publish(notice);
    }
    let counters = &state.counters;
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters
        .events_stored
        .fetch_add(report.stored, Ordering::Relaxed);
    counters
        .events_duplicate
        .fetch_add(report.duplicates, Ordering::Relaxed);
    Ok(IngestResponse {
        stored: report.stored,
        duplicates: report.duplicates,
        conflicts: report.conflicts,
    })
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
    syslog_connections_refused: u64,
    syslog_connections_timed_out: u64,
    /// Refused batches by agent and reason.
    refusals: Vec<RefusalCount>,
}

#[derive(Serialize, Deserialize)]
struct RefusalCount {
    agent: String,
    reason: String,
    batches: u64,
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
        syslog_connections_refused: load(&c.syslog_connections_refused),
        syslog_connections_timed_out: load(&c.syslog_connections_timed_out),
        refusals: c
            .refusals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((agent, reason), batches)| RefusalCount {
                agent: agent.clone(),
                reason: (*reason).to_owned(),
                batches: *batches,
            })
            .collect(),
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
