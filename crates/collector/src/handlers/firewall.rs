//! `POST /api/v1/firewall/check`: which edges of the map a proposed ruleset
//! would block, for the map's firewall mode.
//!
//! Reading the ruleset and checking it per graph edge are
//! `connscope_firewall`'s ([`read_ruleset`], [`check_edges`]), the same replay
//! as `connscope firewall check`; this handler only authorises, reads the
//! query and the body, and runs the work off the reactor.
//!
//! The ruleset comes from the browser and is untrusted: its size is bounded,
//! `include` is refused (the collector reads no files for a request), and
//! errors name their line and column instead of failing opaquely.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use connscope_event::Timestamp;
use connscope_firewall::map_check::{check_edges, EdgeChecks};
use connscope_firewall::nft::{read_ruleset, RulesetError};
use connscope_query::args::last_day;
use connscope_query::TimeRangeArgs;
use connscope_store::StoreError;
use serde::Deserialize;

use crate::handlers::queries::ParamError;
use crate::kit::{authorize_read, read_body, ApiError, AppState};

/// The largest ruleset accepted, in bytes: far above real host firewalls,
/// far below anything that could hurt the collector.
pub const RULESET_LIMIT: usize = 1 << 20;

/// Query parameters: the host whose firewall it is, and the time range (as
/// for `/api/v1/graph`, a day back from now by default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    pub host: Option<String>,
    #[serde(flatten)]
    pub range: TimeRangeArgs,
}

/// A refusal: the API's usual one, or a ruleset error with its position.
pub(crate) enum Refusal {
    Api(ApiError),
    Ruleset(RulesetError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Refusal {
        Refusal::Api(e)
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Refusal {
        Refusal::Api(e.into())
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Api(e) => e.into_response(),
            Refusal::Ruleset(e) => (StatusCode::BAD_REQUEST, Json(e)).into_response(),
        }
    }
}

pub(crate) async fn check_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<CheckParams>, QueryRejection>,
    body: Body,
) -> Result<Json<EdgeChecks>, Refusal> {
    authorize_read(&state, &headers)?;
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, e);
    let Query(params) = params.map_err(|e| bad(e.body_text()))?;
    let host = params.host.filter(|h| !h.is_empty()).ok_or_else(|| {
        bad("query parameter host: required (the host the ruleset is for)".into())
    })?;
    let now = Timestamp::now();
    let range = params
        .range
        .resolve(now, last_day(now))
        .map_err(|e| bad(ParamError(e).to_string()))?;
    let body = read_body(body, RULESET_LIMIT).await?;
    let text =
        String::from_utf8(body).map_err(|e| bad(format!("the ruleset is not UTF-8 text: {e}")))?;
    let store = state.store.clone();
    // Parsing (up to a megabyte, with variable expansion) and the store are
    // CPU and disk work: off the reactor.
    let answer = tokio::task::spawn_blocking(move || {
        let ruleset = read_ruleset("ruleset", &text).map_err(Refusal::Ruleset)?;
        Ok::<_, Refusal>(check_edges(store.as_ref(), &host, range, &ruleset)?)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))??;
    Ok(Json(answer))
}
