//! The map's web assets, on every path that is not an API route.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The connection map's web UI (crates/map) on every path that is not an API
/// route. The assets hold no data (the UI asks the API, with a reader token
/// where one is needed), so they are served without one, each with the
/// headers `connscope_map` gives it (Content-Security-Policy and all).
pub(crate) async fn map_ui(method: axum::http::Method, uri: axum::http::Uri) -> Response {
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
