//! The split store: where runtime overrides (split shares set by the admin
//! API or an automatic rollback, and ramp states) are kept so they survive a
//! restart.
//!
//! [`SplitStore`] is the seam a shared store plugs into (Redis, for a fleet:
//! [`super::shared::RedisStore`]); [`FileStore`] is the one-process store:
//! `state_path`, written atomically
//! (temp file + rename). A corrupt or unreadable file is never fatal and never
//! silently lost: Turnout starts on the config values, logs an error, and
//! keeps a copy of the bad file beside it.
//!
//! Writes never run on the control loop: [`StoreWriter`] hands the latest
//! overrides to a task of its own, which writes them (coalescing changes that
//! arrive while a write is under way) and then answers whoever waits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, Notify};

use super::events::SplitChange;
pub use super::overrides::{Overrides, RampOverride, RouteOverride};
use crate::routing::SplitView;

/// Where split overrides live.
pub trait SplitStore: Send + Sync + 'static {
    /// The overrides persisted so far (at start). Never fails: an unreadable
    /// store means the config's values, and says so in the log.
    fn load(&self) -> BoxFuture<'_, Overrides>;
    /// Persists the whole set of overrides. Called off the control loop.
    fn save(&self, overrides: Overrides) -> BoxFuture<'_, std::io::Result<()>>;
    /// Where it writes, for log lines.
    fn describe(&self) -> String;
    /// Whether other replicas read it (the admin answer's `shared`).
    fn shared(&self) -> bool {
        false
    }
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
    fn load(&self) -> BoxFuture<'_, Overrides> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Overrides::load(&path))
                .await
                .unwrap_or_default()
        })
    }

    fn save(&self, overrides: Overrides) -> BoxFuture<'_, std::io::Result<()>> {
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || overrides.save(&path))
                .await
                .map_err(std::io::Error::other)?
        })
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
        let persisted = match store.save(overrides).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(store = %store.describe(), "cannot persist split override: {e}");
                false
            }
        };
        for (reply, view) in waiters {
            let _ = reply.send(Some(SplitChange {
                view,
                persisted,
                shared_store: store.shared(),
            }));
        }
    }
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
        fn load(&self) -> BoxFuture<'_, Overrides> {
            Box::pin(async { Overrides::default() })
        }
        fn save(&self, _: Overrides) -> BoxFuture<'_, std::io::Result<()>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let fail = self.fail;
            Box::pin(async move {
                if fail {
                    Err(std::io::Error::other("disk full"))
                } else {
                    Ok(())
                }
            })
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
                target: Some("b".into()),
                ts: 1,
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
