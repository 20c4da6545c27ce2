//! The shadow comparison of one route (PRODUCT.md §3.9): counts and bounded
//! samples of the primary/shadow pairs the request path compared, for
//! `routes[].split.shadow` in `/admin/status`.

use std::collections::VecDeque;

use crate::routing::ShadowView;

/// Latency ratios kept for the percentiles (the most recent ones).
const MAX_RATIOS: usize = 1024;

/// One compared pair, as the request path reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowPair {
    /// The primary (the client's answer) succeeded.
    pub primary_ok: bool,
    /// The shadow succeeded.
    pub shadow_ok: bool,
    /// Shadow total latency / primary total latency.
    pub latency_ratio: Option<f64>,
    /// Both succeeded with the same `finish_reason` and tool-call names;
    /// `None` when an answer could not be read for it.
    pub same_shape: Option<bool>,
    /// USD, when both sides are priced.
    pub costs: Option<(f64, f64)>,
}

/// Every pair of a route since start.
#[derive(Debug, Default)]
pub struct ShadowStats {
    pairs: u64,
    target_errors: u64,
    primary_errors: u64,
    ratios: VecDeque<f64>,
    shapes: (u64, u64),
    costs: (f64, f64),
}

impl ShadowStats {
    /// Adds a pair.
    pub fn add(&mut self, p: ShadowPair) {
        self.pairs += 1;
        self.target_errors += u64::from(!p.shadow_ok);
        self.primary_errors += u64::from(!p.primary_ok);
        if let Some(r) = p.latency_ratio.filter(|r| r.is_finite()) {
            if self.ratios.len() == MAX_RATIOS {
                self.ratios.pop_front();
            }
            self.ratios.push_back(r);
        }
        if let Some(same) = p.same_shape {
            self.shapes.0 += u64::from(same);
            self.shapes.1 += 1;
        }
        if let Some((primary, shadow)) = p.costs {
            self.costs.0 += primary;
            self.costs.1 += shadow;
        }
    }

    /// For status.
    pub fn view(&self) -> ShadowView {
        let mut r: Vec<f64> = self.ratios.iter().copied().collect();
        r.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            (!r.is_empty()).then(|| {
                let i = ((r.len() as f64) * q).ceil() as usize;
                r[i.saturating_sub(1).min(r.len() - 1)]
            })
        };
        ShadowView {
            pairs: self.pairs,
            target_errors: self.target_errors,
            primary_errors: self.primary_errors,
            latency_ratio_p50: pct(0.5),
            latency_ratio_p95: pct(0.95),
            same_shape_rate: (self.shapes.1 > 0)
                .then(|| self.shapes.0 as f64 / self.shapes.1 as f64),
            cost_ratio: (self.costs.0 > 0.0).then(|| self.costs.1 / self.costs.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_pairs() {
        let mut s = ShadowStats::default();
        for i in 1..=10 {
            s.add(ShadowPair {
                primary_ok: true,
                shadow_ok: i != 3,
                latency_ratio: Some(f64::from(i)),
                same_shape: Some(i % 2 == 0),
                costs: Some((1.0, 0.5)),
            });
        }
        let v = s.view();
        assert_eq!((v.pairs, v.target_errors, v.primary_errors), (10, 1, 0));
        assert_eq!(v.latency_ratio_p50, Some(5.0));
        assert_eq!(v.latency_ratio_p95, Some(10.0));
        assert_eq!(v.same_shape_rate, Some(0.5));
        assert_eq!(v.cost_ratio, Some(0.5));
    }
}
