//! The split store: where runtime overrides (split shares set by the admin
//! API or an automatic rollback, and ramp states) are kept so they survive a
//! restart.
//!
//! [`SplitStore`] is the seam a shared store (Redis, for a fleet) plugs into;
//! [`FileStore`] is the one-process store: `state_path`, written atomically
//! (temp file + rename). A corrupt or unreadable file is never fatal and never
//! silently lost: Turnout starts on the config values, logs an error, and
//! keeps a copy of the bad file beside it.
//!
//! Writes never run on the control loop: [`StoreWriter`] hands the latest
//! overrides to a task of its own, which writes them (coalescing changes that
//! arrive while a write is under way) and then answers whoever waits.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use super::events::SplitChange;
use crate::routing::SplitView;

/// Where split overrides live.
pub trait SplitStore: Send + Sync + 'static {
    /// The overrides persisted so far (at start). Never fails: an unreadable
    /// store means the config's values, and says so in the log.
    fn load(&self) -> Overrides;
    /// Persists the whole set of overrides. Called off the control loop.
    fn save(&self, overrides: &Overrides) -> std::io::Result<()>;
    /// Where it writes, for log lines.
    fn describe(&self) -> String;
}

/// `state_path`: one JSON file.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (created on the first write).
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }
}

impl SplitStore for FileStore {
    fn load(&self) -> Overrides {
        Overrides::load(&self.path)
    }

    fn save(&self, overrides: &Overrides) -> std::io::Result<()> {
        overrides.save(&self.path)
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

/// An admin caller waiting for its change to be written.
type Waiter = (oneshot::Sender<Option<SplitChange>>, SplitView);

#[derive(Default)]
struct Pending {
    latest: Option<Overrides>,
    waiters: Vec<Waiter>,
}

/// Hands overrides to the writer task; never blocks on I/O.
pub struct StoreWriter {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
}

impl StoreWriter {
    /// Starts the writer task over `store`.
    pub fn start(store: Arc<dyn SplitStore>) -> Self {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let wake = Arc::new(Notify::new());
        tokio::spawn(write_loop(store, pending.clone(), wake.clone()));
        Self { pending, wake }
    }

    /// Queues `overrides` (replacing any not yet written); `waiter` is
    /// answered once a write that includes them has finished.
    pub fn save(&self, overrides: Overrides, waiter: Option<Waiter>) {
        if let Ok(mut p) = self.pending.lock() {
            p.latest = Some(overrides);
            p.waiters.extend(waiter);
        }
        self.wake.notify_one();
    }
}

impl Drop for StoreWriter {
    /// Wakes the writer so that it finishes what is pending and ends.
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Ends when the control task (the only holder of the writer) is gone and
/// nothing is left to write.
async fn write_loop(store: Arc<dyn SplitStore>, pending: Arc<Mutex<Pending>>, wake: Arc<Notify>) {
    loop {
        let taken = pending.lock().map(|mut p| std::mem::take(&mut *p)).ok();
        let Some(Pending { latest, waiters }) = taken else {
            return;
        };
        let Some(overrides) = latest else {
            if Arc::strong_count(&pending) == 1 {
                return;
            }
            wake.notified().await;
            continue;
        };
        let st = store.clone();
        let written = tokio::task::spawn_blocking(move || st.save(&overrides)).await;
        let persisted = match written {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(store = %store.describe(), "cannot persist split override: {e}");
                false
            }
            Err(e) => {
                tracing::error!(store = %store.describe(), "split store writer failed: {e}");
                false
            }
        };
        for (reply, view) in waiters {
            let _ = reply.send(Some(SplitChange { view, persisted }));
        }
    }
}

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
    use crate::routing::UpstreamId;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts writes; fails them when asked.
    struct Fake {
        writes: AtomicUsize,
        fail: bool,
    }

    impl SplitStore for Fake {
        fn load(&self) -> Overrides {
            Overrides::default()
        }
        fn save(&self, _: &Overrides) -> std::io::Result<()> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            if self.fail {
                Err(std::io::Error::other("disk full"))
            } else {
                Ok(())
            }
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn view() -> SplitView {
        SplitView {
            target: UpstreamId::new(1).unwrap(),
            percentage: 30.0,
            configured_percentage: 10.0,
        }
    }

    async fn change(w: &StoreWriter) -> SplitChange {
        let (tx, rx) = oneshot::channel();
        w.save(Overrides::default(), Some((tx, view())));
        rx.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn the_answer_comes_after_the_write_and_says_whether_it_took() {
        let ok = Arc::new(Fake {
            writes: AtomicUsize::new(0),
            fail: false,
        });
        let w = StoreWriter::start(ok.clone());
        let c = change(&w).await;
        assert!(c.persisted);
        assert_eq!(c.view.percentage, 30.0);
        assert_eq!(ok.writes.load(Ordering::SeqCst), 1);

        let bad = Arc::new(Fake {
            writes: AtomicUsize::new(0),
            fail: true,
        });
        let w = StoreWriter::start(bad.clone());
        assert!(!change(&w).await.persisted, "in force, but not persisted");
        assert_eq!(bad.writes.load(Ordering::SeqCst), 1);
    }

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
