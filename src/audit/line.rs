//! One audit line (PRODUCT.md §3.11): what a finished request did, never
//! what it said — no prompt, answer, key or header value, only names from
//! the config, counts, times and status codes.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

/// One finished request, as written (field names are the contract of §3.11).
#[derive(Debug, Clone, Serialize)]
pub struct AuditLine {
    /// When it finished (RFC 3339, milliseconds, UTC).
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The client key's name (never the key).
    pub key: Option<String>,
    /// Route name.
    pub route: Option<Arc<str>>,
    /// The client's model name.
    pub model: Option<String>,
    /// The model name sent to the serving upstream.
    pub upstream_model: Option<String>,
    /// The serving (or last tried) upstream.
    pub upstream: Option<Arc<str>>,
    /// The endpoint that served, when the upstream has several (`upstreams[].endpoints`).
    pub endpoint: Option<Arc<str>>,
    /// `target`, `control` or none (route without a split).
    pub cohort: Option<&'static str>,
    /// Status given to the client (499: it left first).
    pub status: u16,
    /// A streamed answer.
    pub stream: bool,
    /// Every upstream attempt, in order.
    pub attempts: Vec<AuditAttempt>,
    /// Time to first token.
    pub ttft_ms: Option<u64>,
    /// Whole duration.
    pub latency_ms: u64,
    /// Prompt tokens reported by the upstream.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens reported by the upstream.
    pub completion_tokens: Option<u64>,
    /// At the serving upstream's prices.
    pub cost_usd: Option<f64>,
    /// An error code (the client's error, or how a stream broke).
    pub error: Option<&'static str>,
    /// A shadow copy (PRODUCT.md §3.9), never seen by a client.
    pub shadow: bool,
}

/// One attempt of the walk.
#[derive(Debug, Clone, Serialize)]
pub struct AuditAttempt {
    /// Who was tried.
    pub upstream: Arc<str>,
    /// The outcome label (`ok`, `http_5xx`, `timeout`, ...).
    pub outcome: &'static str,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// From the attempt's start to its answer.
    pub latency_ms: u64,
}

impl AuditLine {
    /// Appends the line as JSON, byte for byte what its `Serialize` gives
    /// (a test holds them together), without going through serde: it runs
    /// on the request's thread ([`super::AuditLog::send`]), and serde_json
    /// escapes every key of every line (half of its ~7,000 instructions a
    /// line).
    /// Field names are written as constants; values are escaped by serde_json
    /// only when they hold a byte JSON escapes.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        out.extend_from_slice(&rfc3339_millis(self.ts));
        out.extend_from_slice(b"\",\"request_id\":");
        json_str(out, &self.request_id);
        out.extend_from_slice(b",\"key\":");
        json_opt_str(out, self.key.as_deref());
        out.extend_from_slice(b",\"route\":");
        json_opt_str(out, self.route.as_deref());
        out.extend_from_slice(b",\"model\":");
        json_opt_str(out, self.model.as_deref());
        out.extend_from_slice(b",\"upstream_model\":");
        json_opt_str(out, self.upstream_model.as_deref());
        out.extend_from_slice(b",\"upstream\":");
        json_opt_str(out, self.upstream.as_deref());
        out.extend_from_slice(b",\"endpoint\":");
        json_opt_str(out, self.endpoint.as_deref());
        out.extend_from_slice(b",\"cohort\":");
        json_opt_str(out, self.cohort);
        out.extend_from_slice(b",\"status\":");
        json_u64(out, u64::from(self.status));
        out.extend_from_slice(b",\"stream\":");
        json_bool(out, self.stream);
        out.extend_from_slice(b",\"attempts\":[");
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"upstream\":");
            json_str(out, &a.upstream);
            out.extend_from_slice(b",\"outcome\":");
            json_str(out, a.outcome);
            out.extend_from_slice(b",\"status\":");
            json_opt_u64(out, a.status.map(u64::from));
            out.extend_from_slice(b",\"latency_ms\":");
            json_u64(out, a.latency_ms);
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"ttft_ms\":");
        json_opt_u64(out, self.ttft_ms);
        out.extend_from_slice(b",\"latency_ms\":");
        json_u64(out, self.latency_ms);
        out.extend_from_slice(b",\"prompt_tokens\":");
        json_opt_u64(out, self.prompt_tokens);
        out.extend_from_slice(b",\"completion_tokens\":");
        json_opt_u64(out, self.completion_tokens);
        out.extend_from_slice(b",\"cost_usd\":");
        // serde_json's float formatting (shortest round trip; NaN is null).
        if serde_json::to_writer(&mut *out, &self.cost_usd).is_err() {
            out.extend_from_slice(b"null");
        }
        out.extend_from_slice(b",\"error\":");
        json_opt_str(out, self.error);
        out.extend_from_slice(b",\"shadow\":");
        json_bool(out, self.shadow);
        out.push(b'}');
    }
}

/// A JSON string: as is between quotes unless a byte needs escaping
/// (a control character, `"` or `\\`, as serde_json decides).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // A fold without an early exit: the compiler checks 16 bytes a step.
    let escapes = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    let plain = !escapes;
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn json_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

fn json_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => json_u64(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let buf = rfc3339_millis(*t);
    s.serialize_str(std::str::from_utf8(&buf).map_err(serde::ser::Error::custom)?)
}

/// Seconds of 9999-12-31T23:59:59Z: four digits of year are the format.
const MAX_SECS: u64 = 253_402_300_799;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, as `humantime::format_rfc3339_millis`
/// writes it, into a fixed buffer: every audit line has one, and going
/// through `Display` and serde's `collect_str` cost the writer a quarter of
/// a line's serialization. A time before 1970 (a clock set wrong) is
/// written as 1970, one past 9999 as 9999-12-31T23:59:59.
fn rfc3339_millis(t: SystemTime) -> [u8; 24] {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = match since.as_secs() {
        s if s > MAX_SECS => (MAX_SECS, 999),
        s => (s, since.subsec_millis()),
    };
    let (year, month, day) = civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(millis));
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
impl AuditLine {
    /// A plain line for the writer's and queue's tests; `i` is its latency,
    /// which they read back to check order.
    pub(crate) fn sample(i: u64) -> Self {
        Self {
            ts: std::time::SystemTime::UNIX_EPOCH,
            request_id: format!("r{i}"),
            key: None,
            route: Some("chat".into()),
            model: Some("m".into()),
            upstream_model: None,
            upstream: Some("a".into()),
            endpoint: None,
            cohort: None,
            status: 200,
            stream: false,
            attempts: Vec::new(),
            ttft_ms: None,
            latency_ms: i,
            prompt_tokens: Some(1),
            completion_tokens: Some(2),
            cost_usd: None,
            error: None,
            shadow: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_match_humantime() {
        let day = 86_400;
        let mut secs: Vec<u64> = vec![
            0,
            day - 1,
            951_782_400,   // 2000-02-29, a leap day of a century
            4_107_542_400, // 2100-03-01, after a century with none
            1_709_164_799, // 2024-02-28T23:59:59
            2_147_483_648, // past 2038
            MAX_SECS,
        ];
        secs.extend((0..2000).map(|_| fastrand::u64(0..=MAX_SECS)));
        for s in secs {
            let t = SystemTime::UNIX_EPOCH
                + Duration::from_secs(s)
                + Duration::from_millis(fastrand::u64(0..1000));
            let want = humantime::format_rfc3339_millis(t).to_string();
            assert_eq!(std::str::from_utf8(&rfc3339_millis(t)).unwrap(), want);
        }
    }

    fn text() -> String {
        const PIECES: [&str; 8] = ["a", "gpt-4o", "\"", "\\", "\n", "\u{1}", "é", "\u{7f}"];
        (0..fastrand::usize(0..5))
            .map(|_| PIECES[fastrand::usize(..PIECES.len())])
            .collect()
    }

    fn maybe<T>(v: T) -> Option<T> {
        fastrand::bool().then_some(v)
    }

    #[test]
    fn write_json_is_what_serde_writes() {
        const LABELS: [&str; 3] = ["ok", "http_5xx", "timeout"];
        for _ in 0..2000 {
            let line = AuditLine {
                ts: SystemTime::UNIX_EPOCH + Duration::from_millis(fastrand::u64(0..1 << 42)),
                request_id: text(),
                key: maybe(text()),
                route: maybe(text().into()),
                model: maybe(text()),
                upstream_model: maybe(text()),
                upstream: maybe(text().into()),
                endpoint: maybe(text().into()),
                cohort: maybe("control"),
                status: fastrand::u16(..),
                stream: fastrand::bool(),
                attempts: (0..fastrand::usize(0..4))
                    .map(|_| AuditAttempt {
                        upstream: text().into(),
                        outcome: LABELS[fastrand::usize(..LABELS.len())],
                        status: maybe(fastrand::u16(..)),
                        latency_ms: fastrand::u64(..),
                    })
                    .collect(),
                ttft_ms: maybe(fastrand::u64(..)),
                latency_ms: fastrand::u64(..),
                prompt_tokens: maybe(fastrand::u64(..1_000_000)),
                completion_tokens: maybe(0),
                cost_usd: maybe(
                    [0.0, 1e-7, 0.000117, 12.5, f64::NAN][fastrand::usize(..5)] * fastrand::f64(),
                ),
                error: maybe("upstream_timeout"),
                shadow: fastrand::bool(),
            };
            let mut ours = Vec::new();
            line.write_json(&mut ours);
            let theirs = serde_json::to_vec(&line).unwrap();
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                String::from_utf8(theirs).unwrap()
            );
        }
    }

    #[test]
    fn out_of_range_times_are_clamped() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(&rfc3339_millis(before), b"1970-01-01T00:00:00.000Z");
        let after = SystemTime::UNIX_EPOCH + Duration::from_secs(MAX_SECS + 100);
        assert_eq!(&rfc3339_millis(after), b"9999-12-31T23:59:59.999Z");
    }
}
