//! What monitoring asks: `/metrics` (Prometheus, reader token like every
//! query), `/healthz` (the process answers) and `/readyz` (the store takes
//! writes and ingest is on), the last two without a token so a load
//! balancer or systemd check needs no secret; they tell nothing but a state.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use connscope_event::Timestamp;

use crate::kit::{authorize_read, ApiError, AppState};
use crate::metrics::CONTENT_TYPE;

pub(crate) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_read(&state, &headers)?;
    let metrics = state.metrics.clone();
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics"))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let (store, stored_tokens) = (state.store.clone(), state.stored_tokens.clone());
    let has_file_tokens = !state.tokens.is_empty();
    let checked = tokio::task::spawn_blocking(move || {
        store
            .probe_write(Timestamp::now())
            .map_err(|e| format!("the store takes no writes: {e}"))?;
        let ingest_on = has_file_tokens
            || stored_tokens
                .any_live()
                .map_err(|e| format!("the store cannot be read: {e}"))?;
        if !ingest_on {
            return Err("ingest is off: no agent tokens configured or enrolled".to_owned());
        }
        Ok(())
    })
    .await;
    match checked {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(why)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}
