//! The `x-turnout-*` response headers: names every layer shares, kept in a
//! leaf so that the admission layer and the handlers below it agree on them
//! without importing each other.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// `x-turnout-upstream`: who served the answer (on an error, the last upstream tried).
pub static UPSTREAM_HEADER: HeaderName = HeaderName::from_static("x-turnout-upstream");
/// `x-turnout-attempts`: upstream attempts made for this answer (0 = none reached).
pub static ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-turnout-attempts");
/// `x-request-id`: the request's id (the client's, or one Turnout made), echoed back and logged.
pub static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// `x-turnout-request-id`: Turnout's request id, on every answer of the
/// proxy path (`x-request-id` is the provider's when it sent one).
pub static TURNOUT_REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-turnout-request-id");

/// Adds the `x-turnout-*` headers to an answer of the proxy path.
pub fn decorate(h: &mut HeaderMap, upstream: Option<&str>, attempts: u32, request_id: &str) {
    if let Some(name) = upstream.and_then(|n| HeaderValue::from_str(n).ok()) {
        h.insert(UPSTREAM_HEADER.clone(), name);
    }
    h.insert(ATTEMPTS_HEADER.clone(), HeaderValue::from(attempts));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert(TURNOUT_REQUEST_ID_HEADER.clone(), id);
    }
}
