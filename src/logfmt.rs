//! A lean field formatter for the text log format.
//!
//! tracing-subscriber's default one writes every field through `Debug` and
//! `write!`; for the per-request log line that was ~8 % of a proxied request's
//! instructions. This one writes `key=value` with plain string pushes, and
//! quotes (with `Debug` escaping) only values that would be ambiguous:
//! empty, or holding a space, a quote, `=` or a control character.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

/// `fmt().fmt_fields(LeanFields)`: `message key=value key="a b"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeanFields;

impl<'a> MakeVisitor<Writer<'a>> for LeanFields {
    type Visitor = LeanVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        LeanVisitor {
            w: target,
            first: true,
            result: Ok(()),
        }
    }
}

/// Writes one event's or span's fields.
pub struct LeanVisitor<'a> {
    w: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl LeanVisitor<'_> {
    /// Separator and `key=` (nothing for the message, which comes first).
    fn key(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.w.write_char(' ')?;
        }
        self.first = false;
        if field.name() != "message" {
            self.w.write_str(field.name())?;
            self.w.write_char('=')?;
        }
        Ok(())
    }

    fn put(&mut self, field: &Field, f: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| f(&mut self.w));
        }
    }
}

fn needs_quotes(s: &str) -> bool {
    // A fold without an early exit: the compiler checks 16 bytes a step.
    s.is_empty()
        || s.bytes().fold(false, |q, b| {
            q | (b <= b' ') | (b == b'"') | (b == b'=') | (b == 0x7f)
        })
}

impl Visit for LeanVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.put(field, |w| {
            if !message && needs_quotes(value) {
                write!(w, "{value:?}")
            } else {
                w.write_str(value)
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |w| write!(w, "{:?}", value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |w| write!(w, "{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for LeanVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for LeanVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.w
    }
}

/// RFC 3339 UTC timestamps with microseconds (`2026-11-22T03:34:08.123456Z`,
/// as tracing-subscriber writes them), with the date and time formatted once
/// per second per thread: formatting them on every line was ~2 % of a
/// proxied request's instructions.
#[derive(Debug, Clone, Copy, Default)]
pub struct CachedTime;

impl FormatTime for CachedTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        write_now(w)
    }
}

/// The current time as [`CachedTime`] writes it.
fn write_now(w: &mut impl fmt::Write) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, micros) = (now.as_secs(), now.subsec_micros());
    SECOND.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            c.1 = humantime::format_rfc3339_seconds(t).to_string();
            c.1.pop(); // the trailing `Z`: fractions go before it
            c.0 = secs;
        }
        w.write_str(&c.1)
    })?;
    let mut frac = *b".000000Z";
    let mut n = micros;
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    w.write_str(std::str::from_utf8(&frac).map_err(|_| fmt::Error)?)
}

/// Set once the process logs plain text (no colours) to stderr: then the
/// per-request line is written by [`write_access_line`], the very line
/// tracing-subscriber would write, without its per-event machinery (a
/// dispatch, a visitor call per field, a formatter per event: ~5,000
/// instructions, a sixth of Turnout's own share of a proxied request).
static DIRECT: AtomicBool = AtomicBool::new(false);

/// The binary's text log is plain on stderr: request lines may be written directly.
pub fn write_access_lines_directly() {
    DIRECT.store(true, Ordering::Relaxed);
}

/// True when [`write_access_line`] writes what the subscriber would.
pub fn access_lines_direct() -> bool {
    DIRECT.load(Ordering::Relaxed)
}

/// The fields of the per-request log line (`request ...`), in their order.
pub struct AccessLine<'a> {
    /// The request's id.
    pub request_id: &'a str,
    /// Route name, `none` when none matched.
    pub route: &'a str,
    /// Serving (or last tried) upstream, `none` when none was tried.
    pub upstream: &'a str,
    /// Upstream attempts.
    pub attempts: u32,
    /// Status given to the client.
    pub status: u16,
    /// Whole duration.
    pub latency_ms: u64,
    /// Prompt tokens (0 when unknown).
    pub prompt_tokens: u64,
    /// Completion tokens (0 when unknown).
    pub completion_tokens: u64,
    /// `http` or `ws`.
    pub transport: &'a str,
    /// How a stream broke after its first byte (empty when it did not).
    pub stream_error: &'a str,
}

/// Buffered access lines are written once this many bytes wait.
const BATCH_BYTES: usize = 16 * 1024;

thread_local! {
    /// This thread's access lines not yet written (a runtime worker's
    /// under load), or the line being formatted.
    static PENDING: RefCell<String> = const { RefCell::new(String::new()) };
    /// This thread is a runtime worker: [`flush_when_idle`] runs on it.
    static WORKER: Cell<bool> = const { Cell::new(false) };
}

/// Writes `{time}  INFO {target}: request key=value ...` to stderr, exactly
/// as the text subscriber formats the `request` event.
///
/// On a runtime worker the line waits in a per-thread buffer until the
/// worker goes idle ([`flush_when_idle`], called by the runtime before it
/// parks a worker) or [`BATCH_BYTES`] wait: an idle server writes each line
/// at once, a loaded one a batch per write(2) instead of one write per
/// request (that system call was ~2.5 µs of a proxied request's ~23 µs;
/// docs/benchmarks.md). Lines keep their order per worker; at exit the
/// runtime's threads write what they hold ([`flush_pending`]).
pub fn write_access_line(target: &str, l: &AccessLine<'_>) {
    PENDING.with(|cell| {
        let Ok(mut pending) = cell.try_borrow_mut() else {
            return;
        };
        let before = pending.len();
        if format_access_line(&mut pending, target, l).is_err() {
            pending.truncate(before);
        }
        if !WORKER.get() || pending.len() >= BATCH_BYTES {
            write_out(&mut pending);
        }
    });
}

/// Called by the runtime just before a worker thread parks: the lines it
/// buffered are written, and from then on this thread buffers its lines
/// (only workers park, so only their lines wait for it).
pub fn flush_when_idle() {
    WORKER.set(true);
    flush_pending();
}

/// Writes this thread's buffered access lines (a runtime thread stopping).
pub fn flush_pending() {
    PENDING.with(|cell| {
        if let Ok(mut pending) = cell.try_borrow_mut() {
            write_out(&mut pending);
        }
    });
}

fn write_out(pending: &mut String) {
    if !pending.is_empty() {
        use std::io::Write;
        let _ = std::io::stderr().write_all(pending.as_bytes());
        pending.clear();
    }
    // A burst of long lines keeps no big buffer.
    if pending.capacity() > 2 * BATCH_BYTES {
        *pending = String::new();
    }
}

fn format_access_line(out: &mut String, target: &str, l: &AccessLine<'_>) -> fmt::Result {
    use fmt::Write;
    write_now(out)?;
    out.push_str("  INFO ");
    out.push_str(target);
    out.push_str(": request");
    // Each key is written with its leading space and `=` in one copy.
    let text = |out: &mut String, key: &str, v: &str| -> fmt::Result {
        out.push_str(key);
        if needs_quotes(v) {
            write!(out, "{v:?}")
        } else {
            out.push_str(v);
            Ok(())
        }
    };
    let num = |out: &mut String, key: &str, v: u64| {
        out.push_str(key);
        out.push_str(itoa::Buffer::new().format(v));
    };
    text(out, " request_id=", l.request_id)?;
    text(out, " route=", l.route)?;
    text(out, " upstream=", l.upstream)?;
    num(out, " attempts=", u64::from(l.attempts));
    num(out, " status=", u64::from(l.status));
    num(out, " latency_ms=", l.latency_ms);
    num(out, " prompt_tokens=", l.prompt_tokens);
    num(out, " completion_tokens=", l.completion_tokens);
    text(out, " transport=", l.transport)?;
    text(out, " stream_error=", l.stream_error)?;
    out.push('\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the subscriber under test writes into.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn quotes_only_ambiguous_values() {
        assert!(needs_quotes(""));
        assert!(needs_quotes("a b"));
        assert!(needs_quotes("a=b"));
        assert!(needs_quotes("say \"hi\""));
        assert!(needs_quotes("line\nbreak"));
        assert!(!needs_quotes("chat"));
        assert!(!needs_quotes("8dac1c03ed22abab"));
        assert!(!needs_quotes("claude-3.5-sonnet"));
    }

    #[test]
    fn formats_an_event() {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .fmt_fields(LeanFields)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(
                route = "chat",
                status = 200u16,
                error = "",
                note = "a b",
                "request"
            );
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.trim(),
            r#"INFO request route=chat status=200 error="" note="a b""#
        );
    }

    #[test]
    fn cached_time_matches_rfc3339_with_micros() {
        let mut a = String::new();
        CachedTime.format_time(&mut Writer::new(&mut a)).unwrap();
        let mut b = String::new();
        CachedTime.format_time(&mut Writer::new(&mut b)).unwrap();
        for t in [&a, &b] {
            assert_eq!(t.len(), "2026-11-22T03:34:08.123456Z".len(), "{t}");
            assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
            let parsed = humantime::parse_rfc3339(t).unwrap();
            let age = SystemTime::now().duration_since(parsed).unwrap();
            assert!(age < Duration::from_secs(60), "{t}");
        }
        assert!(a <= b, "{a} then {b}");
    }

    #[test]
    fn the_direct_access_line_is_the_subscribers_line() {
        for (id, route, err) in [
            ("8ef6a9ba419b8841", "fast", ""),
            ("client id with spaces", "ro=ute", "stream_broken"),
            ("say \"hi\"\n", "", "timeout"),
        ] {
            let buf = Buf::default();
            let out = buf.clone();
            let sub = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_timer(CachedTime)
                .fmt_fields(LeanFields)
                .with_writer(move || out.clone())
                .finish();
            tracing::subscriber::with_default(sub, || {
                tracing::info!(
                    target: "turnout::accounting",
                    request_id = id,
                    route = route,
                    upstream = "fast-a",
                    attempts = 2u32,
                    status = 200u16,
                    latency_ms = 17u64,
                    prompt_tokens = 37u64,
                    completion_tokens = 0u64,
                    transport = "http",
                    stream_error = err,
                    "request"
                );
            });
            let theirs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            let mut mine = String::new();
            let line = AccessLine {
                request_id: id,
                route,
                upstream: "fast-a",
                attempts: 2,
                status: 200,
                latency_ms: 17,
                prompt_tokens: 37,
                completion_tokens: 0,
                transport: "http",
                stream_error: err,
            };
            format_access_line(&mut mine, "turnout::accounting", &line).unwrap();
            // Same line but for the time it was written.
            let after_time = |s: &str| s.split_once("Z ").unwrap().1.to_owned();
            assert_eq!(after_time(&mine), after_time(&theirs));
            assert_eq!(mine.len(), theirs.len());
        }
    }
}
