//! Request tracing with OpenTelemetry (PRODUCT.md §3.11), off unless the
//! config has an `otel` section and its endpoint variable is set.
//!
//! Spans go out as OTLP over HTTP (protobuf) to `{endpoint}/v1/traces`,
//! batched by the SDK's processor on its own thread (a bounded queue: spans
//! beyond it are dropped, never a request slowed). The tracer is held by the
//! process state, not installed globally, so two Turnouts in one process
//! (tests) each export their own spans. The request path's spans are built
//! in `request::spans`; with tracing off it creates none.

mod client;

use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::config::OtelConfig;

/// Longest time one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracer and the W3C trace-context propagator of a running Turnout.
pub struct Otel {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Otel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Otel")
    }
}

/// `{base}/v1/traces`, as the OTLP spec builds it from
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; a URL that already ends so is kept.
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

impl Otel {
    /// Starts the exporter on the current tokio runtime.
    pub fn start(cfg: &OtelConfig, endpoint: &str) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "otel: must start inside the tokio runtime".to_owned())?;
        let url = traces_url(endpoint);
        axum::http::Uri::try_from(url.as_str())
            .map_err(|e| format!("otel.endpoint_env: {url:?} is not a URL: {e}"))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client::RuntimeClient::new(runtime, EXPORT_TIMEOUT)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("otel: {e}"))?;
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            // A client's sampling decision is kept; new traces by the ratio.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample_ratio,
            ))))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("turnout");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// The tracer spans are made with.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// The caller's trace from its `traceparent`/`tracestate` headers
    /// (an empty context, so a new trace, without them).
    pub fn extract(&self, headers: &axum::http::HeaderMap) -> Context {
        self.propagator.extract(&HeaderExtractor(headers))
    }

    /// Writes `cx`'s `traceparent` (and `tracestate`) into `headers`.
    pub fn inject(&self, cx: &Context, headers: &mut axum::http::HeaderMap) {
        self.propagator
            .inject_context(cx, &mut HeaderInjector(headers));
    }

    /// Exports what is queued and stops the exporter. Blocks: call it off
    /// the async threads (`spawn_blocking`).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("otel: shutdown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_path_is_appended_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
