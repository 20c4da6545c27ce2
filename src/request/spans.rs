//! The request's OpenTelemetry spans, made only when tracing is on
//! ([`Otel`] present): with it off, the request path holds `None` where a
//! span would be and creates, allocates and propagates nothing.
//!
//! One server span per client request (continuing the client's W3C
//! `traceparent`), one client span per upstream attempt (its child, whose
//! context is sent upstream as `traceparent`), with the GenAI semantic
//! conventions' attributes: `gen_ai.operation.name`, `gen_ai.provider.name`
//! (the upstream's name), `gen_ai.request.model`, `gen_ai.response.model`,
//! `gen_ai.usage.input_tokens` / `output_tokens`. Never a prompt, an
//! answer, a key or a header value.

use std::sync::{Arc, OnceLock};

use axum::http::HeaderMap;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use crate::openai::Usage;
use crate::otel::Otel;
use crate::outcome::Outcome;

/// GenAI operation name of a `/v1` path; `None` for the other endpoints
/// (files, audio, pass-through, ...), whose spans are named by method and
/// path instead.
pub fn operation(path: &str) -> Option<&'static str> {
    let p = path.strip_prefix("/v1").unwrap_or(path);
    match p {
        "/chat/completions" | "/responses" | "/messages" => Some("chat"),
        "/completions" => Some("text_completion"),
        "/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// The span of one client request, and of the attempt that served it
/// (kept open until the answer ends: a stream's attempt lasts as long).
pub struct RequestTrace {
    cx: Context,
    op: Option<&'static str>,
    /// The serving attempt's span and the model its answer names (set once).
    served: OnceLock<(Option<Context>, Option<String>)>,
}

/// What an attempt's span needs from its request: the parent context and
/// the operation.
#[derive(Clone)]
pub struct TraceParent {
    cx: Context,
    op: Option<&'static str>,
}

impl RequestTrace {
    /// Starts the request's span, continuing the caller's trace.
    pub fn start(otel: &Otel, headers: &HeaderMap, method: &str, path: &str) -> Self {
        let parent = otel.extract(headers);
        let op = operation(path);
        let mut attrs = vec![
            KeyValue::new("http.request.method", method.to_owned()),
            KeyValue::new("url.path", path.to_owned()),
        ];
        let name = match op {
            Some(op) => {
                attrs.push(KeyValue::new("gen_ai.operation.name", op));
                op.to_owned()
            }
            None => format!("{method} {path}"),
        };
        let span = otel
            .tracer()
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attrs)
            .start_with_context(otel.tracer(), &parent);
        Self {
            cx: parent.with_span(span),
            op,
            served: OnceLock::new(),
        }
    }

    /// The route is known: the span is named `{operation} {model}`.
    pub fn planned(&self, model: &str, route: &str) {
        let span = self.cx.span();
        if let Some(op) = self.op {
            span.update_name(format!("{op} {model}"));
        }
        span.set_attribute(KeyValue::new("gen_ai.request.model", model.to_owned()));
        span.set_attribute(KeyValue::new("turnout.route", route.to_owned()));
    }

    /// The parent of the attempts' spans.
    pub fn parent(&self) -> TraceParent {
        TraceParent {
            cx: self.cx.clone(),
            op: self.op,
        }
    }

    /// The attempt that answered, and the model its answer names.
    pub fn served(&self, attempt: Option<Context>, response_model: Option<String>) {
        let _ = self.served.set((attempt, response_model));
    }

    /// Ends both spans: who served, the model, tokens, status.
    pub fn finish(
        &self,
        provider: Option<&str>,
        status: u16,
        attempts: u32,
        usage: Option<Usage>,
        broke: Option<Outcome>,
    ) {
        let (serving, response_model) = match self.served.get() {
            Some((s, m)) => (s.as_ref(), m.as_ref()),
            None => (None, None),
        };
        let mut common = Vec::with_capacity(3);
        if let Some(m) = response_model {
            common.push(KeyValue::new("gen_ai.response.model", m.clone()));
        }
        if let Some(u) = usage {
            common.push(KeyValue::new(
                "gen_ai.usage.input_tokens",
                u.prompt_tokens as i64,
            ));
            common.push(KeyValue::new(
                "gen_ai.usage.output_tokens",
                u.completion_tokens as i64,
            ));
        }
        if let Some(cx) = serving {
            let span = cx.span();
            span.set_attributes(common.iter().cloned());
            if let Some(o) = broke {
                span.set_attribute(KeyValue::new("error.type", o.label()));
                span.set_status(Status::error(o.label()));
            }
            span.end();
        }
        let span = self.cx.span();
        span.set_attributes(common);
        if let Some(p) = provider {
            span.set_attribute(KeyValue::new("gen_ai.provider.name", p.to_owned()));
        }
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("turnout.attempts", i64::from(attempts)));
        if let Some(o) = broke {
            span.set_attribute(KeyValue::new("error.type", o.label()));
            span.set_status(Status::error(o.label()));
        } else if status >= 500 {
            span.set_attribute(KeyValue::new("error.type", status.to_string()));
            span.set_status(Status::error(status.to_string()));
        }
        span.end();
    }
}

/// The span of one upstream attempt, a child of its request's.
pub struct AttemptSpan(Context);

impl AttemptSpan {
    /// Starts it: provider = the upstream's name, model = the name that
    /// upstream is asked for (after `model_map`).
    pub fn start(
        otel: &Otel,
        parent: &TraceParent,
        provider: &str,
        model: Option<&str>,
        n: u32,
    ) -> Self {
        let mut attrs = vec![
            KeyValue::new("gen_ai.provider.name", provider.to_owned()),
            KeyValue::new("turnout.attempt", i64::from(n)),
        ];
        if let Some(op) = parent.op {
            attrs.push(KeyValue::new("gen_ai.operation.name", op));
        }
        if let Some(m) = model {
            attrs.push(KeyValue::new("gen_ai.request.model", m.to_owned()));
        }
        let name = match (parent.op, model) {
            (Some(op), Some(m)) => format!("{op} {m}"),
            (Some(op), None) => op.to_owned(),
            (None, _) => format!("upstream {provider}"),
        };
        let span = otel
            .tracer()
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attrs)
            .start_with_context(otel.tracer(), &parent.cx);
        Self(parent.cx.with_span(span))
    }

    /// The client's headers plus this attempt's `traceparent`.
    pub fn headers(&self, otel: &Otel, client: &HeaderMap) -> Arc<HeaderMap> {
        let mut h = client.clone();
        otel.inject(&self.0, &mut h);
        Arc::new(h)
    }

    /// The attempt moved on: its outcome and status, then the end.
    pub fn failed(self, outcome: Outcome, status: Option<u16>) {
        let span = self.0.span();
        if let Some(s) = status {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        span.set_attribute(KeyValue::new("error.type", outcome.label()));
        span.set_status(Status::error(outcome.label()));
        span.end();
    }

    /// The attempt answered; its span stays open until the request ends.
    pub fn served(self, status: u16) -> Context {
        self.0.span().set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_follow_the_genai_names() {
        assert_eq!(operation("/v1/chat/completions"), Some("chat"));
        assert_eq!(operation("/v1/messages"), Some("chat"));
        assert_eq!(operation("/v1/embeddings"), Some("embeddings"));
        assert_eq!(operation("/v1/completions"), Some("text_completion"));
        assert_eq!(operation("/v1/files"), None);
    }
}
