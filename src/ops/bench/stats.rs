//! Percentiles of measured durations (nearest rank).

use std::time::Duration;

/// The `q`-quantile (0–1) of `sorted` by nearest rank; `None` when empty.
pub fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted.get(i).copied()
}

/// `{"n","p50_ms","p90_ms","p99_ms","max_ms"}` of a set of durations (NaN
/// when empty): the load generator's summary, read by `scripts/bench/bench.py`.
pub fn summary(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort_unstable();
    let ms = |q: f64| percentile(&v, q).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    serde_json::json!({
        "n": v.len(),
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 0.95), Some(Duration::from_millis(95)));
        assert_eq!(percentile(&v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v[..1], 0.99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(summary(v)["n"], 100);
    }
}
