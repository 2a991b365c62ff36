//! `GET/POST /api/v1/firewall/backtest`: plans learned before `learn_to`
//! replayed against the history after it, per planner, host and edge (as
//! `connscope firewall backtest --format json` prints it).
//!
//! The parameters are `connscope_firewall::backtest::BacktestArgs`, from the
//! query string (GET, for a link) or a JSON body (POST, for the map's form),
//! so both read and refuse them alike and the CLI's flags mean the same. The
//! work is the firewall crate's; this handler authorises as the graph does
//! (a backtest shows every host's edges), reads the parameters and runs the
//! work off the reactor.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use connscope_event::Timestamp;
use connscope_firewall::backtest::{BacktestArgs, BacktestError, BacktestReport};

use crate::kit::{authorize_read, ApiError, AppState};

pub(crate) async fn backtest_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<BacktestArgs>, QueryRejection>,
) -> Result<Json<BacktestReport>, ApiError> {
    authorize_read(&state, &headers)?;
    let Query(args) = params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    run(state, args).await
}

pub(crate) async fn backtest_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<BacktestArgs>, JsonRejection>,
) -> Result<Json<BacktestReport>, ApiError> {
    authorize_read(&state, &headers)?;
    let Json(args) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    run(state, args).await
}

async fn run(state: AppState, args: BacktestArgs) -> Result<Json<BacktestReport>, ApiError> {
    let request = args
        .resolve(Timestamp::now())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let store = state.store.clone();
    // Every host's rollups and a plan and replay per host and planner: CPU
    // and disk work, off the reactor.
    let report = tokio::task::spawn_blocking(move || request.run(store.as_ref()))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        .map_err(|e| match e {
            BacktestError::Store(e) => ApiError::from(e),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other),
        })?;
    Ok(Json(report))
}
