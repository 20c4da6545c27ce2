//! The audit log (PRODUCT.md §3.11): one JSON line per finished request,
//! written by a thread of its own from a bounded queue, so that a request
//! never waits on the disk and a write error never fails one. A full queue
//! drops the line and counts it (`turnout_audit_dropped_total`). The file is
//! rotated by size: `path` → `path.1` → … → `path.{keep}`.

mod line;
pub mod report;
mod writer;

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use prometheus::IntCounter;

pub use line::{AuditAttempt, AuditLine};
pub use writer::rotated_paths;

use crate::config::AuditConfig;

/// Cheap handle to the audit queue.
#[derive(Clone)]
pub struct AuditLog {
    tx: SyncSender<AuditLine>,
    dropped: IntCounter,
}

impl AuditLog {
    /// Starts the writer thread; it ends once every handle is gone and the
    /// queue is written.
    pub fn start(cfg: &AuditConfig, dropped: IntCounter) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(cfg.queue);
        let w = writer::Writer::new(cfg.clone());
        std::thread::Builder::new()
            .name("turnout-audit".into())
            .spawn(move || w.run(rx))?;
        Ok(Self { tx, dropped })
    }

    /// Queues a line without waiting; a full queue drops it (counted).
    pub fn send(&self, line: AuditLine) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}
