//! Turnout: an OpenAI-compatible failover router for LLM APIs.
//!
//! The module tree follows the request path (see the README's diagram):
//!
//! | step | module | what it adds |
//! |---|---|---|
//! | accept | [`serve`] | HTTP/1.1 keep-alive, header read timeout, upgrades, graceful drain |
//! | stack | [`app`] · [`gate`] | the tower layers: trace, request id, CORS, then [`gate`]: [`auth`] + [`limit`] + `x-turnout-attempts` |
//! | handler | [`proxy`] | body limit, minimal parse ([`openai`]), route by model ([`routing`]) |
//! | split | [`split`] | `xxh3(route, user key)` → the chain's order (pure) |
//! | failover | [`failover`] | walks the chain: retry [`budget`], backoff, the rules of what moves on |
//! | leaf | [`attempt`] over [`upstream`] | one try on one upstream: key, model name, timeouts, first-event commit |
//! | answer | [`stream`] · [`accounting`] | SSE relay with usage scan and error event; metrics, cost, the log line |
//!
//! Beside the path: [`control`] is the single writer of the routing table,
//! fed by [`health`] (active probes, passive outcomes), the admin API
//! ([`admin`]), automatic [`rollback`]; it persists [`overrides`] and sends
//! [`alerts`]. [`ws`] serves WebSocket chat on the same split and failover;
//! [`models`] lists models and per-key usage; [`mock`] is the simulated
//! provider; [`config`], [`error`] and [`metrics`] are used by all. Nothing
//! low imports the stack above it.
pub mod accounting;
pub mod admin;
pub mod alerts;
pub mod app;
pub mod attempt;
pub mod auth;
pub mod budget;
pub mod config;
pub mod control;
pub mod error;
pub mod failover;
pub mod gate;
pub mod health;
pub mod limit;
pub mod logfmt;
pub mod metrics;
pub mod mock;
pub mod models;
pub mod openai;
pub mod overrides;
pub mod proxy;
pub mod rollback;
pub mod routing;
pub mod serve;
pub mod split;
pub mod stream;
pub mod upstream;
pub mod ws;
