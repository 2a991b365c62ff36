//! `GET /api/v1/firewall/hits`: what the hosts' policies would have dropped
//! (audit) or dropped (enforce), per host, remote end, program and user;
//! the map draws them as edges of their own colour (docs/API.md).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use connscope_event::Timestamp;
use connscope_query::args::last_day;
use connscope_query::hits::{firewall_hits, FirewallHits};
use connscope_query::TimeRangeArgs;
use serde::Deserialize;

use crate::kit::{authorize_read, ApiError, AppState};

/// `from` and `to` as for the graph (a day back from now by default), and
/// optionally one `host`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HitParams {
    #[serde(flatten)]
    range: TimeRangeArgs,
    host: Option<String>,
}

pub(crate) async fn hits(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<HitParams>, QueryRejection>,
) -> Result<Json<FirewallHits>, ApiError> {
    authorize_read(&state, &headers)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let now = Timestamp::now();
    let range = params
        .range
        .resolve(now, last_day(now))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("query parameter {e}")))?;
    let store = state.store.clone();
    let hits = tokio::task::spawn_blocking(move || {
        firewall_hits(store.as_ref(), range, params.host.as_deref())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(Json(hits))
}
