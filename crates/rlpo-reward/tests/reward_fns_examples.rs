//! The example plugins shipped in `reward_fns/` (run with `python3`, fallback checker so the
//! result does not depend on whether `math-verify` is installed). Expected rewards by hand.

use std::sync::Arc;
use std::time::Duration;

use rlpo_reward::external::{ExternalOptions, ExternalReward};
use rlpo_reward::log::RewardLog;
use rlpo_reward::{RewardFn, RewardInput, RewardStatus};

fn plugin(file: &str, args: &[&str]) -> (ExternalReward, RewardLog) {
    let mut command = vec!["python3".to_owned(), format!("{}/../../reward_fns/{file}", env!("CARGO_MANIFEST_DIR"))];
    command.extend(args.iter().map(|s| s.to_string()));
    let mut o = ExternalOptions::new(file.trim_end_matches(".py"), command);
    o.timeout = Duration::from_secs(5);
    let log = RewardLog::new();
    (ExternalReward::start(o, log.clone(), Arc::default()).expect("python3 starts"), log)
}

/// The log's lines once one satisfies `want`, waiting up to 10 s: the plugin's stderr is read by
/// its own thread, so a line it wrote before its answers can reach the log after them.
fn lines_until(log: &RewardLog, want: impl Fn(&str) -> bool) -> Vec<String> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut lines = log.drain();
    while !lines.iter().any(|l| want(l)) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
        lines.extend(log.drain());
    }
    lines
}

#[test]
fn gsm8k_example_fallback() {
    let (p, log) = plugin("gsm8k_reward.py", &["--no-math-verify"]);
    let cases: &[(&str, Option<&str>, f64)] = &[
        (r"so \boxed{1,000}", Some("1000"), 1.0),
        ("#### 72", Some("She sold 48 + 24 = 72.\n#### 72"), 1.0),
        ("the answer is 0.5", Some(r"\frac{1}{2}"), 1.0),
        ("the answer is 18.", Some("18"), 1.0),
        (r"\boxed{-3}", Some("3"), 0.0),
        ("so 50% of them", Some("0.5"), 1.0),
        (r"\boxed{18 \text{ dollars}}", Some("18"), 1.0),
        (r"\boxed{1} no, \boxed{2}", Some("1"), 0.0),
        ("no idea", Some("4"), 0.0),
    ];
    let batch: Vec<RewardInput> = cases.iter().map(|(r, g, _)| RewardInput::new(*r, *g)).collect();
    let out = p.score(&batch);
    for ((r, g, want), o) in cases.iter().zip(&out) {
        assert!(o.is_ok() && o.value == *want, "{r:?} vs {g:?}: {o:?}");
        assert_eq!(o.parts["correct"], *want);
    }
    assert_eq!(out[8].parts["has_answer"], 0.0);
    let out = p.score(&[RewardInput::new("4", None)]);
    assert!(matches!(&out[0].status, RewardStatus::Error(m) if m.contains("no ground_truth")), "{out:?}");
    let ready = "[gsm8k_reward] gsm8k_reward ready (fallback, 1 worker(s))";
    let lines = lines_until(&log, |l| l == ready);
    assert!(lines.iter().any(|l| l == ready), "{lines:?}");
}

#[test]
fn countdown_example() {
    let (p, _log) = plugin("countdown_reward.py", &[]);
    let meta = serde_json::json!({"numbers": [3, 5, 7, 25], "target": 40});
    let cases: &[(&str, f64)] = &[
        ("<answer>25 + 3*5</answer>", 1.0),
        ("<answer>25 + 3*5 = 40</answer>", 1.0),
        ("<answer>(25+3)*5</answer>", 0.1),
        ("<answer>(25 - 5) * (7 - 5)</answer>", 0.1),
        ("<answer>25 + 15</answer>", 0.1),
        ("<answer>3 / (7 - 7)</answer>", 0.0),
        ("<answer>__import__('os').system('ls')</answer>", 0.0),
        ("<answer>25 ** 3</answer>", 0.0),
        ("25 + 3*5", 0.0),
    ];
    let batch: Vec<RewardInput> = cases
        .iter()
        .map(|(r, _)| RewardInput { metadata: meta.clone(), ..RewardInput::new(*r, None) })
        .collect();
    let out = p.score(&batch);
    for ((r, want), o) in cases.iter().zip(&out) {
        assert!(o.is_ok() && o.value == *want, "{r:?}: {o:?}");
    }
}
