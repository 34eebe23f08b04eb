//! DAPO's data-side pieces (spec §2): soft overlong reward shaping, the dynamic-sampling group
//! filter, the refill decision, and the optional overlong filter. Clip-higher is just
//! `loss.clip_high = 0.28` and token-mean is `loss.agg = "token_mean"`.
//!
//! Shapes: lengths, metrics and rewards are `[N]` (rows of a group contiguous); the group keep
//! mask is `[B]` bool; masks are `[N, T]`. The refill *loop* (generate, score, filter, repeat)
//! belongs to the trainer; [`refill_action`] is the pure decision it asks for after each batch.

use tch::{Kind, Tensor};

use crate::advantage::group_view;
use crate::config::{FilterGroupsConfig, OnExhausted};
use crate::error::{input_err, Error, Result};

/// Soft overlong penalty of one response of `len` valid tokens (including EOS):
/// `f · clamp(((L_max − L_cache) − len) / L_cache, −1, 0)`. 0 up to `L_max − L_cache`, −f at
/// `L_max` and beyond (the paper's −1 for `len > L_max`).
pub fn overlong_penalty_value(len: u64, max_len: u64, cache_len: u64, factor: f64) -> f64 {
    let start = max_len.saturating_sub(cache_len) as f64;
    let raw = (start - len as f64) / cache_len.max(1) as f64;
    factor * raw.clamp(-1.0, 0.0)
}

/// [`overlong_penalty_value`] over a batch: `lengths[N]` (any integer or float kind) → `[N]` f32.
pub fn overlong_penalty(lengths: &Tensor, max_len: u64, cache_len: u64, factor: f64) -> Tensor {
    tch::no_grad(|| {
        let start = max_len.saturating_sub(cache_len) as f64;
        let raw = (lengths.to_kind(Kind::Double).neg() + start) / cache_len.max(1) as f64;
        (raw.clamp(-1.0, 0.0) * factor).to_kind(Kind::Float)
    })
}

/// Dynamic-sampling filter: `[B]` bool, true for groups to keep. A group is kept when its
/// `metric` (`[N]`, e.g. the `acc` flag) is not constant (population std > 0, tested as
/// max ≠ min so that float rounding of the mean cannot keep an all-equal group) or when it
/// has a single response (verl).
pub fn group_keep_mask(metric: &Tensor, g: i64) -> Result<Tensor> {
    let m = group_view(metric, g, "metric")?;
    Ok(tch::no_grad(|| {
        if g == 1 {
            return Tensor::ones([m.size()[0]], (Kind::Bool, m.device()));
        }
        let m = m.to_kind(Kind::Double);
        m.amax([1], false).ne_tensor(&m.amin([1], false))
    }))
}

/// Row version of a `[B]` group mask: `[N]` bool.
pub fn group_mask_to_rows(group_mask: &Tensor, g: i64) -> Tensor {
    group_mask
        .unsqueeze(-1)
        .expand([-1, g], false)
        .reshape([-1])
}

/// Overlong filter (optional in DAPO): zero the mask rows of truncated responses.
/// `mask[N, T]`, `truncated[N]` bool → `[N, T]` in `mask`'s kind.
pub fn overlong_filter(mask: &Tensor, truncated: &Tensor) -> Result<Tensor> {
    let n = mask.size()[0];
    if truncated.size() != [n] {
        return Err(input_err(
            "truncated",
            format!("expected [{n}], got {:?}", truncated.size()),
        ));
    }
    let keep = truncated
        .to_kind(Kind::Bool)
        .logical_not()
        .to_kind(mask.kind());
    Ok(mask * keep.unsqueeze(-1))
}

/// What the trainer does next in the dynamic-sampling loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefillAction {
    /// Not enough groups yet: generate another batch.
    GenerateMore,
    /// Train on the first `keep_groups` accumulated groups; discard the next `discard_groups`
    /// (verl drops the surplus, it is not carried over).
    Train {
        /// Groups to train on (rows `0 .. keep_groups·G`).
        keep_groups: usize,
        /// Surplus groups to drop.
        discard_groups: usize,
    },
    /// Cap reached with no usable group (`on_exhausted = "train_available"`): skip this step.
    Skip,
}

/// Decision after a generation batch: `kept_groups` accumulated so far (after filtering),
/// `target_groups` = prompts per training step, `gen_batches` = generation batches used so far.
pub fn refill_action(
    kept_groups: usize,
    target_groups: usize,
    gen_batches: usize,
    cfg: &FilterGroupsConfig,
) -> Result<RefillAction> {
    if kept_groups >= target_groups {
        return Ok(RefillAction::Train {
            keep_groups: target_groups,
            discard_groups: kept_groups - target_groups,
        });
    }
    // Validation makes the cap >= 1; `.max(1)` keeps an unvalidated 0 from meaning "unlimited".
    let capped = gen_batches as i64 >= cfg.max_num_gen_batches.max(1);
    if !capped {
        return Ok(RefillAction::GenerateMore);
    }
    match cfg.on_exhausted {
        OnExhausted::Error => Err(Error::FilterExhausted {
            kept: kept_groups,
            target: target_groups,
            gen_batches,
            max_gen_batches: cfg.max_num_gen_batches,
        }),
        OnExhausted::TrainAvailable if kept_groups == 0 => Ok(RefillAction::Skip),
        OnExhausted::TrainAvailable => Ok(RefillAction::Train {
            keep_groups: kept_groups,
            discard_groups: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spec §2.6 example 1: overlong penalty at DAPO scale and at small scale.
    #[test]
    fn spec_2_6_overlong() {
        for (len, want) in [(16384, 0.0), (17408, -0.25), (18432, -0.5), (20480, -1.0)] {
            assert!((overlong_penalty_value(len, 20480, 4096, 1.0) - want).abs() < 1e-12);
        }
        let small = [(5, 0.0), (6, 0.0), (7, -0.25), (8, -0.5), (10, -1.0)];
        for (len, want) in small {
            assert!(
                (overlong_penalty_value(len, 10, 4, 1.0) - want).abs() < 1e-12,
                "len {len}"
            );
        }
        // Batch version, and a correct answer (+1) of length 8 gets 1 − 0.5 = 0.5.
        let lens = Tensor::from_slice(&[5i64, 6, 7, 8, 10, 12]);
        let pen = Vec::<f32>::try_from(&overlong_penalty(&lens, 10, 4, 1.0)).unwrap();
        assert_eq!(pen, vec![0.0, 0.0, -0.25, -0.5, -1.0, -1.0]);
        assert!((1.0 + overlong_penalty_value(8, 10, 4, 1.0) - 0.5).abs() < 1e-12);
    }

    /// Spec §2.6 example 2: filter four groups, then refill to a batch of 3.
    #[test]
    fn spec_2_6_dynamic_sampling() {
        let acc = Tensor::from_slice(&[
            1.0, 1., 1., 1., 0., 0., 0., 0., 1., 0., 0., 1., 0., 0., 0., 1.,
        ]);
        let keep = Vec::<bool>::try_from(&group_keep_mask(&acc, 4).unwrap()).unwrap();
        assert_eq!(keep, vec![false, false, true, true]);
        let rows =
            Vec::<bool>::try_from(&group_mask_to_rows(&Tensor::from_slice(&keep), 4)).unwrap();
        assert_eq!(rows.iter().filter(|k| **k).count(), 8);

        let cfg = FilterGroupsConfig::default();
        assert_eq!(
            refill_action(2, 3, 1, &cfg).unwrap(),
            RefillAction::GenerateMore
        );
        // A second batch brings two more valid groups: train on the first 3 (12 rows), drop 1.
        assert_eq!(
            refill_action(4, 3, 2, &cfg).unwrap(),
            RefillAction::Train {
                keep_groups: 3,
                discard_groups: 1
            }
        );
    }

    #[test]
    fn refill_cap_behaviour() {
        let mut cfg = FilterGroupsConfig {
            max_num_gen_batches: 2,
            ..Default::default()
        };
        let err = refill_action(1, 3, 2, &cfg).unwrap_err().to_string();
        assert!(err.contains("max_num_gen_batches = 2"), "{err}");
        cfg.on_exhausted = OnExhausted::TrainAvailable;
        assert_eq!(
            refill_action(1, 3, 2, &cfg).unwrap(),
            RefillAction::Train {
                keep_groups: 1,
                discard_groups: 0
            }
        );
        assert_eq!(refill_action(0, 3, 2, &cfg).unwrap(), RefillAction::Skip);
        // There is no "unlimited": an unvalidated 0 caps after the first batch.
        cfg.max_num_gen_batches = 0;
        assert_eq!(refill_action(0, 3, 1, &cfg).unwrap(), RefillAction::Skip);
    }

    #[test]
    fn singleton_groups_are_kept_and_truncated_rows_masked() {
        let keep = group_keep_mask(&Tensor::from_slice(&[1.0, 1.0]), 1).unwrap();
        assert_eq!(Vec::<bool>::try_from(&keep).unwrap(), vec![true, true]);
        let mask = Tensor::ones([2, 3], (Kind::Float, tch::Device::Cpu));
        let out = overlong_filter(&mask, &Tensor::from_slice(&[true, false])).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&out.view([-1])).unwrap(),
            vec![0., 0., 0., 1., 1., 1.]
        );
    }
}
