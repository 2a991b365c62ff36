//! Agents' writes: `POST /api/v1/events` (a batch) and
//! `POST /api/v1/dropped` (events an agent lost, or a time it was down).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use connscope_protocol::{
    drop_reason, DroppedReport, IngestResponse, BOOT_HEADER, FIRST_SEQUENCE_HEADER, INSTANCE_HEADER,
};
use connscope_store::{AgentId, Origin, StoreError};

use crate::binding::BindingError;
use crate::ingest::{decode_batch, BatchError};
use crate::kit::{authenticate, decode_slot, read_body, read_json, ApiError, AppState};
use crate::live::IngestNotice;

pub(crate) async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let agent = authenticate(&state, &headers).await?;
    match store_batch(&state, &agent, &headers, body).await {
        Ok(report) => Ok(Json(report)),
        Err(Refusal { reason, error }) => {
            state.counters.refuse(&agent, reason);
            tracing::warn!(%agent, reason, error = ?error.body().error, line = ?error.body().line, "refused a batch");
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
            reason: if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too-large"
            } else {
                "unreadable-body"
            },
            error,
        })?;
    state
        .counters
        .ingest_bytes
        .fetch_add(body.len() as u64, Ordering::Relaxed);
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("(not text)").to_owned());
    let slot = decode_slot(state.decompressed_limit);
    let mut memory = state
        .ingest_memory
        .clone()
        .acquire_many_owned(slot)
        .await
        .expect("the ingest memory semaphore is never closed");
    let (store, tokens, bindings) = (
        state.store.clone(),
        state.tokens.clone(),
        state.bindings.clone(),
    );
    let limit = state.decompressed_limit;
    let agent_id = agent.clone();
    let drift = state.drift.clone();
    // Decompressing, parsing and SQLite are CPU and disk work: off the reactor.
    let (report, notice) = tokio::task::spawn_blocking(move || {
        let (events, size) = decode_batch(&body, encoding.as_deref(), limit)?;
        drop(body);
        // Shared with the store, which keeps the batch until it is written.
        let events = Arc::new(events);
        // Waiting for the store, the batch holds only its own size.
        let _memory =
            memory.split(usize::try_from(size).map_or(slot as usize, |n| n.min(slot as usize)));
        bindings.check(&tokens, store.as_ref(), &agent_id, &events)?;
        let report = store.ingest_shared(&agent_id, &origin, events.clone())?;
        let notice = IngestNotice::of("agent", &agent_id.0, &events, &report);
        // A batch stored before (a retry) was checked then.
        if report.stored > 0 {
            drift.check_batch(store.as_ref(), &events);
        }
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

pub(crate) async fn dropped(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let agent = authenticate(&state, &headers).await?;
    let report: DroppedReport = read_json(body, state.body_limit, "a dropped report").await?;
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
