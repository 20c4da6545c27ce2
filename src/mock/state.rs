//! State shared by every connection of one mock instance: settings,
//! precomputed bodies, counters, injected faults and the kill switch.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::body::{self, Script};
use super::{Fault, FaultScope, MockSettings, MockStats, RecordedRequest};

/// Which family of endpoint a request belongs to, to pick the instance fault.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// Chat, embeddings, completions.
    Inference,
    /// `GET /v1/models`.
    Models,
    /// Stored resources (files): only an instance-wide `All` fault applies,
    /// never `fail_rate`.
    Resource,
}

/// Lock-free counters behind [`MockStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub chat: AtomicU64,
    pub embeddings: AtomicU64,
    pub responses: AtomicU64,
    pub messages: AtomicU64,
    pub files: AtomicU64,
    pub audio: AtomicU64,
    pub models: AtomicU64,
    pub disconnects: AtomicU64,
    pub completed: AtomicU64,
}

/// Everything a request handler needs; one per instance, behind an `Arc`.
pub(crate) struct Shared {
    pub settings: MockSettings,
    /// Generated text for `settings.chunks`, reused by every request.
    pub script: Arc<Script>,
    /// `GET /v1/models` body, built once.
    pub models_body: Bytes,
    /// `x-mock-name` header value.
    pub name_header: HeaderValue,
    /// `system_fingerprint` value, already JSON-quoted.
    pub fingerprint: String,
    pub counters: Counters,
    /// Instance faults indexed by [`FaultScope`] (All, Chat, Models).
    faults: [ArcSwapOption<Fault>; 3],
    /// Requests each instance fault still applies to; negative = every one.
    fault_left: [AtomicI64; 3],
    last: Mutex<Option<RecordedRequest>>,
    /// Uploaded files (`/v1/files`), oldest first, bounded.
    pub files: Mutex<std::collections::VecDeque<StoredFile>>,
    seq: AtomicU64,
    /// Cancelled by `kill()`: the accept loop and every connection stop.
    pub shutdown: CancellationToken,
}

impl Shared {
    /// Precomputes what every request reuses.
    pub fn new(settings: MockSettings) -> Self {
        let script = Arc::new(Script::new(&settings.name, settings.chunks));
        let models_body = Bytes::from(body::models_list(&settings.models, body::now_secs()));
        let name_header = HeaderValue::from_str(&settings.name)
            .unwrap_or_else(|_| HeaderValue::from_static("mock"));
        let fingerprint = body::json_str(&settings.name);
        Self {
            settings,
            script,
            models_body,
            name_header,
            fingerprint,
            counters: Counters::default(),
            faults: Default::default(),
            fault_left: Default::default(),
            last: Mutex::new(None),
            files: Mutex::default(),
            seq: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        }
    }

    /// A fresh number for response ids.
    pub fn next_id(&self) -> u64 {
        self.seq.fetch_add(1, Relaxed) + 1
    }

    /// Replaces the instance fault of `scope` (for every request).
    pub fn set_fault(&self, scope: FaultScope, fault: Option<Fault>) {
        self.set_fault_times(scope, fault, None);
    }

    /// Replaces the instance fault of `scope` for the next `times` requests
    /// (`None`: every request until changed).
    pub fn set_fault_times(&self, scope: FaultScope, fault: Option<Fault>, times: Option<u32>) {
        self.fault_left[scope as usize].store(times.map_or(-1, i64::from), Relaxed);
        self.faults[scope as usize].store(fault.map(Arc::new));
    }

    /// The instance fault for a request of `kind`: the narrower scope wins.
    pub fn fault_for(&self, kind: Kind) -> Option<Fault> {
        let narrow = match kind {
            Kind::Inference => FaultScope::Chat,
            Kind::Models => FaultScope::Models,
            Kind::Resource => FaultScope::All,
        };
        self.take_fault(narrow)
            .or_else(|| self.take_fault(FaultScope::All))
    }

    /// The fault of `scope`, if it still applies, counting this request.
    fn take_fault(&self, scope: FaultScope) -> Option<Fault> {
        let i = scope as usize;
        let fault = self.faults[i].load_full()?;
        let left = &self.fault_left[i];
        if left.load(Relaxed) >= 0 {
            // Counted: the request that takes the last one clears it.
            let before = left.fetch_sub(1, Relaxed);
            if before <= 0 {
                left.fetch_add(1, Relaxed);
                return None;
            }
            if before == 1 {
                self.faults[i].store(None);
            }
        }
        Some((*fault).clone())
    }

    /// Remembers the most recent POST for [`super::MockHandle::last_request`].
    pub fn record(&self, path: &str, headers: &HeaderMap, body: &Bytes) {
        let rec = RecordedRequest {
            path: path.to_owned(),
            headers: headers.clone(),
            body: body.clone(),
        };
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(rec);
    }

    /// The most recent POST, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A consistent-enough snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        let c = &self.counters;
        MockStats {
            requests: c.requests.load(Relaxed),
            chat: c.chat.load(Relaxed),
            embeddings: c.embeddings.load(Relaxed),
            responses: c.responses.load(Relaxed),
            messages: c.messages.load(Relaxed),
            files: c.files.load(Relaxed),
            audio: c.audio.load(Relaxed),
            models: c.models.load(Relaxed),
            disconnects: c.disconnects.load(Relaxed),
            completed: c.completed.load(Relaxed),
        }
    }
}

/// A file uploaded to the simulated provider.
pub(crate) struct StoredFile {
    /// `file-mock-N`.
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub created_at: u64,
    pub content: Bytes,
}

/// Counts one API response as `completed` or, if dropped before
/// [`Flight::finish`], as a client `disconnect`. It lives in the handler
/// future and then in the body stream, so hyper dropping either (client
/// gone) is what gets counted.
pub(crate) struct Flight {
    shared: Arc<Shared>,
    done: bool,
}

impl Flight {
    /// Starts tracking one response.
    pub fn new(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::clone(shared),
            done: false,
        }
    }

    /// Marks the response as fully sent; counted when dropped.
    pub fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let c = &self.shared.counters;
        if self.done {
            c.completed.fetch_add(1, Relaxed);
        } else {
            c.disconnects.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_counted_fault_ends_and_a_later_one_persists() {
        let s = Shared::new(MockSettings::default());
        s.set_fault_times(FaultScope::Chat, Some(Fault::Junk), Some(1));
        assert_eq!(s.fault_for(Kind::Inference), Some(Fault::Junk));
        assert_eq!(s.fault_for(Kind::Inference), None);
        s.set_fault(FaultScope::Chat, Some(Fault::Hang));
        assert_eq!(s.fault_for(Kind::Inference), Some(Fault::Hang));
        assert_eq!(s.fault_for(Kind::Inference), Some(Fault::Hang));
    }

    use super::*;

    #[test]
    fn narrow_scope_wins_and_all_is_fallback() {
        let s = Shared::new(MockSettings::default());
        assert_eq!(s.fault_for(Kind::Inference), None);
        s.set_fault(FaultScope::All, Some(Fault::Junk));
        s.set_fault(FaultScope::Models, Some(Fault::Hang));
        assert_eq!(s.fault_for(Kind::Inference), Some(Fault::Junk));
        assert_eq!(s.fault_for(Kind::Models), Some(Fault::Hang));
        s.set_fault(FaultScope::All, None);
        assert_eq!(s.fault_for(Kind::Inference), None);
    }

    #[test]
    fn flight_counts_completed_or_disconnect() {
        let s = Arc::new(Shared::new(MockSettings::default()));
        let mut f = Flight::new(&s);
        f.finish();
        drop(f);
        drop(Flight::new(&s));
        let st = s.stats();
        assert_eq!((st.completed, st.disconnects), (1, 1));
    }
}
