//! Upstream SSE → WebSocket pieces: splits the byte stream into events and
//! reads, from each `chat.completion.chunk`, the text of `choices[0]`, its
//! `finish_reason` and the `usage` the upstream reports.
//!
//! `relay::SseRelay` forwards bytes untouched and never parses them; a
//! WebSocket client gets JSON messages instead, so here every event is parsed.

use bytes::{Buf, BytesMut};
use serde::Deserialize;
use serde_json::Value;

use crate::request::sse::blank_line;

/// Longest event accepted; a longer one is garbage (`invalid_response`).
const MAX_EVENT: usize = 1024 * 1024;

/// What one SSE event says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Piece {
    /// `choices[0].delta.content` (empty pieces are not reported).
    pub content: Option<String>,
    /// `choices[0].finish_reason`.
    pub finish_reason: Option<String>,
    /// `usage`, as the upstream wrote it.
    pub usage: Option<Value>,
    /// An `error` object sent inside the stream.
    pub error: Option<Value>,
    /// `data: [DONE]`.
    pub done: bool,
}

/// Splits a byte stream into SSE events, across chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct EventSplitter {
    buf: BytesMut,
}

/// The upstream sent something that is not an SSE stream of JSON chunks.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Garbage;

impl EventSplitter {
    /// Appends a chunk and returns the pieces of every event it completes.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Piece>, Garbage> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&self.buf) {
            let ev = self.buf.split_to(end);
            self.buf.advance(sep);
            if let Some(p) = parse_event(&ev)? {
                out.push(p);
            }
        }
        if self.buf.len() > MAX_EVENT {
            return Err(Garbage);
        }
        Ok(out)
    }
}

/// `(end of the event's text, length of the blank-line separator)`.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    blank_line(buf)
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

/// One event's `data:` lines (joined by newlines) parsed as a chunk; comments
/// and events without data are `None`.
fn parse_event(ev: &[u8]) -> Result<Option<Piece>, Garbage> {
    let mut data: Vec<u8> = Vec::new();
    let mut saw_data = false;
    for line in ev.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(d) = line.strip_prefix(b"data:") else {
            continue;
        };
        if saw_data {
            data.push(b'\n');
        }
        saw_data = true;
        data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
    }
    if !saw_data {
        return Ok(None);
    }
    if data.trim_ascii() == b"[DONE]" {
        return Ok(Some(Piece {
            done: true,
            ..Piece::default()
        }));
    }
    let chunk: Chunk = serde_json::from_slice(&data).map_err(|_| Garbage)?;
    let mut piece = Piece {
        usage: chunk.usage.filter(|u| !u.is_null()),
        error: chunk.error.filter(|e| !e.is_null()),
        ..Piece::default()
    };
    if let Some(c) = chunk.choices.into_iter().find(|c| c.index == 0) {
        piece.content = c.delta.and_then(|d| d.content).filter(|s| !s.is_empty());
        piece.finish_reason = c.finish_reason;
    }
    Ok(Some(piece))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b": ping\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Xin \"},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ch\xc3\xa0o\"},\"finish_reason\":\"stop\"}]}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: [DONE]\n\n";

    fn collect(parts: &[&[u8]]) -> Vec<Piece> {
        let mut s = EventSplitter::default();
        parts.iter().flat_map(|p| s.feed(p).unwrap()).collect()
    }

    #[test]
    fn reads_text_finish_usage_and_done_across_any_split() {
        let whole = collect(&[STREAM]);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].content.as_deref(), Some("Xin "));
        assert_eq!(whole[1].content.as_deref(), Some("chào"));
        assert_eq!(whole[1].finish_reason.as_deref(), Some("stop"));
        assert_eq!(whole[2].usage.as_ref().unwrap()["total_tokens"], 5);
        assert!(whole[3].done);
        for at in 1..STREAM.len() {
            assert_eq!(
                collect(&[&STREAM[..at], &STREAM[at..]]),
                whole,
                "split at {at}"
            );
        }
    }

    #[test]
    fn error_events_and_garbage() {
        let p = collect(&[b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n"]);
        assert_eq!(p[0].error.as_ref().unwrap()["message"], "overloaded");
        let mut s = EventSplitter::default();
        assert_eq!(s.feed(b"data: <html>\n\n"), Err(Garbage));
        let mut s = EventSplitter::default();
        assert_eq!(s.feed(&vec![b'x'; MAX_EVENT + 1]), Err(Garbage));
    }
}
