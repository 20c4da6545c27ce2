//! Upstream health from two sources: active probes (background) and passive
//! outcomes of live traffic. Both feed the control task, which publishes the
//! routing table.

pub mod endpoints;
pub mod prober;
pub mod state;
pub mod window;

pub use endpoints::EndpointsHealth;
pub use state::Verdict;
