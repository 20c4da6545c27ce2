//! The errors a client can see, each mapped to one status and an OpenAI-shaped body.
//!
//! Bodies never carry a key or a prompt: only upstream names and short reasons.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// An error answered to the client by the proxy itself (not passed through from an upstream).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI `error.type`.
    pub kind: &'static str,
    /// OpenAI `error.code`.
    pub code: &'static str,
    /// Human-readable, safe to show.
    pub message: String,
    /// Seconds for `Retry-After`, on 429/503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// Builds an error of any shape.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 400: the client's request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request",
            message,
        )
    }
    /// 401: missing or wrong client key.
    pub fn invalid_api_key() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect or missing API key. Send it as `Authorization: Bearer <key>`.",
        )
    }
    /// 404: no route for the model.
    pub fn model_not_found(model: &str) -> Self {
        let shown: String = model.chars().take(200).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
            format!("The model `{shown}` does not exist or no route serves it."),
        )
    }
    /// 404: unknown path.
    pub fn not_found(path: &str) -> Self {
        let shown: String = path.chars().take(200).collect();
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            format!("Unknown path {shown}"),
        )
    }
    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "Method not allowed on this path",
        )
    }
    /// 413: body over `max_body_bytes`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("Request body exceeds the limit of {limit} bytes."),
        )
    }
    /// 429: the client's own rate limit.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "rate_limit_exceeded",
            "Rate limit exceeded for this API key; retry after the Retry-After delay.",
        );
        e.retry_after = Some(retry_after.max(1));
        e
    }
    /// 500: a bug or an impossible state; the message stays generic.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            message,
        )
    }

    /// The OpenAI-shaped JSON body.
    pub fn body(&self) -> Bytes {
        error_body(&self.message, self.kind, self.code)
    }
}

/// `{"error":{"message","type","code","param":null}}` with proper JSON escaping.
pub fn error_body(message: &str, kind: &str, code: &str) -> Bytes {
    let v = serde_json::json!({
        "error": { "message": message, "type": kind, "code": code, "param": null }
    });
    Bytes::from(v.to_string())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut rsp = (self.status, self.body()).into_response();
        let h = rsp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        rsp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_openai_shaped_and_escaped() {
        let b = ApiError::bad_request("bad \"quote\"\n").body();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["message"], "bad \"quote\"\n");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_request");
        assert!(v["error"]["param"].is_null());
    }
}
