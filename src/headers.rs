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

/// `x-turnout-attempts` values for the usual counts, shared instead of
/// formatted into a new buffer for every answer.
static SMALL_COUNTS: [HeaderValue; 10] = [
    HeaderValue::from_static("0"),
    HeaderValue::from_static("1"),
    HeaderValue::from_static("2"),
    HeaderValue::from_static("3"),
    HeaderValue::from_static("4"),
    HeaderValue::from_static("5"),
    HeaderValue::from_static("6"),
    HeaderValue::from_static("7"),
    HeaderValue::from_static("8"),
    HeaderValue::from_static("9"),
];

/// Adds the `x-turnout-*` headers to an answer of the proxy path.
pub fn decorate(h: &mut HeaderMap, upstream: Option<&str>, attempts: u32, request_id: &str) {
    if let Some(name) = upstream.and_then(|n| HeaderValue::from_str(n).ok()) {
        h.insert(UPSTREAM_HEADER.clone(), name);
    }
    let attempts = match SMALL_COUNTS.get(attempts as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(attempts),
    };
    h.insert(ATTEMPTS_HEADER.clone(), attempts);
    if let Ok(id) = HeaderValue::from_str(request_id) {
        h.insert(TURNOUT_REQUEST_ID_HEADER.clone(), id);
    }
}

/// Whether a `content-type` names JSON (`application/json`, `…+json`, or
/// any type that says `json`, as `str::contains` would find it), checked
/// twice per request: a four-byte window compare, where `contains` runs a
/// substring search (~440 instructions per call on `application/json`).
pub fn names_json(content_type: &str) -> bool {
    content_type
        .as_bytes()
        .windows(4)
        .any(|w| matches!(w, [b'j', b's', b'o', b'n']))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_json_is_contains_json() {
        for ct in [
            "",
            "json",
            "jso",
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
            "text/event-stream",
            "text/plain",
            "application/JSON",
            "xjsonx",
            "jjson",
            "js on",
        ] {
            assert_eq!(names_json(ct), ct.contains("json"), "{ct:?}");
        }
        const PIECES: [&str; 6] = ["j", "s", "o", "n", "json", "/"];
        for _ in 0..2000 {
            let ct: String = (0..fastrand::usize(0..8))
                .map(|_| PIECES[fastrand::usize(..PIECES.len())])
                .collect();
            assert_eq!(names_json(&ct), ct.contains("json"), "{ct:?}");
        }
    }

    #[test]
    fn attempts_are_written_as_decimal_whether_shared_or_formatted() {
        for n in [0, 1, 9, 10, 11, 123, u32::MAX] {
            let mut h = HeaderMap::new();
            decorate(&mut h, Some("up-a"), n, "req-1");
            assert_eq!(h[&ATTEMPTS_HEADER], n.to_string().as_str());
            assert_eq!(h[&UPSTREAM_HEADER], "up-a");
            assert_eq!(h[&TURNOUT_REQUEST_ID_HEADER], "req-1");
        }
    }
}
