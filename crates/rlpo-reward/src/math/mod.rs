//! The built-in math answer verifier (`kind = "math"`): extract the final answer from a response,
//! parse it and the ground truth into exact numbers (or normalised text), compare.
//!
//! Extraction modes ([`ExtractMode`]):
//! - `auto` (default): if the response contains `\boxed`, the content of the **last** `\boxed{}`
//!   (none if that one is unbalanced); else the text after the last `####`; else the last number;
//! - `boxed`, `hashes`: only that source;
//! - `last_number`: the last plain number in the response, ignoring `\boxed` (the CPU quickstart
//!   task answers with a bare integer).
//!
//! Limits (use an external plugin with `math-verify` for these): no symbolic equivalence
//! (`\sqrt{2}` vs `2^{1/2}`), no scientific notation, no mixed numbers (`1 1/2`); decimals compare
//! exactly, so `0.333` ≠ `1/3`.

mod audit;
mod extract;
mod number;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use audit::{answer_key, judge};
pub use extract::{after_hashes, all_boxed, all_hashes, last_boxed, last_number, NumberTokens};
pub use number::{parse_whole, Answer, Number};

use crate::types::{RewardFn, RewardInput, RewardOutput};

/// Where the answer is looked for in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtractMode {
    /// Last `\boxed{}` if the response has one, else `####`, else the last number.
    #[default]
    Auto,
    /// Only the last `\boxed{}`.
    Boxed,
    /// Only the text after the last `####`.
    Hashes,
    /// Only the last plain number (integer, decimal, `a/b`, percentage).
    LastNumber,
}

/// The outcome of checking one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The extracted answer equals the ground truth.
    Correct,
    /// An answer was found and differs.
    Wrong,
    /// No answer could be extracted.
    NoAnswer,
}

/// The rule that found an answer (the modes without `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The last `\boxed{}`.
    Boxed,
    /// The text after the last `####`.
    Hashes,
    /// The last plain number.
    LastNumber,
}

impl Rule {
    /// Its name in [`crate::AnswerInfo::rule`].
    pub fn name(self) -> &'static str {
        match self {
            Rule::Boxed => "boxed",
            Rule::Hashes => "hashes",
            Rule::LastNumber => "last_number",
        }
    }
}

/// The answer text of a response under `mode`, or `None`.
pub fn extract_answer(response: &str, mode: ExtractMode) -> Option<&str> {
    extract_with_rule(response, mode).map(|(a, _)| a)
}

/// The answer text of a response under `mode` and the rule that found it, or `None`.
pub fn extract_with_rule(response: &str, mode: ExtractMode) -> Option<(&str, Rule)> {
    let found = match mode {
        ExtractMode::Boxed => last_boxed(response).map(|a| (a, Rule::Boxed)),
        ExtractMode::Hashes => after_hashes(response).map(|a| (a, Rule::Hashes)),
        ExtractMode::LastNumber => last_number(response).map(|a| (a, Rule::LastNumber)),
        ExtractMode::Auto => {
            if response.contains("\\boxed") || response.contains("\\fbox") {
                last_boxed(response).map(|a| (a, Rule::Boxed))
            } else if let Some(a) = after_hashes(response) {
                Some((a, Rule::Hashes))
            } else {
                last_number(response).map(|a| (a, Rule::LastNumber))
            }
        }
    };
    found.map(|(a, r)| (a.trim(), r)).filter(|(a, _)| !a.is_empty())
}

/// The answer inside a ground-truth field: a full GSM8K solution (`... #### 72`) or a boxed
/// solution is reduced to its final answer; anything else is used whole.
pub fn ground_truth_answer(gt: &str) -> &str {
    if let Some(a) = after_hashes(gt) {
        return a;
    }
    if gt.contains("\\boxed") {
        if let Some(a) = last_boxed(gt) {
            return a.trim();
        }
    }
    gt.trim()
}

/// Checks `response` against `ground_truth`.
pub fn verify(response: &str, ground_truth: &str, mode: ExtractMode) -> Verdict {
    let Some(pred) = extract_answer(response, mode) else {
        return Verdict::NoAnswer;
    };
    let gt = Answer::parse(ground_truth_answer(ground_truth));
    if Answer::parse(pred).matches(&gt) {
        Verdict::Correct
    } else {
        Verdict::Wrong
    }
}

/// The math reward: `correct` when the answer matches, `incorrect` when it does not, `no_answer`
/// when none was found. A sample without a ground truth is an error (a data problem, not a wrong
/// answer).
#[derive(Debug, Clone)]
pub struct MathReward {
    /// Where to look for the answer.
    pub mode: ExtractMode,
    /// Reward for a correct answer.
    pub correct: f64,
    /// Reward for a wrong answer (DAPO uses -1).
    pub incorrect: f64,
    /// Reward when no answer was found.
    pub no_answer: f64,
}

impl Default for MathReward {
    fn default() -> Self {
        Self { mode: ExtractMode::Auto, correct: 1.0, incorrect: 0.0, no_answer: 0.0 }
    }
}

impl MathReward {
    /// Scores one sample.
    pub fn score_one(&self, input: &RewardInput) -> RewardOutput {
        let Some(gt) = input.ground_truth.as_deref().filter(|g| !g.trim().is_empty()) else {
            return RewardOutput::error("math: sample has no ground_truth");
        };
        let (verdict, info) = judge(&input.response, gt, self.mode);
        let out = RewardOutput::ok(match verdict {
            Verdict::Correct => self.correct,
            Verdict::Wrong => self.incorrect,
            Verdict::NoAnswer => self.no_answer,
        });
        match info {
            Some(i) => out.with_answer(i),
            None => out,
        }
    }
}

impl RewardFn for MathReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch.iter().map(|s| self.score_one(s)).collect()
    }
}
