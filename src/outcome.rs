//! How one upstream attempt ended: one type that failover, health, metrics,
//! logs and alerts all read, so that "what happened" is decided once, where
//! the answer is classified, and its metric label is spelled in one place.
//!
//! The labels are a contract: `turnout_upstream_attempts_total{outcome}`,
//! `turnout_failovers_total{reason}` and `turnout_stream_errors_total{reason}`
//! carry them, and the dashboards' alert tests are checked against [`Outcome::ALL`].

use std::fmt;

/// The end of one attempt (before the commit point) or of a relayed stream (after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream's answer is final: a success, or a client error such as a 400.
    Ok,
    /// `429`: the upstream is throttling. Not a health failure; it cools the upstream.
    Http429,
    /// A `5xx` from the upstream.
    Http5xx,
    /// The upstream's own `401`/`403`/`404`: its key or model is wrong, not the client's.
    Http4xx,
    /// No answer (headers, or a stream's first event) in time, or a `408`.
    Timeout,
    /// TCP connect failed (refused, unreachable, connect timeout).
    ConnectError,
    /// The connection failed after it was made (TLS, closed before the head).
    ConnectionError,
    /// The body broke while it was being read.
    Reset,
    /// Not the JSON or SSE it claims to be.
    InvalidResponse,
    /// A whole body larger than Turnout reads into memory.
    ResponseTooLarge,
    /// The upstream's URL and the client's path do not make a valid URL.
    InvalidUrl,
    /// A stream sent nothing within `timeouts.idle` after it began.
    IdleTimeout,
    /// A stream ran past `timeouts.total`.
    TotalTimeout,
    /// A stream's body ended before its protocol's clean end (PRODUCT.md §3.7).
    EofWithoutDone,
    /// The upstream reported an error inside its stream, or a 2xx whose body
    /// is an error (a top-level `error`, a failed Responses object).
    UpstreamError,
    /// `400 context_length_exceeded`: the request is too long for this
    /// upstream (another may have a longer context). Not a health failure.
    ContextLengthExceeded,
    /// A stream that ended cleanly with nothing in it (no content, no tool
    /// call, no finish reason): an empty answer, tried elsewhere.
    EmptyAnswer,
}

impl Outcome {
    /// Every outcome, for label checks and for exposing every series at 0.
    pub const ALL: [Outcome; 17] = [
        Self::Ok,
        Self::Http429,
        Self::Http5xx,
        Self::Http4xx,
        Self::Timeout,
        Self::ConnectError,
        Self::ConnectionError,
        Self::Reset,
        Self::InvalidResponse,
        Self::ResponseTooLarge,
        Self::InvalidUrl,
        Self::IdleTimeout,
        Self::TotalTimeout,
        Self::EofWithoutDone,
        Self::UpstreamError,
        Self::ContextLengthExceeded,
        Self::EmptyAnswer,
    ];

    /// The metric label and log word (bounded, fixed).
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Http429 => "http_429",
            Self::Http5xx => "http_5xx",
            Self::Http4xx => "http_4xx",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
            Self::ConnectionError => "connection_error",
            Self::Reset => "reset",
            Self::InvalidResponse => "invalid_response",
            Self::ResponseTooLarge => "response_too_large",
            Self::InvalidUrl => "invalid_url",
            Self::IdleTimeout => "idle_timeout",
            Self::TotalTimeout => "total_timeout",
            Self::EofWithoutDone => "eof_without_done",
            Self::UpstreamError => "upstream_error",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::EmptyAnswer => "empty_answer",
        }
    }

    /// The outcome of a label, for tests and tools that read metrics back.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.label() == label)
    }

    /// True when the attempt ended because time ran out (a walk that ends on
    /// one answers `504`).
    pub fn is_timeout(self) -> bool {
        matches!(self, Self::Timeout | Self::IdleTimeout | Self::TotalTimeout)
    }

    /// A 5xx or a broken connection before the response started: worth one
    /// more try on the same upstream (`failover.same_upstream_retries`). A
    /// refused connect moves on at once (the port is closed; a retry would be
    /// refused too), and so does a timeout.
    pub fn retries_same_upstream(self) -> bool {
        matches!(self, Self::Http5xx | Self::ConnectionError | Self::Reset)
    }

    /// True for `429`: counted apart from failures (no ejection), cools the upstream.
    pub fn is_throttled(self) -> bool {
        self == Self::Http429
    }

    /// Whether the upstream served: anything else is evidence against its health
    /// (except [`Outcome::Http429`], see [`Outcome::is_throttled`], and
    /// [`Outcome::ContextLengthExceeded`], see [`Outcome::is_healthy`]).
    pub fn is_ok(self) -> bool {
        self == Self::Ok
    }

    /// The upstream works, whatever became of the request: a success, or an
    /// answer that is about the request (too long for it), not about the upstream.
    pub fn is_healthy(self) -> bool {
        matches!(self, Self::Ok | Self::ContextLengthExceeded)
    }

    /// This request should not try that upstream again (it said 429, or the
    /// request is too long for it).
    pub fn excludes_upstream(self) -> bool {
        matches!(self, Self::Http429 | Self::ContextLengthExceeded)
    }

    /// What a client-facing message says about a stream that broke after it began.
    pub fn stream_detail(self) -> &'static str {
        match self {
            Self::IdleTimeout => "no data within the idle timeout",
            Self::TotalTimeout => "the stream exceeded the total timeout",
            Self::EofWithoutDone => "the stream ended before its clean end",
            Self::EmptyAnswer => "the answer was empty",
            Self::UpstreamError => "the upstream sent an error event",
            Self::InvalidResponse => "the upstream sent something that is not SSE JSON",
            Self::Timeout => "timeout",
            _ => "connection error",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for o in Outcome::ALL {
            assert!(seen.insert(o.label()), "duplicate label {}", o.label());
            assert_eq!(Outcome::from_label(o.label()), Some(o));
        }
    }

    /// The alert rules' unit tests and the fake exporter the dashboard proof
    /// runs against must use the labels the code emits.
    #[test]
    fn dashboards_use_the_emitted_labels() {
        let root = env!("CARGO_MANIFEST_DIR");
        for file in [
            "dashboards/alerts.test.yml",
            "dashboards/alerts.yml",
            "scripts/testdata/fake_turnout_exporter.py",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap_or_default();
            for key in ["outcome", "reason"] {
                for quote in ['"', '\''] {
                    let needle = format!("{key}={quote}");
                    let alt = format!("\"{key}\": {quote}");
                    for pat in [needle, alt] {
                        for (i, _) in text.match_indices(&pat) {
                            let rest = &text[i + pat.len()..];
                            let value = rest.split(quote).next().unwrap_or("");
                            // Failover reasons and stream-error reasons share the enum.
                            assert!(
                                Outcome::from_label(value).is_some(),
                                "{file}: {key}={value:?} is not a label Turnout emits"
                            );
                        }
                    }
                }
            }
        }
    }
}
