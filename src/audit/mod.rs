//! The audit log (PRODUCT.md §3.11): one JSON line per finished request,
//! written by a thread of its own from a bounded queue, so that a request
//! never waits on the disk and a write error never fails one. A full queue
//! drops the line and counts it (`turnout_audit_dropped_total`). The writer
//! takes the queue in batches, one per [`BATCH_INTERVAL`] while there is
//! traffic ([`queue`] says why). The file is rotated by size: `path` →
//! `path.1` → … → `path.{keep}`.

mod line;
mod queue;
pub mod report;
mod writer;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::IntCounter;

pub use line::{AuditAttempt, AuditLine};
pub use writer::rotated_paths;

use crate::config::AuditConfig;

/// How long the writer pauses after a batch before it takes the next one.
/// Lines reach the file at most this late (plus the time to write the
/// batch); the default `audit.queue` (10,000 lines) holds 100 ms of
/// 100,000 requests a second, twice the interval.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Cheap handle to the audit queue.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    dropped: IntCounter,
}

/// The queue and the writer thread, closed when the last handle goes.
struct Shared {
    queue: Arc<queue::Queue>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl AuditLog {
    /// Starts the writer thread; it ends once [`AuditLog::close`] is called
    /// or every handle is gone, after writing what was queued.
    pub fn start(cfg: &AuditConfig, dropped: IntCounter) -> std::io::Result<Self> {
        Self::start_with(cfg, dropped, BATCH_INTERVAL)
    }

    fn start_with(
        cfg: &AuditConfig,
        dropped: IntCounter,
        interval: Duration,
    ) -> std::io::Result<Self> {
        let queue = Arc::new(queue::Queue::new(cfg.queue));
        let w = writer::Writer::new(cfg.clone());
        let q = queue.clone();
        let writer = std::thread::Builder::new()
            .name("turnout-audit".into())
            .spawn(move || w.run(&q, interval))?;
        Ok(Self {
            shared: Arc::new(Shared {
                queue,
                writer: Mutex::new(Some(writer)),
            }),
            dropped,
        })
    }

    /// Queues a line without waiting; a full queue drops it (counted), as
    /// does a closed one.
    pub fn send(&self, line: AuditLine) {
        if !self.shared.queue.push(line) {
            self.dropped.inc();
        }
    }

    /// Shutdown: refuses further lines, and returns once the lines queued
    /// so far are written and flushed (the writer's pause is cut short).
    /// Blocks the calling thread on the disk.
    pub fn close(&self) {
        self.shared.queue.close();
        let writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Instant;

    use super::*;

    fn started(interval: Duration) -> (AuditLog, PathBuf, IntCounter) {
        let dir = std::env::temp_dir().join(format!("turnout-auditq-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let cfg = AuditConfig {
            path: path.clone(),
            max_bytes: 100_000_000,
            keep: 1,
            queue: 1000,
        };
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let log = AuditLog::start_with(&cfg, dropped.clone(), interval).unwrap();
        (log, path, dropped)
    }

    /// The `latency_ms` of every whole line written, in order (a read may
    /// catch a write halfway).
    fn written(path: &Path) -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["latency_ms"].as_u64().unwrap()
            })
            .collect()
    }

    fn wait_for(path: &Path, n: usize) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ids = written(path);
            if ids.len() >= n || Instant::now() > deadline {
                return ids;
            }
            std::thread::yield_now();
        }
    }

    #[test]
    fn lines_queued_during_the_pause_and_while_idle_are_all_written() {
        let (log, path, dropped) = started(BATCH_INTERVAL);
        log.send(AuditLine::sample(0));
        // Written and flushed: the writer is now in its pause (or idle again).
        assert_eq!(wait_for(&path, 1), vec![0]);
        for i in 1..=100 {
            log.send(AuditLine::sample(i));
        }
        assert_eq!(wait_for(&path, 101), (0..=100).collect::<Vec<_>>());
        // Whether the writer still pauses or waits on an empty queue, the
        // next line gets written.
        log.send(AuditLine::sample(101));
        assert_eq!(wait_for(&path, 102), (0..=101).collect::<Vec<_>>());
        assert_eq!(dropped.get(), 0);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn close_writes_what_is_queued_without_waiting_out_the_pause() {
        // A pause far longer than the test: only the close can end it.
        let (log, path, dropped) = started(Duration::from_secs(3600));
        log.send(AuditLine::sample(0));
        assert_eq!(wait_for(&path, 1), vec![0]);
        for i in 1..=50 {
            log.send(AuditLine::sample(i));
        }
        log.close();
        assert_eq!(written(&path), (0..=50).collect::<Vec<_>>());
        // Closed: a late line is refused and counted, never half-written.
        log.send(AuditLine::sample(51));
        assert_eq!(dropped.get(), 1);
        assert_eq!(written(&path).len(), 51);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (log, path, dropped) = started(Duration::from_secs(3600));
        log.send(AuditLine::sample(0));
        assert_eq!(wait_for(&path, 1), vec![0]);
        // The writer pauses for an hour: the queue (1000) fills up.
        for i in 1..=1010 {
            log.send(AuditLine::sample(i));
        }
        assert_eq!(dropped.get(), 10);
        log.close();
        assert_eq!(written(&path), (0..=1000).collect::<Vec<_>>());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
