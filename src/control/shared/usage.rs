//! Per-key usage across the fleet: each replica adds what it counted since
//! its last push to one hash per key (`{prefix}usage:{key}`: requests,
//! prompt and completion tokens, nano-USD) and reads the totals back, which
//! `/v1/account` then shows. Off the request path, once a second.

use std::collections::HashMap;

use super::Link;
use crate::accounting::Accounting;
use crate::config::Config;

const FIELDS: [&str; 4] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_nano_usd",
];

/// Pushes each key's new usage and reads the fleet's totals back.
pub async fn push(link: &Link, accounting: &Accounting, cfg: &Config) {
    let Some(auth) = &cfg.auth else { return };
    for (usage, key) in accounting.keys().iter().zip(&auth.keys) {
        let delta = usage.unpushed();
        let hash = link.key(&format!("usage:{}", key.name));
        let totals: Option<HashMap<String, u64>> = link
            .run(|mut c| async move {
                let mut p = redis::pipe();
                for (field, d) in FIELDS.iter().zip(delta) {
                    p.cmd("HINCRBY").arg(&hash).arg(*field).arg(d).ignore();
                }
                p.cmd("HGETALL").arg(&hash);
                let (all,): (HashMap<String, u64>,) = p.query_async(&mut c).await?;
                Ok(all)
            })
            .await;
        let Some(totals) = totals else { return };
        usage.pushed(delta);
        usage.set_fleet(FIELDS.map(|f| totals.get(f).copied().unwrap_or(0)));
    }
}
