//! The audit writer thread: takes the queued lines in batches, appends them
//! as JSON, flushes once per batch, and rotates the file by size.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::queue::Queue;
use crate::config::AuditConfig;

/// Errors are logged at most this often (a full disk must not flood the log).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Writer {
    cfg: AuditConfig,
    file: Option<BufWriter<File>>,
    size: u64,
    last_error: Option<Instant>,
}

impl Writer {
    pub(super) fn new(cfg: AuditConfig) -> Self {
        Self {
            cfg,
            file: None,
            size: 0,
            last_error: None,
        }
    }

    /// Until the queue is closed: takes every queued line, writes and
    /// flushes them, then pauses `interval` before looking again, so that a
    /// busy proxy wakes this thread once per interval rather than once per
    /// line; an idle one finds the queue empty and waits for its next line.
    /// After the close, the lines still queued are written before it ends.
    pub(super) fn run(mut self, queue: &Queue, interval: Duration) {
        let mut batch = Vec::new();
        loop {
            let closed = queue.take(&mut batch);
            // Line by line: the file rotates between lines, never inside one.
            let mut rest = &batch[..];
            while let Some(end) = memchr::memchr(b'\n', rest) {
                let (line, after) = rest.split_at(end + 1);
                rest = after;
                let r = self.write(line);
                self.check(r);
            }
            batch.clear();
            // What was taken is on disk for readers before the pause.
            let r = self.file.as_mut().map_or(Ok(()), |f| f.flush());
            self.check(r);
            if closed {
                return;
            }
            queue.pause(interval);
        }
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.file.is_some()
            && self.size > 0
            && self.size + line.len() as u64 > self.cfg.max_bytes
        {
            self.rotate()?;
        }
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.cfg.path)?;
            self.size = f.metadata().map_or(0, |m| m.len());
            self.file = Some(BufWriter::with_capacity(64 * 1024, f));
            if self.size > 0 && self.size + line.len() as u64 > self.cfg.max_bytes {
                self.rotate()?;
                return self.write(line);
            }
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(line)?;
            self.size += line.len() as u64;
        }
        Ok(())
    }

    /// `path.{keep-1}` → `path.{keep}`, …, `path` → `path.1`; the next write
    /// opens a fresh `path`.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut f) = self.file.take() {
            f.flush()?;
        }
        self.size = 0;
        let path = &self.cfg.path;
        if self.cfg.keep == 0 {
            return std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(numbered(path, self.cfg.keep));
        for i in (1..self.cfg.keep).rev() {
            let from = numbered(path, i);
            if from.exists() {
                std::fs::rename(&from, numbered(path, i + 1))?;
            }
        }
        std::fs::rename(path, numbered(path, 1))
    }

    /// A write error never fails a request: it is logged (at most every
    /// 10 s) and the file is reopened on the next line.
    fn check(&mut self, r: std::io::Result<()>) {
        if let Err(e) = r {
            self.file = None;
            let now = Instant::now();
            if self
                .last_error
                .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_EVERY)
            {
                self.last_error = Some(now);
                tracing::error!(path = %self.cfg.path.display(), "audit log write failed: {e}");
            }
        }
    }
}

fn numbered(path: &Path, i: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// An audit file and its rotated siblings that exist, oldest first.
pub fn rotated_paths(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..1000)
        .map(|i| numbered(path, i))
        .take_while(|p| p.exists())
        .collect();
    out.reverse();
    if path.exists() {
        out.push(path.to_path_buf());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditLine;

    #[test]
    fn rotates_by_size_and_keeps_that_many() {
        let dir = std::env::temp_dir().join(format!("turnout-audit-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.jsonl");
        let cfg = AuditConfig {
            path: path.clone(),
            max_bytes: 1000,
            keep: 2,
            queue: 10,
        };
        let queue = Queue::new(100);
        for i in 0..60 {
            let mut line = Vec::new();
            AuditLine::sample(i).write_json(&mut line);
            line.push(b'\n');
            assert!(queue.push(&line));
        }
        queue.close();
        Writer::new(cfg).run(&queue, Duration::from_millis(50));
        let files = rotated_paths(&path);
        assert_eq!(files.len(), 3, "{files:?}");
        let mut ids = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            assert!(text.len() <= 1000);
            for l in text.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                ids.push(v["latency_ms"].as_u64().unwrap());
            }
        }
        // The newest lines survive, in order, none twice.
        assert_eq!(ids.last(), Some(&59));
        assert!(ids.windows(2).all(|w| w[0] + 1 == w[1]), "{ids:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
