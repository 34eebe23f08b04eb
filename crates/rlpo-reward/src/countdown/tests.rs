//! Tricky and malicious countdown cases. Expected verdicts are written by hand.

use super::*;
use crate::types::RewardStatus;
use CountdownVerdict::*;
use ExprError::*;

/// Extracts and checks a whole response, as the reward does.
fn judge(response: &str, numbers: &[i128], target: i128, use_all: bool) -> CountdownVerdict {
    match extract_expression(response) {
        None => NoAnswer,
        Some(e) => check_expression(e, numbers, Rational::int(target), use_all, Limits::default()),
    }
}

const N: &[i128] = &[3, 5, 7, 25];

#[test]
fn tricky_and_malicious_cases() {
    let deep = format!("<answer>{}3{}</answer>", "(".repeat(40), ")".repeat(40));
    let unary = format!("<answer>{}3</answer>", "- ".repeat(40));
    let long = format!("<answer>{}3</answer>", "3+".repeat(200));
    let big = "<answer>999999999999999999*999999999999999999*999999999999999999</answer>";
    let big_n: &[i128] = &[999_999_999_999_999_999; 3];
    // (response, numbers, target, use_all, expected)
    let cases: Vec<(&str, &[i128], i128, bool, CountdownVerdict)> = vec![
        ("<answer>25 + 3*5</answer>", N, 40, false, Correct),
        ("<answer>25+3*5</answer>", N, 40, false, Correct),
        ("<answer>25 + 3 * 5 = 40</answer>", N, 40, false, Correct),
        ("<answer>25 + 3 * 5 = 41</answer>", N, 40, false, Correct), // right side is ignored
        ("<answer>25 + 3 * 5\n</answer>", N, 40, false, Correct),
        ("<answer>(25 - 5) * (7 - 5)</answer>", N, 40, false, NumberReused(5)),
        ("<answer>25 + 15</answer>", N, 40, false, NumberNotGiven(15)),
        ("<answer>5 * 8</answer>", N, 40, false, NumberNotGiven(8)),
        ("<answer>(25+3)*5</answer>", N, 40, false, WrongValue),
        ("<answer>3 / (7 - 7)</answer>", N, 40, false, Invalid(DivByZero)),
        ("<answer>25 / (5 - 5)</answer>", N, 40, false, Invalid(DivByZero)),
        ("<answer>25 ** 3</answer>", N, 40, false, Invalid(Unexpected(4))),
        ("<answer>__import__('os').system('rm -rf /')</answer>", N, 40, false, Invalid(BadChar('_', 0))),
        ("<answer>eval('25+15')</answer>", N, 40, false, Invalid(BadChar('e', 0))),
        ("<answer>25 + 3 * 5; print(1)</answer>", N, 40, false, Invalid(BadChar(';', 10))),
        ("<answer>2^5</answer>", N, 40, false, Invalid(BadChar('^', 1))),
        (&long, N, 40, false, Invalid(TooLong(401))),
        (&deep, N, 3, false, Invalid(TooDeep)),
        (&unary, N, 3, false, Invalid(TooDeep)),
        ("<answer>99999999999999999999</answer>", N, 40, false, Invalid(NumberTooLong)),
        (big, big_n, 1, false, Invalid(Overflow)),
        ("<answer>25 + 3*5</answer> no wait <answer>7</answer>", N, 40, false, WrongValue),
        ("25 + 3*5 = 40", N, 40, false, NoAnswer),
        (r"\boxed{25 + 3 \times 5}", N, 40, false, Correct),
        (r"\boxed{25 + 3 \cdot 5}", N, 40, false, Correct),
        ("<answer>25 + 3 × 5</answer>", N, 40, false, Correct),
        ("<answer>6/(1-3/4)</answer>", &[1, 3, 4, 6], 24, false, Correct), // needs exact fractions
        ("<answer>6/(1-3/4)</answer>", &[1, 3, 4, 6], 24, true, Correct),
        ("<answer>25+3*5</answer>", N, 40, true, NotAllUsed),
        ("<answer>5*5*2</answer>", &[5, 5, 2], 50, false, Correct),
        ("<answer>5*5*5*2</answer>", &[5, 5, 2], 250, false, NumberReused(5)),
        ("<answer></answer>", N, 40, false, NoAnswer),
        ("<answer>   </answer>", N, 40, false, NoAnswer),
        ("<answer>25 +</answer>", N, 40, false, Invalid(Unexpected(4))),
        ("<answer>(25 + 3 * 5</answer>", N, 40, false, Invalid(Unexpected(11))),
        ("<answer>25 + 3 * 5)</answer>", N, 40, false, Invalid(Unexpected(10))),
        ("<answer>25 - (-3) * 5</answer>", N, 40, false, Correct),
        ("<answer>3 5 25</answer>", N, 40, false, Invalid(Unexpected(2))),
        ("<answer>25 + 3 * 5.0</answer>", N, 40, false, Invalid(BadChar('.', 10))),
        ("<answer>２５</answer>", N, 25, false, Invalid(BadChar('２', 0))),
        ("<answer>()</answer>", N, 40, false, Invalid(Unexpected(1))),
        ("<answer>7 - 3 \u{2212} 5 + 25 + 3</answer>", N, 27, false, NumberReused(3)),
        ("<answer>7 / 3 * 3</answer>", &[3, 3, 7], 7, false, Correct),
        ("<answer>25 + 3 * 5", N, 40, false, NoAnswer), // unclosed tag
    ];
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for (response, numbers, target, use_all, want) in &cases {
        let got = judge(response, numbers, *target, *use_all);
        if &got != want {
            let shown: String = response.chars().take(60).collect();
            failures.push(format!("{shown:?} (numbers {numbers:?}, target {target}): got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn reward_reads_metadata_and_reports_missing_data() {
    let f = CountdownReward { correct: 1.0, incorrect: 0.1, no_answer: 0.0, ..Default::default() };
    let mut ok = RewardInput::new("<answer>25 + 3*5</answer>", None);
    ok.metadata = serde_json::json!({"numbers": [3, 5, 7, 25], "target": 40});
    let mut wrong = ok.clone();
    wrong.response = "<answer>25 + 3</answer>".into();
    let mut none = ok.clone();
    none.response = "I give up".into();
    // TinyZero layout: `nums`, target in ground_truth.
    let mut gt_target = RewardInput::new("<answer>25 + 3*5</answer>", Some("40"));
    gt_target.metadata = serde_json::json!({"nums": [3, 5, 7, 25]});
    let no_numbers = RewardInput::new("<answer>1</answer>", Some("1"));
    let mut bad_target = ok.clone();
    bad_target.metadata = serde_json::json!({"numbers": [1], "target": "x"});
    let out = f.score(&[ok, wrong, none, gt_target, no_numbers, bad_target]);
    let values: Vec<f64> = out[..4].iter().map(|o| o.value).collect();
    assert_eq!(values, [1.0, 0.1, 0.0, 1.0]);
    for o in &out[4..] {
        assert!(matches!(&o.status, RewardStatus::Error(m) if m.starts_with("countdown:")), "{o:?}");
        assert!(o.value.is_nan());
    }
}

/// How the expression was found, written by hand from the documented rules; values unchanged.
#[test]
fn reward_reports_how_the_expression_was_found() {
    let f = CountdownReward::default();
    let input = |resp: &str| {
        let mut i = RewardInput::new(resp, None);
        i.metadata = serde_json::json!({"numbers": [3, 5, 7, 25], "target": 40});
        i
    };
    let out = f.score_one(&input("<answer>25 + 3 * 5 = 40</answer>"));
    assert_eq!(out.value, 1.0);
    let a = &out.answers[""];
    assert_eq!((a.answer.as_str(), a.rule.as_str(), a.canonical, a.correct), ("25+3*5", "answer_tag", true, true));
    assert!(!a.weak());
    // Two answer tags that disagree: the last one is judged (correct) but the signal is weak.
    let out = f.score_one(&input("<answer>25+3</answer> no: <answer>25 + 3*5</answer>"));
    assert_eq!(out.value, 1.0);
    assert_eq!(out.answers[""].candidates, ["25+3", "25+3*5"]);
    assert!(out.answers[""].weak());
    // Only a box: a fallback form.
    let out = f.score_one(&input(r"\boxed{25 + 3*5}"));
    assert_eq!(out.value, 1.0);
    assert_eq!((out.answers[""].rule.as_str(), out.answers[""].canonical), ("boxed", false));
    // Wrong value: judged incorrect, not weak; no answer: no account.
    let out = f.score_one(&input("<answer>25 + 3</answer>"));
    assert_eq!((out.value, out.answers[""].correct, out.answers[""].weak()), (0.0, false, false));
    assert!(f.score_one(&input("I give up")).answers.is_empty());
}
