//! Token counts in every protocol's spelling: chat/completions and
//! embeddings (`prompt_tokens`, `completion_tokens`), Responses and Anthropic
//! Messages (`input_tokens`, `output_tokens`, plus Anthropic's cache fields),
//! read from a whole body or from the one `usage` object of a stream event.

use serde::{Deserialize, Deserializer};

/// Token counts reported by an upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
}

/// A `usage` object as any protocol writes it; absent fields stay `None`,
/// so that a later report (Anthropic's `message_delta`) only overrides what
/// it carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct UsageFields {
    /// Chat/completions, embeddings.
    #[serde(default, deserialize_with = "count")]
    pub prompt_tokens: Option<u64>,
    /// Chat/completions.
    #[serde(default, deserialize_with = "count")]
    pub completion_tokens: Option<u64>,
    /// Responses, Messages.
    #[serde(default, deserialize_with = "count")]
    pub input_tokens: Option<u64>,
    /// Responses, Messages.
    #[serde(default, deserialize_with = "count")]
    pub output_tokens: Option<u64>,
    /// Messages: prompt tokens written to the cache (not in `input_tokens`).
    #[serde(default, deserialize_with = "count")]
    pub cache_creation_input_tokens: Option<u64>,
    /// Messages: prompt tokens read from the cache (not in `input_tokens`).
    #[serde(default, deserialize_with = "count")]
    pub cache_read_input_tokens: Option<u64>,
}

/// A token count; anything but a non-negative integer (a null, a float from
/// a careless relay) counts as absent rather than failing the whole object.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    Ok(v.and_then(|n| n.as_u64()))
}

impl UsageFields {
    /// Fields `later` carries replace these (cumulative counts, as Anthropic
    /// and chat's last usage chunk report them).
    pub fn merge(&mut self, later: UsageFields) {
        let pairs = [
            (&mut self.prompt_tokens, later.prompt_tokens),
            (&mut self.completion_tokens, later.completion_tokens),
            (&mut self.input_tokens, later.input_tokens),
            (&mut self.output_tokens, later.output_tokens),
            (
                &mut self.cache_creation_input_tokens,
                later.cache_creation_input_tokens,
            ),
            (
                &mut self.cache_read_input_tokens,
                later.cache_read_input_tokens,
            ),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
    }

    /// The counts, when any was reported: `prompt_tokens` or, in the other
    /// spelling, input plus both cache counts; `completion_tokens` or output.
    pub fn usage(&self) -> Option<Usage> {
        if *self == Self::default() {
            return None;
        }
        // Saturating: an upstream's absurd counts must not overflow (a panic
        // in debug builds, a wrapped count in release; found by the skim's
        // property test).
        let input = self
            .input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(self.cache_read_input_tokens.unwrap_or(0));
        Some(Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(input),
            completion_tokens: self.completion_tokens.or(self.output_tokens).unwrap_or(0),
        })
    }
}

/// A `usage` object already parsed into a JSON tree (the WebSocket edge's
/// chunks), in any protocol's spelling.
pub fn usage_of(v: &serde_json::Value) -> Option<Usage> {
    UsageFields::deserialize(v).ok().and_then(|f| f.usage())
}

/// The last `"usage": {...}` object in `json` (a stream event's data, or the
/// tail of a long one), read where it stands without parsing the rest.
///
/// An unescaped `"usage"` followed by `:` is a key (inside a JSON string the
/// quotes would be escaped); the last one is the top-level or the terminal
/// event's own in every protocol Turnout reads. `"usage": null` gives `None`.
pub fn usage_in(json: &[u8]) -> Option<UsageFields> {
    let at = memchr::memmem::rfind(json, b"\"usage\"")?;
    let rest = json[at + 7..].trim_ascii_start();
    let rest = rest.strip_prefix(b":")?.trim_ascii_start();
    if !rest.starts_with(b"{") {
        return None;
    }
    let mut de = serde_json::Deserializer::from_slice(rest);
    UsageFields::deserialize(&mut de).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling() {
        let chat = usage_in(br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#);
        assert_eq!(
            chat.and_then(|u| u.usage()),
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 7
            })
        );
        let responses = usage_in(br#"{"type":"response.completed","response":{"output":[],"usage":{"input_tokens":3,"input_tokens_details":{"cached_tokens":1},"output_tokens":4}}}"#);
        assert_eq!(
            responses.and_then(|u| u.usage()),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4
            })
        );
        // Anthropic: message_start then message_delta, cumulative.
        let mut m = usage_in(br#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":2,"output_tokens":1}}}"#).unwrap_or_default();
        m.merge(
            usage_in(br#"{"type":"message_delta","delta":{},"usage":{"output_tokens":15}}"#)
                .unwrap_or_default(),
        );
        assert_eq!(
            m.usage(),
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 15
            })
        );
    }

    #[test]
    fn null_garbage_and_text_are_not_usage() {
        assert_eq!(usage_in(br#"{"usage":null}"#), None);
        assert_eq!(usage_in(br#"{"content":"usage"}"#), None);
        assert_eq!(usage_in(br#"{"content":"say \"usage\": {}"}"#), None);
        assert_eq!(usage_in(br#"{"usage":{"prompt_tokens":"#), None);
        assert_eq!(UsageFields::default().usage(), None);
        let odd = usage_in(br#"{"usage":{"prompt_tokens":1.5,"completion_tokens":2}}"#);
        assert_eq!(odd.map(|u| u.completion_tokens), Some(Some(2)));
    }
}
