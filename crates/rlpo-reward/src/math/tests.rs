//! Tricky cases for the math verifier. Expected verdicts are written by hand from the documented
//! rules, never computed by the code under test.

use super::*;
use crate::types::RewardStatus;
use ExtractMode::{Auto, Boxed, Hashes, LastNumber};
use Verdict::{Correct, NoAnswer, Wrong};

/// (response, ground truth, mode, expected verdict, why)
const CASES: &[(&str, &str, ExtractMode, Verdict, &str)] = &[
    (r"So \boxed{42}.", "42", Auto, Correct, "plain boxed"),
    (r"\boxed{\frac{1}{2}}", "0.5", Auto, Correct, "frac vs decimal"),
    (r"\boxed{\frac12}", "1/2", Auto, Correct, "short frac vs slash"),
    ("it is 0.5", r"\frac{1}{2}", Auto, Correct, "decimal vs frac ground truth"),
    ("it is 0.5", r"\frac12", Auto, Correct, "decimal vs short frac ground truth"),
    ("The answer is 1,000.", "1000", Auto, Correct, "thousands separator + period"),
    ("#### 1,000", "1000", Auto, Correct, "hashes with separator"),
    (r"\boxed{1{,}000}", "1000", Auto, Correct, "LaTeX thousands separator"),
    ("The answer is 1,000", "100", Auto, Wrong, "separator is not a decimal point"),
    (r"\boxed{1,00}", "100", Auto, Wrong, "malformed thousands group stays text"),
    (r"\boxed{-3}", "-3", Auto, Correct, "negative"),
    (r"\boxed{-3}", "3", Auto, Wrong, "sign matters"),
    ("so x = -5", "-5", Auto, Correct, "negative last number"),
    ("10-7=3", "3", Auto, Correct, "binary minus is not a sign"),
    ("The answer is 18.", "18", Auto, Correct, "trailing period"),
    ("I don't know.", "5", Auto, NoAnswer, "no number at all"),
    (r"\boxed{1} wait, no: \boxed{2}", "2", Auto, Correct, "two boxed: last wins"),
    (r"\boxed{1} wait, no: \boxed{2}", "1", Auto, Wrong, "two boxed: first loses"),
    (r"\boxed{\frac{\frac{1}{2}}{2}}", "1/4", Auto, Correct, "nested braces and fracs"),
    (r"\boxed{{5}}", "5", Auto, Correct, "redundant braces"),
    (r"\boxed{18 \text{ dollars}}", "18", Auto, Correct, "unit in text"),
    (r"\boxed{\$18.00}", "18", Auto, Correct, "escaped dollar, trailing zeros"),
    ("It costs $18 in total", "18", Auto, Correct, "dollar before last number"),
    ("so 50% of them", "50", Auto, Correct, "percent vs written value"),
    ("so 50% of them", "0.5", Auto, Correct, "percent vs fraction"),
    (r"\boxed{50\%}", "50", Auto, Correct, "LaTeX percent"),
    ("so 50% of them", "5", Auto, Wrong, "percent is not any number"),
    ("about 0.333", "1/3", Auto, Wrong, "exact comparison"),
    (r"\boxed{0.30}", "0.3", Auto, Correct, "trailing zero decimal"),
    (r"\boxed{x = 5}", "5", Auto, Correct, "equation in box"),
    (r"\boxed{5} so \boxed{6", "5", Auto, NoAnswer, "truncated last box is no answer"),
    (r"\boxed{B}", "B", Auto, Correct, "text answer"),
    (r"\boxed{B}", "C", Auto, Wrong, "text answer wrong"),
    ("result: \u{2212}7", "-7", Auto, Correct, "unicode minus"),
    (r"\boxed{3} and finally 4", "4", LastNumber, Correct, "last_number ignores boxes"),
    (r"\boxed{3} and finally 4", "3", LastNumber, Wrong, "last_number ignores boxes (2)"),
    ("answer 4", "4", Boxed, NoAnswer, "boxed mode needs a box"),
    ("#### 72\nthen 5", "72", Hashes, Correct, "hashes takes its own line"),
    ("#### 72\nthen 5", "72", Auto, Correct, "auto prefers hashes over last number"),
    (r"\boxed{7}", "She has 3+4=7 apples.\n#### 7", Auto, Correct, "GSM8K solution as ground truth"),
    (r"\boxed{7}", r"so \boxed{7}", Auto, Correct, "boxed ground truth"),
    (r"\boxed{123456789012345678901234567890123456789012}", "123456789012345678901234567890123456789012", Auto, Correct, "beyond i128 compares as text"),
    (r"\boxed{123456789012345678901234567890123456789012}", "123456789012345678901234567890123456789013", Auto, Wrong, "beyond i128, different"),
    (r"\boxed{}", "0", Auto, NoAnswer, "empty box"),
    ("+5", "5", Auto, Correct, "explicit plus"),
    (r"\boxed{-0}", "0", Auto, Correct, "negative zero"),
    (r"\boxed{\dfrac{3}{4}}", "0.75", Auto, Correct, "dfrac"),
    (r"\boxed{1/0}", "1", Auto, Wrong, "division by zero is not a number"),
    (r"\boxed{3,4,5}", "3, 4, 5", Auto, Correct, "list compares as text"),
    ("so it is .5", "1/2", Auto, Correct, "leading point"),
    (r"\boxed{90^\circ}", "90", Auto, Correct, "degrees"),
    (r"\boxed{-\frac{1}{2}}", "-0.5", Auto, Correct, "negative frac"),
    (r"\boxed{\frac{-1}{2}}", "-1/2", Auto, Correct, "negative numerator"),
    ("3.5 apples.", "7/2", Auto, Correct, "decimal vs fraction"),
    (r"\boxed 9", "9", Auto, Correct, "space form of boxed"),
    ("version 1.2.3", "3", LastNumber, Wrong, "version string: last token is .3"),
    ("Total: 2,500,000 people", "2500000", LastNumber, Correct, "two separators"),
    ("the answer is 12", "12.0", Auto, Correct, "integer vs decimal ground truth"),
    ("the answer is 12", "-12", Auto, Wrong, "integer vs negated"),
];

#[test]
fn tricky_cases() {
    assert!(CASES.len() >= 30);
    let mut failures = Vec::new();
    for &(response, gt, mode, want, why) in CASES {
        let got = verify(response, gt, mode);
        if got != want {
            failures.push(format!("{why}: verify({response:?}, {gt:?}, {mode:?}) = {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn reward_values_and_missing_ground_truth() {
    let f = MathReward { mode: Auto, correct: 1.0, incorrect: -1.0, no_answer: -2.0 };
    let batch = [
        RewardInput::new(r"\boxed{4}", Some("4")),
        RewardInput::new(r"\boxed{5}", Some("4")),
        RewardInput::new("nothing", Some("4")),
        RewardInput::new(r"\boxed{4}", None),
        RewardInput::new(r"\boxed{4}", Some("  ")),
    ];
    let out = f.score(&batch);
    assert_eq!(out.len(), 5);
    assert_eq!(out[0].value, 1.0);
    assert_eq!(out[1].value, -1.0);
    assert_eq!(out[2].value, -2.0);
    for o in &out[3..] {
        assert!(matches!(o.status, RewardStatus::Error(_)), "{o:?}");
        assert!(o.value.is_nan());
    }
}

#[test]
fn parse_spellings() {
    let half = Answer::parse("1/2");
    for s in ["0.5", r"\frac{1}{2}", r"\frac12", r"\tfrac{1}{2}", "{1/2}", ".50", r"$\frac{1}{2}$", "2/4"] {
        assert!(Answer::parse(s).matches(&half), "{s}");
    }
    assert_eq!(parse_whole("1,234,567").map(|n| n.value.numer()), Some(1_234_567));
    assert_eq!(parse_whole("1234,567"), None);
    assert_eq!(parse_whole("--3").map(|n| n.value.numer()), Some(3));
    // Deep nesting is refused, not a stack overflow.
    let deep = format!("{}1{}", "{".repeat(10_000), "}".repeat(10_000));
    assert_eq!(parse_whole(&deep), None);
}

#[test]
fn judge_agrees_with_verify_on_every_case() {
    for &(response, gt, mode, want, why) in CASES {
        let (verdict, info) = judge(response, gt, mode);
        assert_eq!(verdict, want, "{why}");
        assert_eq!(info.is_none(), want == NoAnswer, "{why}: {info:?}");
        if let Some(i) = info {
            assert_eq!(i.correct, want == Correct, "{why}");
        }
    }
}

/// How the answer was found, written by hand from the documented rules.
#[test]
fn judge_reports_rule_canonical_form_and_candidates() {
    let info = |r: &str, gt: &str, mode| judge(r, gt, mode).1.expect("an answer");
    // Two boxes that disagree: correct on the last one, but ambiguous.
    let i = info(r"\boxed{1} wait, no: \boxed{2}", "2", Auto);
    assert_eq!((i.rule.as_str(), i.canonical, i.correct), ("boxed", true, true));
    assert_eq!(i.candidates, ["1", "2"]);
    assert!(i.weak());
    // Two boxes that agree (3.5 = 7/2): one candidate in normal form, a strong signal.
    let i = info(r"\boxed{3.5}, i.e. \boxed{\frac{7}{2}}", "7/2", Auto);
    assert_eq!((i.answer.as_str(), i.candidates.len(), i.weak()), ("7/2", 1, false));
    // Auto mode falling back to the last number of free text: not canonical.
    let i = info("3 + 4 = 7", "7", Auto);
    assert_eq!((i.rule.as_str(), i.canonical, i.correct), ("last_number", false, true));
    assert_eq!(i.candidates, ["3", "4", "7"]);
    assert!(i.weak());
    // last_number mode: a bare number is the canonical form, prose is not.
    let i = info(" 7.", "7", LastNumber);
    assert_eq!((i.canonical, i.candidates.len(), i.weak()), (true, 1, false));
    let i = info("The answer is 7", "7", LastNumber);
    assert_eq!((i.canonical, i.weak()), (false, true));
    let i = info("1. 4 + 3 = 7", "7", LastNumber);
    assert_eq!((i.canonical, i.candidates.len()), (false, 4));
    // A wrong answer is never weak (the audit lists correct judgements only).
    let i = info("3 + 4 = 8", "7", Auto);
    assert!(!i.correct && !i.weak());
    // Percent keeps its sign in the key; hashes is canonical.
    assert_eq!(info("#### 50%", "50", Auto).answer, "50%");
    assert_eq!(info("#### 50%", "50", Auto).rule, "hashes");
    // The reward carries the account, and its value is the verdict's as before.
    let f = MathReward::default();
    let out = f.score_one(&RewardInput::new("3 + 4 = 7", Some("7")));
    assert_eq!(out.value, 1.0);
    assert_eq!(out.answers[""].rule, "last_number");
    assert!(f.score_one(&RewardInput::new("no idea", Some("7"))).answers.is_empty());
}
