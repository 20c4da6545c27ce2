//! Measuring upstreams: `turnout bench` (PRODUCT.md §3.11) and the load
//! generator of `scripts/bench.sh` (`examples/loadgen.rs`) share this code.
//!
//! - [`shot`]: one request body sent again and again, and the measure of one
//!   answer (time to first token, total time, tokens, how it failed);
//! - [`stats`]: percentiles of a set of durations;
//! - [`command`]: `turnout bench`: each configured upstream (each endpoint)
//!   measured directly, a progress bar, a table or JSON, and the `--yes` rule
//!   for upstreams that may bill.

pub mod command;
pub mod shot;
pub mod stats;

pub use command::{run, BenchArgs};
pub use shot::{Sample, Shot};
pub use stats::{percentile, summary};
