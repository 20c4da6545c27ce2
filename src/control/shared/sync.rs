//! The one task that talks to Redis for a replica: every
//! `redis.sync_interval` it writes back changes made while Redis was away,
//! reads the fleet's shares (handing a change to the control task as
//! [`Event::Shared`]), refills the rate-limit leases and shares the
//! automatic-rollback windows ([`super::windows`]); once a second it
//! adds this replica's per-key usage to the fleet's.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::limits::Refill;
use super::windows::Tally;
use super::RedisStore;
use crate::accounting::Accounting;
use crate::control::store::Overrides;
use crate::control::{ControlHandle, Event};
use crate::routing::Live;

/// What the sync task works on.
pub struct Sync {
    /// The shared split store (and its link to Redis).
    pub store: Arc<RedisStore>,
    /// The live snapshot (limits, config).
    pub live: Live,
    /// Where remote changes go.
    pub control: ControlHandle,
    /// `redis.sync_interval`.
    pub interval: Duration,
    /// The rate-limit refill, after its first round.
    pub refill: Refill,
    /// Per-key usage to share.
    pub accounting: Arc<Accounting>,
    /// Automatic-rollback outcomes to share.
    pub tally: Arc<Tally>,
}

/// Runs until `stop`.
pub async fn run(sync: Sync, stop: CancellationToken) {
    let Sync {
        store,
        live,
        control,
        interval,
        mut refill,
        accounting,
        tally,
    } = sync;
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
        super::windows::sync(store.link(), &tally, &snap, &control).await;
        if usage_pushed.elapsed() >= Duration::from_secs(1) {
            usage_pushed = tokio::time::Instant::now();
            super::usage::push(store.link(), &accounting, snap.cfg()).await;
        }
    }
}
