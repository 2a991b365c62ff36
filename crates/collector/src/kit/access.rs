//! Who may ask: agent tokens write (ingest), reader tokens read (queries)
//! and change the operators' definitions (host groups).

use std::sync::atomic::Ordering;

use axum::http::{header, HeaderMap, StatusCode};
use connscope_store::AgentId;

use super::error::ApiError;
use super::state::AppState;

/// The token of `Authorization: Bearer TOKEN`; the scheme in any case (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("Bearer")
        .then_some(token.trim())
}

/// The agent an ingest request comes from, by its token.
pub(crate) fn authenticate<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<&'a AgentId, ApiError> {
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

/// Changes to what operators define (host groups) take a reader token, even
/// where reads are open (a loopback listener without reader tokens): an
/// open read shows data, an open write would let any local user reshape
/// every firewall plan. Agent tokens never do.
pub(crate) fn authorize_change(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if bearer(headers).is_some_and(|t| state.readers.agent_for(t).is_some()) {
        return Ok(());
    }
    state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "changing groups takes a reader token",
    ))
}
