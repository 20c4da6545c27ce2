//! Runtime split overrides: what a split store keeps (the `state_path` file's
//! content, or one Redis hash field per route), and the file's atomic I/O.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Overrides {
    /// Route name → its overridden split.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteOverride>,
    /// Route name → its ramp's state (PRODUCT.md §3.9).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ramps: BTreeMap<String, RampOverride>,
}

/// One route's ramp, as it must survive a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RampOverride {
    /// `idle`, `running`, `paused`, `done` or `rolled_back`.
    pub state: String,
    /// Index of the current step.
    #[serde(default)]
    pub step: Option<usize>,
    /// RFC 3339 time the next step is due (running).
    #[serde(default)]
    pub next_at: Option<String>,
    /// Bake left at the current step, ms (paused).
    #[serde(default)]
    pub remaining_ms: Option<u64>,
}

/// One route's override.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteOverride {
    /// Effective share, percent.
    pub percentage: f64,
    /// `manual`, `auto`, `set` or `ramp`.
    #[serde(default)]
    pub trigger: String,
    /// RFC 3339 time of the change.
    #[serde(default)]
    pub updated_at: String,
    /// The split target the share applies to; a share stored for another
    /// target (the config changed it) is ignored. Absent in older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Milliseconds since the Unix epoch of the change: between replicas,
    /// the later change wins (a rollback made during a Redis outage wins
    /// over a raise made before it). 0 in older files.
    #[serde(default)]
    pub ts: u64,
}

impl Overrides {
    /// Reads the file; absent = empty. On a bad file: error log, a `.corrupt` copy, empty overrides.
    pub fn load(path: &Path) -> Self {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read state file ({e}); starting on the config's split values");
                return Self::default();
            }
        };
        match serde_json::from_slice(&text) {
            Ok(o) => o,
            Err(e) => {
                let backup = corrupt_copy_path(path);
                let kept = std::fs::write(&backup, &text).is_ok();
                tracing::error!(
                    path = %path.display(),
                    backup = %backup.display(),
                    kept,
                    "state file is corrupt ({e}); starting on the config's split values"
                );
                Self::default()
            }
        }
    }

    /// Writes atomically: a temp file in the same directory, fsync, rename.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let body = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

fn corrupt_copy_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".corrupt");
    path.with_file_name(name)
}
