//! The math verifier's account of how it read an answer ([`crate::AnswerInfo`]): the rule that
//! found it, whether that is the answer form the mode asks for, and every other candidate the
//! response offers under that rule. [`judge`] returns the same verdict as [`super::verify`]
//! (same extraction, same comparison) plus that account; scores never depend on the account.

use super::extract::{all_boxed, all_hashes, NumberTokens};
use super::{extract_with_rule, ground_truth_answer, Answer, ExtractMode, Rule, Verdict};
use crate::types::{distinct_candidates, AnswerInfo};

/// The normal form of an answer, equal for answers the verifier treats as equal numbers or
/// texts: a reduced fraction (`7/2`, `-3`) with `%` kept for percentages, or the normalised text.
pub fn answer_key(raw: &str) -> String {
    match Answer::parse(raw) {
        Answer::Number(n) if n.percent => format!("{}%", n.value),
        Answer::Number(n) => n.value.to_string(),
        Answer::Text(t) => t,
    }
}

/// The response without surrounding space and one final period: `" 7."` -> `"7"`.
fn bare(response: &str) -> &str {
    let r = response.trim();
    r.strip_suffix('.').unwrap_or(r).trim_end()
}

/// [`super::verify`]'s verdict plus how the answer was found (`None` when there is no answer).
///
/// Canonical form: `\boxed{}` and `####` always are; the last-number rule is canonical only in
/// `last_number` mode and only when the response is nothing but that number (the quickstart's
/// "Answer with just the number"); picked out of prose it is a fallback.
pub fn judge(response: &str, ground_truth: &str, mode: ExtractMode) -> (Verdict, Option<AnswerInfo>) {
    let Some((pred, rule)) = extract_with_rule(response, mode) else {
        return (Verdict::NoAnswer, None);
    };
    let gt = Answer::parse(ground_truth_answer(ground_truth));
    let correct = Answer::parse(pred).matches(&gt);
    let candidates = match rule {
        Rule::Boxed => distinct_candidates(all_boxed(response).into_iter().map(answer_key)),
        Rule::Hashes => distinct_candidates(all_hashes(response).into_iter().map(answer_key)),
        Rule::LastNumber => distinct_candidates(NumberTokens::new(response).map(answer_key)),
    };
    let canonical = match rule {
        Rule::Boxed | Rule::Hashes => true,
        Rule::LastNumber => mode == ExtractMode::LastNumber && bare(response) == pred,
    };
    let info = AnswerInfo { answer: answer_key(pred), rule: rule.name().to_string(), canonical, candidates, correct };
    (if correct { Verdict::Correct } else { Verdict::Wrong }, Some(info))
}
