//! Stop rules that need text: a row stops once its decoded response contains a stop string.
//!
//! The engine stays token-only (it knows nothing about tokenizers, like nanochat's engine); the
//! caller hands it a [`Detokenizer`] when `[rollout] stop` is set. Each step decodes only a short
//! tail of the response: a stop string of `c` bytes spans at most `c` tokens (every token decodes to
//! at least one byte), so a window of `c + 4` tokens (the margin covers tokens that end inside a
//! multi-byte character) sees every newly completed occurrence, and since rows are checked after
//! every token, an occurrence is found on the step that completes it.

use rlpo_model::TextTokenizer;

/// Turns token ids into text (used only for stop strings).
pub trait Detokenizer: Send + Sync {
    /// Text of `ids` (special tokens kept, so stop strings may name them).
    fn decode(&self, ids: &[i64]) -> String;
}

impl Detokenizer for TextTokenizer {
    fn decode(&self, ids: &[i64]) -> String {
        TextTokenizer::decode(self, ids, false).unwrap_or_default()
    }
}

/// Stop strings plus the decode window they need.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    strings: Vec<String>,
    window: usize,
}

impl StopStrings {
    /// Matcher for `strings` (may be empty: never matches).
    pub fn new(strings: &[String]) -> Self {
        let longest = strings.iter().map(String::len).max().unwrap_or(0);
        StopStrings { strings: strings.to_vec(), window: longest + 4 }
    }

    /// Whether there is anything to match.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Whether the response `tokens` (just extended by one token) now contains a stop string.
    pub fn hit(&self, tokens: &[i64], detok: &dyn Detokenizer) -> bool {
        if self.strings.is_empty() {
            return false;
        }
        let tail = &tokens[tokens.len().saturating_sub(self.window)..];
        let text = detok.decode(tail);
        self.strings.iter().any(|s| text.contains(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each id is one ASCII byte.
    struct Bytes;
    impl Detokenizer for Bytes {
        fn decode(&self, ids: &[i64]) -> String {
            ids.iter().map(|&i| i as u8 as char).collect()
        }
    }

    #[test]
    fn finds_a_stop_string_completed_by_the_last_token() {
        let s = StopStrings::new(&["</a>".to_string()]);
        let ids: Vec<i64> = "x</a".bytes().map(i64::from).collect();
        assert!(!s.hit(&ids, &Bytes));
        let mut long: Vec<i64> = "lots of text before the end </a".bytes().map(i64::from).collect();
        assert!(!s.hit(&long, &Bytes));
        long.push(b'>' as i64);
        assert!(s.hit(&long, &Bytes));
        assert!(!StopStrings::new(&[]).hit(&long, &Bytes));
    }
}
