//! Runtime overrides (split shares set by the admin API or an automatic
//! rollback), persisted to `state_path` so they survive a restart.
//!
//! Written atomically (temp file + rename). A corrupt or unreadable file is
//! never fatal and never silently lost: Turnout starts on the config values,
//! logs an error, and keeps a copy of the bad file beside it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Overrides {
    /// Route name → its overridden split.
    #[serde(default)]
    pub routes: BTreeMap<String, RouteOverride>,
}

/// One route's override.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteOverride {
    /// Effective share, percent.
    pub percentage: f64,
    /// `manual`, `auto` or `set`.
    #[serde(default)]
    pub trigger: String,
    /// RFC 3339 time of the change.
    #[serde(default)]
    pub updated_at: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file() {
        let dir = std::env::temp_dir().join(format!("turnout-ov-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("state.json");
        assert_eq!(Overrides::load(&p), Overrides::default());
        let mut o = Overrides::default();
        o.routes.insert(
            "chat".into(),
            RouteOverride {
                percentage: 12.5,
                trigger: "set".into(),
                updated_at: String::new(),
            },
        );
        o.save(&p).unwrap();
        assert_eq!(Overrides::load(&p), o);
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(Overrides::load(&p), Overrides::default());
        assert_eq!(
            std::fs::read(dir.join("state.json.corrupt")).unwrap(),
            b"{not json"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
