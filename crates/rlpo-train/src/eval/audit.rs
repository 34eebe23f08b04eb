//! `rlpo eval --audit`: per verifier, the samples it judged correct on a weak signal, so a user
//! can look for false positives before training on them (imperfect verifiers cap what sampling
//! can reach; "Inference Scaling fLaws"). A judgement is weak when the answer was not in the
//! verifier's canonical form (found only by a fallback rule) or when the response offers several
//! candidate answers that disagree ([`rlpo_reward::AnswerInfo::weak`]).

use super::runner::SampleRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One correct judgement on a weak signal (one line of `audit.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The reward function (verifier) name.
    pub verifier: String,
    /// Problem index.
    pub problem: usize,
    /// Sample index.
    pub sample: usize,
    /// Dataset row id.
    pub id: String,
    /// Reference answer.
    pub ground_truth: Option<String>,
    /// The answer judged correct (normal form).
    pub answer: String,
    /// The rule that found it.
    pub rule: String,
    /// `fallback rule` and/or `N disagreeing candidates`.
    pub reasons: Vec<String>,
    /// The distinct candidates.
    pub candidates: Vec<String>,
    /// The response.
    pub response: String,
}

/// Per verifier: correct judgements in total and the weak ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifierAudit {
    /// Samples the verifier judged correct.
    pub correct: usize,
    /// Those that rest on a weak signal.
    pub weak: Vec<AuditEntry>,
}

/// Audit every verifier that reported answers in `records`, by name.
pub fn audit(records: &[SampleRecord]) -> BTreeMap<String, VerifierAudit> {
    let mut out: BTreeMap<String, VerifierAudit> = BTreeMap::new();
    for r in records {
        for (name, a) in &r.answers {
            let v = out.entry(name.clone()).or_default();
            if !a.correct {
                continue;
            }
            v.correct += 1;
            if !a.weak() {
                continue;
            }
            let mut reasons = Vec::new();
            if !a.canonical {
                reasons.push(format!("fallback rule ({})", a.rule));
            }
            if a.candidates.len() > 1 {
                reasons.push(format!("{} disagreeing candidates", a.candidates.len()));
            }
            v.weak.push(AuditEntry {
                verifier: name.clone(),
                problem: r.problem,
                sample: r.sample,
                id: r.id.clone(),
                ground_truth: r.ground_truth.clone(),
                answer: a.answer.clone(),
                rule: a.rule.clone(),
                reasons,
                candidates: a.candidates.clone(),
                response: r.response.clone(),
            });
        }
    }
    out
}

/// The audit as text: a line per verifier, then up to `show` weak judgements each.
pub fn render(audits: &BTreeMap<String, VerifierAudit>, show: usize) -> String {
    if audits.is_empty() {
        return "audit: no verifier in [reward] reports how it reads answers (math and countdown do)\n".into();
    }
    let mut s = String::new();
    for (name, v) in audits {
        let fallback = v.weak.iter().filter(|e| e.reasons.iter().any(|r| r.starts_with("fallback"))).count();
        let ambiguous = v.weak.iter().filter(|e| e.candidates.len() > 1).count();
        s.push_str(&format!(
            "audit {name}: {} of {} correct judgements rest on a weak signal ({fallback} found by a fallback rule, {ambiguous} with disagreeing candidates)\n",
            v.weak.len(),
            v.correct
        ));
        for e in v.weak.iter().take(show) {
            let excerpt: String = e.response.chars().take(120).collect::<String>().replace('\n', "\\n");
            s.push_str(&format!(
                "  problem {} sample {} ({}): answer {:?} = ground truth {:?}; {}; candidates {:?}\n    response: {excerpt}{}\n",
                e.problem,
                e.sample,
                e.id,
                e.answer,
                e.ground_truth.as_deref().unwrap_or(""),
                e.reasons.join(", "),
                e.candidates,
                if e.response.chars().count() > 120 { "..." } else { "" }
            ));
        }
        if v.weak.len() > show {
            s.push_str(&format!("  ... {} more in audit.jsonl\n", v.weak.len() - show));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlpo_reward::AnswerInfo;

    #[test]
    fn lists_only_weak_correct_judgements() {
        let info = |canonical: bool, candidates: &[&str], correct: bool| AnswerInfo {
            answer: "7".into(),
            rule: if canonical { "boxed" } else { "last_number" }.into(),
            canonical,
            candidates: candidates.iter().map(|c| c.to_string()).collect(),
            correct,
        };
        let rec = |sample: usize, a: AnswerInfo| SampleRecord {
            problem: 0,
            id: "p".into(),
            data_source: "d".into(),
            sample,
            prompt: String::new(),
            response: "3 + 4 = 7".into(),
            ground_truth: Some("7".into()),
            reward: Some(1.0),
            status: "ok".into(),
            parts: BTreeMap::new(),
            answer: Some("7".into()),
            correct: a.correct,
            answers: BTreeMap::from([("math".to_string(), a)]),
            tokens: 3,
            finish_reason: "eos".into(),
        };
        let rs = [
            rec(0, info(true, &["7"], true)),         // strong
            rec(1, info(false, &["3", "4", "7"], true)), // fallback + ambiguous
            rec(2, info(true, &["5", "7"], true)),    // ambiguous
            rec(3, info(false, &["7"], false)),       // wrong: never listed
        ];
        let a = audit(&rs);
        let m = &a["math"];
        assert_eq!(m.correct, 3);
        assert_eq!(m.weak.iter().map(|e| e.sample).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(m.weak[0].reasons, ["fallback rule (last_number)", "3 disagreeing candidates"]);
        assert_eq!(m.weak[1].reasons, ["2 disagreeing candidates"]);
        let text = render(&a, 1);
        assert!(text.contains("2 of 3 correct judgements") && text.contains("1 more"), "{text}");
    }
}
