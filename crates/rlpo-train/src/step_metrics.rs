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
    m.set("reward/pass_rate", mean_std(&r.acc).0);
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

/// Fill actor / optimizer metrics from the update.
pub fn fill_update(m: &mut StepMetrics, rep: &UpdateReport) {
    m.set("actor/pg_loss", rep.pg_loss);
    m.set("actor/clip_frac", rep.clip_frac);
    m.set("actor/grad_norm", rep.grad_norm);
    m.set("optim/lr", rep.lr);
    m.set("optim/applied_steps", rep.applied as f64);
    m.set("optim/skipped_empty", rep.skipped_empty as f64);
    m.set("optim/skipped_nonfinite", rep.skipped_nonfinite as f64);
    if let Some(k) = rep.kl {
        m.set("actor/kl", k);
    }
    if let Some(gap) = rep.logprob_gap {
        m.set("actor/rollout_logprob_gap", gap);
    }
    if let Some(e) = rep.entropy {
        m.set("actor/entropy", e);
    }
    if let Some(n) = rep.ntp_loss {
        m.set("actor/ntp_loss", n);
    }
}
