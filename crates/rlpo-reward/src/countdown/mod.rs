//! The built-in countdown verifier (`kind = "countdown"`): the response gives an arithmetic
//! expression that must use only the given numbers, each at most once (or exactly once with
//! `use_all`), and evaluate exactly to the target.
//!
//! Where the expression is read from: the content of the **last** `<answer>...</answer>`, else the
//! last `\boxed{}`; if it contains `=`, only the part before the first `=` (`(1+2)*3 = 9`).
//! Per-sample data comes from `metadata`: `numbers` (or `nums`, array of integers) and `target`
//! (integer; falls back to the ground truth). Missing data is an error status, never a zero.

mod parser;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use parser::{evaluate, Evaluated, ExprError, Limits};

use crate::math::{all_boxed, last_boxed};
use crate::rational::Rational;
use crate::types::{distinct_candidates, AnswerInfo, RewardFn, RewardInput, RewardOutput};

/// The outcome of checking one countdown response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountdownVerdict {
    /// Valid expression with the right value.
    Correct,
    /// Valid expression, wrong value.
    WrongValue,
    /// Uses a number that is not among the given ones.
    NumberNotGiven(i128),
    /// Uses a given number more often than it was given.
    NumberReused(i128),
    /// `use_all` is set and some given numbers are unused.
    NotAllUsed,
    /// The expression does not parse or cannot be evaluated (includes division by zero).
    Invalid(ExprError),
    /// No `<answer>` or `\boxed{}` in the response.
    NoAnswer,
}

/// The expression text in a response (see the module docs), or `None`.
pub fn extract_expression(response: &str) -> Option<&str> {
    extract_with_rule(response).map(|(e, _)| e)
}

/// The expression and the rule that found it (`answer_tag` or `boxed`), or `None`.
fn extract_with_rule(response: &str) -> Option<(&str, &'static str)> {
    let (found, rule) = match last_answer_tag(response) {
        Some(a) => (a, "answer_tag"),
        None => (last_boxed(response)?, "boxed"),
    };
    let expr = found.split('=').next().unwrap_or(found).trim();
    (!expr.is_empty()).then_some((expr, rule))
}

/// An expression's normal form for votes and audits: the part before `=`, without whitespace.
fn expression_key(found: &str) -> String {
    found.split('=').next().unwrap_or(found).chars().filter(|c| !c.is_whitespace()).collect()
}

/// Every `<answer>...</answer>` body, left to right.
fn all_answer_tags(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("<answer>") {
        let body = &rest[open + "<answer>".len()..];
        let Some(close) = body.find("</answer>") else { break };
        out.push(&body[..close]);
        rest = &body[close..];
    }
    out
}

/// How the expression was found ([`AnswerInfo`]): `<answer>` is the canonical form (the prompt
/// asks for it), `\boxed{}` a fallback; candidates are every tag (or box) of that kind.
fn answer_info(response: &str, expr: &str, rule: &'static str, correct: bool) -> AnswerInfo {
    let all = if rule == "answer_tag" { all_answer_tags(response) } else { all_boxed(response) };
    let candidates = distinct_candidates(all.into_iter().map(expression_key).filter(|k| !k.is_empty()));
    AnswerInfo { answer: expression_key(expr), rule: rule.to_string(), canonical: rule == "answer_tag", candidates, correct }
}

fn last_answer_tag(text: &str) -> Option<&str> {
    let open = text.rfind("<answer>")?;
    let body = &text[open + "<answer>".len()..];
    let close = body.find("</answer>")?;
    Some(&body[..close])
}

/// Checks an expression against the given numbers and target.
pub fn check_expression(
    expr: &str,
    numbers: &[i128],
    target: Rational,
    use_all: bool,
    limits: Limits,
) -> CountdownVerdict {
    let ev = match evaluate(expr, limits) {
        Ok(ev) => ev,
        Err(e) => return CountdownVerdict::Invalid(e),
    };
    // Multiset inclusion: each literal consumes one copy of an equal given number.
    let mut left: BTreeMap<i128, usize> = BTreeMap::new();
    for &n in numbers {
        *left.entry(n).or_default() += 1;
    }
    for &n in &ev.numbers {
        match left.get_mut(&n) {
            None => return CountdownVerdict::NumberNotGiven(n),
            Some(0) => return CountdownVerdict::NumberReused(n),
            Some(c) => *c -= 1,
        }
    }
    if use_all && left.values().any(|&c| c > 0) {
        return CountdownVerdict::NotAllUsed;
    }
    if ev.value == target {
        CountdownVerdict::Correct
    } else {
        CountdownVerdict::WrongValue
    }
}

/// The countdown reward.
#[derive(Debug, Clone)]
pub struct CountdownReward {
    /// Reward for a correct expression.
    pub correct: f64,
    /// Reward for a wrong or invalid expression.
    pub incorrect: f64,
    /// Reward when the response has no `<answer>` / `\boxed{}`.
    pub no_answer: f64,
    /// Require every given number to be used exactly once (TinyZero's rule) instead of at most once.
    pub use_all: bool,
    /// Parser limits.
    pub limits: Limits,
}

impl Default for CountdownReward {
    fn default() -> Self {
        Self { correct: 1.0, incorrect: 0.0, no_answer: 0.0, use_all: false, limits: Limits::default() }
    }
}

/// Reads `numbers`/`nums` and `target` for one sample; `Err` names what is missing.
fn task_of(input: &RewardInput) -> Result<(Vec<i128>, Rational), String> {
    let meta = &input.metadata;
    let list = meta
        .get("numbers")
        .or_else(|| meta.get("nums"))
        .and_then(|v| v.as_array())
        .ok_or("countdown: metadata has no `numbers` array")?;
    let numbers = list
        .iter()
        .map(|v| v.as_i64().map(i128::from).ok_or(format!("countdown: `numbers` entry {v} is not an integer")))
        .collect::<Result<Vec<_>, _>>()?;
    let target = match meta.get("target") {
        Some(t) => t.as_i64().ok_or(format!("countdown: `target` {t} is not an integer"))?,
        None => input
            .ground_truth
            .as_deref()
            .and_then(|g| g.trim().parse::<i64>().ok())
            .ok_or("countdown: no integer `target` in metadata or ground_truth")?,
    };
    Ok((numbers, Rational::int(i128::from(target))))
}

impl CountdownReward {
    /// Scores one sample.
    pub fn score_one(&self, input: &RewardInput) -> RewardOutput {
        let (numbers, target) = match task_of(input) {
            Ok(t) => t,
            Err(msg) => return RewardOutput::error(msg),
        };
        let Some((expr, rule)) = extract_with_rule(&input.response) else {
            return RewardOutput::ok(self.no_answer);
        };
        let verdict = check_expression(expr, &numbers, target, self.use_all, self.limits);
        let info = answer_info(&input.response, expr, rule, verdict == CountdownVerdict::Correct);
        RewardOutput::ok(match verdict {
            CountdownVerdict::Correct => self.correct,
            CountdownVerdict::NoAnswer => self.no_answer,
            _ => self.incorrect,
        })
        .with_answer(info)
    }
}

impl RewardFn for CountdownReward {
    fn score(&self, batch: &[RewardInput]) -> Vec<RewardOutput> {
        batch.iter().map(|s| self.score_one(s)).collect()
    }
}
