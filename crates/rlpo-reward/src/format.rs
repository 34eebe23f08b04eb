//! The format reward (`kind = "format"`): `matched` if the response matches a regular expression,
//! else `unmatched`. The pattern is compiled once, when the reward set is built; the `regex`
//! crate matches in linear time, so no response can make it backtrack for long.
//!
//! The pattern is searched anywhere in the response unless it is anchored (`^`/`\A`, `$`/`\z`), so
//! write anchors to demand a whole-response shape. The default demands a `<think>...</think>`
//! block at the start followed by a non-empty answer.

use regex::Regex;

use crate::types::{RewardFn, RewardInput, RewardOutput};

/// Default pattern: optional leading whitespace, `<think>`, anything (lazily), `</think>`, then at
/// least one non-space character.
pub const DEFAULT_FORMAT_PATTERN: &str = r"(?s)\A\s*<think>.*?</think>\s*\S.*\z";

/// Largest compiled pattern accepted (bytes of automaton), so a recipe cannot ask for gigabytes.
const REGEX_SIZE_LIMIT: usize = 10 << 20;

/// The regex format reward.
#[derive(Debug, Clone)]
pub struct FormatReward {
    regex: Regex,
    /// Reward when the pattern matches.
    pub matched: f64,
    /// Reward when it does not.
    pub unmatched: f64,
}

impl FormatReward {
    /// Compiles `pattern`; the error is the regex parser's message.
    pub fn new(pattern: &str, matched: f64, unmatched: f64) -> Result<Self, String> {
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { regex, matched, unmatched })
    }

    /// Whether `response` has the required format.
    pub fn is_match(&self, response: &str) -> bool {
        self.regex.is_match(response)
    }
}

impl RewardFn for FormatReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch
            .iter()
            .map(|s| RewardOutput::ok(if self.is_match(&s.response) { self.matched } else { self.unmatched }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER_TAGS: &str = r"(?s)\A\s*<think>.*?</think>\s*<answer>.*?</answer>\s*\z";

    /// (pattern, response, expected match)
    const CASES: &[(&str, &str, bool)] = &[
        (DEFAULT_FORMAT_PATTERN, "<think>reason</think> 42", true),
        (DEFAULT_FORMAT_PATTERN, "<think>\nmulti\nline\n</think>\nThe answer is 42.", true),
        (DEFAULT_FORMAT_PATTERN, "  \n<think>x</think>42", true),
        (DEFAULT_FORMAT_PATTERN, "<think></think>42", true),
        (DEFAULT_FORMAT_PATTERN, "<think>reason</think>", false),
        (DEFAULT_FORMAT_PATTERN, "<think>reason</think>   \n ", false),
        (DEFAULT_FORMAT_PATTERN, "<think>never closed 42", false),
        (DEFAULT_FORMAT_PATTERN, "preamble <think>x</think> 42", false),
        (DEFAULT_FORMAT_PATTERN, "42", false),
        (DEFAULT_FORMAT_PATTERN, "", false),
        (DEFAULT_FORMAT_PATTERN, "<THINK>x</THINK> 42", false),
        (DEFAULT_FORMAT_PATTERN, "<think >x</think> 42", false),
        (DEFAULT_FORMAT_PATTERN, "</think><think> 42", false),
        (DEFAULT_FORMAT_PATTERN, "<think>a</think> b <think>c</think> d", true),
        (DEFAULT_FORMAT_PATTERN, "<think>ünïcödé ✓</think> 答案", true),
        (DEFAULT_FORMAT_PATTERN, "<think>x</think>\u{3000}", false), // ideographic space is \s
        (ANSWER_TAGS, "<think>r</think><answer>42</answer>", true),
        (ANSWER_TAGS, "<think>r</think>\n<answer>42</answer>\n", true),
        (ANSWER_TAGS, "<think>r</think><answer>42</answer> trailing", false),
        (ANSWER_TAGS, "<think>r</think>42", false),
        (ANSWER_TAGS, "<answer>42</answer><think>r</think>", false),
        (ANSWER_TAGS, "<think>r</think><answer>42", false),
        (ANSWER_TAGS, "<think>r</think><answer></answer>", true),
        (ANSWER_TAGS, "<think>r</think><answer>1</answer><answer>2</answer>", true),
        (r"\\boxed\{", r"so \boxed{4}", true),
        (r"\\boxed\{", "so 4", false),
        (r"(?i)answer:", "ANSWER: 4", true),
        (r"^\d+$", "123", true),
        (r"^\d+$", "123\n", false),
        (r"^\d+$", "12a3", false),
        ("think", "I think so", true), // unanchored pattern: search anywhere
        (r"(?m)^#### -?\d+$", "work\n#### -12\nbye", true),
    ];

    #[test]
    fn regex_cases() {
        assert!(CASES.len() >= 30);
        let mut failures = Vec::new();
        for &(pattern, response, want) in CASES {
            let f = FormatReward::new(pattern, 1.0, 0.0).expect("test patterns compile");
            let out = f.score(&[RewardInput::new(response, None)]);
            let got = out[0].value == 1.0;
            if got != want {
                failures.push(format!("{pattern:?} on {response:?}: got {got}, want {want}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn bad_and_huge_patterns_are_errors() {
        assert!(FormatReward::new("(unclosed", 1.0, 0.0).is_err());
        assert!(FormatReward::new(r"\w{1000}{1000}", 1.0, 0.0).is_err());
    }

    #[test]
    fn custom_values() {
        let f = FormatReward::new("x", 0.5, -0.5).expect("compiles");
        let out = f.score(&[RewardInput::new("x", None), RewardInput::new("y", None)]);
        assert_eq!((out[0].value, out[1].value), (0.5, -0.5));
    }
}
