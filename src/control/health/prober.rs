//! Active probes: a cheap `GET {base_url}{health.path}` (never a billed
//! completion) per endpoint of each upstream, every `interval`, each under its own timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Response;
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

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

/// Starts one probe loop per endpoint of each upstream of `base` with probes enabled.
pub fn spawn_all(
    base: Arc<Base>,
    control: ControlHandle,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) {
    for id in base.upstream_ids() {
        if !base.cfg.upstreams[id.index()].health.enabled {
            continue;
        }
        for endpoint in 0..base.upstreams[id.index()].endpoints.len() {
            tokio::spawn(probe_loop(
                base.clone(),
                id,
                endpoint,
                control.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }
    }
}

async fn probe_loop(
    base: Arc<Base>,
    id: UpstreamId,
    endpoint: usize,
    control: ControlHandle,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let cfg = &base.cfg.upstreams[id.index()].health;
    let up = &base.upstreams[id.index()];
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let (ok, latency, models) = probe(up, endpoint, &cfg.path, cfg.timeout).await;
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
                upstream: id,
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
