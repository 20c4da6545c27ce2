//! Hot reload (PRODUCT.md §3.8): `SIGHUP`, `POST /admin/reload`, or a change
//! of the config file's content (`reload: {watch: true}`, polled, so that a
//! Kubernetes ConfigMap's symlink swap is seen like any other change).
//!
//! The file is validated like `turnout check`, env-var secrets are read
//! again, simulated upstreams are kept or started ([`Simulated`]), and the new
//! base goes to the control task ([`super::swap`]). On any error the running
//! config stays and the error names the key. Reloads run one at a time.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::events::ReloadReport;
use super::simulated::Simulated;
use super::ControlHandle;
use crate::config::{Config, Secrets};
use crate::limit::Limits;
use crate::metrics::Metrics;
use crate::routing::{Base, Live};

/// Where env vars are read (tests pass a map).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Builds the config-derived part of a snapshot; a fleet's rate limits are
/// leases, carried over from `previous` where a key is unchanged.
pub fn build_base(
    cfg: Arc<Config>,
    secrets: &Secrets,
    base_urls: &[Vec<(String, String)>],
    fleet: bool,
    previous: Option<&Limits>,
) -> Result<Base, String> {
    let base = Base::build(cfg.clone(), secrets, base_urls)?;
    Ok(if fleet {
        base.with_limits(Limits::fleet(&cfg, previous))
    } else {
        base
    })
}

/// What `POST /admin/reload` answers.
#[derive(Debug, Serialize)]
pub struct ReloadSummary {
    /// Always `reloaded`.
    pub status: &'static str,
    /// Upstreams in the new config.
    pub upstreams: usize,
    /// Routes in the new config.
    pub routes: usize,
    /// What the swap changed.
    #[serde(flatten)]
    pub report: ReloadReport,
    /// Keys that changed but take effect only after a restart.
    pub restart_required: Vec<&'static str>,
}

/// Cheap handle; see the module docs.
#[derive(Clone)]
pub struct Reloader(Arc<Inner>);

struct Inner {
    path: Option<PathBuf>,
    env: Env,
    sims: Simulated,
    control: ControlHandle,
    metrics: Metrics,
    live: Live,
    fleet: bool,
    /// Digest of the file content last tried, so the watcher reloads a
    /// content once, good or bad.
    seen: Mutex<Option<u64>>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// The parts a [`Reloader`] is made of.
pub struct ReloaderParts {
    /// The config file (`None`: started from a config in memory; reload answers an error).
    pub path: Option<PathBuf>,
    /// Where secrets are read.
    pub env: Env,
    /// The simulated upstreams started for the first config.
    pub sims: Simulated,
    /// The control task.
    pub control: ControlHandle,
    /// For `turnout_config_reloads_total`.
    pub metrics: Metrics,
    /// The live snapshot (the running config).
    pub live: Live,
    /// Rate limits are a fleet's leases (Redis configured at start).
    pub fleet: bool,
}

impl Reloader {
    /// A reloader over `parts`.
    pub fn new(parts: ReloaderParts) -> Self {
        for r in ["ok", "error"] {
            parts.metrics.config_reloads.with_label_values(&[r]);
        }
        let seen = parts.path.as_ref().and_then(|p| digest(p));
        Self(Arc::new(Inner {
            path: parts.path,
            env: parts.env,
            sims: parts.sims,
            control: parts.control,
            metrics: parts.metrics,
            live: parts.live,
            fleet: parts.fleet,
            seen: Mutex::new(seen),
            one_at_a_time: tokio::sync::Mutex::new(()),
        }))
    }

    /// Re-reads the config file and swaps it in; the error names the key.
    pub async fn reload(&self) -> Result<ReloadSummary, String> {
        let _one = self.0.one_at_a_time.lock().await;
        let result = self.try_reload().await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.0
            .metrics
            .config_reloads
            .with_label_values(&[label])
            .inc();
        match &result {
            Ok(s) => tracing::info!(
                upstreams = s.upstreams,
                routes = s.routes,
                probes_restarted = ?s.report.probes_restarted,
                splits_reset = ?s.report.splits_reset,
                "config reloaded"
            ),
            Err(e) => tracing::error!("config reload failed, the running config stays: {e}"),
        }
        result
    }

    async fn try_reload(&self) -> Result<ReloadSummary, String> {
        let inner = &self.0;
        let Some(path) = &inner.path else {
            return Err(
                "no config file to reload: this process was started from a config in memory".into(),
            );
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        if let Ok(mut seen) = inner.seen.lock() {
            *seen = Some(xxhash_rust::xxh3::xxh3_64(text.as_bytes()));
        }
        let cfg = Config::from_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let secrets = Secrets::resolve(&cfg, &*inner.env).map_err(|e| e.to_string())?;
        let current = inner.live.load();
        let restart_required = restart_required(current.cfg(), &cfg);
        let linger = cfg.shutdown.drain;
        let (urls, retired) = inner.sims.resolve(&cfg).await?;
        let cfg = Arc::new(cfg);
        let built = build_base(
            cfg.clone(),
            &secrets,
            &urls,
            inner.fleet,
            Some(current.limits()),
        );
        let base = match built {
            Ok(b) => Arc::new(b),
            Err(e) => {
                inner.sims.finish(retired, false, linger).await;
                return Err(e);
            }
        };
        let report = inner.control.reload(base).await;
        inner.sims.finish(retired, report.is_some(), linger).await;
        let report = report.ok_or("the control task is not running")?;
        Ok(ReloadSummary {
            status: "reloaded",
            upstreams: cfg.upstreams.len(),
            routes: cfg.routes.len(),
            report,
            restart_required,
        })
    }

    /// Polls the file every `reload.interval` of the running config and
    /// reloads when `reload.watch` is on and the content changed.
    pub fn spawn_watch(&self, stop: CancellationToken) {
        let Some(path) = self.0.path.clone() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let cfg = me.0.live.load().cfg().reload.clone();
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(cfg.interval) => {}
                }
                if !cfg.watch {
                    continue;
                }
                // A file missing for a moment (a symlink being swapped) is no change.
                let Some(now) = digest(&path) else { continue };
                let seen = me.0.seen.lock().ok().and_then(|s| *s);
                if seen != Some(now) {
                    tracing::info!(path = %path.display(), "config file changed; reloading");
                    let _ = me.reload().await;
                }
            }
        });
    }
}

fn digest(path: &std::path::Path) -> Option<u64> {
    std::fs::read(path)
        .ok()
        .map(|b| xxhash_rust::xxh3::xxh3_64(&b))
}

/// Keys bound when the process started (listeners, the shared store, logs).
fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("listen");
    }
    if old.admin.listen != new.admin.listen {
        keys.push("admin.listen");
    }
    if old.admin.token_env != new.admin.token_env {
        keys.push("admin.token_env");
    }
    if old.state_path != new.state_path {
        keys.push("state_path");
    }
    if old.redis != new.redis {
        keys.push("redis");
    }
    if old.shutdown.drain != new.shutdown.drain {
        keys.push("shutdown.drain");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        keys.push("log");
    }
    keys
}
