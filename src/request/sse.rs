//! SSE framing: splits an upstream byte stream into events, whatever its
//! chunking, in bounded memory. The protocol rules ([`super::protocol`]) read
//! the events; the bytes themselves pass to the client unchanged.
//!
//! Hot path: every byte of every stream goes through [`Framer::feed`]. Event
//! boundaries are found with `memchr`'s SIMD substring search; a complete
//! event that arrives inside one chunk is read in place (no copy); only the
//! partial event at a chunk's end is kept.
//!
//! An event of up to [`WHOLE_EVENT`] bytes is seen whole. A longer one (a
//! Responses `response.completed` repeats the whole answer) is seen by its
//! first [`HEAD`] and last [`TAIL`] bytes, so a stream's memory stays bounded
//! and what the rules see never depends on how the bytes were split.

use std::borrow::Cow;

/// Longest event seen whole.
pub const WHOLE_EVENT: usize = 64 * 1024;
/// Bytes kept of the start of a longer event (its `event:` line and the start of its data).
pub const HEAD: usize = 4 * 1024;
/// Bytes kept of the end of a longer event (where `usage` and `finish_reason` sit).
pub const TAIL: usize = 4 * 1024;

/// Finds `needle` in `hay` (`memchr`'s SIMD substring search).
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

/// One event as the protocol rules read it.
#[derive(Debug)]
pub struct Event<'a> {
    /// The `event:` field.
    pub name: Option<&'a [u8]>,
    /// The `data:` field: all of it (lines joined with `\n`) for a whole
    /// event; for a long one, its first data line as far as the head goes.
    pub data: Cow<'a, [u8]>,
    /// A long event's last [`TAIL`] bytes, raw; `None` for a whole event.
    pub tail: Option<&'a [u8]>,
}

impl Event<'_> {
    /// True when the whole event was read.
    pub fn whole(&self) -> bool {
        self.tail.is_none()
    }

    /// Where the end of the data is: the data itself, or a long event's tail.
    pub fn end(&self) -> &[u8] {
        self.tail.unwrap_or(&self.data)
    }

    /// The event from its bytes (a whole event, or a long event's head and
    /// tail); `None` for a block without data (comments, keep-alives).
    fn parse<'a>(head: &'a [u8], tail: Option<&'a [u8]>) -> Option<Event<'a>> {
        let mut name = None;
        let mut data: Option<Cow<'a, [u8]>> = None;
        for line in head.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (field, value) = match memchr::memchr(b':', line) {
                Some(0) => continue,
                Some(i) => {
                    let v = &line[i + 1..];
                    (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
                }
                None => (line, &line[..0]),
            };
            match field {
                b"data" => {
                    data = Some(match data {
                        None => Cow::Borrowed(value),
                        // A long event's head: the first data line is enough.
                        Some(d) if tail.is_some() => d,
                        Some(d) => {
                            let mut joined = d.into_owned();
                            joined.push(b'\n');
                            joined.extend_from_slice(value);
                            Cow::Owned(joined)
                        }
                    })
                }
                b"event" => name = Some(value),
                _ => {}
            }
        }
        Some(Event {
            name,
            data: data?,
            tail,
        })
    }
}

/// Splits a byte stream into events across chunk boundaries.
#[derive(Debug, Default)]
pub struct Framer {
    /// The partial event (≤ [`WHOLE_EVENT`] bytes), or a long one's head.
    part: Vec<u8>,
    /// Bytes of the partial event so far.
    len: usize,
    /// A long partial event's last bytes (its tail so far, plus up to 3
    /// bytes of a blank line that may continue in the next chunk).
    tail: Vec<u8>,
}

impl Framer {
    /// Bytes of memory held between chunks (for the memory bound's tests).
    pub fn held(&self) -> usize {
        self.part.capacity() + self.tail.capacity()
    }

    /// True while an event is partly read (a stream that breaks now breaks
    /// mid-event).
    pub fn mid_event(&self) -> bool {
        self.len > 0
    }

    /// Feeds one chunk, calling `on` for every event it completes, in order;
    /// `on` returns true to stop. Returns the offset in `chunk` just past the
    /// event that stopped, if one did (the rest of the chunk is not read).
    pub fn feed(&mut self, chunk: &[u8], on: &mut dyn FnMut(&Event<'_>) -> bool) -> Option<usize> {
        let mut rest = chunk;
        if self.len > 0 {
            let Some(end) = self.end_of_pending(rest) else {
                self.keep(rest);
                return None;
            };
            self.keep(&rest[..end]);
            let stop = self.emit_pending(on);
            if stop {
                return Some(end);
            }
            rest = &rest[end..];
        }
        while let Some((start, sep)) = blank_line(rest) {
            let end = start + sep;
            let ev = &rest[..end];
            let stopped = if end <= WHOLE_EVENT {
                Event::parse(ev, None).is_some_and(|e| on(&e))
            } else {
                Event::parse(&ev[..HEAD], Some(&ev[end - TAIL..])).is_some_and(|e| on(&e))
            };
            if stopped {
                return Some(chunk.len() - rest.len() + end);
            }
            rest = &rest[end..];
        }
        self.keep(rest);
        None
    }

    /// At the end of the stream: the partial event, read as if it were
    /// complete (a last `data: [DONE]` without its blank line).
    pub fn flush(&mut self, on: &mut dyn FnMut(&Event<'_>) -> bool) -> bool {
        self.len > 0 && self.emit_pending(on)
    }

    /// Where the pending event ends in `rest` (just past its blank line),
    /// counting a blank line that began in the previous chunk.
    fn end_of_pending(&self, rest: &[u8]) -> Option<usize> {
        let kept = if self.len <= WHOLE_EVENT {
            &self.part[..]
        } else {
            &self.tail[..]
        };
        let prev = &kept[kept.len().saturating_sub(3)..];
        if !prev.is_empty() {
            let mut window = [0u8; 6];
            let n = prev.len() + rest.len().min(3);
            window[..prev.len()].copy_from_slice(prev);
            window[prev.len()..n].copy_from_slice(&rest[..n - prev.len()]);
            if let Some((s, sep)) = blank_line(&window[..n]) {
                if s < prev.len() {
                    return Some(s + sep - prev.len());
                }
            }
        }
        blank_line(rest).map(|(s, sep)| s + sep)
    }

    /// Appends bytes of the partial event, switching to head and tail past
    /// [`WHOLE_EVENT`].
    fn keep(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let before = self.len;
        self.len += bytes.len();
        if self.len <= WHOLE_EVENT {
            self.part.extend_from_slice(bytes);
            return;
        }
        if before <= WHOLE_EVENT {
            // Becomes long: the head stays, the rest is tail.
            self.tail.clear();
            let after_head = &self.part[HEAD.min(self.part.len())..];
            self.tail
                .extend_from_slice(&after_head[after_head.len().saturating_sub(TAIL + 3)..]);
            self.part.truncate(HEAD);
            if self.part.len() < HEAD {
                let fill = (HEAD - self.part.len()).min(bytes.len());
                self.part.extend_from_slice(&bytes[..fill]);
            }
        }
        // Only the last TAIL + 3 bytes matter.
        let bytes = &bytes[bytes.len().saturating_sub(TAIL + 3)..];
        self.tail.extend_from_slice(bytes);
        let over = self.tail.len().saturating_sub(TAIL + 3);
        if over > 0 {
            self.tail.drain(..over);
        }
    }

    fn emit_pending(&mut self, on: &mut dyn FnMut(&Event<'_>) -> bool) -> bool {
        let stop = if self.len <= WHOLE_EVENT {
            Event::parse(&self.part, None).is_some_and(|e| on(&e))
        } else {
            let tail = &self.tail[self.tail.len().saturating_sub(TAIL)..];
            Event::parse(&self.part, Some(tail)).is_some_and(|e| on(&e))
        };
        self.part.clear();
        self.tail.clear();
        self.len = 0;
        if self.part.capacity() > HEAD {
            // A long event's buffer is not kept for the rest of the stream.
            self.part.shrink_to(HEAD);
        }
        self.tail.shrink_to(2 * TAIL);
        stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(Option<Vec<u8>>, Vec<u8>, bool)> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let mut on = |e: &Event<'_>| {
            out.push((e.name.map(<[u8]>::to_vec), e.data.to_vec(), e.whole()));
            false
        };
        for c in chunks {
            f.feed(c, &mut on);
        }
        f.flush(&mut on);
        out
    }

    #[test]
    fn fields_comments_and_multi_line_data() {
        let got =
            events(&[b": ping\n\nevent: a\r\ndata: {\"x\":\r\ndata:1}\r\n\r\nid: 3\ndata\n\n"]);
        assert_eq!(
            got,
            vec![
                (Some(b"a".to_vec()), b"{\"x\":\n1}".to_vec(), true),
                (None, Vec::new(), true),
            ]
        );
    }

    #[test]
    fn same_events_for_every_split_and_a_stop_offset() {
        let full: &[u8] = b"data: a\n\nevent: e\ndata: b\r\n\r\ndata: [DONE]\n\ndata: after\n\n";
        let whole = events(&[full]);
        for cut in 0..full.len() {
            assert_eq!(events(&[&full[..cut], &full[cut..]]), whole, "cut {cut}");
        }
        let mut f = Framer::default();
        let at = f.feed(full, &mut |e| &*e.data == b"[DONE]");
        assert_eq!(at, Some(full.len() - b"data: after\n\n".len()));
    }

    #[test]
    fn long_events_keep_head_and_tail_and_bounded_memory() {
        let mut ev =
            b"event: response.completed\ndata: {\"type\":\"response.completed\",\"x\":\"".to_vec();
        ev.extend(std::iter::repeat_n(b'a', 200_000));
        ev.extend_from_slice(b"\",\"usage\":{\"input_tokens\":1}}\n\n");
        let whole = events(&[&ev]);
        assert_eq!(whole.len(), 1);
        assert!(!whole[0].2);
        for step in [1000, 4096, 65_536, 99_999] {
            let chunks: Vec<&[u8]> = ev.chunks(step).collect();
            assert_eq!(events(&chunks), whole, "step {step}");
        }
        let mut f = Framer::default();
        let mut tail = Vec::new();
        for c in ev.chunks(333) {
            f.feed(c, &mut |e| {
                tail = e.end().to_vec();
                false
            });
            assert!(f.part.capacity() <= WHOLE_EVENT * 2 && f.tail.capacity() <= 3 * TAIL);
        }
        assert!(tail.ends_with(b"\"usage\":{\"input_tokens\":1}}\n\n"));
    }

    #[test]
    fn blank_line_takes_whichever_separator_comes_first() {
        assert_eq!(blank_line(b"data: a\n\ndata: b\r\n\r\n"), Some((7, 2)));
        assert_eq!(blank_line(b"data: a\r\n\r\ndata: b\n\n"), Some((7, 4)));
        assert_eq!(blank_line(b"data: a\r\n"), None);
        assert_eq!(blank_line(b"\r\n\r\n\n\n"), Some((0, 4)));
        assert_eq!(blank_line(b"a\r\n\n"), Some((2, 2)));
    }
}
