//! Typed ids of upstreams and routes: names from the config are resolved to
//! these once, when a snapshot is built, so the request path and the control
//! task index arrays instead of looking names up (and cannot mix the two up).

/// An upstream's position in `upstreams` (and in every per-upstream array).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamId(u16);

/// A route's position in `routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(u16);

/// Most upstreams or routes a config may have (ids are 16-bit, chains are inline).
pub const MAX_IDS: usize = u16::MAX as usize;

macro_rules! id_impl {
    ($t:ident) => {
        impl $t {
            /// The id of position `i`; `None` past [`MAX_IDS`].
            pub fn new(i: usize) -> Option<Self> {
                u16::try_from(i).ok().map(Self)
            }
            /// Its position.
            pub fn index(self) -> usize {
                usize::from(self.0)
            }
        }
    };
}

id_impl!(UpstreamId);
id_impl!(RouteId);

/// Ids of positions `0..n` (at most [`MAX_IDS`]).
pub(crate) fn upstream_ids(n: usize) -> impl Iterator<Item = UpstreamId> {
    (0..n.min(MAX_IDS)).filter_map(UpstreamId::new)
}
