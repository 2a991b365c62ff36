//! Readers' queries: hosts, the graph, the live event stream and the
//! counters. Each takes a reader token (see [`authorize_read`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::counters::StatsBody;
use crate::handlers::queries;
use crate::kit::{authorize_read, ApiError, AppState};

pub(crate) async fn hosts(
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

pub(crate) async fn graph(
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

pub(crate) async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StatsBody>, ApiError> {
    authorize_read(&state, &headers)?;
    Ok(Json(state.counters.snapshot()))
}

/// Server-sent events: a notice per stored batch (see `live`).
pub(crate) async fn events_stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = authorize_read(&state, &headers) {
        return e.into_response();
    }
    crate::live::follow(&state.notices, state.stop.clone()).into_response()
}
