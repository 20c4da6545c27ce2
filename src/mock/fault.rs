//! Parsing the `x-mock-fault` header and turning faults into responses for
//! non-streaming bodies; OpenAI-shaped error responses.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::body;
use super::state::Flight;
use super::Fault;

/// Parses `status=503`, `status=429;retry-after=2`, `hang`, `truncate=3`,
/// `reset=3`, `junk`, `stall=2`, `error=2`, `empty`.
pub(crate) fn parse_fault(spec: &str) -> Result<Fault, String> {
    let mut parts = spec.split(';').map(str::trim);
    let first = parts.next().unwrap_or_default();
    let (name, value) = match first.split_once('=') {
        Some((n, v)) => (n.trim(), Some(v.trim())),
        None => (first, None),
    };
    let num = |v: Option<&str>| -> Result<u32, String> {
        let v = v.ok_or_else(|| format!("fault `{name}` needs a number, e.g. `{name}=3`"))?;
        v.parse()
            .map_err(|_| format!("fault `{name}`: `{v}` is not a number"))
    };
    let fault = match name.to_ascii_lowercase().as_str() {
        "status" => {
            let code = num(value)?;
            let code = u16::try_from(code).map_err(|_| format!("bad status `{code}`"))?;
            StatusCode::from_u16(code).map_err(|_| format!("bad status `{code}`"))?;
            let mut retry_after = None;
            for opt in parts.by_ref() {
                match opt.split_once('=') {
                    Some((k, v)) if k.trim().eq_ignore_ascii_case("retry-after") => {
                        let secs = v
                            .trim()
                            .parse()
                            .map_err(|_| format!("bad retry-after `{v}`"))?;
                        retry_after = Some(secs);
                    }
                    _ => return Err(format!("unknown status option `{opt}`")),
                }
            }
            Fault::Status { code, retry_after }
        }
        "hang" => Fault::Hang,
        "junk" => Fault::Junk,
        "truncate" => Fault::Truncate { after: num(value)? },
        "reset" => Fault::Reset { after: num(value)? },
        "stall" => Fault::Stall { after: num(value)? },
        "context_length" => Fault::ContextLength,
        "error" => Fault::Error { after: num(value)? },
        "empty" => Fault::Empty,
        _ => return Err(format!("unknown fault `{spec}`")),
    };
    if let Some(extra) = parts.next() {
        return Err(format!("unexpected `{extra}` in fault `{spec}`"));
    }
    Ok(fault)
}

/// An OpenAI error response with a `type` and `code` fitting `status`.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    let (kind, code) = match status.as_u16() {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("authentication_error", "invalid_api_key"),
        403 => ("permission_error", "forbidden"),
        404 => ("invalid_request_error", "not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("api_error", "error"),
    };
    let mut resp = json_response(Bytes::from(body::error(message, kind, code)));
    *resp.status_mut() = status;
    resp
}

/// The response of a `Status` fault.
pub(crate) fn status_fault(code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error_response(status, &format!("mock fault: status {code}"));
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// `400 context_length_exceeded`, worded as OpenAI words it.
pub(crate) fn context_length_fault() -> Response {
    let msg = "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 tokens. Please reduce the length of the messages.";
    let mut resp = json_response(Bytes::from(body::error(
        msg,
        "invalid_request_error",
        "context_length_exceeded",
    )));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp
}

/// A 200 `application/json` response.
pub(crate) fn json_response(body: Bytes) -> Response {
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON body, damaged as `fault` asks (junk, truncate, reset, stall);
/// other faults are handled before the body exists and are ignored here.
pub(crate) fn json_with_fault(fault: Option<&Fault>, json: Bytes, mut flight: Flight) -> Response {
    let half = json.slice(..json.len() / 2);
    match fault {
        Some(Fault::Junk) => {
            flight.finish();
            json_response(Bytes::from_static(b"<html>mock junk: this is not JSON"))
        }
        Some(Fault::Truncate { .. }) => {
            flight.finish();
            json_response(half)
        }
        Some(Fault::Reset { .. }) => {
            let stream = futures_util::stream::unfold(Some((half, flight)), |st| async move {
                let (half, mut flight) = st?;
                if !half.is_empty() {
                    return Some((Ok(half), Some((Bytes::new(), flight))));
                }
                tokio::task::yield_now().await;
                flight.finish();
                let err = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "mock reset");
                Some((Err(err), None))
            });
            json_response_stream(Body::from_stream(stream))
        }
        Some(Fault::Stall { .. }) => {
            let stream = futures_util::stream::unfold(Some((half, flight)), |st| async move {
                let (half, flight) = st?;
                if half.is_empty() {
                    // Hold the flight: dropped (a disconnect) when the client leaves.
                    let _hold = flight;
                    return std::future::pending().await;
                }
                Some((Ok::<_, std::io::Error>(half), Some((Bytes::new(), flight))))
            });
            json_response_stream(Body::from_stream(stream))
        }
        _ => {
            flight.finish();
            json_response(json)
        }
    }
}

/// A 200 `application/json` response with a streamed body.
fn json_response_stream(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_header_form() {
        let ok = |s: &str| parse_fault(s).unwrap_or(Fault::Junk);
        assert_eq!(
            ok("status=503"),
            Fault::Status {
                code: 503,
                retry_after: None
            }
        );
        assert_eq!(
            ok("status=429; retry-after=2"),
            Fault::Status {
                code: 429,
                retry_after: Some(2)
            }
        );
        assert_eq!(ok("hang"), Fault::Hang);
        assert_eq!(ok("truncate=3"), Fault::Truncate { after: 3 });
        assert_eq!(ok("reset=0"), Fault::Reset { after: 0 });
        assert_eq!(ok("stall=2"), Fault::Stall { after: 2 });
        assert_eq!(parse_fault("junk"), Ok(Fault::Junk));
        assert_eq!(parse_fault("context_length"), Ok(Fault::ContextLength));
        assert_eq!(ok("error=1"), Fault::Error { after: 1 });
        assert_eq!(ok("empty"), Fault::Empty);
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "status",
            "status=abc",
            "status=70000",
            "truncate",
            "boom",
            "hang;x",
        ] {
            assert!(parse_fault(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fault_json_deserializes_externally_tagged() {
        let f: Result<Fault, _> = serde_json::from_str(r#"{"status":{"code":503}}"#);
        assert_eq!(
            f.ok(),
            Some(Fault::Status {
                code: 503,
                retry_after: None
            })
        );
        let f: Result<Fault, _> = serde_json::from_str(r#""hang""#);
        assert_eq!(f.ok(), Some(Fault::Hang));
    }
}
