//! Automatic rollback decided on the fleet's traffic (PRODUCT.md §3.8), so
//! that replicas never disagree: each replica's control task tallies the
//! split target's outcomes per route ([`Tally`]); the sync task adds them to
//! one hash per route in Redis (`{prefix}rw:{route}`, a field per second and
//! kind: `{second}:t` requests, `{second}:f` failures), reads the window back
//! and hands it to the control task ([`Event::FleetWindow`]), which judges the
//! error rate on the fleet's totals. While Redis is unreachable each replica
//! judges its own window. The latency threshold stays local (a p95 does not
//! add up across replicas).

use std::collections::HashMap;
use std::sync::Mutex;

use super::{wall_ms, Link};
use crate::config::Config;
use crate::control::{ControlHandle, Event};
use crate::routing::Snapshot;

/// One second of a route's target outcomes in the fleet: (second, requests, failures).
pub type Bucket = (u64, u64, u64);

/// The target outcomes a replica saw since the last sync, per route.
#[derive(Debug, Default)]
pub struct Tally {
    pending: Mutex<HashMap<String, (u64, u64)>>,
}

impl Tally {
    /// Counts one outcome of a route's split target (the control task).
    pub fn record(&self, route: &str, ok: bool) {
        if let Ok(mut p) = self.pending.lock() {
            // Bounded: one entry per configured route. Looked up by `&str`
            // first: the name is copied once per sync, not once per outcome.
            let fail = u64::from(!ok);
            match p.get_mut(route) {
                Some(e) => {
                    e.0 += 1;
                    e.1 += fail;
                }
                None => {
                    p.insert(route.to_owned(), (1, fail));
                }
            }
        }
    }

    fn take(&self, route: &str) -> (u64, u64) {
        self.pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(route))
            .unwrap_or_default()
    }

    fn put_back(&self, route: &str, (t, f): (u64, u64)) {
        if let Ok(mut p) = self.pending.lock() {
            let e = p.entry(route.to_owned()).or_default();
            e.0 += t;
            e.1 += f;
        }
    }
}

/// Pushes this replica's tallies and hands each route's fleet window (or,
/// with Redis unreachable, `None`) to the control task.
pub async fn sync(link: &Link, tally: &Tally, snap: &Snapshot, control: &ControlHandle) {
    let cfg: &Config = snap.cfg();
    let now = wall_ms() / 1000;
    for (i, r) in cfg.routes.iter().enumerate() {
        let Some(split) = r.split.as_ref().filter(|s| s.auto_rollback.enabled) else {
            continue;
        };
        let window = split.auto_rollback.window.as_secs().max(1);
        let (t, f) = tally.take(&r.name);
        let hash = link.key(&format!("rw:{}", r.name));
        let fields: Option<HashMap<String, u64>> = link
            .run(|mut c| async move {
                let mut p = redis::pipe();
                if t > 0 {
                    p.cmd("HINCRBY")
                        .arg(&hash)
                        .arg(format!("{now}:t"))
                        .arg(t)
                        .ignore();
                    p.cmd("HINCRBY")
                        .arg(&hash)
                        .arg(format!("{now}:f"))
                        .arg(f)
                        .ignore();
                }
                p.cmd("PEXPIRE")
                    .arg(&hash)
                    .arg((window * 2 + 10) * 1000)
                    .ignore();
                p.cmd("HGETALL").arg(&hash);
                let (all,): (HashMap<String, u64>,) = p.query_async(&mut c).await?;
                Ok(all)
            })
            .await;
        match &fields {
            None => tally.put_back(&r.name, (t, f)),
            Some(all) => forget_before(link, &r.name, all, now.saturating_sub(window)).await,
        }
        let live = snap.table.routes.get(i).and_then(|v| v.split);
        if live.is_none_or(|s| s.percentage <= 0.0) {
            continue;
        }
        let buckets = fields.map(|all| buckets(&all, now.saturating_sub(window)));
        control
            .send(Event::FleetWindow {
                route: r.name.clone(),
                buckets,
            })
            .await;
    }
}

/// Deletes the seconds that left the window, so the hash stays bounded.
async fn forget_before(link: &Link, route: &str, fields: &HashMap<String, u64>, from: u64) {
    let stale: Vec<&String> = fields
        .keys()
        .filter(|k| second(k).is_some_and(|s| s < from))
        .collect();
    if stale.is_empty() {
        return;
    }
    let hash = link.key(&format!("rw:{route}"));
    let _: Option<i64> = link
        .run(|mut c| async move {
            redis::cmd("HDEL")
                .arg(&hash)
                .arg(stale)
                .query_async(&mut c)
                .await
        })
        .await;
}

fn second(field: &str) -> Option<u64> {
    field.split_once(':')?.0.parse().ok()
}

/// The hash's fields as buckets, from second `from` on.
fn buckets(fields: &HashMap<String, u64>, from: u64) -> Vec<Bucket> {
    let mut by_sec: HashMap<u64, (u64, u64)> = HashMap::new();
    for (k, v) in fields {
        let Some((sec, kind)) = k.split_once(':') else {
            continue;
        };
        let Ok(sec) = sec.parse::<u64>() else {
            continue;
        };
        if sec < from {
            continue;
        }
        let e = by_sec.entry(sec).or_default();
        match kind {
            "t" => e.0 += v,
            "f" => e.1 += v,
            _ => {}
        }
    }
    by_sec.into_iter().map(|(s, (t, f))| (s, t, f)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_buckets_within_the_window() {
        let fields: HashMap<String, u64> = [
            ("100:t", 5),
            ("100:f", 1),
            ("99:t", 7),
            ("101:t", 2),
            ("101:f", 2),
            ("junk", 9),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut b = buckets(&fields, 100);
        b.sort_unstable();
        assert_eq!(b, vec![(100, 5, 1), (101, 2, 2)]);
        assert_eq!(second("99:t"), Some(99));
        assert_eq!(second("junk"), None);
    }

    #[test]
    fn a_tally_counts_and_takes_back() {
        let t = Tally::default();
        t.record("chat", true);
        t.record("chat", false);
        assert_eq!(t.take("chat"), (2, 1));
        assert_eq!(t.take("chat"), (0, 0));
        t.put_back("chat", (3, 1));
        assert_eq!(t.take("chat"), (3, 1));
    }
}
