//! `rlpo report RUN` -> `RUN/report.html`: one self-contained page (inline CSS, inline script,
//! data embedded as JSON; no network, opens from disk) that tells the story of a run: headline
//! numbers, curves of every logged quantity ([`panels`]), the held-out coverage curve, a sample
//! browser (step -> prompts, responses, reward parts, advantage, kept) and the recipe.
//!
//! Inputs, all optional except `metrics.jsonl`: `metrics.jsonl` (lines of the same step are
//! merged: the step-0 evaluation and a step's own line), `rollouts.jsonl` ([`rollouts`]),
//! `eval/step-NNNNNN.summary.json` (the coverage curves), `recipe.resolved.toml`. `rlpo train`
//! rewrites the page every `metrics.report_every` steps and at the end.
//!
//! The page draws each series twice: raw (thin) and smoothed (TensorBoard's debiased EMA,
//! weight 0.6). Each raw path carries `data-metric` and its plot area its data-to-pixel mapping,
//! so a test can read the plotted points back from the DOM.

mod html;
pub mod panels;
pub mod rollouts;

pub use rollouts::{RolloutLog, RolloutRow, ROLLOUTS_FILE};

use crate::error::{io, Result, TrainError};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// At most this many steps of samples go into the page (evenly spaced, first and last kept).
const MAX_SAMPLE_STEPS: usize = 200;

/// `metrics.jsonl` merged by step: the steps in order and, per key, one value per step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricTable {
    /// Steps, ascending (0 = the evaluation before training).
    pub steps: Vec<u64>,
    /// Key -> value per step (`None`: not logged at that step, or not finite).
    pub series: BTreeMap<String, Vec<Option<f64>>>,
    /// Lines that did not parse (e.g. cut by a crash), skipped.
    pub bad_lines: usize,
}

/// Read and merge `<run>/metrics.jsonl`.
pub fn read_metrics(run_dir: &Path) -> Result<MetricTable> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
    let mut by_step: BTreeMap<u64, BTreeMap<String, Option<f64>>> = BTreeMap::new();
    let mut bad_lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Option<Value> = serde_json::from_str(line).ok();
        let (Some(step), Some(m)) = (v.as_ref().and_then(|v| v["step"].as_u64()), v.as_ref().and_then(|v| v["metrics"].as_object())) else {
            bad_lines += 1;
            continue;
        };
        let row = by_step.entry(step).or_default();
        for (k, x) in m {
            row.insert(k.clone(), x.as_f64());
        }
    }
    let steps: Vec<u64> = by_step.keys().copied().collect();
    let mut series: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for (i, row) in by_step.values().enumerate() {
        for (k, v) in row {
            series.entry(k.clone()).or_insert_with(|| vec![None; steps.len()])[i] = *v;
        }
    }
    Ok(MetricTable { steps, series, bad_lines })
}

/// Mean of the first (or last) `n` logged values of a series.
fn window_mean(v: &[Option<f64>], n: usize, last: bool) -> Option<f64> {
    let vals: Vec<f64> = v.iter().flatten().copied().collect();
    let w: Vec<f64> = if last { vals.iter().rev().take(n).copied().collect() } else { vals.iter().take(n).copied().collect() };
    (!w.is_empty()).then(|| w.iter().sum::<f64>() / w.len() as f64)
}

/// The headline numbers: start -> end of the main curves, steps, wall time.
fn headline(t: &MetricTable, total_steps: Option<u64>) -> Value {
    let get = |k: &str| t.series.get(k).map(Vec::as_slice).unwrap_or(&[]);
    // At most 5 steps at each end, and never overlapping halves of a short run.
    let pair = |k: &str, most: usize| {
        let n = (get(k).iter().flatten().count() / 2).clamp(1, most);
        json!({"first": window_mean(get(k), n, false), "last": window_mean(get(k), n, true), "window": n})
    };
    let eval1 = get("eval/pass@1");
    let eval_steps: Vec<u64> = t.steps.iter().zip(eval1).filter(|(_, v)| v.is_some()).map(|(s, _)| *s).collect();
    let seconds: f64 = ["timing/step_s", "timing/eval_s"].iter().flat_map(|k| get(k).iter().flatten()).sum();
    json!({
        "reward": pair("reward/mean", 5),
        "pass_rate": pair("reward/pass_rate", 5),
        "length": pair("response/length_mean", 5),
        "eval_pass1": pair("eval/pass@1", 1),
        "eval_steps": [eval_steps.first(), eval_steps.last()],
        "steps_done": t.steps.iter().zip(get("timing/step_s")).filter(|(_, v)| v.is_some()).map(|(s, _)| *s).max(),
        "total_steps": total_steps,
        "seconds": seconds,
    })
}

/// The first and last evaluation's coverage curves (`eval/step-NNNNNN.summary.json` of steps that
/// `metrics.jsonl` has evaluation numbers for).
fn coverage_curves(run_dir: &Path, t: &MetricTable) -> Vec<Value> {
    let Some(p1) = t.series.get("eval/pass@1") else { return Vec::new() };
    let steps: Vec<u64> = t.steps.iter().zip(p1).filter(|(_, v)| v.is_some()).map(|(s, _)| *s).collect();
    let mut picks: Vec<u64> = steps.first().into_iter().chain(steps.last()).copied().collect();
    picks.dedup();
    picks
        .into_iter()
        .filter_map(|s| {
            let text = std::fs::read_to_string(run_dir.join("eval").join(format!("step-{s:06}.summary.json"))).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            Some(json!({"step": s, "coverage": v["overall"]["coverage"], "maj": v["overall"]["by_k"]}))
        })
        .collect()
}

/// Sample rows by step, at most [`MAX_SAMPLE_STEPS`] steps.
fn samples(run_dir: &Path) -> (BTreeMap<u64, Vec<RolloutRow>>, usize) {
    let (rows, bad) = rollouts::read_rows(run_dir);
    let mut by_step: BTreeMap<u64, Vec<RolloutRow>> = BTreeMap::new();
    for r in rows {
        by_step.entry(r.step).or_default().push(r);
    }
    if by_step.len() > MAX_SAMPLE_STEPS {
        let steps: Vec<u64> = by_step.keys().copied().collect();
        let keep: std::collections::BTreeSet<u64> =
            (0..MAX_SAMPLE_STEPS).map(|i| steps[i * (steps.len() - 1) / (MAX_SAMPLE_STEPS - 1)]).collect();
        by_step.retain(|s, _| keep.contains(s));
    }
    (by_step, bad)
}

/// Everything the page shows, as the JSON its script reads.
#[derive(Debug, Serialize)]
struct PageData {
    run: Value,
    steps: Vec<u64>,
    metrics: BTreeMap<String, Vec<Option<f64>>>,
    panels: Vec<panels::Panel>,
    left_out: Vec<String>,
    headline: Value,
    coverage: Vec<Value>,
    samples: BTreeMap<u64, Vec<RolloutRow>>,
    recipe: Option<String>,
    warnings: Vec<String>,
}

/// Build the page of `run_dir` as a string.
pub fn render(run_dir: &Path) -> Result<String> {
    let table = read_metrics(run_dir)?;
    let recipe = std::fs::read_to_string(run_dir.join("recipe.resolved.toml")).ok();
    let parsed: Option<toml::Value> = recipe.as_deref().and_then(|t| toml::from_str(t).ok());
    let at = |a: &str, b: &str| parsed.as_ref().and_then(|v| v.get(a)).and_then(|v| v.get(b)).cloned();
    let (chosen, left_out) = panels::choose(&table.series, panels::Features::from_recipe(recipe.as_deref()));
    let (samples, bad_rollouts) = samples(run_dir);
    let mut warnings = Vec::new();
    if table.bad_lines > 0 {
        warnings.push(format!("metrics.jsonl: {} unreadable line(s) skipped", table.bad_lines));
    }
    if bad_rollouts > 0 {
        warnings.push(format!("rollouts.jsonl: {bad_rollouts} unreadable line(s) skipped"));
    }
    let name = at("run", "name").and_then(|v| v.as_str().map(str::to_string)).unwrap_or_else(|| run_dir.file_name().map_or("run".into(), |n| n.to_string_lossy().into_owned()));
    let run = json!({
        "name": name,
        "dir": run_dir.display().to_string(),
        "model": at("model", "path").and_then(|v| v.as_str().map(str::to_string)),
        "algorithm": algorithm_label(parsed.as_ref()),
    });
    let total_steps = at("trainer", "total_steps").and_then(|v| v.as_integer()).map(|v| v as u64);
    let data = PageData {
        headline: headline(&table, total_steps),
        coverage: coverage_curves(run_dir, &table),
        run,
        steps: table.steps,
        metrics: table.series,
        panels: chosen,
        left_out,
        samples,
        recipe,
        warnings,
    };
    let json = serde_json::to_string(&data).map_err(|e| TrainError::Aborted(format!("report data: {e}")))?;
    Ok(html::page(&name, &json))
}

/// `GRPO + D³S`, `DAPO + HAPO`, ... from the resolved recipe.
fn algorithm_label(v: Option<&toml::Value>) -> String {
    let Some(a) = v.and_then(|v| v.get("algorithm")) else { return "unknown".into() };
    let mut parts = vec![a.get("advantage").and_then(|x| x.as_str()).unwrap_or("grpo").to_uppercase().replace("DR_GRPO", "Dr. GRPO")];
    if a.get("dapo").and_then(|d| d.get("filter_groups")).is_some() {
        parts.push("DAPO filter".into());
    }
    for (k, label) in [("d3s", "D³S"), ("hapo", "HAPO"), ("rmt", "RMT")] {
        if a.get(k).is_some() && !parts.iter().any(|p| p == label) {
            parts.push(label.into());
        }
    }
    parts.dedup();
    parts.join(" + ")
}

/// Write `<run>/report.html` (atomically) and return its path.
pub fn write(run_dir: &Path) -> Result<PathBuf> {
    let page = render(run_dir)?;
    let path = run_dir.join("report.html");
    crate::eval::during_training::write_atomic(&path, page.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_merge_by_step_and_skip_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"step\":0,\"metrics\":{\"eval/pass@1\":0.25}}\n{\"step\":1,\"metrics\":{\"reward/mean\":0.5,\"x\":null}}\n{\"step\":2,\"metr\n{\"step\":2,\"metrics\":{\"reward/mean\":1.0,\"eval/pass@1\":0.5}}\n",
        )
        .unwrap();
        let t = read_metrics(dir.path()).unwrap();
        assert_eq!(t.steps, [0, 1, 2]);
        assert_eq!(t.series["reward/mean"], [None, Some(0.5), Some(1.0)]);
        assert_eq!(t.series["eval/pass@1"], [Some(0.25), None, Some(0.5)]);
        assert_eq!(t.series["x"], [None, None, None]);
        assert_eq!(t.bad_lines, 1);
        let page = render(dir.path()).unwrap();
        assert!(page.contains("<svg") || page.contains("report-data"));
        for net in ["src=\"http", "href=\"http", "url(http", "@import", "fetch(", "XMLHttpRequest"] {
            assert!(!page.contains(net), "the page must not load anything: found {net}");
        }
    }

    #[test]
    fn script_breaking_text_is_escaped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), "{\"step\":1,\"metrics\":{\"reward/mean\":0.5}}\n").unwrap();
        let row = RolloutRow {
            step: 1,
            prompt: "</script><script>alert(1)</script>".into(),
            response: "<!-- x".into(),
            reward: Some(1.0),
            parts: BTreeMap::new(),
            advantage: Some(0.5),
            kept: true,
        };
        std::fs::write(dir.path().join(ROLLOUTS_FILE), serde_json::to_string(&row).unwrap() + "\n").unwrap();
        let page = render(dir.path()).unwrap();
        assert!(!page.contains("</script><script>alert"), "data must not close the script element");
        assert!(page.contains("\\u003c/script"));
    }
}
