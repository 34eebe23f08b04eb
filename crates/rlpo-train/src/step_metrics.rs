//! Stage 9: the numbers of one step, from the rollouts, the learner batch, the plan and the update,
//! and the warnings for a step that cannot teach the policy anything ([`warnings`]).
//!
//! Signal metrics, each over the step's rows or groups:
//! - `reward/frac_zero_std`: groups whose rewards are all equal (every advantage 0, no gradient),
//!   over every group scored this step, including those a DAPO filter or `drop_group` removed
//!   (groups with a failed reward are left out);
//! - `reward/failed_frac`: rows whose reward failed (error or timeout), over every scored row;
//! - `reward/bonus_only_frac`: trained rows with a positive reward that the verifier
//!   (`reward.correctness`) calls wrong: reward that comes from format or length bonuses alone.

use crate::batch::LearnerBatch;
use crate::learner::UpdateReport;
use crate::metrics::StepMetrics;
use crate::trainer::ScoredRollouts;
use rlpo_algo::StepPlan;
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

/// The per-row facts of one step that its metrics read, in row order (groups contiguous).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepRows {
    /// Reward per row.
    pub scores: Vec<f64>,
    /// Verifier correctness per row (NaN without a verifier).
    pub correct: Vec<f64>,
    /// Named reward parts per row.
    pub parts: Vec<BTreeMap<String, f64>>,
    /// Response length per row.
    pub lens: Vec<f64>,
    /// 1 for a row cut at its length limit.
    pub truncated: Vec<f64>,
    /// Sum over every response token of the temperature it was drawn at, and their count.
    pub temperature_sum: f64,
    /// Tokens in `temperature_sum`.
    pub temperature_tokens: f64,
    /// `(prompt, response, reward)` of the first row of each of the first groups.
    pub samples: Vec<(String, String, f64)>,
    /// Groups dropped by the filter or the reward policy.
    pub dropped_groups: f64,
    /// Generation batches used.
    pub gen_batches: f64,
}

impl StepRows {
    /// This process's rows: `r` and its learner batch; `samples` first groups give text samples.
    pub fn local(r: &ScoredRollouts, batch: &LearnerBatch, samples: usize) -> StepRows {
        let g = r.groups.first().map_or(1, |grp| grp.completions.len()).max(1);
        StepRows {
            scores: r.scores.clone(),
            correct: r.correct.clone(),
            parts: r.outputs.iter().map(|o| o.parts.clone()).collect(),
            lens: batch.response_lens.iter().map(|&l| l as f64).collect(),
            truncated: Vec::try_from(batch.truncated.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default(),
            temperature_sum: r.groups.iter().flat_map(|g| &g.completions).flat_map(|c| c.temperatures.iter().map(|&t| f64::from(t))).sum(),
            temperature_tokens: r.groups.iter().flat_map(|g| &g.completions).map(|c| c.temperatures.len() as f64).sum(),
            samples: (0..samples.min(r.groups.len())).map(|i| (r.prompts.texts[i].clone(), r.responses[i * g].clone(), r.scores[i * g])).collect(),
            dropped_groups: r.dropped_groups as f64,
            gen_batches: r.gen_batches as f64,
        }
    }
}

/// Fill rollout, reward, selection metrics, histograms and sample texts. `response_mask` and
/// `entropy` are `[N, T]` over the same rows as `rows`, `shaped` `[N]`; `reward_counters` are the
/// cumulative `reward/*` counters.
pub fn fill(
    m: &mut StepMetrics,
    rows: &StepRows,
    response_mask: &Tensor,
    plan: &StepPlan,
    shaped: &Tensor,
    entropy: &Tensor,
    reward_counters: &rlpo_reward::metrics::RewardMetrics,
) {
    let (mean, std) = mean_std(&rows.scores);
    m.set("reward/mean", mean);
    m.set("reward/std", std);
    // The verifier's correctness (`reward.correctness`), not `reward > 0`; absent without one.
    if rows.correct.iter().all(|c| c.is_finite()) {
        m.set("reward/pass_rate", mean_std(&rows.correct).0);
        let bonus_only = rows.scores.iter().zip(&rows.correct).filter(|(s, c)| **s > 0.0 && **c < 0.5).count();
        m.set("reward/bonus_only_frac", bonus_only as f64 / rows.scores.len().max(1) as f64);
    }
    let shaped_v: Vec<f64> = Vec::try_from(shaped.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default();
    m.set("reward/shaped_mean", mean_std(&shaped_v).0);
    let mut parts: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for o in &rows.parts {
        for (k, v) in o {
            parts.entry(k.clone()).or_default().push(*v);
        }
    }
    for (k, vs) in &parts {
        let (pm, ps) = mean_std(vs);
        m.set(&format!("reward/{k}_mean"), pm);
        m.set(&format!("reward/{k}_std"), ps);
    }
    for (k, v) in reward_counters.scalars() {
        m.set(k, v);
    }
    let lens = &rows.lens;
    m.set("response/length_mean", mean_std(lens).0);
    m.set("response/length_max", lens.iter().copied().fold(0.0, f64::max));
    m.set("response/clip_ratio", mean_std(&rows.truncated).0);
    let ent = masked_values(entropy, response_mask);
    m.set("rollout/entropy_mean", mean_std(&ent).0);

    let s = plan.summary();
    m.set("select/rows", s.rows as f64);
    m.set("select/kept_rows", s.kept_rows as f64);
    m.set("select/valid_tokens", s.valid_tokens);
    m.set("select/kept_tokens", s.kept_tokens);
    m.set("select/kept_token_frac", if s.valid_tokens > 0.0 { s.kept_tokens / s.valid_tokens } else { 0.0 });
    m.set("select/kept_row_frac", if s.rows > 0 { s.kept_rows as f64 / s.rows as f64 } else { 0.0 });
    // The report's HAPO panels: the temperature tokens were drawn at, and the per-token clip widths.
    let temp_mean = if rows.temperature_tokens > 0.0 { rows.temperature_sum / rows.temperature_tokens } else { f64::NAN };
    m.set("rollout/temperature_mean", temp_mean);
    for (name, w) in [("hapo/clip_low_mean", &plan.clip.low), ("hapo/clip_high_mean", &plan.clip.high)] {
        if let rlpo_algo::ClipWidth::PerToken(t) = w {
            m.set(name, mean_std(&masked_values(&t.expand_as(response_mask), response_mask)).0);
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
    m.set("filter/dropped_groups", rows.dropped_groups);
    m.set("filter/gen_batches", rows.gen_batches);

    let adv: Vec<f64> = Vec::try_from(plan.advantages.to_kind(Kind::Double).to_device(tch::Device::Cpu)).unwrap_or_default();
    m.histograms.insert("reward/values".into(), rows.scores.clone());
    m.histograms.insert("advantage/values".into(), adv);
    m.histograms.insert("rollout/entropy".into(), ent);
    m.histograms.insert("response/lengths".into(), lens.clone());
    // The first sample of the first groups: different prompts.
    for (i, (prompt, response, reward)) in rows.samples.iter().enumerate() {
        let text = format!("**prompt:** {}\n\n**response:** {}\n\n**reward:** {:.3}", prompt.replace('\n', "  \n"), response.replace('\n', "  \n"), reward);
        m.texts.push((format!("samples/{i}"), text));
    }
}

/// The counts behind `reward/frac_zero_std` and `reward/failed_frac`, over every group and row
/// of `r` scored this step (dropped groups included): `reward/zero_std_groups` of
/// `reward/scored_groups` (groups with a failed reward left out), `reward/failed_rows` of
/// `reward/scored_rows`. The trainer calls it after [`fill`]; with several ranks `r` is this
/// rank's share and the counts are summed over ranks (`dp::SUMMED`) before [`signal_fractions`].
pub fn set_signal(m: &mut StepMetrics, r: &ScoredRollouts) {
    let g = r.groups.first().map_or(1, |grp| grp.completions.len()).max(1);
    let mut groups: Vec<Vec<f64>> = r.scores.chunks(g).map(<[f64]>::to_vec).collect();
    // Dropped rows come in whole groups, contiguous, numbered by `group`.
    let mut last = None;
    for d in &r.dropped {
        if last != Some(d.group) {
            groups.push(Vec::new());
            last = Some(d.group);
        }
        groups.last_mut().expect("pushed").push(d.reward.unwrap_or(f64::NAN));
    }
    let scored: Vec<&Vec<f64>> = groups.iter().filter(|v| !v.is_empty() && v.iter().all(|x| x.is_finite())).collect();
    let zero = scored.iter().filter(|v| v.iter().all(|x| *x == v[0])).count();
    m.set("reward/zero_std_groups", zero as f64);
    m.set("reward/scored_groups", scored.len() as f64);
    let failed = r.outputs.iter().filter(|o| !o.is_ok()).count() + r.dropped.iter().filter(|d| d.error.is_some()).count();
    m.set("reward/failed_rows", failed as f64);
    m.set("reward/scored_rows", (r.outputs.len() + r.dropped.len()) as f64);
}

/// `reward/frac_zero_std` (NaN when no group scored) and `reward/failed_frac` from the counts of
/// [`set_signal`] (global ones with several ranks); nothing when the step has none.
pub fn signal_fractions(m: &mut StepMetrics) {
    if let (Some(zero), Some(groups)) = (m.get("reward/zero_std_groups"), m.get("reward/scored_groups")) {
        m.set("reward/frac_zero_std", if groups > 0.0 { zero / groups } else { f64::NAN });
    }
    if let (Some(failed), Some(rows)) = (m.get("reward/failed_rows"), m.get("reward/scored_rows")) {
        m.set("reward/failed_frac", failed / rows.max(1.0));
    }
}

/// Console warnings for a step that cannot teach the policy anything, from its metrics: every
/// group with equal rewards, every reward failed, or a positive reward with no correct answer.
pub fn warnings(m: &StepMetrics, run_dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let step = m.step;
    if m.get("reward/failed_frac") == Some(1.0) {
        out.push(format!(
            "warning: step {step}: every reward failed (reward/failed_frac = 1): the policy learns nothing from them; see {}",
            run_dir.join(crate::reward_run::REWARD_LOG).display()
        ));
    } else if m.get("reward/frac_zero_std") == Some(1.0) {
        out.push(format!(
            "warning: step {step}: every group's responses got the same reward (reward/frac_zero_std = 1, reward/mean {:.3}): all advantages are 0, nothing to learn this step (`{} inspect {} --samples {step}` shows them)",
            m.get("reward/mean").unwrap_or(f64::NAN),
            crate::program::name(),
            run_dir.display()
        ));
    }
    if let (Some(pass), Some(bonus)) = (m.get("reward/pass_rate"), m.get("reward/bonus_only_frac")) {
        if pass == 0.0 && bonus > 0.0 {
            out.push(format!(
                "warning: step {step}: no response is correct (reward/pass_rate = 0) but {:.0}% have a positive reward: it comes from bonus parts only (format, length), not from the verifier",
                100.0 * bonus
            ));
        }
    }
    out
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
