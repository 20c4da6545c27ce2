//! A validating skim over the members of a JSON object, for the two reads on
//! the request path that need a few top-level keys of a body that is mostly
//! text they never look at: the request's routing facts ([`super::peek`]) and
//! the 2xx answer's verdict ([`super::read_answer`]).
//!
//! serde_json's derive decodes every key and goes through its visitor
//! machinery for every skipped value; here strings are crossed eight bytes at
//! a time, nested values are skipped by depth counting with a bit per level,
//! and nothing is built but the few values read. The skim accepts
//! exactly serde_json's grammar or less: RFC 8259 numbers and literals, only
//! `" \ / b f n r t` and `\uXXXX` escapes, no control character in a string,
//! no trailing comma, nothing but whitespace after the value, and (when asked)
//! UTF-8 inside every string. On anything it does not fully understand (an
//! escaped key, nesting deeper than [`MAX_DEPTH`], a syntax error) it answers
//! `None`, and the caller asks serde_json instead, so every answer the skim
//! does give is the one serde_json would have given.

/// Deepest nesting the skim follows; deeper bodies go to serde_json (which
/// skips ignored values without a depth limit, and limits what it decodes).
pub(super) const MAX_DEPTH: u32 = 64;

/// Eight copies of one byte.
const ONES: u64 = u64::from_ne_bytes([1; 8]);
/// The high bit of each byte.
const HIGH: u64 = ONES << 7;

/// A cursor over a JSON text, always at a token boundary.
pub(super) struct Skim<'a> {
    text: &'a [u8],
    at: usize,
    /// Check that every string is UTF-8 (`peek` reads its body as a `str`;
    /// `read_answer` reads bytes, where serde_json checks only what it decodes).
    utf8: bool,
}

// === impl Skim ===

impl<'a> Skim<'a> {
    /// A skim of `text` whose top-level value must be an object.
    pub(super) fn object(text: &'a [u8], utf8: bool) -> Option<Self> {
        let mut s = Self { text, at: 0, utf8 };
        s.whitespace();
        s.byte(b'{')?;
        Some(s)
    }

    /// The next member's key, the cursor left on its value; `None` inside
    /// when the object closes. `first`: no member read yet (then a comma
    /// would be an error), cleared here. A key is always checked as UTF-8
    /// (serde_json decodes the keys of the objects it maps onto structs);
    /// an escaped key is given up on.
    pub(super) fn key(&mut self, first: &mut bool) -> Option<Option<&'a [u8]>> {
        self.whitespace();
        match self.text.get(self.at)? {
            b'}' => {
                self.at += 1;
                return Some(None);
            }
            b',' if !*first => {
                self.at += 1;
                self.whitespace();
            }
            b'"' if *first => {}
            _ => return None,
        }
        *first = false;
        if self.text.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        if self.string(true)? {
            return None;
        }
        let key = self.text.get(start..self.at - 1)?;
        self.colon()?;
        Some(Some(key))
    }

    /// After the top-level object: only whitespace may follow.
    pub(super) fn finish(mut self) -> Option<()> {
        self.whitespace();
        (self.at == self.text.len()).then_some(())
    }

    /// Consumes a `{` at the cursor (a nested object whose keys are read).
    pub(super) fn open(&mut self) -> Option<()> {
        self.byte(b'{')
    }

    /// Consumes `null` when the value is exactly that (serde_json reads an
    /// `Option` as `None` then); any other value is left in place.
    pub(super) fn null(&mut self) -> bool {
        self.word(b"null").is_some()
    }

    /// A `true`, `false` or `null` value (`Some(None)` for null).
    pub(super) fn flag(&mut self) -> Option<Option<bool>> {
        match self.text.get(self.at)? {
            b't' => self.word(b"true").map(|()| Some(true)),
            b'f' => self.word(b"false").map(|()| Some(false)),
            b'n' => self.word(b"null").map(|()| None),
            _ => None,
        }
    }

    /// A string value: its span (quotes included) and its decoded text.
    /// Escaped text is decoded by serde_json itself (it alone decides which
    /// `\u` surrogates are errors).
    pub(super) fn text(&mut self) -> Option<((usize, usize), String)> {
        let start = self.at;
        if self.text.get(start) != Some(&b'"') {
            return None;
        }
        let escaped = self.string(self.utf8)?;
        let span = (start, self.at);
        let quoted = std::str::from_utf8(self.text.get(span.0..span.1)?).ok()?;
        let text = if escaped {
            serde_json::from_str::<String>(quoted).ok()?
        } else {
            quoted.get(1..quoted.len() - 1)?.to_owned()
        };
        Some((span, text))
    }

    /// A token count as `usage::count` reads one: `null`, or a number (absent
    /// unless a plain integer that fits in `u64`); `None` for any other value
    /// (serde_json's type error).
    pub(super) fn count(&mut self) -> Option<Option<u64>> {
        match self.text.get(self.at)? {
            b'n' => self.word(b"null").map(|()| None),
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                self.number()?;
                let digits = self.text.get(start..self.at)?;
                Some(digits.iter().try_fold(0u64, |n, &d| {
                    if !d.is_ascii_digit() {
                        return None;
                    }
                    n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
                }))
            }
            _ => None,
        }
    }

    /// Skips one value of any kind, checking its syntax; returns its span.
    pub(super) fn value(&mut self) -> Option<(usize, usize)> {
        let start = self.at;
        // Bit d of `objects`: the container at depth d + 1 is an object.
        let mut objects: u64 = 0;
        let mut depth: u32 = 0;
        loop {
            // A value starts at the cursor.
            match *self.text.get(self.at)? {
                open @ (b'{' | b'[') => {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let object = open == b'{';
                    objects = (objects << 1) | u64::from(object);
                    depth += 1;
                    self.at += 1;
                    self.whitespace();
                    let close = if object { b'}' } else { b']' };
                    if self.text.get(self.at) != Some(&close) {
                        if object {
                            self.member()?;
                        }
                        continue;
                    }
                    self.at += 1;
                    objects >>= 1;
                    depth -= 1;
                }
                b'"' => {
                    self.string(self.utf8)?;
                }
                b't' => self.word(b"true")?,
                b'f' => self.word(b"false")?,
                b'n' => self.word(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            }
            // A value ended: close the containers that end here, or step to
            // the next element of the innermost one.
            loop {
                if depth == 0 {
                    return Some((start, self.at));
                }
                self.whitespace();
                let object = objects & 1 == 1;
                match self.text.get(self.at)? {
                    b',' => {
                        self.at += 1;
                        self.whitespace();
                        if object {
                            self.member()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.at += 1;
                objects >>= 1;
                depth -= 1;
            }
        }
    }

    /// A member's key inside a skipped object (checked as UTF-8 only when
    /// every string is), then its colon.
    fn member(&mut self) -> Option<()> {
        if self.text.get(self.at) != Some(&b'"') {
            return None;
        }
        self.string(self.utf8)?;
        self.colon()
    }

    /// `:` between whitespace, leaving the cursor on the value.
    fn colon(&mut self) -> Option<()> {
        self.whitespace();
        self.byte(b':')?;
        self.whitespace();
        Some(())
    }

    /// The string at the cursor (on its opening quote); the cursor ends past
    /// the closing quote. Returns whether it holds an escape. Eight bytes at
    /// a time up to the first quote, backslash or control byte ([`stops`]).
    fn string(&mut self, utf8: bool) -> Option<bool> {
        let text = self.text;
        let start = self.at + 1;
        let mut at = start;
        let mut escaped = false;
        // The high bits of the bytes passed over (any: UTF-8 needs a look).
        let mut high = 0;
        loop {
            while let Some(w) = text
                .get(at..at + 8)
                .and_then(|w| <[u8; 8]>::try_from(w).ok())
            {
                let w = u64::from_le_bytes(w);
                let found = stops(w);
                if found != 0 {
                    let n = found.trailing_zeros() / 8;
                    high |= w & HIGH & ((1 << (n * 8)) - 1);
                    at += n as usize;
                    break;
                }
                high |= w & HIGH;
                at += 8;
            }
            // Fewer than eight bytes were left: one at a time.
            loop {
                let c = *text.get(at)?;
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                high |= u64::from(c & 0x80);
                at += 1;
            }
            match text.get(at)? {
                b'"' => break,
                b'\\' => escaped = true,
                _ => return None,
            }
            at += match text.get(at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                b'u' if text.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                _ => return None,
            };
        }
        if utf8 && high != 0 && std::str::from_utf8(text.get(start..at)?).is_err() {
            return None;
        }
        self.at = at + 1;
        Some(escaped)
    }

    /// A number as serde_json accepts it: `-`, no leading zero, digits after
    /// a `.` and after an exponent. A digit after a lone `0` is rejected by
    /// whatever reads the next token.
    fn number(&mut self) -> Option<()> {
        if self.text.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.text.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.text.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.text.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.text.get(self.at) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    /// One digit or more.
    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.text.get(self.at) {
            self.at += 1;
        }
    }

    /// Exactly `word` at the cursor.
    fn word(&mut self, word: &[u8]) -> Option<()> {
        if self.text.get(self.at..self.at + word.len())? != word {
            return None;
        }
        self.at += word.len();
        Some(())
    }

    fn byte(&mut self, b: u8) -> Option<()> {
        if self.text.get(self.at) != Some(&b) {
            return None;
        }
        self.at += 1;
        Some(())
    }

    /// JSON's four whitespace bytes (serde_json's set).
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.text.get(self.at) {
            self.at += 1;
        }
    }
}

/// The high bit set in each byte of `w` that is a quote, a backslash or a
/// control character (below 0x20), or in a byte above one of those: the
/// "has zero byte" test `(x - 0x01..) & !x & 0x80..` (and its "has a byte
/// below n" form), whose lowest set bit is exact, so the lowest set bit here
/// marks the first byte a string scan must stop at.
fn stops(w: u64) -> u64 {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (quote | backslash | control) & HIGH
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The string scan byte by byte, as serde_json's `ignore_str` (plus the
    /// UTF-8 check of a decoded string): the end past the closing quote, and
    /// whether an escape was seen.
    fn bytewise(b: &[u8], utf8: bool) -> Option<(usize, bool)> {
        let mut at = 1;
        let mut escaped = false;
        loop {
            match *b.get(at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    at += match b.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                        b'u' if b.get(at + 2..at + 6)?.iter().all(u8::is_ascii_hexdigit) => 6,
                        _ => return None,
                    };
                }
                c if c < 0x20 => return None,
                _ => at += 1,
            }
        }
        if utf8 && std::str::from_utf8(&b[1..at]).is_err() {
            return None;
        }
        Some((at + 1, escaped))
    }

    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            16 => 0x20u8..0x7f,
            2 => proptest::sample::select(&b"\"\\u0aF/bnx"[..]),
            1 => 0u8..0x20,
            2 => 0x80u8..=0xff,
            1 => proptest::sample::select(&[0xc3u8, 0xa9, 0xe6, 0xa8, 0xa1][..]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

        /// Eight bytes at a time finds what one at a time finds, wherever the
        /// stop falls in a word.
        #[test]
        fn word_scan_is_the_byte_scan(
            body in proptest::collection::vec(byte(), 0..40),
            utf8 in any::<bool>(),
        ) {
            let mut text = vec![b'"'];
            text.extend_from_slice(&body);
            let mut s = Skim { text: &text, at: 0, utf8 };
            let got = s.string(utf8).map(|e| (s.at, e));
            prop_assert_eq!(got, bytewise(&text, utf8));
        }
    }
}
