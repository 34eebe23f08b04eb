//! Loss aggregation (spec §0.3): from a per-token loss `ℓ[n, T]` and the final loss mask
//! `m[n, T]` of one micro-batch to the scalar that is back-propagated.
//!
//! The denominator is a property of the whole optimizer step (all micro-batches of a
//! mini-batch, and all data-parallel ranks), so it is computed once into a [`LossNormaliser`]
//! and passed to [`aggregate`] for every micro-batch. Then the sum of the micro-batch losses,
//! and of their gradients, equals the loss and gradient of the mini-batch processed whole, for
//! every mode. (Averaging per-micro-batch means, as older verl did, is only approximately equal.)

use serde::{Deserialize, Serialize};
use std::ops::Add;
use tch::{Kind, Tensor};

/// Aggregation mode as written in a recipe (`loss.agg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggMode {
    /// `Σ m·ℓ / Σ m` (DAPO, verl default, HAPO).
    TokenMean,
    /// `(1/n_R) Σ_rows (Σ_t m·ℓ / Σ_t m)` (original GRPO).
    SeqMeanTokenMean,
    /// `(1/n_R) Σ_rows Σ_t m·ℓ` (verl option).
    SeqMeanTokenSum,
    /// Dr. GRPO: `Σ m·ℓ / (n_R · L_const)` (oat form); `L_const` is `loss.norm_len`.
    ConstantNorm,
}

/// A resolved aggregation, carrying `L_const` for the Dr. GRPO normaliser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// See [`AggMode::TokenMean`].
    TokenMean,
    /// See [`AggMode::SeqMeanTokenMean`].
    SeqMeanTokenMean,
    /// See [`AggMode::SeqMeanTokenSum`].
    SeqMeanTokenSum,
    /// See [`AggMode::ConstantNorm`].
    ConstantNorm {
        /// `L_const`, the constant length normaliser (max generation length).
        len: f64,
    },
}

/// Step-wide counts that every micro-batch divides by.
///
/// `rows` counts rows with at least one loss-mask token (`n_R` of spec §0.3): rows emptied by
/// D³S or filters do not dilute sequence means, and zero-length rows never divide by zero.
/// Sum the counts of all micro-batches (and all-reduce across ranks) with `+`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossNormaliser {
    /// `Σ m` over the optimizer step.
    pub tokens: f64,
    /// Number of rows with `Σ_t m > 0` over the optimizer step.
    pub rows: f64,
}

impl LossNormaliser {
    /// Counts of one `[n, T]` mask (1 = token enters the loss).
    pub fn from_mask(mask: &Tensor) -> Self {
        tch::no_grad(|| {
            let per_row = mask
                .to_kind(Kind::Double)
                .sum_dim_intlist(-1, false, Kind::Double);
            Self {
                tokens: per_row.sum(Kind::Double).double_value(&[]),
                rows: per_row.gt(0.0).sum(Kind::Double).double_value(&[]),
            }
        })
    }

    /// Counts summed over several masks (the micro-batches of one optimizer step).
    pub fn from_masks<'a>(masks: impl IntoIterator<Item = &'a Tensor>) -> Self {
        masks
            .into_iter()
            .map(Self::from_mask)
            .fold(Self::default(), Add::add)
    }

    /// True when no token enters the loss: the trainer should skip the optimizer step.
    pub fn is_empty(&self) -> bool {
        self.tokens <= 0.0
    }

    /// The step-wide denominator of `agg` (0 when empty).
    pub fn denominator(&self, agg: Aggregation) -> f64 {
        match agg {
            Aggregation::TokenMean => self.tokens,
            Aggregation::SeqMeanTokenMean | Aggregation::SeqMeanTokenSum => self.rows,
            Aggregation::ConstantNorm { len } => self.rows * len,
        }
    }
}

impl Add for LossNormaliser {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            tokens: self.tokens + o.tokens,
            rows: self.rows + o.rows,
        }
    }
}

/// Aggregates one micro-batch's per-token loss `[n, T]` under `mask` `[n, T]` with the
/// step-wide `norm`. Returns a scalar in `loss`'s dtype; summing it over the micro-batches of
/// the step gives the step loss. An empty step yields a graph-connected zero.
pub fn aggregate(loss: &Tensor, mask: &Tensor, agg: Aggregation, norm: &LossNormaliser) -> Tensor {
    let kind = loss.kind();
    let mask = mask.to_kind(kind).detach();
    let masked = loss * &mask;
    let numerator = match agg {
        Aggregation::SeqMeanTokenMean => {
            // Per-row token mean; empty rows have a zero numerator, so clamping their count
            // to 1 only avoids 0/0.
            let row_sum = masked.sum_dim_intlist(-1, false, kind);
            let row_len = mask.sum_dim_intlist(-1, false, kind).clamp_min(1.0);
            (row_sum / row_len).sum(kind)
        }
        _ => masked.sum(kind),
    };
    let denom = norm.denominator(agg);
    if denom > 0.0 {
        numerator / denom
    } else {
        numerator * 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t2(rows: &[&[f64]]) -> Tensor {
        let w = rows.iter().map(|r| r.len()).max().unwrap();
        let flat: Vec<f64> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0.0)).take(w))
            .collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, w as i64])
    }

    fn agg_value(loss: &Tensor, mask: &Tensor, agg: Aggregation) -> f64 {
        aggregate(loss, mask, agg, &LossNormaliser::from_mask(mask)).double_value(&[])
    }

    /// Spec §0.3 worked example: losses [1, 1] and [2, 2, 2, 2].
    #[test]
    fn spec_0_3_modes() {
        let loss = t2(&[&[1.0, 1.0, 0.0, 0.0], &[2.0, 2.0, 2.0, 2.0]]);
        let mask = t2(&[&[1.0, 1.0, 0.0, 0.0], &[1.0, 1.0, 1.0, 1.0]]);
        let cases = [
            (Aggregation::TokenMean, 1.666667),
            (Aggregation::SeqMeanTokenMean, 1.5),
            (Aggregation::SeqMeanTokenSum, 5.0),
            (Aggregation::ConstantNorm { len: 4.0 }, 1.25),
        ];
        for (agg, want) in cases {
            let got = agg_value(&loss, &mask, agg);
            assert!((got - want).abs() < 1e-5, "{agg:?}: {got} vs {want}");
        }
    }

    /// Spec §2.6 example 3: token-level vs sequence-level, A = [+1, −1], lengths 1 and 3.
    #[test]
    fn spec_2_6_token_vs_sequence() {
        let loss = t2(&[&[-1.0, 0.0, 0.0], &[1.0, 1.0, 1.0]]);
        let mask = t2(&[&[1.0, 0.0, 0.0], &[1.0, 1.0, 1.0]]);
        assert!((agg_value(&loss, &mask, Aggregation::TokenMean) - 0.5).abs() < 1e-9);
        assert!(agg_value(&loss, &mask, Aggregation::SeqMeanTokenMean).abs() < 1e-9);
    }

    #[test]
    fn empty_rows_are_not_counted_and_empty_step_is_zero() {
        let loss = t2(&[&[3.0, 3.0], &[7.0, 7.0]]);
        let mask = t2(&[&[1.0, 1.0], &[0.0, 0.0]]);
        let n = LossNormaliser::from_mask(&mask);
        assert_eq!(
            n,
            LossNormaliser {
                tokens: 2.0,
                rows: 1.0
            }
        );
        assert_eq!(agg_value(&loss, &mask, Aggregation::SeqMeanTokenMean), 3.0);
        assert_eq!(agg_value(&loss, &mask, Aggregation::SeqMeanTokenSum), 6.0);
        let zero = t2(&[&[0.0, 0.0], &[0.0, 0.0]]);
        assert!(LossNormaliser::from_mask(&zero).is_empty());
        for agg in [Aggregation::TokenMean, Aggregation::SeqMeanTokenMean] {
            assert_eq!(agg_value(&loss, &zero, agg), 0.0);
        }
    }

    /// Property: for every mode, the whole mini-batch and its micro-batches (with the
    /// step-wide normaliser) give the same loss and the same gradient (≤ 1e-6).
    #[test]
    fn micro_batching_preserves_loss_and_gradient() {
        let mut rng = crate::seeded::SplitMix(7);
        let (n, t) = (12, 9);
        let base = rng.randn([n, t], (Kind::Double, tch::Device::Cpu));
        // Random lengths with some empty rows; a random selection mask on top.
        let lens = rng.randint(t + 1, [n, 1], (Kind::Int64, tch::Device::Cpu));
        let pos = Tensor::arange(t, (Kind::Int64, tch::Device::Cpu)).unsqueeze(0);
        let keep = rng.rand([n, t], (Kind::Double, tch::Device::Cpu)).gt(0.3);
        let mask = pos
            .lt_tensor(&lens)
            .logical_and(&keep)
            .to_kind(Kind::Double);
        let modes = [
            Aggregation::TokenMean,
            Aggregation::SeqMeanTokenMean,
            Aggregation::SeqMeanTokenSum,
            Aggregation::ConstantNorm { len: 9.0 },
        ];
        for agg in modes {
            // A nonlinear per-token loss of a leaf, so the gradient is non-trivial.
            let x = base.copy().set_requires_grad(true);
            let whole_norm = LossNormaliser::from_mask(&mask);
            let whole = aggregate(&(x.sin() * 3.0), &mask, agg, &whole_norm);
            whole.backward();
            let g_whole = x.grad().copy();

            let y = base.copy().set_requires_grad(true);
            let splits = [(0, 5), (5, 1), (6, 6)];
            let masks: Vec<Tensor> = splits.iter().map(|&(s, l)| mask.narrow(0, s, l)).collect();
            let norm = LossNormaliser::from_masks(masks.iter());
            assert_eq!(norm, whole_norm);
            let mut total = 0.0;
            for (&(s, l), m) in splits.iter().zip(&masks) {
                let part = aggregate(&(y.narrow(0, s, l).sin() * 3.0), m, agg, &norm);
                part.backward(); // gradients accumulate across micro-batches
                total += part.double_value(&[]);
            }
            let diff_loss = (total - whole.double_value(&[])).abs();
            let diff_grad = (y.grad() - g_whole).abs().max().double_value(&[]);
            assert!(
                diff_loss <= 1e-6 && diff_grad <= 1e-6,
                "{agg:?}: {diff_loss} {diff_grad}"
            );
        }
    }
}
