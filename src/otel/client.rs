//! The HTTP client the OTLP exporter sends with: the reqwest client Turnout
//! already has (for alert webhooks), driven on Turnout's tokio runtime.
//!
//! The SDK's batch processor exports from its own thread, outside any tokio
//! runtime, where an async client cannot run; each export is therefore
//! spawned onto the runtime that started Turnout and awaited from there.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::http::{Request, Response};
use bytes::Bytes;
use opentelemetry_http::{HttpClient, HttpError};

/// Largest collector answer read (an OTLP answer is a few bytes).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// reqwest on a given tokio runtime.
#[derive(Debug)]
pub struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl RuntimeClient {
    /// A client whose every export ends within `timeout`.
    pub fn new(runtime: tokio::runtime::Handle, timeout: Duration) -> Result<Self, String> {
        crate::upstream::install_crypto();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("otel: cannot build the HTTP client: {e}"))?;
        Ok(Self { client, runtime })
    }
}

async fn send(
    client: reqwest::Client,
    request: Request<Bytes>,
) -> Result<Response<Bytes>, HttpError> {
    let (parts, body) = request.into_parts();
    let rsp = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut out = Response::builder().status(rsp.status());
    if let Some(h) = out.headers_mut() {
        h.clone_from(rsp.headers());
    }
    let mut body = Vec::new();
    let mut rsp = rsp;
    while let Some(chunk) = rsp.chunk().await? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(out.body(Bytes::from(body))?)
}

// Written out rather than through `#[async_trait]`, which is what the trait
// is declared with: the same boxed future, one dependency fewer.
impl HttpClient for RuntimeClient {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let task = self.runtime.spawn(send(self.client.clone(), request));
        Box::pin(async move {
            // At most one line per batch (every few seconds), and only while
            // the collector is failing: spans are dropped, requests unaffected.
            let answer = task.await?;
            match &answer {
                Err(e) => tracing::warn!(error = %e, "otel: span export failed"),
                Ok(r) if !r.status().is_success() => {
                    tracing::warn!(
                        status = r.status().as_u16(),
                        "otel: collector refused spans"
                    )
                }
                Ok(_) => {}
            }
            answer
        })
    }
}
