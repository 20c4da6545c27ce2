//! The simulated upstreams of a config (`upstreams[].simulate`), served
//! inside the process. A reload keeps every one whose name and settings are
//! unchanged (its address stays, so its probe and pooled connections stay
//! valid), starts the new or changed ones, and stops the others only after
//! `shutdown.drain`, so that requests still running on the old snapshot end
//! normally.

use std::time::Duration;

use tokio::sync::Mutex;

use crate::config::{Config, SimulateConfig};
use crate::mock::{MockServer, MockSettings};

/// One upstream's endpoints, `(name, base_url)`.
pub type Endpoints = Vec<(String, String)>;

/// The running simulated upstreams.
#[derive(Default)]
pub struct Simulated {
    running: Mutex<Vec<Sim>>,
}

struct Sim {
    name: String,
    settings: SimulateConfig,
    server: MockServer,
}

impl Simulated {
    /// Each upstream's endpoints as `(name, address)`: its `base_url` (one
    /// endpoint named after the upstream), its `endpoints`, or the address of
    /// its simulated provider (kept, or started now; one endpoint named after
    /// the upstream), and the ones `cfg` no longer uses: hand them to
    /// [`Simulated::finish`].
    pub async fn resolve(&self, cfg: &Config) -> Result<(Vec<Endpoints>, Retired), String> {
        let mut running = self.running.lock().await;
        let mut old = std::mem::take(&mut *running);
        let mut urls = Vec::with_capacity(cfg.upstreams.len());
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let eps = match (&u.base_url, &u.endpoints, &u.simulate) {
                (Some(b), _, _) => vec![(u.name.clone(), b.clone())],
                (None, Some(eps), _) => eps
                    .iter()
                    .map(|e| (e.name.clone(), e.base_url.clone()))
                    .collect(),
                (None, None, Some(sim)) => {
                    let kept = old
                        .iter()
                        .position(|s| s.name == u.name && s.settings == *sim)
                        .map(|j| old.swap_remove(j));
                    let s = match kept {
                        Some(s) => s,
                        None => {
                            let server = match MockServer::start(settings(&u.name, sim)).await {
                                Ok(s) => s,
                                Err(e) => {
                                    // The running config still uses them.
                                    running.append(&mut old);
                                    return Err(format!("upstreams[{i}].simulate: {e}"));
                                }
                            };
                            tracing::info!(upstream = %u.name, base_url = %server.base_url(), "simulated upstream started");
                            Sim {
                                name: u.name.clone(),
                                settings: sim.clone(),
                                server,
                            }
                        }
                    };
                    let url = s.server.base_url();
                    running.push(s);
                    vec![(u.name.clone(), url)]
                }
                (None, None, None) => {
                    running.append(&mut old);
                    return Err(format!("upstreams[{i}].base_url: missing"));
                }
            };
            urls.push(eps);
        }
        Ok((urls, Retired(old)))
    }

    /// After the config that [`Simulated::resolve`] served was swapped in
    /// (`swapped`), stops the retired ones once requests still using them
    /// have had `linger` to end; otherwise keeps them running.
    pub async fn finish(&self, retired: Retired, swapped: bool, linger: Duration) {
        let Retired(mut old) = retired;
        if !swapped {
            self.running.lock().await.append(&mut old);
            return;
        }
        if old.is_empty() {
            return;
        }
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            drop(old);
        });
    }
}

/// Simulated upstreams that a new config no longer uses.
pub struct Retired(Vec<Sim>);

fn settings(name: &str, s: &SimulateConfig) -> MockSettings {
    let mut m = MockSettings {
        name: name.to_owned(),
        ..MockSettings::default()
    };
    if let Some(v) = s.latency {
        m.latency = v;
    }
    if let Some(v) = s.ttft {
        m.ttft = v;
    }
    if let Some(v) = s.chunks {
        m.chunks = v;
    }
    if let Some(v) = s.chunk_delay {
        m.chunk_delay = v;
    }
    if let Some(v) = s.fail_rate {
        m.fail_rate = v;
    }
    if let Some(v) = &s.models {
        m.models = v.clone();
    }
    m
}
