//! Split shares in Redis: one hash (`{prefix}splits`), a field per route, its
//! value the route's latest change as JSON (share, target, trigger, time).
//!
//! Ramp states (PRODUCT.md §3.9) live beside them in `{prefix}ramps`, the
//! latest write winning, so that a replica that starts or restarts picks up
//! a ramp under way instead of starting it anew.
//!
//! A write replaces a field only when it is later than the one stored (a Lua
//! script compares the times atomically), so replicas that write back changes
//! made during an outage never undo a later change, and a rollback made
//! during an outage wins over a raise made before it. A change that could
//! not be written is kept and written by [`RedisStore::sync`] once Redis
//! answers again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use super::Link;
use crate::control::store::{Overrides, RampOverride, RouteOverride, SplitStore};

/// Sets `KEYS[1][ARGV[1]] = ARGV[2]` unless the stored change is later (or
/// as late and not higher: a tie goes to the lower share).
const WRITE_IF_LATER: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' and tonumber(old.ts) then
    local ts, new_ts = tonumber(old.ts), tonumber(ARGV[3])
    if ts > new_ts or (ts == new_ts and tonumber(old.percentage) <= tonumber(ARGV[4])) then
      return 0
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

fn unreachable() -> std::io::Error {
    std::io::Error::other(
        "Redis is unreachable; the change is in force here and will be written when it returns",
    )
}

/// The split store of a fleet.
pub struct RedisStore {
    link: Arc<Link>,
    script: redis::Script,
    /// The latest overrides that could not be written (Redis unreachable).
    unsaved: Mutex<Option<Overrides>>,
}

impl RedisStore {
    /// A store over `link`.
    pub fn new(link: Arc<Link>) -> Self {
        Self {
            link,
            script: redis::Script::new(WRITE_IF_LATER),
            unsaved: Mutex::new(None),
        }
    }

    /// The link it uses.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// Writes back what could not be written, then reads the fleet's shares;
    /// `None` while Redis is unreachable.
    pub async fn sync(&self) -> Option<Overrides> {
        let pending = self.unsaved.lock().ok().and_then(|mut u| u.take());
        if let Some(o) = pending {
            if self.write(&o).await.is_err() {
                self.keep_unsaved(o);
                return None;
            }
            tracing::info!(store = %self.describe(), "split changes made while Redis was unreachable written back");
        }
        self.read().await
    }

    async fn read(&self) -> Option<Overrides> {
        let (key, ramps_key) = (self.link.key("splits"), self.link.key("ramps"));
        let (fields, ramps): (HashMap<String, String>, HashMap<String, String>) = self
            .link
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("HGETALL")
                    .arg(&key)
                    .cmd("HGETALL")
                    .arg(&ramps_key)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut o = Overrides::default();
        for (route, value) in ramps {
            if let Ok(v) = serde_json::from_str::<RampOverride>(&value) {
                o.ramps.insert(route, v);
            }
        }
        for (route, value) in fields {
            match serde_json::from_str::<RouteOverride>(&value) {
                Ok(v) => {
                    o.routes.insert(route, v);
                }
                Err(e) => {
                    tracing::warn!(route = %route, "ignoring an unreadable shared split: {e}")
                }
            }
        }
        Some(o)
    }

    async fn write(&self, o: &Overrides) -> std::io::Result<()> {
        let key = self.link.key("splits");
        for (route, v) in &o.routes {
            let json = serde_json::to_string(v).map_err(std::io::Error::other)?;
            let (script, key) = (&self.script, &key);
            let written: Option<i64> = self
                .link
                .run(|mut c| async move {
                    script
                        .key(key)
                        .arg(route)
                        .arg(&json)
                        .arg(v.ts)
                        .arg(v.percentage)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            if written.is_none() {
                return Err(unreachable());
            }
        }
        // Ramp states: the latest write wins (one replica drives a ramp).
        if !o.ramps.is_empty() {
            let key = self.link.key("ramps");
            let mut fields = Vec::with_capacity(o.ramps.len());
            for (route, r) in &o.ramps {
                fields.push((
                    route,
                    serde_json::to_string(r).map_err(std::io::Error::other)?,
                ));
            }
            let fields = &fields;
            let set: Option<i64> = self
                .link
                .run(|mut c| async move {
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg(fields)
                        .query_async(&mut c)
                        .await
                })
                .await;
            set.ok_or_else(unreachable)?;
        }
        Ok(())
    }

    fn keep_unsaved(&self, o: Overrides) {
        if let Ok(mut u) = self.unsaved.lock() {
            *u = Some(o);
        }
    }
}

impl SplitStore for RedisStore {
    fn load(&self) -> BoxFuture<'_, Overrides> {
        Box::pin(async move {
            match self.read().await {
                Some(o) => o,
                None => {
                    tracing::error!(store = %self.describe(), "shared state unreachable at start; serving on the config's split values until it answers");
                    Overrides::default()
                }
            }
        })
    }

    fn save(&self, overrides: Overrides) -> BoxFuture<'_, std::io::Result<()>> {
        Box::pin(async move {
            let r = self.write(&overrides).await;
            match &r {
                Ok(()) => {
                    // A later complete set superseded anything left unsaved.
                    if let Ok(mut u) = self.unsaved.lock() {
                        *u = None;
                    }
                }
                Err(_) => self.keep_unsaved(overrides),
            }
            r
        })
    }

    fn describe(&self) -> String {
        format!("redis {} ({})", self.link.describe, self.link.key("splits"))
    }

    fn shared(&self) -> bool {
        true
    }
}
