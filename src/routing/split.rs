//! The split: a pure function of (route, user key, percentage).
//!
//! `bucket = xxh3_64(route ‖ 0x00 ‖ key) mod 10_000`; the user is in the
//! target's share iff `bucket < round(percentage × 100)`. Salting by route lets
//! routes split users independently; the fixed, seedless xxh3 makes the bucket
//! the same in every process, version and replica (golden values below pin it).
//! Raising the percentage only adds buckets, so nobody already moved moves back.

use xxhash_rust::xxh3::Xxh3;

use super::ids::UpstreamId;

/// Buckets per route: a share has a resolution of 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// The bucket (0..10_000) of a user key on a route.
pub fn bucket(route: &str, key: &str) -> u32 {
    let mut h = Xxh3::new();
    h.update(route.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    (h.digest() % u64::from(BUCKETS)) as u32
}

/// The shadow bucket (0..10_000) of a user key on a route: the same hash
/// salted with `0x01` instead of `0x00`, so that the shadowed users are
/// chosen independently of the split's.
pub fn shadow_bucket(route: &str, key: &str) -> u32 {
    let mut h = Xxh3::new();
    h.update(route.as_bytes());
    h.update(&[1]);
    h.update(key.as_bytes());
    (h.digest() % u64::from(BUCKETS)) as u32
}

/// Whether a user key's requests are shadowed at `percentage` (no key: at random).
pub fn in_shadow(route: &str, key: Option<&str>, percentage: f64) -> bool {
    let t = threshold(percentage);
    let b = match key {
        Some(k) => shadow_bucket(route, k),
        None => fastrand::u32(0..BUCKETS),
    };
    b < t
}

/// A percentage (0–100, two decimals) as a bucket threshold.
pub fn threshold(percentage: f64) -> u32 {
    (percentage.clamp(0.0, 100.0) * 100.0).round() as u32
}

/// Whether a user key falls in the target's share.
pub fn in_target(route: &str, key: Option<&str>, percentage: f64) -> bool {
    let t = threshold(percentage);
    if t == 0 {
        return false;
    }
    if t >= BUCKETS {
        return true;
    }
    let b = match key {
        Some(k) => bucket(route, k),
        // No key at all: placed at random, per request.
        None => fastrand::u32(0..BUCKETS),
    };
    b < t
}

/// Rounds a requested share to two decimals.
pub fn round_percentage(p: f64) -> f64 {
    (p * 100.0).round() / 100.0
}

/// The order of upstream indices for one request.
///
/// In the share: target, then primary and fallbacks without the target.
/// Otherwise: primary, then fallbacks.
pub fn chain(primary: usize, fallbacks: &[usize], target: Option<usize>, moved: bool) -> Chain {
    let mut c = Chain::default();
    match target {
        Some(t) if moved => {
            c.push(t);
            for &u in std::iter::once(&primary).chain(fallbacks) {
                if u != t {
                    c.push(u);
                }
            }
        }
        _ => {
            c.push(primary);
            for &u in fallbacks {
                c.push(u);
            }
        }
    }
    c
}

/// Longest chain kept inline; longer ones are truncated (a chain of 8 is plenty).
pub const MAX_CHAIN: usize = 8;

/// An ordered list of upstream indices that lives on the stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Chain {
    items: [u16; MAX_CHAIN],
    len: u8,
}

impl Chain {
    fn push(&mut self, u: usize) {
        if (self.len as usize) < MAX_CHAIN {
            self.items[self.len as usize] = u as u16;
            self.len += 1;
        }
    }
    /// Upstream indices in order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.items[..self.len as usize].iter().map(|&u| u as usize)
    }
    /// Number of upstreams.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The `i`th upstream.
    pub fn get(&self, i: usize) -> Option<usize> {
        (i < self.len()).then(|| self.items[i] as usize)
    }
    /// The members for which `keep` holds, in order.
    pub fn filtered(&self, keep: impl Fn(usize) -> bool) -> Chain {
        let mut c = Chain::default();
        for u in self.iter().filter(|&u| keep(u)) {
            c.push(u);
        }
        c
    }
    /// The upstreams in order, as ids.
    pub fn ids(&self) -> impl Iterator<Item = UpstreamId> + '_ {
        self.iter().filter_map(UpstreamId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_buckets_are_stable() {
        // Pinned: changing these breaks stickiness for every deployed user.
        let got: Vec<u32> = [
            ("chat", "alice"),
            ("chat", "bob"),
            ("chat", ""),
            ("embed", "alice"),
            ("chat", "user-12345"),
        ]
        .iter()
        .map(|(r, k)| bucket(r, k))
        .collect();
        assert_eq!(got, GOLDEN.to_vec());
    }

    const GOLDEN: [u32; 5] = [7999, 1902, 898, 2817, 3900];

    #[test]
    fn share_is_close_to_percentage() {
        for pct in [1.0, 10.0, 33.33, 50.0, 90.0] {
            let n = 100_000;
            let moved = (0..n)
                .filter(|i| in_target("chat", Some(&format!("user-{i}")), pct))
                .count();
            let share = moved as f64 * 100.0 / n as f64;
            assert!((share - pct).abs() <= 0.5, "pct {pct}: got {share}");
        }
    }

    #[test]
    fn raising_only_adds_users() {
        for i in 0..20_000 {
            let k = format!("u{i}");
            if in_target("chat", Some(&k), 10.0) {
                assert!(in_target("chat", Some(&k), 30.0));
            }
        }
    }

    #[test]
    fn extremes() {
        assert!(!in_target("r", Some("a"), 0.0));
        assert!(in_target("r", Some("a"), 100.0));
        assert!(!in_target("r", None, 0.0));
        assert_eq!(round_percentage(12.345), 12.35);
        assert_eq!(threshold(0.01), 1);
    }

    #[test]
    fn chain_orders() {
        let c = chain(0, &[1, 2], Some(2), true);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![2, 0, 1]);
        let c = chain(0, &[1, 2], Some(2), false);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        let c = chain(0, &[1], Some(3), true);
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![3, 0, 1]);
    }
}
