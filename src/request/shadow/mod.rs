//! Shadow traffic (PRODUCT.md §3.9): for `split.shadow.percentage` % of the
//! control cohort (sticky by user, on a bucket salted apart from the
//! split's), at most `max_rps` per replica, a copy of the request goes to
//! the split's target in a task of its own, through the same attempt leaf —
//! one attempt, never retried, never failed over, never on the client's
//! path. Its answer is read to its end and discarded; its tokens and cost
//! are counted apart (`turnout_shadow_*`), its audit line is marked
//! `shadow`. When the primary's answer ends ([`Finish`](super::finish)
//! hands it over through a [`ShadowPeer`]), the pair is compared and the
//! control task keeps the figures for `/admin/status`.

mod shape;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::ServiceExt;

pub use shape::Shape;

use super::attempt::{Attempt, Served, UpstreamService};
use super::failover::{template, ProxyCall};
use super::plan::Plan;
use super::reader::StreamReader;
use crate::audit::{AuditAttempt, AuditLine};
use crate::control::shadow::ShadowPair;
use crate::control::Event;
use crate::openai::Usage;
use crate::outcome::Outcome;
use crate::routing::{split, RouteId, UpstreamId};
use crate::state::AppState;

/// Most of an answer kept to read its shape (either side); beyond it the
/// shape is not compared.
pub const MAX_SHAPE_BYTES: usize = 256 * 1024;

/// A request chosen for a shadow copy.
pub struct Pick {
    route: RouteId,
    target: UpstreamId,
}

/// Whether this request is shadowed: a control-cohort user in the shadow's
/// share, within the route's `max_rps` (a refusal is counted `dropped`).
pub fn pick(app: &AppState, plan: &Plan, key: Option<&str>) -> Option<Pick> {
    if plan.in_split {
        return None;
    }
    let cfg = plan.snap.cfg().routes[plan.route.index()]
        .split
        .as_ref()?
        .shadow
        .as_ref()?;
    let target = plan.snap.table.route(plan.route).split?.target;
    if !split::in_shadow(plan.route_name(), key, cfg.percentage) {
        return None;
    }
    let limits = &plan.snap.base().shadow_limits;
    if !limits.allow(plan.route.index()) {
        limits.count_dropped(plan.route.index(), || {
            app.metrics
                .shadow_requests
                .with_label_values(&[plan.route_name(), "dropped"])
        });
        return None;
    }
    Some(Pick {
        route: plan.route,
        target,
    })
}

impl Pick {
    /// Sends the copy in the background; the returned peer takes the
    /// primary's side when it ends.
    pub fn launch(self, app: &Arc<AppState>, call: &ProxyCall, request_id: &str) -> ShadowPeer {
        let (tx, rx) = oneshot::channel();
        // The client's request as the walk would send it, to the target.
        let attempt = Attempt {
            upstream: self.target,
            endpoint: call.plan.snap.pick_endpoint(self.target, 0, Instant::now()),
            ..template(call)
        };
        let job = Job {
            app: app.clone(),
            route: self.route,
            model: call.facts.model.clone().unwrap_or_default(),
            request_id: request_id.to_owned(),
            attempt,
        };
        tokio::spawn(job.run(rx));
        ShadowPeer(Mutex::new(Some(tx)))
    }
}

/// The primary's side of a pair, as its finish records it.
#[derive(Debug)]
pub struct PrimarySide {
    /// A 2xx that did not break.
    pub ok: bool,
    /// Whole request.
    pub latency: Duration,
    /// USD, when priced.
    pub cost: Option<f64>,
    /// The answer's bytes (at most [`MAX_SHAPE_BYTES`]), streamed or not.
    pub answer: Option<Bytes>,
    /// It was a stream.
    pub stream: bool,
}

/// Hands the primary's side to the shadow's task (once).
pub struct ShadowPeer(Mutex<Option<oneshot::Sender<PrimarySide>>>);

impl ShadowPeer {
    /// The primary's answer ended.
    pub fn primary_done(&self, side: PrimarySide) {
        let tx = self.0.lock().ok().and_then(|mut t| t.take());
        if let Some(tx) = tx {
            let _ = tx.send(side);
        }
    }
}

struct Job {
    app: Arc<AppState>,
    route: RouteId,
    model: String,
    request_id: String,
    attempt: Attempt,
}

/// The shadow's answer, read to its end.
struct ShadowSide {
    ok: bool,
    outcome: Outcome,
    status: Option<u16>,
    latency: Duration,
    ttft: Option<Duration>,
    usage: Option<Usage>,
    answer: Option<Bytes>,
}

impl Job {
    async fn run(self, primary: oneshot::Receiver<PrimarySide>) {
        let started = Instant::now();
        let snap = self.attempt.snap.clone();
        let up = snap.upstream(self.attempt.upstream);
        let total = up.timeouts.total;
        let side = read(UpstreamService.oneshot(self.attempt.clone()), up, started).await;
        let route = snap.table.route(self.route).name.clone();
        let m = &self.app.metrics;
        let label = if side.ok { "ok" } else { "error" };
        m.shadow_requests.with_label_values(&[&route, label]).inc();
        let sent = up.map_model(&self.model);
        let mut cost = None;
        if let Some(u) = side.usage {
            for (t, n) in [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
            ] {
                m.shadow_tokens
                    .with_label_values(&[&route, &up.name, t])
                    .inc_by(n);
            }
            if let Some(p) = up.price(sent) {
                let c = (u.prompt_tokens as f64 * p.input + u.completion_tokens as f64 * p.output)
                    / 1_000_000.0;
                m.shadow_cost_usd
                    .with_label_values(&[&route, &up.name])
                    .inc_by(c);
                cost = Some(c);
            }
        }
        if let Some(audit) = &self.app.audit {
            let ms = |d: Duration| d.as_millis() as u64;
            audit.send(AuditLine {
                ts: SystemTime::now(),
                request_id: self.request_id.clone(),
                key: None,
                route: Some(route.clone()),
                model: Some(self.model.clone()).filter(|m| !m.is_empty()),
                upstream_model: Some(sent.to_owned()).filter(|m| !m.is_empty()),
                upstream: Some(up.name.clone()),
                endpoint: None,
                cohort: Some("control"),
                status: side.status.unwrap_or(502),
                stream: self.attempt.stream,
                attempts: vec![AuditAttempt {
                    upstream: up.name.clone(),
                    outcome: side.outcome.label(),
                    status: side.status,
                    latency_ms: ms(side.ttft.unwrap_or(side.latency)),
                }],
                ttft_ms: side.ttft.map(ms),
                latency_ms: ms(side.latency),
                prompt_tokens: side.usage.map(|u| u.prompt_tokens),
                completion_tokens: side.usage.map(|u| u.completion_tokens),
                cost_usd: cost,
                error: (!side.ok).then(|| side.outcome.label()),
                shadow: true,
            });
        }
        // The primary usually ends first; wait for it no longer than a request may last.
        let Ok(Ok(p)) = tokio::time::timeout(total, primary).await else {
            return;
        };
        let parse = |b: &Option<Bytes>, stream: bool| {
            b.as_deref().and_then(|b| {
                if stream {
                    Shape::of_sse(b)
                } else {
                    Shape::of_json(b)
                }
            })
        };
        let same_shape = if side.ok && p.ok {
            match (
                parse(&p.answer, p.stream),
                parse(&side.answer, self.attempt.stream),
            ) {
                (Some(a), Some(b)) => Some(a == b),
                _ => None,
            }
        } else {
            Some(false)
        };
        let ratio = (p.latency > Duration::ZERO)
            .then(|| side.latency.as_secs_f64() / p.latency.as_secs_f64());
        if let Some(r) = ratio {
            m.shadow_latency_ratio
                .with_label_values(&[&route])
                .observe(r);
        }
        if let Some(same) = same_shape {
            let shape = if same { "same" } else { "different" };
            m.shadow_pairs.with_label_values(&[&route, shape]).inc();
        }
        self.app.control.report(Event::ShadowPair {
            route: self.route,
            pair: ShadowPair {
                primary_ok: p.ok,
                shadow_ok: side.ok,
                latency_ratio: ratio,
                same_shape,
                costs: p.cost.zip(cost),
            },
        });
    }
}

/// Makes the one attempt and reads its answer to the end (a stream through
/// the same reader as a client's, with its idle and total deadlines).
async fn read(
    attempt: impl std::future::Future<Output = Result<Served, super::attempt::AttemptError>>,
    up: &crate::upstream::Upstream,
    started: Instant,
) -> ShadowSide {
    let result = attempt.await;
    let ttft = started.elapsed();
    match result {
        Err(e) => ShadowSide {
            ok: false,
            outcome: e.outcome,
            status: e.status,
            latency: started.elapsed(),
            ttft: None,
            usage: None,
            answer: None,
        },
        Ok(Served::Complete {
            status,
            body,
            usage,
            ..
        }) => ShadowSide {
            ok: status.is_success(),
            outcome: Outcome::Ok,
            status: Some(status.as_u16()),
            latency: started.elapsed(),
            ttft: Some(ttft),
            usage,
            answer: (body.len() <= MAX_SHAPE_BYTES).then_some(body),
        },
        Ok(Served::Stream {
            status,
            first,
            rest,
            scan,
            ..
        }) => {
            let deadline = started + up.timeouts.total;
            let mut reader = StreamReader::new(first, rest, scan, up.timeouts.idle, deadline);
            let mut kept = Some(BytesMut::new());
            let mut broke = None;
            while let Some(chunk) = reader.next().await {
                match chunk {
                    Ok(c) => keep(&mut kept, &c),
                    Err(o) => {
                        broke = Some(o);
                        break;
                    }
                }
            }
            ShadowSide {
                ok: broke.is_none() && status.is_success(),
                outcome: broke.unwrap_or(Outcome::Ok),
                status: Some(status.as_u16()),
                latency: started.elapsed(),
                ttft: Some(ttft),
                usage: reader.usage(),
                answer: kept.map(BytesMut::freeze),
            }
        }
        // Routed requests are never passed through; drop the body unread.
        Ok(Served::Raw { status, .. }) => ShadowSide {
            ok: false,
            outcome: Outcome::InvalidResponse,
            status: Some(status.as_u16()),
            latency: started.elapsed(),
            ttft: Some(ttft),
            usage: None,
            answer: None,
        },
    }
}

/// Appends a chunk of an answer kept for its shape; past
/// [`MAX_SHAPE_BYTES`] nothing is kept (the shape is then not compared).
pub fn keep(kept: &mut Option<BytesMut>, chunk: &[u8]) {
    if let Some(k) = kept {
        if k.len() + chunk.len() <= MAX_SHAPE_BYTES {
            k.extend_from_slice(chunk);
        } else {
            *kept = None;
        }
    }
}
