//! Independent arithmetic the wiring tests check the trainer against: plain f64 loops over values
//! copied out of the trainer's tensors, written from the spec (`algorithms.md` §0.2, §0.4, §4.3),
//! sharing no code with rlpo-algo. A reference log-prob oracle runs the model's plain forward
//! (no chunking, no micro-batches) on the learner batch.

use rlpo_model::CausalLm;
use rlpo_train::batch::LearnerBatch;
use tch::{Kind, Tensor};

/// A 2-D tensor as rows of f64.
pub fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let (n, w) = (t.size()[0], t.size()[1]);
    let flat: Vec<f64> = Vec::try_from(t.reshape([-1])).unwrap();
    (0..n as usize).map(|r| flat[r * w as usize..(r + 1) * w as usize].to_vec()).collect()
}

/// A 1-D tensor as f64.
pub fn vec1(t: &Tensor) -> Vec<f64> {
    Vec::try_from(t.detach().to_kind(Kind::Double).to_device(tch::Device::Cpu).reshape([-1])).unwrap()
}

/// HAPO's rollout temperature (§4.3.2): `h = (ln max(H, 1e-6) − q) / (s + 1e-6)`, scaled by
/// `1/h⁺` above zero and by `scale⁻` below, clamped to [−1, 1]; `T = T_base (1 + τ h̃)`.
pub fn hapo_temperature(entropy: f64, q: f64, s: f64, inv_h_pos: f64, scale_neg: f64, t_base: f64, tau: f64) -> f64 {
    let h = (entropy.max(1e-6).ln() - q) / (s + 1e-6);
    let ht = if h > 0.0 { h * inv_h_pos } else { h * scale_neg };
    t_base * (1.0 + tau * ht.clamp(-1.0, 1.0))
}

/// HAPO's entropy statistics (§4.3.1, intended sign) over `entropies` (the valid tokens):
/// `λ = ln max(H, 1e-8)`, `q` = the nearest-rank ρ-quantile of λ (index `round_half_even(ρ (n −
/// 1))`), `s = sqrt(max(mean (λ − q)², 1e-8))`, `h⁺ = max(max d / s, 1e-8)`, `h⁻ = min(min d / s,
/// −1e-8)`. Returns `(q, s, 1/h⁺, 1/|h⁻|)`.
pub fn hapo_stats(entropies: &[f64], quantile: f64) -> (f64, f64, f64, f64) {
    let mut lam: Vec<f64> = entropies.iter().map(|h| h.max(1e-8).ln()).collect();
    let unsorted = lam.clone();
    lam.sort_by(f64::total_cmp);
    let idx = (quantile * (lam.len() - 1) as f64).round_ties_even() as usize;
    let q = lam[idx];
    let n = unsorted.len() as f64;
    let s = (unsorted.iter().map(|l| (l - q).powi(2)).sum::<f64>() / n).max(1e-8).sqrt();
    let d_max = unsorted.iter().map(|l| l - q).fold(f64::NEG_INFINITY, f64::max);
    let d_min = unsorted.iter().map(|l| l - q).fold(f64::INFINITY, f64::min);
    let h_pos = (d_max / s).max(1e-8);
    let h_neg = (d_min / s).min(-1e-8);
    (q, s, 1.0 / h_pos, 1.0 / h_neg.abs())
}

/// HAPO's token-level group average (§4.3.3) on groups of `g` rows: `μ = Σ L R / Σ L`,
/// `σ² = Σ L (R − μ)² / Σ L`, `A = (R − μ)/(σ + eps)`; a group with any `|A| ≥ threshold` takes
/// GRPO's advantages (unbiased std, `eps`). Returns the advantages and the groups that fell back.
pub fn token_level_advantages(rewards: &[f64], lengths: &[f64], g: usize, eps: f64, threshold: f64) -> (Vec<f64>, usize) {
    let grpo = super::group_advantages(rewards, g, true, eps);
    let mut out = Vec::new();
    let mut fallback = 0;
    for (k, (r, l)) in rewards.chunks(g).zip(lengths.chunks(g)).enumerate() {
        let sum_l: f64 = l.iter().sum();
        let mu = r.iter().zip(l).map(|(r, l)| r * l).sum::<f64>() / sum_l;
        let sigma = (r.iter().zip(l).map(|(r, l)| l * (r - mu).powi(2)).sum::<f64>() / sum_l).sqrt();
        let a: Vec<f64> = r.iter().map(|r| (r - mu) / (sigma + eps)).collect();
        if a.iter().any(|a| a.abs() >= threshold) {
            out.extend_from_slice(&grpo[k * g..(k + 1) * g]);
            fallback += 1;
        } else {
            out.extend(a);
        }
    }
    (out, fallback)
}

/// The GRPO clipped surrogate of one token (§0.2) with clip widths `lo`, `hi` and dual clip `c`:
/// `ℓ = max(−A ρ, −A clip(ρ, 1 − lo, 1 + hi))`, then `min(ℓ, −c A)` for `A < 0`. Returns
/// `(ℓ, ∂ℓ/∂ρ, clipped)`.
pub fn grpo_token(adv: f64, ratio: f64, lo: f64, hi: f64, dual: f64) -> (f64, f64, bool) {
    let unclipped = -adv * ratio;
    let clipped = -adv * ratio.clamp(1.0 - lo, 1.0 + hi);
    let (mut loss, mut slope, mut was_clipped) = if unclipped >= clipped { (unclipped, -adv, false) } else { (clipped, 0.0, true) };
    // Where both are equal (ratio inside the range) the gradient is −A (the unclipped branch).
    if ratio > 1.0 - lo && ratio < 1.0 + hi {
        slope = -adv;
        was_clipped = false;
    }
    if adv < 0.0 && loss > -dual * adv {
        loss = -dual * adv;
        slope = 0.0;
        was_clipped = true;
    }
    (loss, slope, was_clipped)
}

/// The k3 KL estimator of one token (§0.4): `x = ref − logp`, `k3 = exp(x) − x − 1`.
pub fn k3(logp: f64, reference: f64) -> f64 {
    let x = reference - logp;
    x.exp() - x - 1.0
}

/// `log_softmax(model.forward(ids, mask) / temperature)` at the response targets of `batch`,
/// `[N][T]` (0 outside the response mask), by the model's plain forward over the whole batch.
pub fn forward_logprobs(model: &CausalLm, batch: &LearnerBatch, temperature: f64) -> Vec<Vec<f64>> {
    let t = batch.response_width();
    let logits = tch::no_grad(|| model.forward(&batch.ids, &batch.attention_mask)).to_kind(Kind::Double) / temperature;
    let pred = logits.narrow(1, batch.prompt_width - 1, t).log_softmax(-1, Kind::Double);
    let lp = pred.gather(2, &batch.targets.unsqueeze(-1), false).squeeze_dim(-1);
    rows(&(lp * batch.response_mask.to_kind(Kind::Double)))
}
