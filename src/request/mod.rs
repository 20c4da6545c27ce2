//! The request path, in the order a request walks it:
//!
//! | step | module | what it adds |
//! |---|---|---|
//! | admission | [`gate`] | the request's snapshot (loaded once), client key (401), key's `rpm` (429), `x-turnout-attempts` |
//! | edge | [`http`] · [`ws`] | read the request in its protocol; everything below is shared |
//! | route | [`plan`] | model → route, split key → chain (on the request's snapshot) |
//! | walk | [`walk`] driven by [`failover`] | which upstream next, retry budget, backoff; one record per attempt |
//! | leaf | [`attempt`] | one try on one upstream: key, model name, timeouts, the stream's commit point |
//! | stream | [`reader`] (+ [`sse`]) · [`relay`] · [`resume`] | after the commit point: idle and total deadlines, clean end, usage; HTTP's error event, or a continuation by another upstream |
//! | end | [`finish`] | metrics, cost, per-key usage, log line, mid-stream health report |
//! | tracing | [`spans`] | (tracing on only) a span per request and per attempt, `traceparent` upstream |

pub mod attempt;
pub mod failover;
pub mod finish;
pub mod gate;
pub mod http;
pub mod passthrough;
pub mod plan;
pub mod protocol;
pub mod reader;
pub mod relay;
pub mod resume;
pub mod shadow;
pub mod spans;
pub mod sse;
pub mod walk;
pub mod ws;
