//! The exact-match reward (`kind = "match"`), RMT's matching reward (algorithms.md §5.3 item 4):
//! the prediction is the text after the last `</think>` (the whole response if there is none),
//! compared with the ground truth after trimming whitespace at both ends. Case and inner
//! whitespace matter, because RMT predicts one exact next token.

use crate::types::{RewardFn, RewardInput, RewardOutput};

/// The prediction part of a response: after the last `</think>`, trimmed.
pub fn prediction(response: &str) -> &str {
    match response.rfind("</think>") {
        Some(at) => response[at + "</think>".len()..].trim(),
        None => response.trim(),
    }
}

/// Exact-match reward.
#[derive(Debug, Clone)]
pub struct MatchReward {
    /// Reward when the prediction equals the ground truth.
    pub correct: f64,
    /// Reward otherwise (including an empty prediction).
    pub incorrect: f64,
}

impl Default for MatchReward {
    fn default() -> Self {
        Self { correct: 1.0, incorrect: 0.0 }
    }
}

impl RewardFn for MatchReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch
            .iter()
            .map(|s| match s.ground_truth.as_deref().map(str::trim).filter(|g| !g.is_empty()) {
                None => RewardOutput::error("match: sample has no ground_truth"),
                Some(gt) => {
                    let p = prediction(&s.response);
                    RewardOutput::ok(if p == gt { self.correct } else { self.incorrect })
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::RewardStatus;

    /// (response, ground truth, expected match)
    const CASES: &[(&str, &str, bool)] = &[
        ("<think>reasoning</think> the", "the", true),
        ("<think>reasoning</think>the", "the", true),
        ("<think>reasoning</think>\n the \n", "the", true),
        ("<think>reasoning</think> the", " the ", true),
        ("<think>reasoning</think> The", "the", false),
        ("<think>reasoning</think> the end", "the", false),
        ("<think>reasoning</think> th e", "the", false),
        ("<think>reasoning</think>", "the", false),
        ("<think>reasoning</think>   ", "the", false),
        ("the", "the", true),
        ("  the  ", "the", true),
        ("<think>a</think> x <think>b</think> y", "y", true),
        ("<think>a</think> x <think>b</think> y", "x", false),
        ("<think>unclosed the", "the", false),
        ("<think>unclosed the", "<think>unclosed the", true),
        ("<think>the</think> cat", "the", false),
        ("<think>r</think> 42", "42", true),
        ("<think>r</think> 42.0", "42", false),
        ("<think>r</think> ,", ",", true),
        ("<think>r</think> \u{00e9}", "\u{00e9}", true),
        ("<think>r</think> e\u{0301}", "\u{00e9}", false), // no Unicode normalisation
        ("<think>r</think> 猫", "猫", true),
        ("<think>r</think>\tthe\t", "the", true),
        ("<think>r</think> the.", "the", false),
        ("</think> the", "the", true),
        ("<think>r</THINK> the", "the", false),
        ("<think>r</think> <answer>the</answer>", "the", false),
        ("<think>r</think>\n\nthe\n\n", "the", true),
        ("<think>r</think> multi word", "multi word", true),
        ("<think>r</think> multi  word", "multi word", false),
    ];

    #[test]
    fn match_cases() {
        assert!(CASES.len() >= 30);
        let f = MatchReward::default();
        let mut failures = Vec::new();
        for &(response, gt, want) in CASES {
            let out = f.score(&[RewardInput::new(response, Some(gt))]);
            if (out[0].value == 1.0) != want || !out[0].is_ok() {
                failures.push(format!("{response:?} vs {gt:?}: got {:?}, want {want}", out[0]));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn missing_ground_truth_is_an_error() {
        let out = MatchReward::default().score(&[RewardInput::new("x", None), RewardInput::new("x", Some(" "))]);
        assert!(out.iter().all(|o| matches!(o.status, RewardStatus::Error(_)) && o.value.is_nan()));
    }
}
