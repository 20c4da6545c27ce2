//! Turnout: an OpenAI-compatible failover router for LLM APIs.
//!
//! The folders are the architecture (see the README's request-flow diagram),
//! and imports only point down this list (`scripts/check-layers.py` checks it
//! in CI: no upward import, no cycle):
//!
//! | layer | modules | what they are |
//! |---|---|---|
//! | 7 assembly | [`app`] · `public` | builds the process: first snapshot, control task, probes, listeners and their tower stacks; the public listener's dispatch |
//! | 6 operations | [`ops`] | admin API (status, splits, rollbacks, `/metrics`), `/v1/models`, `/v1/account`, `turnout bench` ([`bench`]) |
//! | 5 request path | [`request`] | gate → HTTP / WebSocket edge → plan → walk (failover) → attempt → stream reader → finish |
//! | 4 shared state | [`state`] | `AppState`: the live snapshot handle, metrics, accounting, control handle, retry budget |
//! | 3 control | [`control`] | the single writer of the snapshot's table: health, splits, rollbacks, split store, alerts |
//! | 2 routing | [`routing`] | typed ids, the pure split, the routing table, the live [`Snapshot`](routing::Snapshot) |
//! | 1 clients | [`upstream`] · [`auth`] · [`limit`] · [`accounting`] · [`audit`] · [`otel`] | upstream HTTP clients, client keys, rate limits, what a finished request counts, the audit log, the OTLP span exporter |
//! | 0 foundation | [`config`] · [`error`] · [`metrics`] · [`outcome`] · [`headers`] · [`openai`] · [`budget`] · [`logfmt`] · [`serve`] · [`mock`] · [`alloc`] | used by all; import nothing above |
//!
//! One request: [`request::gate`] loads the [`Snapshot`](routing::Snapshot)
//! once and the request carries it to its end; [`request::plan`] picks the
//! route and the chain; [`request::walk`] (driven by
//! [`request::failover`]) tries upstreams through [`request::attempt`],
//! producing one [`AttemptRecord`](request::walk::AttemptRecord) per attempt
//! with its typed [`Outcome`](outcome::Outcome); a stream is read by
//! [`request::reader`]; [`request::finish`] records the end. HTTP
//! ([`request::http`]) and WebSocket ([`request::ws`]) differ only at their
//! edges.
pub(crate) mod accounting;
pub mod alloc;
pub mod app;
pub mod audit;
pub(crate) mod auth;
pub(crate) mod budget;
pub mod config;
pub(crate) mod control;
pub(crate) mod error;
pub(crate) mod headers;
pub(crate) mod limit;
pub mod logfmt;
pub mod metrics;
pub mod mock;
pub mod openai;
pub(crate) mod ops;
/// `turnout bench` and the measuring code it shares with the benchmark's
/// load generator (`examples/loadgen.rs`).
pub use ops::bench;
pub mod otel;
pub(crate) mod outcome;
pub(crate) mod public;
pub mod request;
pub mod routing;
pub(crate) mod serve;
pub mod state;
pub mod upstream;
