//! Stage 9: the numbers of one step, from the rollouts, the learner batch, the plan and the update.

use crate::batch::LearnerBatch;
use crate::learner::UpdateReport;
use crate::metrics::StepMetrics;
use crate::trainer::ScoredRollouts;
use rlpo_algo::StepPlan;
use rlpo_reward::RewardSet;
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

fn mean_std(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn masked_values(t: &Tensor, mask: &Tensor) -> Vec<f64> {
    Vec::try_from(t.masked_select(&mask.gt(0.0)).to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default()
}

/// Fill rollout, reward, selection metrics, histograms and sample texts.
#[allow(clippy::too_many_arguments)]
pub fn fill(
    m: &mut StepMetrics,
    r: &ScoredRollouts,
    batch: &LearnerBatch,
    plan: &StepPlan,
    shaped: &Tensor,
    entropy: &Tensor,
    rewards: &RewardSet,
    text_samples: usize,
) {
    let (mean, std) = mean_std(&r.scores);
    m.set("reward/mean", mean);
    m.set("reward/std", std);
    // The verifier's correctness (`reward.correctness`), not `reward > 0`; absent without one.
    if r.correct.iter().all(|c| c.is_finite()) {
        m.set("reward/pass_rate", mean_std(&r.correct).0);
    }
    let shaped_v: Vec<f64> = Vec::try_from(shaped.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default();
    m.set("reward/shaped_mean", mean_std(&shaped_v).0);
    let mut parts: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for o in &r.outputs {
        for (k, v) in &o.parts {
            parts.entry(k.clone()).or_default().push(*v);
        }
    }
    for (k, vs) in &parts {
        let (pm, ps) = mean_std(vs);
        m.set(&format!("reward/{k}_mean"), pm);
        m.set(&format!("reward/{k}_std"), ps);
    }
    for (k, v) in rewards.metrics().scalars() {
        m.set(k, v);
    }
    let lens: Vec<f64> = batch.response_lens.iter().map(|&l| l as f64).collect();
    m.set("response/length_mean", mean_std(&lens).0);
    m.set("response/length_max", lens.iter().copied().fold(0.0, f64::max));
    let truncated: Vec<f64> = Vec::try_from(batch.truncated.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default();
    m.set("response/clip_ratio", mean_std(&truncated).0);
    let ent = masked_values(entropy, &batch.response_mask);
    m.set("rollout/entropy_mean", mean_std(&ent).0);

    let s = plan.summary();
    m.set("select/rows", s.rows as f64);
    m.set("select/kept_rows", s.kept_rows as f64);
    m.set("select/valid_tokens", s.valid_tokens);
    m.set("select/kept_tokens", s.kept_tokens);
    m.set("select/kept_token_frac", if s.valid_tokens > 0.0 { s.kept_tokens / s.valid_tokens } else { 0.0 });
    m.set("select/kept_row_frac", if s.rows > 0 { s.kept_rows as f64 / s.rows as f64 } else { 0.0 });
    // The report's HAPO panels: the temperature tokens were drawn at, and the per-token clip widths.
    let temps: Vec<f64> = r.groups.iter().flat_map(|g| &g.completions).flat_map(|c| c.temperatures.iter().map(|&t| f64::from(t))).collect();
    m.set("rollout/temperature_mean", mean_std(&temps).0);
    for (name, w) in [("hapo/clip_low_mean", &plan.clip.low), ("hapo/clip_high_mean", &plan.clip.high)] {
        if let rlpo_algo::ClipWidth::PerToken(t) = w {
            m.set(name, mean_std(&masked_values(&t.expand_as(&batch.response_mask), &batch.response_mask)).0);
        }
    }
    m.set("select/hapo_fallback_groups", s.fallback_groups as f64);
    if let Some(d) = &plan.d3s {
        m.set("select/d3s_samples_per_group", d.samples_per_group as f64);
        m.set("select/d3s_token_keep", d.token_keep);
    }
    if let Some(mm) = &plan.mismatch {
        set_mismatch(m, mm);
    }
    if let Some(c) = &plan.correction {
        let key = match c.mode {
            rlpo_algo::rollout_corr::CorrectionMode::Truncate => "rollout/truncated_frac",
            rlpo_algo::rollout_corr::CorrectionMode::Mask => "rollout/masked_frac",
        };
        m.set(key, if c.valid_tokens > 0.0 { c.corrected_tokens / c.valid_tokens } else { 0.0 });
    }
    m.set("filter/dropped_groups", r.dropped_groups as f64);
    m.set("filter/gen_batches", r.gen_batches as f64);

    let adv: Vec<f64> = Vec::try_from(plan.advantages.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default();
    m.histograms.insert("reward/values".into(), r.scores.clone());
    m.histograms.insert("advantage/values".into(), adv);
    m.histograms.insert("rollout/entropy".into(), ent);
    m.histograms.insert("response/lengths".into(), lens);
    let g = r.groups.first().map_or(1, |grp| grp.completions.len());
    for i in 0..text_samples.min(r.responses.len()) {
        let row = i * g; // first sample of the first groups: different prompts
        if row >= r.responses.len() {
            break;
        }
        let text = format!(
            "**prompt:** {}\n\n**response:** {}\n\n**reward:** {:.3}",
            r.prompts.texts[row / g].replace('\n', "  \n"),
            r.responses[row].replace('\n', "  \n"),
            r.scores[row]
        );
        m.texts.push((format!("samples/{i}"), text));
    }
}

/// `rollout/mismatch_kl` (mean k3 of `old_logp − rollout_logp`) and `rollout/mismatch_max`
/// (largest `|old_logp − rollout_logp|`).
fn set_mismatch(m: &mut StepMetrics, mm: &rlpo_algo::MismatchStats) {
    if let Some(kl) = mm.kl() {
        m.set("rollout/mismatch_kl", kl);
        m.set("rollout/mismatch_max", mm.max_abs);
    }
}

/// Fill actor / optimizer metrics from the update. With no optimizer step applied (all skipped:
/// empty or non-finite), the loss, clip fraction, gradient norm, learning rate, KL and NTP loss
/// are NaN — no value (`null` in JSONL, absent in TensorBoard) — not the report's zeros, which
/// would read as a real update with zero loss and zero learning rate.
pub fn fill_update(m: &mut StepMetrics, rep: &UpdateReport) {
    let applied = |v: f64| if rep.applied > 0 { v } else { f64::NAN };
    m.set("actor/pg_loss", applied(rep.pg_loss));
    m.set("actor/clip_frac", applied(rep.clip_frac));
    m.set("actor/grad_norm", applied(rep.grad_norm));
    m.set("optim/lr", applied(rep.lr));
    m.set("optim/applied_steps", rep.applied as f64);
    m.set("optim/skipped_empty", rep.skipped_empty as f64);
    m.set("optim/skipped_nonfinite", rep.skipped_nonfinite as f64);
    // KL and NTP loss are only reported by applied steps: absent when none was.
    if let Some(k) = rep.kl {
        m.set("actor/kl", applied(k));
    }
    if let Some(gap) = rep.logprob_gap {
        m.set("actor/rollout_logprob_gap", gap);
    }
    if let Some(e) = rep.entropy {
        m.set("actor/entropy", e);
    }
    if let Some(n) = rep.ntp_loss {
        m.set("actor/ntp_loss", applied(n));
    }
    // Old log-probs taken from the update's own forward: the learner measured the mismatch there.
    if let Some(mm) = &rep.mismatch {
        set_mismatch(m, mm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{JsonlSink, MetricSink};

    /// A step whose optimizer steps were all skipped logs no lr, grad norm or loss: NaN in the
    /// metrics, `null` in metrics.jsonl (read back as JSON), while the skip counters are numbers.
    #[test]
    fn skipped_updates_log_no_value() {
        let skipped = UpdateReport { skipped_nonfinite: 2, ..Default::default() };
        let mut m = StepMetrics { step: 4, ..Default::default() };
        fill_update(&mut m, &skipped);
        for k in ["actor/pg_loss", "actor/clip_frac", "actor/grad_norm", "optim/lr"] {
            assert!(m.get(k).unwrap().is_nan(), "{k} = {:?}", m.get(k));
        }
        assert_eq!(m.get("optim/skipped_nonfinite"), Some(2.0));
        assert_eq!(m.get("optim/applied_steps"), Some(0.0));
        assert_eq!(m.get("actor/kl"), None);

        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("metrics.jsonl");
        let mut sink = JsonlSink::open(&path).unwrap();
        sink.record(&m).unwrap();
        let applied = UpdateReport { applied: 1, lr: 1e-3, grad_norm: 0.5, pg_loss: -0.1, clip_frac: 0.0, ..Default::default() };
        let mut m2 = StepMetrics { step: 5, ..Default::default() };
        fill_update(&mut m2, &applied);
        sink.record(&m2).unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let (a, b) = (&lines[0]["metrics"], &lines[1]["metrics"]);
        for k in ["actor/pg_loss", "actor/grad_norm", "optim/lr"] {
            assert!(a[k].is_null(), "{k}: {}", a[k]);
            assert!(b[k].is_number(), "{k}: {}", b[k]);
        }
        assert_eq!(b["optim/lr"].as_f64(), Some(1e-3));
        // A zero clip fraction of an applied step stays a real 0.
        assert_eq!(b["actor/clip_frac"].as_f64(), Some(0.0));
        assert_eq!(a["optim/skipped_nonfinite"].as_f64(), Some(2.0));
    }
}
