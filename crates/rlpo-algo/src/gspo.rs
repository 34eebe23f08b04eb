//! GSPO and GSPO-token (spec §1.7): the sequence-level importance ratio
//! `s_i = exp((1/|y_i|) Σ_t m·(logp − old_logp))` as an alternative base loss.
//!
//! Shapes: `logp`, `old_logp`, `mask` `[N, T]`; `s_i` and sequence losses `[N]`; GSPO-token
//! ratios `[N, T]`. `mask` chooses which tokens enter `s_i` (with a D³S keep-mask, the kept
//! tokens only: a PROPOSAL, see `loss.gspo_ratio_tokens`). The clip ranges are tiny
//! (`3e-4 / 4e-4`) because `s_i` is length-normalised.
//!
//! As in verl 0.9.1's `compute_policy_loss_gspo`: the sequence log-ratio is clamped from above
//! at 10 only (no lower clamp; above 10 the value is `e^10` and the gradient 0), and there is no
//! dual clip (neither the GSPO paper's objective nor verl has one).

use tch::Tensor;

use crate::surrogate::{clipped_surrogate, ClipRange};

/// verl's upper clamp of GSPO's sequence log-ratio ("for numerical stability").
pub const GSPO_LOG_RATIO_MAX: f64 = 10.0;

/// `(1/|y_i|) Σ_t m·(logp − old_logp)` before any clamp; `[N]`. Rows without tokens get 0.
fn mean_log_ratio(logp: &Tensor, old_logp: &Tensor, mask: &Tensor) -> Tensor {
    let kind = logp.kind();
    let mask = mask.to_kind(kind).detach();
    let sum = ((logp - old_logp.detach()) * &mask).sum_dim_intlist(-1, false, kind);
    let len = mask.sum_dim_intlist(-1, false, kind).clamp_min(1.0);
    sum / len
}

/// `(1/|y_i|) Σ_t m·(logp − old_logp)`, clamped from above at [`GSPO_LOG_RATIO_MAX`]; `[N]`.
/// Rows without tokens get 0 (ratio 1), which contributes nothing once masked.
pub fn sequence_log_ratio(logp: &Tensor, old_logp: &Tensor, mask: &Tensor) -> Tensor {
    mean_log_ratio(logp, old_logp, mask).clamp_max(GSPO_LOG_RATIO_MAX)
}

/// GSPO's sequence ratio `s_i`, `[N]`, carrying gradient through every token of the row.
pub fn sequence_ratio(logp: &Tensor, old_logp: &Tensor, mask: &Tensor) -> Tensor {
    sequence_log_ratio(logp, old_logp, mask).exp()
}

/// GSPO-token ratio `s_{i,t} = sg[s_i] · exp(logp − sg[logp])`, `[N, T]`: its value is `s_i` on
/// every token, its gradient is `s_i · ∇logp_t`, so token-level advantages can be used. The
/// clamp applies to the sum (as in verl), so a row above the clamp has no gradient.
pub fn gspo_token_ratio(logp: &Tensor, old_logp: &Tensor, mask: &Tensor) -> Tensor {
    let seq = mean_log_ratio(logp, old_logp, mask).detach().unsqueeze(-1);
    (seq + logp - logp.detach()).clamp_max(GSPO_LOG_RATIO_MAX).exp()
}

/// GSPO per-sequence loss `ℓ_i = max(−A_i s_i, −A_i clip(s_i, 1−ε_lo, 1+ε_hi))`, `[N]` (no dual
/// clip). `adv` is `[N]`.
pub fn gspo_sequence_loss(logp: &Tensor, old_logp: &Tensor, adv: &Tensor, mask: &Tensor, clip: &ClipRange) -> Tensor {
    clipped_surrogate(&sequence_ratio(logp, old_logp, mask), adv, clip, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{aggregate, Aggregation, LossNormaliser};
    use tch::{Device, Kind};

    /// Spec §1.7 worked example: log-ratios [0.01, −0.02, 0.04].
    #[test]
    fn spec_1_7_example() {
        let logp = Tensor::from_slice(&[0.01, -0.02, 0.04]).view([1, 3]);
        let old = logp.zeros_like();
        let mask = logp.ones_like();
        let s = sequence_ratio(&logp, &old, &mask).double_value(&[0]);
        assert!((s - 1.010050).abs() < 1e-6);
        let clip = ClipRange::new(3e-4, 4e-4);
        let pos = gspo_sequence_loss(&logp, &old, &Tensor::from_slice(&[1.0]), &mask, &clip);
        assert!((pos.double_value(&[0]) + 1.0004).abs() < 1e-9);
        let neg = gspo_sequence_loss(&logp, &old, &Tensor::from_slice(&[-1.0]), &mask, &clip);
        assert!((neg.double_value(&[0]) - 1.010050).abs() < 1e-6);
        // GSPO-token has the same value on every token.
        let st = Vec::<f64>::try_from(&gspo_token_ratio(&logp, &old, &mask).view([-1])).unwrap();
        assert!(st.iter().all(|v| (v - s).abs() < 1e-12));
    }

    /// GSPO-token with row-constant advantages, aggregated seq-mean-token-mean, has GSPO's
    /// value and gradient (spec §1.7), both inside and outside the clip range.
    #[test]
    fn gspo_token_equals_gspo_for_row_constant_advantages() {
        let mut rng = crate::seeded::SplitMix(11);
        let (n, t) = (4, 6);
        let base = rng.randn([n, t], (Kind::Double, Device::Cpu)) * 0.01;
        let old = Tensor::zeros([n, t], (Kind::Double, Device::Cpu));
        let lens = Tensor::from_slice(&[6i64, 3, 1, 4]).unsqueeze(-1);
        let mask = Tensor::arange(t, (Kind::Int64, Device::Cpu))
            .unsqueeze(0)
            .lt_tensor(&lens)
            .to_kind(Kind::Double);
        let adv = Tensor::from_slice(&[1.0, -1.0, 0.5, -2.0]);
        for clip in [ClipRange::new(3e-4, 4e-4), ClipRange::new(0.5, 0.5)] {
            let a = base.copy().set_requires_grad(true);
            let seq = gspo_sequence_loss(&a, &old, &adv, &mask, &clip).mean(Kind::Double);
            seq.backward();
            let b = base.copy().set_requires_grad(true);
            let ratio = gspo_token_ratio(&b, &old, &mask);
            let tok = clipped_surrogate(
                &ratio,
                &adv.unsqueeze(-1).expand([n, t], false),
                &clip,
                None,
            );
            let tok = aggregate(
                &tok,
                &mask,
                Aggregation::SeqMeanTokenMean,
                &LossNormaliser::from_mask(&mask),
            );
            tok.backward();
            assert!((seq.double_value(&[]) - tok.double_value(&[])).abs() < 1e-12);
            assert!((a.grad() - b.grad()).abs().max().double_value(&[]) < 1e-12);
        }
    }
}
