//! The trainer's hand-written TensorBoard event files, read back with the real `tensorboard`
//! package (pinned in scripts/requirements.txt, installed into `.venv` by scripts/setup.sh):
//! scalars, histograms and text samples are found under the right tags and steps, and the
//! scalar values agree with `metrics.jsonl`.

mod common;

use common::*;
use rlpo_train::Trainer;
use serde_json::Value;
use std::process::Command;

/// Reads every event file under argv[1] with TensorBoard's own loader (which checks the
/// TFRecord CRCs) and prints what it found as JSON.
const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
ea.Reload()
tags = ea.Tags()
out = {"tags": {k: v for k, v in tags.items() if isinstance(v, list)}, "scalars": {}, "histograms": {}, "tensors": {}}
for t in tags["scalars"]:
    out["scalars"][t] = [[e.step, e.value] for e in ea.Scalars(t)]
for t in tags["histograms"]:
    out["histograms"][t] = [
        {"step": e.step, "num": e.histogram_value.num, "min": e.histogram_value.min,
         "max": e.histogram_value.max, "sum": e.histogram_value.sum,
         "buckets": sum(e.histogram_value.bucket)}
        for e in ea.Histograms(t)
    ]
for t in tags["tensors"]:
    plugin = ea.SummaryMetadata(t).plugin_data.plugin_name
    out["tensors"][t] = [
        {"step": e.step, "plugin": plugin, "dtype": e.tensor_proto.dtype,
         "text": [s.decode("utf-8") for s in e.tensor_proto.string_val]}
        for e in ea.Tensors(t)
    ]
print(json.dumps(out))
"#;

#[test]
fn tensorboard_reads_scalars_histograms_and_text() {
    let py = python();
    assert!(py.exists(), "{} missing: run scripts/setup.sh", py.display());
    let dir = tempfile::tempdir().unwrap();
    let body = format!("{ROLLOUT}{TRAINER}{REWARD_DIGIT}");
    let text = recipe_text(&fixture("tiny-qwen2"), dir.path(), "tb", &body);
    let mut t = Trainer::new(parse(&text)).unwrap();
    let run_dir = t.run_dir.clone();
    let ms: Vec<_> = (0..2).map(|_| t.step().unwrap()).collect();
    drop(t);

    let out = Command::new(&py).arg("-c").arg(READER).arg(run_dir.join("tensorboard")).output().unwrap();
    assert!(out.status.success(), "tensorboard reader failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let tb: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));

    // Scalars at steps 1 and 2, equal (to f32 precision) to the JSONL values of those steps.
    let jsonl = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{jsonl}");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
    }
    for tag in ["reward/mean", "actor/pg_loss", "timing/step_s", "select/kept_tokens", "response/length_mean"] {
        let pts = tb["scalars"][tag].as_array().unwrap_or_else(|| panic!("scalar {tag} not found; scalars: {}", tb["tags"]["scalars"]));
        let steps: Vec<u64> = pts.iter().map(|p| p[0].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2], "{tag} steps");
        for (p, l) in pts.iter().zip(&lines) {
            let tbv = p[1].as_f64().unwrap();
            let want = l["metrics"][tag].as_f64().unwrap_or_else(|| panic!("{tag} not in metrics.jsonl"));
            assert!((tbv - want).abs() <= 1e-6 * want.abs().max(1.0), "{tag} at step {}: tensorboard {tbv} vs jsonl {want}", p[0]);
        }
    }
    // Every finite scalar of the step is in TensorBoard.
    let mut tb_tags: Vec<&str> = tb["tags"]["scalars"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    tb_tags.sort_unstable();
    let mut logged: Vec<&str> =
        ms.iter().flat_map(|m| m.scalars.iter().filter(|(_, v)| v.is_finite()).map(|(k, _)| k.as_str())).collect();
    logged.sort_unstable();
    logged.dedup();
    assert_eq!(tb_tags, logged);

    // Histograms: one per step with every row's reward.
    let h = tb["histograms"]["reward/values"].as_array().unwrap_or_else(|| panic!("histogram reward/values not found: {}", tb["tags"]));
    assert_eq!(h.len(), 2);
    for (e, m) in h.iter().zip(&ms) {
        let vals = hist(m, "reward/values");
        assert_eq!(e["step"].as_u64(), Some(m.step));
        assert_eq!(e["num"].as_f64(), Some(vals.len() as f64));
        assert_eq!(e["buckets"].as_f64(), Some(vals.len() as f64));
        assert_eq!(e["min"].as_f64(), Some(vals.iter().copied().fold(f64::INFINITY, f64::min)));
        assert_eq!(e["max"].as_f64(), Some(vals.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
        assert!((e["sum"].as_f64().unwrap() - vals.iter().sum::<f64>()).abs() < 1e-9);
    }
    assert!(tb["histograms"]["advantage/values"].is_array());

    // Text samples: tensors of the text plugin, one per step, with the logged markdown.
    for (i, tag) in ["samples/0", "samples/1"].iter().enumerate() {
        let evs = tb["tensors"][tag].as_array().unwrap_or_else(|| panic!("text {tag} not found; tensors: {}", tb["tags"]["tensors"]));
        assert_eq!(evs.len(), 2, "{tag}");
        for (e, m) in evs.iter().zip(&ms) {
            assert_eq!(e["step"].as_u64(), Some(m.step), "{tag}");
            assert_eq!(e["plugin"], "text", "{tag}");
            assert_eq!(e["dtype"], 7, "{tag}: DT_STRING");
            let (want_tag, want_text) = &m.texts[i];
            assert_eq!(want_tag, tag);
            assert_eq!(e["text"], serde_json::json!([want_text]), "{tag} at step {}", m.step);
            assert!(want_text.contains("**response:**"));
        }
    }
}

/// A step whose optimizer updates were all skipped logs its lr, grad norm and losses as NaN
/// (`step_metrics::fill_update`): TensorBoard's own reader finds no point at that step for those
/// tags (not a 0), while the step's other scalars are there; metrics.jsonl has `null`.
#[test]
fn skipped_update_values_are_absent_in_tensorboard_and_null_in_jsonl() {
    use rlpo_train::learner::UpdateReport;
    use rlpo_train::metrics::{JsonlSink, MetricSink, StepMetrics, TensorBoardSink};
    let py = python();
    assert!(py.exists(), "{} missing: run scripts/setup.sh", py.display());
    let dir = tempfile::tempdir().unwrap();
    let mut tb_sink = TensorBoardSink::create(&dir.path().join("tb")).unwrap();
    let mut jsonl = JsonlSink::open(&dir.path().join("metrics.jsonl")).unwrap();
    let reports = [
        UpdateReport { applied: 1, lr: 1e-3, grad_norm: 0.5, pg_loss: -0.25, clip_frac: 0.125, ..Default::default() },
        UpdateReport { skipped_nonfinite: 1, ..Default::default() },
    ];
    for (i, rep) in reports.iter().enumerate() {
        let mut m = StepMetrics { step: i as u64 + 1, ..Default::default() };
        m.set("reward/mean", 0.5);
        rlpo_train::step_metrics::fill_update(&mut m, rep);
        tb_sink.record(&m).unwrap();
        jsonl.record(&m).unwrap();
    }
    tb_sink.finish().unwrap();
    let out = Command::new(&py).arg("-c").arg(READER).arg(dir.path().join("tb")).output().unwrap();
    assert!(out.status.success(), "tensorboard reader failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let tb: Value = serde_json::from_slice(&out.stdout).unwrap();
    let steps = |tag: &str| -> Vec<u64> { tb["scalars"][tag].as_array().unwrap().iter().map(|p| p[0].as_u64().unwrap()).collect() };
    for tag in ["optim/lr", "actor/grad_norm", "actor/pg_loss", "actor/clip_frac"] {
        assert_eq!(steps(tag), [1], "{tag}: a value at the skipped step 2");
    }
    assert_eq!(tb["scalars"]["optim/lr"][0][1].as_f64(), Some(1e-3f32 as f64));
    assert_eq!(steps("reward/mean"), [1, 2]);
    assert_eq!(steps("optim/skipped_nonfinite"), [1, 2]);
    let lines: Vec<Value> =
        std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines[1]["metrics"]["optim/lr"].is_null() && lines[1]["metrics"]["actor/grad_norm"].is_null());
    assert_eq!(lines[0]["metrics"]["optim/lr"].as_f64(), Some(1e-3));
}
