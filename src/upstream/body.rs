//! What a request to an upstream carries, shared by both connection pools.

use bytes::Bytes;
use http_body_util::{Either, Full};

/// A request body for an upstream: the usual whole body (a routed request,
/// replayed on failover), or a pass-through client's body streamed as it
/// arrives. `Either` keeps the whole-body path free of boxing.
pub type UpstreamBody = Either<Full<Bytes>, axum::body::Body>;
