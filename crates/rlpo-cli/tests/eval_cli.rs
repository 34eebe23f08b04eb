//! `rlpo eval` through the binary on the tiny model: a 2-step run with `[eval]`, then `rlpo eval`
//! on the run directory with the same held-out problems, samples and seed. Its samples and
//! summary equal the evaluation the trainer logged after its last step (same weights, same
//! seeds, same decode path), the summary agrees with numbers recomputed from samples.jsonl by
//! hand, the audit file lists exactly the weak correct judgements, and bad arguments fail with
//! the flag named.

mod common;
use common::*;
use std::path::Path;

fn recipe(root: &Path) -> std::path::PathBuf {
    let text = format!(
        r#"
[run]
name = "ev"
seed = 4
threads = 1
[model]
path = "{model}"
[rollout]
group_size = 4
max_new_tokens = 8
threads_per_worker = 1
[reward]
[[reward.fns]]
kind = "math"
extract = "last_number"
[[reward.fns]]
kind = "format"
pattern = '[0-9]'
matched = 0.5
unmatched = 0.0
[optim]
lr = 1e-3
[trainer]
total_steps = 2
prompts_per_step = 2
[checkpoint]
root = "{root}"
save_every = 0
save_final = false
[metrics]
console = false
tensorboard = false
[eval]
every = 2
problems = 3
samples = 4
k = [1, 2, 4]
[eval.data]
seed = 5
"#,
        model = fixture("tiny-qwen2").display(),
        root = root.display()
    );
    let path = root.join("ev.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn eval_of_a_run_matches_the_trainers_last_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    run_ok(rlpo().arg("train").arg(recipe(tmp.path())));
    let run = tmp.path().join("ev");
    let out_dir = tmp.path().join("out");
    let args = ["--data", "synthetic:arithmetic", "--data-seed", "5", "--problems", "3", "--samples", "4", "--k", "1,2,4", "--audit"];
    let out = run_ok(rlpo().arg("eval").arg("--model").arg(&run).args(args).arg("--out").arg(&out_dir));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("pass@k") && stdout.contains("audit math:"), "{stdout}");

    // The same samples as the trainer's evaluation after step 2, to the byte.
    let trainer_samples = read(&run.join("eval/step-000002.samples.jsonl"));
    assert!(!trainer_samples.is_empty());
    assert_eq!(read(&out_dir.join("samples.jsonl")), trainer_samples, "rlpo eval and [eval] disagree");
    let summary = json(&out_dir.join("summary.json"));
    assert_eq!(summary, json(&run.join("eval/step-000002.summary.json")));

    // The summary against a hand computation over samples.jsonl.
    let rows: Vec<serde_json::Value> = read(&out_dir.join("samples.jsonl")).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 12);
    let correct = |r: &serde_json::Value| r["correct"].as_bool().unwrap();
    let o = &summary["overall"];
    let pass1 = rows.iter().filter(|r| correct(r)).count() as f64 / 12.0;
    assert!((o["by_k"][0]["pass@k"].as_f64().unwrap() - pass1).abs() < 1e-12);
    // pass@4 with n = 4: share of problems with any correct sample.
    let any = (0..3).filter(|p| rows.iter().any(|r| r["problem"] == *p && correct(r))).count() as f64 / 3.0;
    assert!((o["by_k"][2]["pass@k"].as_f64().unwrap() - any).abs() < 1e-12);
    let mean: f64 = rows.iter().map(|r| r["reward"].as_f64().unwrap()).sum::<f64>() / 12.0;
    assert!((o["mean_reward"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert_eq!(summary["correct_by"], "math");
    // `correct` is the math verifier's verdict, i.e. its part is 1.
    for r in &rows {
        assert_eq!(correct(r), r["parts"]["math"] == 1.0, "{r}");
    }
    // The audit lists exactly the weak correct math judgements.
    let weak = rows.iter().filter(|r| {
        let a = &r["answers"]["math"];
        a["correct"] == true && (a["canonical"] == false || a["candidates"].as_array().unwrap().len() > 1)
    });
    let audit = read(&out_dir.join("audit.jsonl"));
    assert_eq!(audit.lines().count(), weak.count());
    assert_eq!(o["weak_correct"].as_u64().unwrap() as usize, audit.lines().count());

    // Without a verifier, correct = reward > 0 (the trainer's pass rate); the tiny model's digits
    // make that non-trivial, so pass@k is checked against C(n-c, k) / C(n, k) by hand.
    let fmt_only = r#"reward.fns=[{kind = "format", pattern = "[0-9]", matched = 1.0, unmatched = 0.0}]"#;
    let fo = tmp.path().join("fmt");
    run_ok(rlpo().arg("eval").arg("--model").arg(&run).args(args).args(["--set", fmt_only]).arg("--out").arg(&fo));
    let s = json(&fo.join("summary.json"));
    assert_eq!(s["correct_by"], "reward > 0");
    let rows: Vec<serde_json::Value> = read(&fo.join("samples.jsonl")).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let c: Vec<usize> = (0..3).map(|p| rows.iter().filter(|r| r["problem"] == p && r["reward"].as_f64().unwrap() > 0.0).count()).collect();
    assert!(c.iter().sum::<usize>() > 0 && c.iter().any(|&x| x < 4), "want a mix of right and wrong samples: {c:?}");
    let choose = |n: usize, k: usize| -> f64 { if k > n { 0.0 } else { (0..k).map(|i| (n - i) as f64 / (k - i) as f64).product() } };
    for (i, k) in [1usize, 2, 4].into_iter().enumerate() {
        let want = c.iter().map(|&ci| 1.0 - choose(4 - ci, k) / choose(4, k)).sum::<f64>() / 3.0;
        let got = s["overall"]["by_k"][i]["pass@k"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "pass@{k}: {got} vs {want} (c = {c:?})");
    }

    // A plain HF directory works too (the embedded quickstart recipe supplies the settings).
    let out = run_ok(rlpo().arg("eval").arg("--model").arg(fixture("tiny-qwen2")).args(["--data", "synthetic:arithmetic", "--problems", "1", "--samples", "2", "--max-new-tokens", "4"]).arg("--out").arg(tmp.path().join("hf")));
    assert!(text(&out.stderr).contains("training data"), "the recipe's own data is pointed out");
    assert_eq!(read(&tmp.path().join("hf/samples.jsonl")).lines().count(), 2);

    // Bad arguments name the flag.
    let bad = rlpo().arg("eval").arg("--model").arg(&run).args(["--data", "x.csv"]).output().unwrap();
    assert!(!bad.status.success() && text(&bad.stderr).contains("--data x.csv"), "{}", text(&bad.stderr));
    let bad = rlpo().arg("eval").arg("--model").arg(&run).args(["--data", "synthetic:arithmetic", "--samples", "4", "--k", "8"]).output().unwrap();
    assert!(!bad.status.success() && text(&bad.stderr).contains("--k"), "{}", text(&bad.stderr));
}
