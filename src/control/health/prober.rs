//! Active probes: a cheap `GET {base_url}{health.path}` (never a billed
//! completion) per endpoint of each upstream, every `interval`, each under its own timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Response;
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::control::{ControlHandle, Event};
use crate::metrics::Metrics;
use crate::routing::{Base, UpstreamId};
use crate::upstream::{ResponseBody, Upstream};

/// Largest `/models` body read for the model list.
const MAX_MODELS_BODY: usize = 4 * 1024 * 1024;

#[derive(Deserialize)]
struct ModelList {
    data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
struct ModelEntry {
    id: String,
}

/// The probe loops of the current config: one per endpoint of each upstream
/// with probes enabled, each with its own id. A reload ([`Probes::update`])
/// keeps the loops of every upstream whose client and probe settings
/// (endpoints included) are unchanged and restarts all the loops of the others.
#[derive(Default)]
pub struct Probes {
    loops: Vec<Option<ProbeLoops>>,
    next_id: u64,
}

/// One upstream's loops, started and stopped together.
struct ProbeLoops {
    /// The id of each endpoint's loop, in endpoint order.
    ids: Vec<u64>,
    name: Arc<str>,
    fingerprint: u64,
    stop: CancellationToken,
}

impl Probes {
    /// Brings the loops in line with `base`; returns the names of the
    /// upstreams whose probes (re)started.
    pub fn update(
        &mut self,
        base: &Arc<Base>,
        control: &ControlHandle,
        metrics: &Metrics,
    ) -> Vec<String> {
        let mut old = std::mem::take(&mut self.loops);
        let mut started = Vec::new();
        for id in base.upstream_ids() {
            let i = id.index();
            let up = &base.upstreams[i];
            let fingerprint = base.fingerprints.get(i).copied().unwrap_or_default();
            let cfg = &base.cfg.upstreams[i].health;
            let kept = old.iter_mut().find_map(|slot| {
                slot.take_if(|l| {
                    l.name == up.name
                        && l.fingerprint == fingerprint
                        && l.ids.len() == up.endpoints.len()
                })
            });
            let running = match kept {
                Some(l) => Some(l),
                None if cfg.enabled => {
                    let stop = CancellationToken::new();
                    let mut ids = Vec::with_capacity(up.endpoints.len());
                    for endpoint in 0..up.endpoints.len() {
                        self.next_id += 1;
                        let probe = self.next_id;
                        ids.push(probe);
                        let (b, c, m, s) =
                            (base.clone(), control.clone(), metrics.clone(), stop.clone());
                        tokio::spawn(probe_loop(b, id, endpoint, probe, c, m, s));
                    }
                    started.push(up.name.to_string());
                    Some(ProbeLoops {
                        ids,
                        name: up.name.clone(),
                        fingerprint,
                        stop,
                    })
                }
                None => None,
            };
            self.loops.push(running);
        }
        for l in old.into_iter().flatten() {
            l.stop.cancel();
        }
        started
    }

    /// The upstream and endpoint a probe loop reports for (`None`: a loop
    /// stopped by a reload).
    pub fn target_of(&self, probe: u64) -> Option<(UpstreamId, usize)> {
        self.loops.iter().enumerate().find_map(|(i, l)| {
            let endpoint = l.as_ref()?.ids.iter().position(|&p| p == probe)?;
            Some((UpstreamId::new(i)?, endpoint))
        })
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        for l in self.loops.iter().flatten() {
            l.stop.cancel();
        }
    }
}

/// Probes endpoint `endpoint` of upstream `id` of `base` every `interval`
/// until `stop`; its events carry `probe_id`.
async fn probe_loop(
    base: Arc<Base>,
    id: UpstreamId,
    endpoint: usize,
    probe_id: u64,
    control: ControlHandle,
    metrics: Metrics,
    stop: CancellationToken,
) {
    let cfg = &base.cfg.upstreams[id.index()].health;
    let up = &base.upstreams[id.index()];
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let (ok, latency, models) = tokio::select! {
            () = stop.cancelled() => return,
            r = probe(up, endpoint, &cfg.path, cfg.timeout) => r,
        };
        let labels = [&*up.name, up.endpoint_label(endpoint)];
        metrics
            .probe_duration
            .with_label_values(&labels)
            .observe(latency.as_secs_f64());
        metrics
            .probes
            .with_label_values(&[labels[0], labels[1], if ok { "ok" } else { "fail" }])
            .inc();
        control
            .send(Event::Probe {
                probe: probe_id,
                endpoint,
                ok,
                latency,
                models,
            })
            .await;
    }
}

/// One probe: ok on a 2xx within the timeout; reads the model list when the path is `/models`.
pub async fn probe(
    up: &Upstream,
    endpoint: usize,
    path: &str,
    timeout: Duration,
) -> (bool, Duration, Option<Vec<String>>) {
    let start = Instant::now();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let fut = async {
        let rsp = up.get(endpoint, &path).ok()?.await.ok()?;
        if !rsp.status().is_success() {
            return Some((false, None));
        }
        if path.trim_end_matches('/') != "/models" {
            return Some((true, None));
        }
        let body = read_limited(rsp, MAX_MODELS_BODY).await;
        let models = body
            .and_then(|b| serde_json::from_slice::<ModelList>(&b).ok())
            .map(|l| l.data.into_iter().map(|m| m.id).take(10_000).collect());
        Some((true, models))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(Some((ok, models))) => (ok, start.elapsed(), models),
        _ => (false, start.elapsed(), None),
    }
}

async fn read_limited(rsp: Response<ResponseBody>, limit: usize) -> Option<Vec<u8>> {
    let mut body = rsp.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await.transpose().ok()? {
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if buf.len() + chunk.len() > limit {
            return None;
        }
        buf.extend_from_slice(&chunk);
    }
    Some(buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::config::{Config, Secrets};

    fn base(b_interval: &str, a_endpoints: usize) -> Arc<Base> {
        let eps: Vec<String> = (0..a_endpoints)
            .map(|e| format!("{{name: e{e}, base_url: 'http://127.0.0.1:1/v{e}'}}"))
            .collect();
        let yaml = format!(
            "listen: 127.0.0.1:0\nadmin: {{listen: 127.0.0.1:0}}\nauth: {{disabled: true}}\n\
             upstreams:\n  - {{name: a, endpoints: [{}], health: {{interval: 1h}}}}\n  \
             - {{name: b, base_url: 'http://127.0.0.1:1/b', health: {{interval: {b_interval}}}}}\n\
             routes:\n  - {{name: chat, models: ['*'], primary: a, fallbacks: [b]}}\n",
            eps.join(", ")
        );
        let cfg = Arc::new(Config::from_yaml(&yaml).unwrap());
        let endpoints: Vec<Vec<(String, String)>> = cfg
            .upstreams
            .iter()
            .map(|u| match (&u.base_url, &u.endpoints) {
                (Some(b), _) => vec![(u.name.clone(), b.clone())],
                (None, Some(eps)) => eps
                    .iter()
                    .map(|e| (e.name.clone(), e.base_url.clone()))
                    .collect(),
                (None, None) => unreachable!(),
            })
            .collect();
        Arc::new(Base::build(cfg, &Secrets::default(), &endpoints).unwrap())
    }

    fn ids(p: &Probes, upstream: usize) -> Vec<u64> {
        p.loops[upstream].as_ref().unwrap().ids.clone()
    }

    #[tokio::test]
    async fn a_reload_restarts_only_the_loops_of_changed_upstreams_and_forgets_the_stopped_ones() {
        let (tx, _rx) = tokio::sync::mpsc::channel(64);
        let control = ControlHandle { tx };
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let mut probes = Probes::default();
        assert_eq!(
            probes.update(&base("1h", 2), &control, &metrics),
            ["a", "b"]
        );
        let (a, b) = (ids(&probes, 0), ids(&probes, 1));
        assert_eq!((a.len(), b.len()), (2, 1));
        for (e, &id) in a.iter().enumerate() {
            assert_eq!(probes.target_of(id), Some((UpstreamId::new(0).unwrap(), e)));
        }
        // b's probe settings change: only b's loop restarts.
        assert_eq!(probes.update(&base("2h", 2), &control, &metrics), ["b"]);
        assert_eq!(ids(&probes, 0), a);
        assert_eq!(probes.target_of(b[0]), None, "a stopped loop is ignored");
        let b2 = ids(&probes, 1);
        assert_eq!(
            probes.target_of(b2[0]),
            Some((UpstreamId::new(1).unwrap(), 0))
        );
        // a gains an endpoint: its loops restart, one per endpoint.
        assert_eq!(probes.update(&base("2h", 3), &control, &metrics), ["a"]);
        assert_eq!(ids(&probes, 0).len(), 3);
        assert!(a.iter().all(|&id| probes.target_of(id).is_none()));
        assert_eq!(ids(&probes, 1), b2);
        // Nothing changed: nothing restarts.
        assert!(probes.update(&base("2h", 3), &control, &metrics).is_empty());
    }
}
