//! A lean field formatter for the text log format.
//!
//! tracing-subscriber's default one writes every field through `Debug` and
//! `write!`; for the per-request log line that was ~8 % of a proxied request's
//! instructions. This one writes `key=value` with plain string pushes, and
//! quotes (with `Debug` escaping) only values that would be ambiguous:
//! empty, or holding a space, a quote, `=` or a control character.

use std::cell::RefCell;
use std::fmt;
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
    s.is_empty()
        || s.bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == 0x7f)
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        use std::sync::{Arc, Mutex};
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
}
