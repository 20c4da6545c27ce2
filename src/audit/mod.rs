//! The audit log (PRODUCT.md §3.11): one JSON line per finished request,
//! formatted by the request's thread and written by a thread of its own
//! from a bounded queue, so that a request never waits on the disk and a
//! write error never fails one. A full queue
//! drops the line and counts it (`turnout_audit_dropped_total`). The writer
//! takes the queue in batches, one per [`BATCH_INTERVAL`] while there is
//! traffic ([`queue`] says why). The file is rotated by size: `path` →
//! `path.1` → … → `path.{keep}`.

mod line;
mod queue;
pub mod report;
mod writer;

use std::cell::RefCell;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
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

/// The longest a shutdown waits for the writer to put the queued lines on
/// disk: a hung disk or network file system must not keep the process from
/// exiting (the lines still queued then are lost, and the log says so).
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// The most a thread's line buffer keeps between lines (a line is ~400
/// bytes).
const SCRATCH_KEEP: usize = 16 * 1024;

/// Cheap handle to the audit queue.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    dropped: IntCounter,
}

/// The queue and the writer thread, closed when the last handle goes.
struct Shared {
    queue: Arc<queue::Queue>,
    writer: Mutex<Option<Writer>>,
}

/// The writer thread, and the channel it drops when it ends (a join has no
/// timeout; a receive does).
struct Writer {
    thread: JoinHandle<()>,
    ended: mpsc::Receiver<()>,
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
        let (end, ended) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("turnout-audit".into())
            .spawn(move || {
                let _end = end;
                w.run(&q, interval);
            })?;
        Ok(Self {
            shared: Arc::new(Shared {
                queue,
                writer: Mutex::new(Some(Writer { thread, ended })),
            }),
            dropped,
        })
    }

    /// Queues a line without waiting; a full queue drops it (counted), as
    /// does a closed one. The line is formatted here, on the caller's
    /// thread, into a buffer that thread keeps: what the line holds is
    /// freed where it was allocated, and the writer only copies bytes.
    pub fn send(&self, line: AuditLine) {
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let queued = SCRATCH.with(|s| {
            let mut buf = s.borrow_mut();
            buf.clear();
            line.write_json(&mut buf);
            buf.push(b'\n');
            let queued = self.shared.queue.push(&buf);
            // A rare huge line (a client's very long model name) does not
            // keep its room in every thread for the process's life.
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            queued
        });
        if !queued {
            self.dropped.inc();
        }
    }

    /// Shutdown: refuses further lines, and returns once the lines queued
    /// so far are written and flushed (the writer's pause is cut short), or
    /// after [`CLOSE_WAIT`] if the disk does not take them.
    pub fn close(&self) {
        self.close_within(CLOSE_WAIT);
    }

    /// [`AuditLog::close`], waiting at most `limit` for the disk; false
    /// when the writer had not finished by then (it is left behind, and
    /// the lines it still holds are lost).
    fn close_within(&self, limit: Duration) -> bool {
        self.shared.queue.close();
        let writer = self
            .shared
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(w) = writer else {
            return true;
        };
        match w.ended.recv_timeout(limit) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::error!(
                    waited = ?limit,
                    "audit log: the writer did not finish writing the queued lines; exiting without them"
                );
                false
            }
            // Dropped: the thread has returned (or panicked); the join is immediate.
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = w.thread.join();
                true
            }
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
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let log = AuditLog::start_with(&config(&path, 1000), dropped.clone(), interval).unwrap();
        (log, path, dropped)
    }

    /// An audit file at `path` that never rotates in a test.
    fn config(path: &Path, queue: usize) -> AuditConfig {
        AuditConfig {
            path: path.to_path_buf(),
            max_bytes: 100_000_000,
            keep: 1,
            queue,
        }
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

    #[test]
    fn a_huge_line_is_written_whole_between_ordinary_ones() {
        let (log, path, dropped) = started(BATCH_INTERVAL);
        log.send(AuditLine::sample(0));
        let mut huge = AuditLine::sample(1);
        huge.model = Some("m".repeat(100_000));
        log.send(huge);
        log.send(AuditLine::sample(2));
        log.close();
        assert_eq!(written(&path), vec![0, 1, 2]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().nth(1).unwrap().contains(&"m".repeat(100_000)));
        assert_eq!(dropped.get(), 0);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    /// A disk that never takes the lines (a FIFO nobody reads: the writer's
    /// open blocks, as on a hung network file system) cannot hold up the
    /// shutdown past its limit; once it takes them, the writer finishes.
    #[cfg(unix)]
    #[test]
    fn close_gives_up_on_a_disk_that_does_not_take_the_lines() {
        let dir = std::env::temp_dir().join(format!("turnout-auditfifo-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let made = std::process::Command::new("mkfifo").arg(&path).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!("skipped: mkfifo is not available");
            return;
        }
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let log = AuditLog::start_with(&config(&path, 10), dropped, BATCH_INTERVAL).unwrap();
        log.send(AuditLine::sample(7));
        let start = Instant::now();
        assert!(!log.close_within(Duration::from_millis(200)));
        assert!(start.elapsed() < Duration::from_secs(5));
        // A reader at last: the blocked open returns, the line is written,
        // and the writer ends (closing its end: the read sees the end).
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["latency_ms"], 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
