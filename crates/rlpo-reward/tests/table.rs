//! `reward_test_table`: the library side of `rlpo reward test --recipe R --samples S`.

use std::fs;

use rlpo_reward::reward_test_table;

#[test]
fn table_has_a_row_per_sample_parts_status_and_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("recipe.toml");
    let samples = dir.path().join("samples.jsonl");
    fs::write(
        &recipe,
        r#"
[model]
path = "not read by the reward test"

[reward]
on_error = "zero"

[[reward.fns]]
kind = "math"

[[reward.fns]]
kind = "format"
weight = 0.5
"#,
    )
    .expect("write recipe");
    fs::write(
        &samples,
        r#"{"prompt": "2+2?", "response": "<think>add</think> \\boxed{4}", "ground_truth": "4"}
{"response": "<think>hmm</think> 5", "answer": 4}
{"response": "no think, no answer"}
"#,
    )
    .expect("write samples");
    let table = reward_test_table(&recipe, &samples).expect("table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["#", "value", "math", "format", "response", "status"]);
    // Row 0: math 1, format 1 → 1 + 0.5·1 = 1.5.
    let r0: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&r0[..4], ["0", "1.5000", "1.0000", "1.0000"]);
    assert_eq!(r0.last(), Some(&"ok"));
    // Row 1: wrong answer, good format → 0.5.
    let r1: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&r1[..4], ["1", "0.5000", "0.0000", "1.0000"]);
    // Row 2: no ground truth → math fails: no total, no math part, format 0, error status.
    let r2: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(&r2[..4], ["2", "-", "-", "0.0000"]);
    assert!(lines[3].contains("error: math: sample has no ground_truth"), "{}", lines[3]);
    // Summary: mean over the 2 ok samples = (1.5 + 0.5) / 2.
    assert!(lines[4].starts_with("3 samples: mean 1.0000 over 2 ok; errors 1, timeouts 0"), "{}", lines[4]);
    assert!(lines[4].contains("on_error = \"zero\""), "{}", lines[4]);
}

#[test]
fn table_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("r.toml");
    let samples = dir.path().join("s.jsonl");
    fs::write(&recipe, "[reward]\n[[reward.fns]]\nkind = \"math\"\n").expect("write");
    fs::write(&samples, "{\"response\": \"1\"}\nnot json\n").expect("write");
    let e = reward_test_table(&recipe, &samples).expect_err("bad line").to_string();
    assert!(e.contains("s.jsonl:2:"), "{e}");
    let e = reward_test_table(&dir.path().join("missing.toml"), &samples).expect_err("no recipe").to_string();
    assert!(e.contains("missing.toml"), "{e}");
}
