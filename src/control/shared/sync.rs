//! The one task that talks to Redis for a replica: every
//! `redis.sync_interval` it writes back changes made while Redis was away,
//! reads the fleet's shares (handing a change to the control task as
//! [`Event::Shared`]), and refills the rate-limit leases; once a second it
//! adds this replica's per-key usage to the fleet's.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::limits::Refill;
use super::RedisStore;
use crate::accounting::Accounting;
use crate::control::store::Overrides;
use crate::control::{ControlHandle, Event};
use crate::routing::Live;

/// Runs until `stop`.
pub async fn run(
    store: Arc<RedisStore>,
    live: Live,
    control: ControlHandle,
    interval: Duration,
    mut refill: Refill,
    accounting: Arc<Accounting>,
    stop: CancellationToken,
) {
    let mut usage_pushed = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Overrides> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(remote) = store.sync().await {
            if last.as_ref() != Some(&remote) {
                control.send(Event::Shared(remote.clone())).await;
                last = Some(remote);
            }
        }
        let snap = live.load();
        refill.tick(store.link(), snap.limits(), interval).await;
        if usage_pushed.elapsed() >= Duration::from_secs(1) {
            usage_pushed = tokio::time::Instant::now();
            super::usage::push(store.link(), &accounting, snap.cfg()).await;
        }
    }
}
