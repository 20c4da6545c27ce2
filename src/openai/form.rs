//! `multipart/form-data` request bodies (audio transcriptions, image edits,
//! file uploads): the boundary, the parts, and the fields routing reads
//! (`model`, `stream`, `user`), found while the body is still arriving.
//!
//! Only part headers and the delimiter are looked at (`memchr` search for the
//! delimiter, which by construction appears nowhere in the parts' content);
//! file bytes are never copied or parsed.

use memchr::memmem;

/// Longest part-header block read; a longer one ends the scan (no field found there).
const MAX_PART_HEADERS: usize = 16 * 1024;

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<&str> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty()).then_some(v)
    })
}

/// One part of a form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part<'a> {
    /// Its `name`.
    pub name: &'a str,
    /// Its `filename`, for a file.
    pub filename: Option<&'a str>,
    /// Its `content-type`, if given.
    pub content_type: Option<&'a str>,
    /// Byte range of its content in the body.
    pub span: (usize, usize),
}

/// Scans a form as it arrives: call [`FormScan::scan`] with the whole body
/// so far after each chunk; each part is read once, when its closing
/// delimiter has arrived.
#[derive(Debug, Clone)]
pub struct FormScan {
    /// `\r\n--BOUNDARY`.
    delim: Vec<u8>,
    /// Where the next part's delimiter line ends (its headers start after CRLF).
    next: Option<usize>,
    /// How far the current part's content was searched for the delimiter.
    searched: usize,
    /// The closing delimiter (or unreadable headers) was seen.
    pub ended: bool,
    /// `model` and the byte span of its value.
    pub model: Option<(String, (usize, usize))>,
    /// `stream` is `true`.
    pub stream: bool,
    /// `user`.
    pub user: Option<String>,
}

impl FormScan {
    /// A scan for the form with this boundary.
    pub fn new(boundary: &str) -> Self {
        let mut delim = b"\r\n--".to_vec();
        delim.extend_from_slice(boundary.as_bytes());
        Self {
            delim,
            next: None,
            searched: 0,
            ended: false,
            model: None,
            stream: false,
            user: None,
        }
    }

    /// Reads every part completed in `body` (the body received so far).
    pub fn scan(&mut self, body: &[u8]) {
        while !self.ended {
            match self.next_part(body) {
                Some(part) => self.field(body, part),
                None => return,
            }
        }
    }

    /// The next complete part, or `None` until more of the body arrives.
    pub fn next_part<'a>(&mut self, body: &'a [u8]) -> Option<Part<'a>> {
        let at = match self.next {
            Some(at) => at,
            None => {
                // The first delimiter has no leading CRLF.
                let first = memmem::find(body, &self.delim[2..])?;
                let at = first + self.delim.len() - 2;
                self.next = Some(at);
                at
            }
        };
        let after = body.get(at..at + 2)?;
        if after == b"--" {
            self.ended = true;
            return None;
        }
        let hstart = at + 2;
        let window = &body[hstart..body.len().min(hstart + MAX_PART_HEADERS)];
        let Some(hlen) = memmem::find(window, b"\r\n\r\n") else {
            self.ended |= window.len() >= MAX_PART_HEADERS;
            return None;
        };
        let cstart = hstart + hlen + 4;
        let from = self.searched.max(cstart);
        let Some(found) = body.get(from..).and_then(|b| memmem::find(b, &self.delim)) else {
            self.searched = body.len().saturating_sub(self.delim.len()).max(cstart);
            return None;
        };
        let cend = from + found;
        self.next = Some(cend + self.delim.len());
        self.searched = 0;
        let part = headers(&body[hstart..hstart + hlen], (cstart, cend));
        if part.is_none() {
            // A part without a readable name: skip it.
            return self.next_part(body);
        }
        part
    }

    fn field(&mut self, body: &[u8], p: Part<'_>) {
        if p.filename.is_some() {
            return;
        }
        let Ok(value) = std::str::from_utf8(&body[p.span.0..p.span.1]) else {
            return;
        };
        match p.name {
            "model" => self.model = Some((value.to_owned(), p.span)),
            "stream" => self.stream = value.trim().eq_ignore_ascii_case("true"),
            "user" if !value.is_empty() => self.user = Some(value.to_owned()),
            _ => {}
        }
    }
}

/// Every part of a whole form (the simulated provider's reader).
pub fn parts<'a>(body: &'a [u8], boundary: &str) -> Vec<Part<'a>> {
    let mut scan = FormScan::new(boundary);
    let mut out = Vec::new();
    while let Some(p) = scan.next_part(body) {
        out.push(p);
    }
    out
}

/// Reads a part's `content-disposition` and `content-type`.
fn headers(block: &[u8], span: (usize, usize)) -> Option<Part<'_>> {
    let text = std::str::from_utf8(block).ok()?;
    let mut name = None;
    let mut filename = None;
    let mut content_type = None;
    for line in text.split("\r\n") {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let k = k.trim();
        if k.eq_ignore_ascii_case("content-type") {
            content_type = Some(v.trim());
        } else if k.eq_ignore_ascii_case("content-disposition") {
            for param in v.split(';').skip(1) {
                let Some((pk, pv)) = param.split_once('=') else {
                    continue;
                };
                let pv = pv.trim().trim_matches('"');
                match pk.trim() {
                    "name" => name = Some(pv),
                    "filename" => filename = Some(pv),
                    _ => {}
                }
            }
        }
    }
    Some(Part {
        name: name?,
        filename,
        content_type,
        span,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &[u8] = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--Xy\x00name=\"model\"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ\r\ncontent-disposition: form-data; name=stream\r\n\r\ntrue\r\n--XyZ--\r\n";

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(boundary("multipart/form-data; boundary=XyZ"), Some("XyZ"));
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; boundary=\"a b\""),
            Some("a b")
        );
        assert_eq!(boundary("application/json"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn finds_fields_however_the_body_arrives() {
        for step in [1, 2, 7, FORM.len()] {
            let mut s = FormScan::new("XyZ");
            let mut end = 0;
            while end < FORM.len() {
                end = (end + step).min(FORM.len());
                s.scan(&FORM[..end]);
            }
            let (model, span) = s.model.clone().unwrap_or_default();
            assert_eq!(model, "whisper-1", "step {step}");
            assert_eq!(&FORM[span.0..span.1], b"whisper-1");
            assert!(s.stream && s.ended, "step {step}");
        }
        let ps = parts(FORM, "XyZ");
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[0].filename, Some("a.wav"));
        assert_eq!(ps[0].content_type, Some("audio/wav"));
        assert_eq!(
            &FORM[ps[0].span.0..ps[0].span.1],
            b"RIFF\r\n--Xy\x00name=\"model\""
        );
    }

    #[test]
    fn a_form_without_model_and_garbage() {
        let mut s = FormScan::new("B");
        s.scan(b"--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--B--");
        assert!(s.ended && s.model.is_none());
        let mut g = FormScan::new("B");
        g.scan(b"no delimiter at all");
        assert!(!g.ended && g.model.is_none());
    }
}
