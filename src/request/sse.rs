//! SSE scanning: event boundaries, the first-event commit, and a cheap scan
//! for `usage` and `[DONE]`.
//!
//! Chunks pass through unchanged; the scanner only looks at event boundaries
//! and parses the rare event that mentions `"usage"`.

use bytes::BytesMut;

use crate::openai::Usage;

/// Longest partial event kept between chunks; an event beyond it is not scanned.
const MAX_CARRY: usize = 256 * 1024;

/// Finds `needle` in `hay` (`memchr`'s SIMD substring search: the scanner
/// looks at every byte of every stream, so this is on the hot path).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    memchr::memmem::find(hay, needle)
}

/// The first blank line, which ends an SSE event: `(start, length)`, for
/// `\n\n` or `\r\n\r\n`, whichever comes first.
pub fn blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = find(buf, b"\n\n");
    // A CRLF blank line comes first only if it starts before the LF one: look
    // no further than that (not to the end of the buffer on every event).
    let upto = lf.map_or(buf.len(), |i| (i + 3).min(buf.len()));
    let crlf = find(&buf[..upto], b"\r\n\r\n");
    match (lf, crlf) {
        (Some(a), Some(b)) if b < a => Some((b, 4)),
        (Some(a), _) => Some((a, 2)),
        (None, b) => b.map(|b| (b, 4)),
    }
}

/// End of the first complete event (index just past its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    blank_line(buf).map(|(start, len)| start + len)
}

/// Watches an SSE byte stream for `data: [DONE]` and the last `usage`.
#[derive(Debug, Default)]
pub struct SseScanner {
    carry: BytesMut,
    overflow: bool,
    /// `data: [DONE]` seen.
    pub done: bool,
    /// At least one `data:` event seen.
    pub saw_data: bool,
    /// Last non-null usage seen.
    pub usage: Option<Usage>,
}

impl SseScanner {
    /// Feeds one chunk.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        if !self.carry.is_empty() || self.overflow {
            // Complete the pending event first.
            let joined_len = self.carry.len();
            self.carry.extend_from_slice(rest);
            match event_end(&self.carry) {
                Some(end) => {
                    let ev = self.carry.split_to(end).freeze();
                    if !self.overflow {
                        self.event(&ev);
                    }
                    self.overflow = false;
                    let consumed = end.saturating_sub(joined_len);
                    rest = &rest[consumed.min(rest.len())..];
                    self.carry.clear();
                }
                None => {
                    if self.carry.len() > MAX_CARRY {
                        self.carry.clear();
                        self.overflow = true;
                    }
                    return;
                }
            }
        }
        while let Some(end) = event_end(rest) {
            self.event(&rest[..end]);
            rest = &rest[end..];
        }
        if !rest.is_empty() {
            self.carry.extend_from_slice(rest);
        }
    }

    fn event(&mut self, ev: &[u8]) {
        for line in ev.split(|&b| b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.trim_ascii();
            self.saw_data = true;
            if data == b"[DONE]" {
                self.done = true;
            } else if find(data, b"\"usage\"").is_some() {
                if let Ok(Some(u)) = crate::openai::response_usage(data) {
                    self.usage = Some(u);
                }
            }
        }
    }
}

/// Whether a prefetch buffer holds a complete `data:` event (the commit point).
pub fn has_first_event(buf: &[u8]) -> bool {
    let mut rest = buf;
    while let Some(end) = event_end(rest) {
        if rest[..end]
            .split(|&b| b == b'\n')
            .any(|l| l.starts_with(b"data:"))
        {
            return true;
        }
        rest = &rest[end..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_finds_usage_and_done_across_chunk_splits() {
        let full = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n";
        for split in 1..full.len() {
            let mut s = SseScanner::default();
            s.feed(&full[..split]);
            s.feed(&full[split..]);
            assert!(s.done, "split at {split}");
            assert_eq!(
                s.usage,
                Some(Usage {
                    prompt_tokens: 5,
                    completion_tokens: 7
                }),
                "split at {split}"
            );
        }
    }

    #[test]
    fn null_usage_is_ignored_and_crlf_works() {
        let mut s = SseScanner::default();
        s.feed(b"data: {\"usage\":null}\r\n\r\ndata: [DONE]\r\n\r\n");
        assert!(s.done);
        assert_eq!(s.usage, None);
    }

    #[test]
    fn first_event_detection() {
        assert!(!has_first_event(b": keep-alive\n\n"));
        assert!(!has_first_event(b"data: {\"a\":1}"));
        assert!(has_first_event(b": ping\n\ndata: {\"a\":1}\n\n"));
    }

    #[test]
    fn find_works() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"ab", b""), None);
    }

    #[test]
    fn blank_line_takes_whichever_separator_comes_first() {
        assert_eq!(blank_line(b"data: a\n\ndata: b\r\n\r\n"), Some((7, 2)));
        assert_eq!(blank_line(b"data: a\r\n\r\ndata: b\n\n"), Some((7, 4)));
        assert_eq!(blank_line(b"data: a\r\n\r\n"), Some((7, 4)));
        assert_eq!(blank_line(b"data: a\n\n"), Some((7, 2)));
        assert_eq!(blank_line(b"data: a\r\n"), None);
        assert_eq!(blank_line(b"\n\n"), Some((0, 2)));
        assert_eq!(blank_line(b"\r\n\r\n\n\n"), Some((0, 4)));
        assert_eq!(blank_line(b"a\r\n\n"), Some((2, 2)));
    }
}
