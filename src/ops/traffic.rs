//! `GET /admin/traffic`: the request and error counters the operator page
//! turns into live rates (two polls apart), without parsing the whole
//! Prometheus exposition. Read from the same counters as `/metrics`, so the
//! page and the dashboards agree.

use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::proto::Metric;
use serde::Serialize;

use crate::metrics::Metrics;

/// Totals since the process started; a rate is the difference of two.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Traffic {
    /// Client requests answered (`turnout_requests_total`).
    pub requests: u64,
    /// Of those, answered with a 5xx status.
    pub errors: u64,
    /// Per upstream, by name.
    pub upstreams: BTreeMap<String, UpstreamTraffic>,
}

/// One upstream's totals.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct UpstreamTraffic {
    /// Client requests it served (or was the last one tried for).
    pub requests: u64,
    /// Of those, answered with a 5xx status.
    pub errors: u64,
    /// Attempts sent to it, hidden failovers included.
    pub attempts: u64,
    /// Attempts that failed (any outcome but `ok`).
    pub failed_attempts: u64,
}

/// Sums the counters. Cost: one pass over the label sets (bounded by config
/// names and status codes), a few hundred at most.
pub fn traffic(m: &Metrics) -> Traffic {
    let mut t = Traffic::default();
    for family in m.requests.collect() {
        for metric in family.get_metric() {
            let n = count(metric);
            let error = label(metric, "code").is_some_and(|c| c.starts_with('5'));
            t.requests += n;
            t.errors += if error { n } else { 0 };
            if let Some(up) = label(metric, "upstream").filter(|u| *u != "none") {
                let u = t.upstreams.entry(up.to_owned()).or_default();
                u.requests += n;
                u.errors += if error { n } else { 0 };
            }
        }
    }
    for family in m.attempts.collect() {
        for metric in family.get_metric() {
            let Some(up) = label(metric, "upstream") else {
                continue;
            };
            let n = count(metric);
            let u = t.upstreams.entry(up.to_owned()).or_default();
            u.attempts += n;
            if label(metric, "outcome") != Some("ok") {
                u.failed_attempts += n;
            }
        }
    }
    t
}

fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

fn count(m: &Metric) -> u64 {
    m.get_counter().get_value() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_requests_errors_and_attempts_per_upstream() {
        let m = Metrics::register(&prometheus::Registry::new()).unwrap();
        m.requests
            .with_label_values(&["chat", "a", "200", "http"])
            .inc_by(7);
        m.requests
            .with_label_values(&["chat", "a", "502", "http"])
            .inc_by(2);
        m.requests
            .with_label_values(&["chat", "b", "200", "ws"])
            .inc_by(3);
        m.requests
            .with_label_values(&["none", "none", "404", "http"])
            .inc();
        m.attempts.with_label_values(&["a", "ok"]).inc_by(7);
        m.attempts.with_label_values(&["a", "http_5xx"]).inc_by(4);
        let t = traffic(&m);
        assert_eq!((t.requests, t.errors), (13, 2));
        let a = &t.upstreams["a"];
        assert_eq!(
            (a.requests, a.errors, a.attempts, a.failed_attempts),
            (9, 2, 11, 4)
        );
        assert_eq!(t.upstreams["b"].requests, 3);
        assert!(!t.upstreams.contains_key("none"));
    }
}
