//! A lean field formatter for the text log format.
//!
//! tracing-subscriber's default one writes every field through `Debug` and
//! `write!`; for the per-request log line that was ~8 % of a proxied request's
//! instructions. This one writes `key=value` with plain string pushes, and
//! quotes (with `Debug` escaping) only values that would be ambiguous:
//! empty, or holding a space, a quote, `=` or a control character.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;

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
        self.put(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| write!(w, "{value}"));
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
}
