//! `rlpo inspect` and `rlpo export` through the binary, on a 2-step tiny run with a checkpoint
//! per step: the report's step, version, recipe and metrics match the run's own files; a flipped
//! byte or a missing file fails with a non-zero exit naming the file; export of a run directory
//! takes its newest checkpoint that verifies.

mod common;
use common::*;

/// The value printed on the report line starting with `  <key> `.
fn report_value<'a>(report: &'a str, key: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no line for {key} in:\n{report}"))
        .split_whitespace()
        .last()
        .unwrap()
}

#[test]
fn inspect_reports_and_verifies_and_export_picks_a_verified_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(tmp.path(), "insp", 2, 1);
    run_ok(rlpo().arg("train").arg(&recipe));
    let run = tmp.path().join("insp");
    let step2 = run.join("checkpoints/step-000002");

    let out = run_ok(rlpo().arg("inspect").arg(&step2));
    let report = text(&out.stdout);
    assert_eq!(report_value(&report, "step"), "2", "{report}");
    assert_eq!(report_value(&report, "policy version"), "2", "{report}");
    assert_eq!(report_value(&report, "run.name"), "insp");
    assert_eq!(report_value(&report, "trainer.total_steps"), "2");
    assert_eq!(report_value(&report, "optim.lr"), "0.001");
    assert_eq!(report_value(&report, "model.path"), fixture("tiny-qwen2").display().to_string());
    assert!(report.contains("manifest        OK"), "{report}");
    // Metrics at save time are the run's step-2 metrics, to the last bit.
    let line = metric_lines(&run).into_iter().find(|l| l["step"] == 2).expect("step 2 in metrics.jsonl");
    for key in ["reward/mean", "actor/pg_loss", "response/length_mean", "train/policy_version"] {
        let want = line["metrics"][key].as_f64().unwrap_or_else(|| panic!("{key} not in metrics.jsonl"));
        let got: f64 = report_value(&report, key).parse().unwrap();
        assert_eq!(got, want, "{key}");
    }
    // File sizes: the optimizer file's line shows its size on disk.
    let opt_bytes = std::fs::metadata(step2.join("optimizer.safetensors")).unwrap().len();
    let opt_line = report.lines().find(|l| l.trim_start().starts_with("optimizer.safetensors")).unwrap();
    assert!(opt_line.ends_with(&rlpo_train::inspect::human_bytes(opt_bytes)), "{opt_line} vs {opt_bytes} bytes");
    assert!(report.contains("model/model.safetensors") && report.contains("  total "), "{report}");
    // A run directory means its newest checkpoint.
    let out = run_ok(rlpo().arg("inspect").arg(&run));
    assert!(text(&out.stdout).contains("step-000002"));

    let hf = tmp.path().join("hf");
    let out = run_ok(rlpo().args(["export".as_ref(), run.as_os_str(), "--out".as_ref(), hf.as_os_str(), "--dtype".as_ref(), "f16".as_ref()]));
    assert!(text(&out.stdout).contains("(step 2)"), "{}", text(&out.stdout));
    let cfg = read(&hf.join("config.json"));
    assert!(cfg.contains("\"torch_dtype\": \"float16\""), "{cfg}");

    // One flipped byte: inspect fails naming the file; export of the run takes step 1.
    let w = step2.join("optimizer.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0x04;
    std::fs::write(&w, bytes).unwrap();
    let out = rlpo().arg("inspect").arg(&step2).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("manifest        FAILED"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("optimizer.safetensors"), "{}", text(&out.stderr));
    let hf1 = tmp.path().join("hf1");
    let out = run_ok(rlpo().args(["export".as_ref(), run.as_os_str(), "--out".as_ref(), hf1.as_os_str()]));
    assert!(text(&out.stdout).contains("(step 1)"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("step-000002"), "no warning naming the corrupted checkpoint: {}", text(&out.stderr));
    assert!(read(&hf1.join("config.json")).contains("\"torch_dtype\": \"float32\""), "default dtype = the trained one");

    // A missing file.
    let step1 = run.join("checkpoints/step-000001");
    std::fs::remove_file(step1.join("trainer_state.json")).unwrap();
    let out = rlpo().arg("inspect").arg(&step1).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("trainer_state.json"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("trainer state   UNREADABLE"), "{}", text(&out.stdout));
    // Nothing there at all.
    let out = rlpo().arg("inspect").arg(tmp.path().join("nope")).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));
}
