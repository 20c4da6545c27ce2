//! The operator's web page, `GET /admin/` (PRODUCT.md §3.11): one HTML page
//! whose script and style are compiled into the binary (no CDN, no build
//! step, works offline) and served as separate files, so the
//! Content-Security-Policy can forbid every inline script and style.
//!
//! The page and its assets carry no data and are served without the token;
//! the page asks for the token once, keeps it in the tab's `sessionStorage`
//! and sends it as a bearer header on every call to the JSON admin API, which
//! is where every read and action happens.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

/// Only this origin's files and API; no inline code, no frames, no plugins,
/// no form posts elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The page's routes, for the admin router to merge (outside the token check).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route(
            "/admin/",
            get(|| async { file(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/admin/assets/app.js",
            get(|| async { file(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/admin/assets/app.css",
            get(|| async { file(APP_CSS, "text/css; charset=utf-8") }),
        )
}

/// An embedded file with the security headers every one of them carries.
fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut rsp = body.into_response();
    let h = rsp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // Re-validated on each load, so an upgraded binary's page is seen at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_loads_nothing_from_elsewhere_and_nothing_inline() {
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
        // No inline script or style (the CSP would block them).
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("<style"));
        assert!(!INDEX_HTML.contains("style="));
        let handler = |w: &str| w.starts_with("on") && w.contains('=');
        assert!(
            !INDEX_HTML.split_whitespace().any(handler),
            "inline event handler"
        );
        assert!(INDEX_HTML.contains(r#"src="assets/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="assets/app.css""#));
    }
}
