//! Fuzzers (property tests with a bounded number of cases) of the reward crate's parsers: the
//! plugin JSON-lines reader (`parse_reply`, every line a plugin writes to stdout) and the
//! `[reward]` recipe section. Random bytes and mutations of valid inputs must give a value or an
//! error, never a panic; an answer accepted as a reward must be finite.

#[path = "../../../build_support/mutate.rs"]
mod mutate;

use proptest::prelude::*;
use rlpo_reward::external::protocol::{parse_reply, ReplyLine};
use std::path::Path;

const REPLIES: &[&str] = &[
    r#"{"id": 17, "reward": 1.0, "parts": {"correct": 1.0, "format": 0.5}}"#,
    r#"{"id": 18, "error": "ground truth is not a number"}"#,
    r#"{"id": 0, "ready": true, "workers": 4}"#,
    r#"{"id": 3, "reward": -0.25, "parts": null, "extra": [1, 2, {"x": null}]}"#,
];

const SECTION: &str = r#"[reward]
on_error = "drop_group"
max_failure_fraction = 0.25
failure_window = 64
[[reward.fns]]
kind = "math"
extract = "boxed"
incorrect = -1.0
[[reward.fns]]
kind = "format"
pattern = '(?s)\A\s*<think>.*?</think>\s*\S.*\z'
weight = 0.1
[[reward.fns]]
kind = "overlong"
cache_len = 16
max_len = 64
[[reward.fns]]
kind = "external"
name = "judge"
command = ["python3", "judge.py"]
timeout_s = 5.0
concurrency = 4
pass_env = ["HF_HOME"]
"#;

fn check_reply(line: &str) {
    if let ReplyLine::Answer { result: Ok((reward, parts)), .. } = parse_reply(line) {
        assert!(reward.is_finite(), "{line:?} gave reward {reward}");
        assert!(parts.values().all(|v| v.is_finite()), "{line:?} gave parts {parts:?}");
    }
}

fn check_section(text: &str) {
    if let Ok(cfg) = rlpo_reward::parse_reward_config(text, Path::new("fuzz.toml")) {
        // Validation of whatever parsed must not panic either (plugins are not started).
        let _ = rlpo_reward::validate(&cfg);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn plugin_lines_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_reply(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn plugin_lines_from_mutated_answers(seed in 0..REPLIES.len(), ops in mutate::ops(8)) {
        check_reply(&String::from_utf8_lossy(&mutate::apply(REPLIES[seed].as_bytes(), &ops)));
    }

    #[test]
    fn reward_sections_from_mutations(ops in mutate::ops(12)) {
        check_section(&String::from_utf8_lossy(&mutate::apply(SECTION.as_bytes(), &ops)));
    }

    #[test]
    fn reward_sections_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check_section(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn the_seeds_are_valid() {
    for r in REPLIES {
        assert!(!matches!(parse_reply(r), ReplyLine::Garbage(_)), "{r}");
    }
    let cfg = rlpo_reward::parse_reward_config(SECTION, Path::new("seed.toml")).expect("seed section parses");
    rlpo_reward::validate(&cfg).expect("seed section validates");
}
