//! One request, sent again and again, and the measure of one answer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::request::sse;

/// Longest stream tail kept while looking for event boundaries.
const MAX_EVENT: usize = 1024 * 1024;

/// A request body and a client to send it with.
pub struct Shot {
    client: reqwest::Client,
    url: reqwest::Url,
    body: Bytes,
    headers: reqwest::header::HeaderMap,
}

/// What one answer measured.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// How it ended ([`Outcome::Ok`]: a whole answer).
    pub outcome: Outcome,
    /// Time to the first token: a stream's first `data:` event; the whole
    /// body when not streaming.
    pub ttft: Option<Duration>,
    /// Time to the end of the answer (or of the failure).
    pub total: Duration,
    /// Tokens the answer reported.
    pub usage: Option<Usage>,
}

impl Sample {
    /// A whole answer (a stream: one that ended with its clean end).
    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    fn failed(outcome: Outcome, t0: Instant) -> Self {
        Self {
            outcome,
            ttft: None,
            total: t0.elapsed(),
            usage: None,
        }
    }
}

impl Shot {
    /// POSTs `body` to `url` with `headers`, each request under `timeout`,
    /// keeping up to `pool` idle connections.
    pub fn new(
        url: &str,
        body: Bytes,
        headers: reqwest::header::HeaderMap,
        timeout: Duration,
        pool: usize,
    ) -> Result<Self, String> {
        crate::upstream::install_crypto();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let url = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        Ok(Self {
            client,
            url,
            body,
            headers,
        })
    }

    /// The request, ready to send.
    pub fn send(&self) -> reqwest::RequestBuilder {
        self.client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("content-type", "application/json")
            .body(self.body.clone())
    }

    /// Sends once and measures the answer, streamed (SSE) or whole.
    pub async fn measure(&self, stream: bool) -> Sample {
        let t0 = Instant::now();
        let rsp = match self.send().send().await {
            Ok(r) => r,
            Err(e) => return Sample::failed(transport_outcome(&e), t0),
        };
        let status = rsp.status().as_u16();
        if !rsp.status().is_success() {
            let outcome = match status {
                429 => Outcome::Http429,
                500..=599 => Outcome::Http5xx,
                408 => Outcome::Timeout,
                _ => Outcome::Http4xx,
            };
            return Sample::failed(outcome, t0);
        }
        if stream {
            read_stream(rsp, t0).await
        } else {
            match rsp.bytes().await {
                Err(e) => Sample::failed(transport_outcome(&e), t0),
                Ok(body) => {
                    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                        return Sample::failed(Outcome::InvalidResponse, t0);
                    }
                    Sample {
                        outcome: Outcome::Ok,
                        ttft: Some(t0.elapsed()),
                        total: t0.elapsed(),
                        usage: crate::openai::usage_in(&body).and_then(|u| u.usage()),
                    }
                }
            }
        }
    }
}

fn transport_outcome(e: &reqwest::Error) -> Outcome {
    if e.is_timeout() {
        Outcome::Timeout
    } else if e.is_connect() {
        Outcome::ConnectError
    } else if e.is_body() || e.is_decode() {
        Outcome::Reset
    } else {
        Outcome::ConnectionError
    }
}

/// Reads an SSE answer to its end: the first `data:` event, `[DONE]`, the
/// usage chunk, an in-band error.
async fn read_stream(mut rsp: reqwest::Response, t0: Instant) -> Sample {
    let mut s = Sample {
        outcome: Outcome::EofWithoutDone,
        ttft: None,
        total: Duration::ZERO,
        usage: None,
    };
    let mut buf = BytesMut::new();
    loop {
        match rsp.chunk().await {
            Ok(Some(chunk)) => {
                if s.ttft.is_none() && sse::find(&chunk, b"data:").is_some() {
                    s.ttft = Some(t0.elapsed());
                }
                buf.extend_from_slice(&chunk);
                while let Some(end) = sse::find(&buf, b"\n\n") {
                    let event = buf.split_to(end + 2);
                    read_event(&event, &mut s);
                }
                if buf.len() > MAX_EVENT {
                    s.outcome = Outcome::InvalidResponse;
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                s.outcome = if e.is_timeout() {
                    Outcome::Timeout
                } else {
                    Outcome::Reset
                };
                break;
            }
        }
    }
    s.total = t0.elapsed();
    if s.outcome == Outcome::Ok && s.ttft.is_none() {
        s.outcome = Outcome::InvalidResponse;
    }
    s
}

/// One SSE event: `[DONE]` ends well, an `error` object fails, `usage` counts.
fn read_event(event: &[u8], s: &mut Sample) {
    let text = String::from_utf8_lossy(event);
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            if s.outcome == Outcome::EofWithoutDone {
                s.outcome = Outcome::Ok;
            }
            continue;
        }
        if !data.contains("\"usage\"") && !data.contains("\"error\"") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
            continue;
        };
        if v.get("error").is_some_and(|e| !e.is_null()) {
            s.outcome = Outcome::UpstreamError;
        }
        if let Some(u) = crate::openai::usage_in(data.as_bytes()).and_then(|u| u.usage()) {
            s.usage = Some(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_end_fail_and_count() {
        let mut s = Sample {
            outcome: Outcome::EofWithoutDone,
            ttft: None,
            total: Duration::ZERO,
            usage: None,
        };
        read_event(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":7}}\n\n",
            &mut s,
        );
        assert_eq!(s.usage.map(|u| u.completion_tokens), Some(7));
        read_event(b"data: [DONE]\n\n", &mut s);
        assert_eq!(s.outcome, Outcome::Ok);
        read_event(b"data: {\"error\":{\"message\":\"x\"}}\n\n", &mut s);
        assert_eq!(s.outcome, Outcome::UpstreamError);
    }
}
