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
use crate::upstream::{Incoming, Upstream};

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

async fn read_limited(rsp: Response<Incoming>, limit: usize) -> Option<Vec<u8>> {
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
