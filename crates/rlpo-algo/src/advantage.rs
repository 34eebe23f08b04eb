//! Group-relative advantages of GRPO and Dr. GRPO (spec §1.3), RLOO and REINFORCE++-baseline.
//!
//! Input: outcome rewards `r[N]` with `N = B·G` rows, the rows of a group contiguous
//! (`n = b·G + g`). Output: one advantage per row, `[N]`, detached; broadcast it to tokens with
//! [`token_advantages`]. Groups are reduced as `[B, G]` views.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::SingletonAdvantage;
use crate::error::{input_err, Result};

/// Which standard deviation normalises GRPO advantages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StdKind {
    /// Bessel-corrected (`G − 1`), as verl and the Dr. GRPO code's GRPO baseline.
    #[default]
    Unbiased,
    /// Population (`G`), as HAPO's token-level variant.
    Population,
}

/// How to turn a group's rewards into advantages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupNormOptions {
    /// Divide by `std + eps` (GRPO) or not (Dr. GRPO).
    pub scale_by_std: bool,
    /// Which std.
    pub std: StdKind,
    /// `ε_adv`, added to the std.
    pub eps: f64,
    /// What a group of one response gets.
    pub singleton: SingletonAdvantage,
}

impl GroupNormOptions {
    /// GRPO with verl's defaults: unbiased std, `ε_adv = 1e-6`.
    pub fn grpo() -> Self {
        Self {
            scale_by_std: true,
            std: StdKind::Unbiased,
            eps: 1e-6,
            singleton: SingletonAdvantage::Reward,
        }
    }

    /// Dr. GRPO: mean-centred only.
    pub fn dr_grpo() -> Self {
        Self {
            scale_by_std: false,
            ..Self::grpo()
        }
    }
}

/// The float kind computations run in: fp64 stays fp64, everything else becomes fp32.
pub(crate) fn float_kind(t: &Tensor) -> Kind {
    if t.kind() == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

/// `[N]` → `[B, G]`, checking that `N` is a multiple of `g`.
pub(crate) fn group_view(x: &Tensor, g: i64, name: &'static str) -> Result<Tensor> {
    let size = x.size();
    if size.len() != 1 || g < 1 || size[0] % g != 0 {
        return Err(input_err(
            name,
            format!("expected [B·G] with G = {g}, got {size:?}"),
        ));
    }
    Ok(x.view([size[0] / g, g]))
}

/// Group-normalised advantages `[N]` from rewards `[N]`: `(r − μ_b) / (σ_b + ε)` or `r − μ_b`.
pub fn group_advantages(rewards: &Tensor, g: i64, opts: &GroupNormOptions) -> Result<Tensor> {
    let r = group_view(rewards, g, "rewards")?;
    Ok(tch::no_grad(|| {
        let r = r.detach().to_kind(float_kind(rewards));
        if g == 1 {
            // verl treats a singleton as mean 0, std 1 (no baseline); Zero is the PROPOSAL.
            return match opts.singleton {
                SingletonAdvantage::Zero => r.zeros_like().view([-1]),
                SingletonAdvantage::Reward if opts.scale_by_std => {
                    (r / (1.0 + opts.eps)).view([-1])
                }
                SingletonAdvantage::Reward => r.view([-1]),
            };
        }
        let mean = r.mean_dim(1, true, r.kind());
        let centred = &r - mean;
        let adv = if opts.scale_by_std {
            let std = r.std_dim(1, opts.std == StdKind::Unbiased, true);
            centred / (std + opts.eps)
        } else {
            centred
        };
        adv.view([-1])
    }))
}

/// RLOO advantages `[N]` (Ahmadian et al. 2024; verl `compute_rloo_outcome_advantage`): each
/// row's baseline is the mean of the *other* `G − 1` rewards, `A_i = r_i − mean_{j≠i} r_j =
/// G/(G − 1)·(r_i − μ)`. A group of one has no other reward: `A = r` (verl) or 0.
pub fn rloo_advantages(rewards: &Tensor, g: i64, singleton: SingletonAdvantage) -> Result<Tensor> {
    let r = group_view(rewards, g, "rewards")?;
    Ok(tch::no_grad(|| {
        let r = r.detach().to_kind(float_kind(rewards));
        if g == 1 {
            return singleton_value(&r, singleton).view([-1]);
        }
        let mean = r.mean_dim(1, true, r.kind());
        ((&r - mean) * (g as f64 / (g - 1) as f64)).view([-1])
    }))
}

fn singleton_value(r: &Tensor, singleton: SingletonAdvantage) -> Tensor {
    match singleton {
        SingletonAdvantage::Reward => r.shallow_clone(),
        SingletonAdvantage::Zero => r.zeros_like(),
    }
}

/// REINFORCE++-baseline advantages `[N]` (Hu et al. 2025; verl
/// `compute_reinforce_plus_plus_baseline_outcome_advantage`): `x_i = r_i − μ_group` (a group of
/// one: `r` or 0), then whitened over every valid token of the batch: with `L_i` the valid
/// lengths, `m = Σ L x / Σ L`, `v = Σ L (x − m)² / (Σ L − 1)`, `A_i = (x_i − m) / sqrt(v + 1e-8)`
/// (verl's masked mean adds 1e-8 to the token counts; so does this).
/// Rows without tokens do not enter the statistics.
pub fn reinforce_pp_baseline_advantages(
    rewards: &Tensor,
    lengths: &Tensor,
    g: i64,
    singleton: SingletonAdvantage,
) -> Result<Tensor> {
    let r = group_view(rewards, g, "rewards")?;
    if lengths.size() != rewards.size() {
        return Err(input_err("lengths", format!("expected {:?}, got {:?}", rewards.size(), lengths.size())));
    }
    Ok(tch::no_grad(|| {
        let r = r.detach().to_kind(Kind::Double);
        let x = if g == 1 {
            singleton_value(&r, singleton)
        } else {
            &r - r.mean_dim(1, true, Kind::Double)
        }
        .view([-1]);
        let l = lengths.detach().to_kind(Kind::Double);
        let n = l.sum(Kind::Double).double_value(&[]);
        if n <= 0.0 {
            return x.zeros_like().to_kind(float_kind(rewards));
        }
        // verl's `masked_mean` divides by the token count plus 1e-8; kept so that a batch of
        // equal `x` gives verl's (tiny, non-zero) values too.
        let m = (&l * &x).sum(Kind::Double) / (n + 1e-8);
        let centred = &x - &m;
        // Bessel correction over tokens (verl `masked_var(unbiased=True)`).
        let bessel = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let var = (&l * centred.square()).sum(Kind::Double) / (n + 1e-8) * bessel;
        (centred * (var + 1e-8).rsqrt()).to_kind(float_kind(rewards))
    }))
}

/// Broadcasts row advantages `[N]` to tokens `[N, T]`, zero where `mask` is 0.
pub fn token_advantages(adv_rows: &Tensor, mask: &Tensor) -> Tensor {
    adv_rows.detach().unsqueeze(-1) * mask.to_kind(adv_rows.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv(r: &[f64], g: i64, opts: GroupNormOptions) -> Vec<f64> {
        Vec::<f64>::try_from(&group_advantages(&Tensor::from_slice(r), g, &opts).unwrap()).unwrap()
    }

    fn close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol, "got {got:?}, want {want:?}");
        }
    }

    /// Spec §1.6 example 1: rewards [1, 0, 0, 1].
    #[test]
    fn spec_1_6_example_1() {
        let r = [1.0, 0.0, 0.0, 1.0];
        close(
            &adv(&r, 4, GroupNormOptions::grpo()),
            &[0.866024, -0.866024, -0.866024, 0.866024],
            1e-5,
        );
        let no_eps = GroupNormOptions {
            eps: 0.0,
            ..GroupNormOptions::grpo()
        };
        close(
            &adv(&r, 4, no_eps),
            &[0.866025, -0.866025, -0.866025, 0.866025],
            1e-5,
        );
        let pop = GroupNormOptions {
            std: StdKind::Population,
            ..GroupNormOptions::grpo()
        };
        close(
            &adv(&r, 4, pop),
            &[0.999998, -0.999998, -0.999998, 0.999998],
            1e-5,
        );
        close(
            &adv(&r, 4, GroupNormOptions::dr_grpo()),
            &[0.5, -0.5, -0.5, 0.5],
            1e-9,
        );
    }

    /// Spec §1.6 example 2: all rewards equal → all advantages 0.
    #[test]
    fn spec_1_6_example_2() {
        close(
            &adv(&[1.0; 4], 4, GroupNormOptions::grpo()),
            &[0.0; 4],
            1e-12,
        );
        close(
            &adv(&[1.0; 4], 4, GroupNormOptions::dr_grpo()),
            &[0.0; 4],
            1e-12,
        );
    }

    /// Spec §1.6 example 3: one correct of eight, and DAPO's ±1 scale.
    #[test]
    fn spec_1_6_example_3() {
        let mut r = [0.0; 8];
        r[0] = 1.0;
        let mut want = [-0.353552; 8];
        want[0] = 2.474867;
        close(&adv(&r, 8, GroupNormOptions::grpo()), &want, 1e-5);
        let mut want = [-0.125; 8];
        want[0] = 0.875;
        close(&adv(&r, 8, GroupNormOptions::dr_grpo()), &want, 1e-9);
        let pm = [1.0, -1.0, -1.0, 1.0];
        close(
            &adv(&pm, 4, GroupNormOptions::grpo()),
            &[0.866025, -0.866025, -0.866025, 0.866025],
            1e-5,
        );
        close(
            &adv(&pm, 4, GroupNormOptions::dr_grpo()),
            &[1.0, -1.0, -1.0, 1.0],
            1e-9,
        );
    }

    #[test]
    fn several_groups_and_singletons() {
        // Two groups are normalised independently.
        let got = adv(&[1.0, 0.0, 5.0, 5.0], 2, GroupNormOptions::dr_grpo());
        close(&got, &[0.5, -0.5, 0.0, 0.0], 1e-12);
        // G = 1: verl gives A = r/(1 + ε); the PROPOSAL option gives 0.
        close(
            &adv(&[2.0, -1.0], 1, GroupNormOptions::grpo()),
            &[2.0 / (1.0 + 1e-6), -1.0 / (1.0 + 1e-6)],
            1e-12,
        );
        let zero = GroupNormOptions {
            singleton: SingletonAdvantage::Zero,
            ..GroupNormOptions::grpo()
        };
        close(&adv(&[2.0, -1.0], 1, zero), &[0.0, 0.0], 0.0);
        // RLOO: rewards [1, 0, 0, 1] → r_i − mean of the other three.
        let a = rloo_advantages(&Tensor::from_slice(&[1.0, 0.0, 0.0, 1.0]), 4, SingletonAdvantage::Reward).unwrap();
        close(&Vec::<f64>::try_from(&a).unwrap(), &[1.0 - 1.0 / 3.0, -2.0 / 3.0, -2.0 / 3.0, 1.0 - 1.0 / 3.0], 1e-12);
        // REINFORCE++-baseline: x = [0.5, −0.5] with lengths [1, 3] → m = −0.25,
        // v = (0.5625 + 3·0.0625)/4 · 4/3 = 0.25, A = [0.75, −0.25]/sqrt(0.25 + 1e-8).
        let a = reinforce_pp_baseline_advantages(
            &Tensor::from_slice(&[1.0, 0.0]),
            &Tensor::from_slice(&[1.0, 3.0]),
            2,
            SingletonAdvantage::Reward,
        )
        .unwrap();
        let s = (0.25f64 + 1e-8).sqrt();
        // 1e-7: verl's 1e-8 in the token counts.
        close(&Vec::<f64>::try_from(&a).unwrap(), &[0.75 / s, -0.25 / s], 1e-7);
        assert!(group_advantages(
            &Tensor::from_slice(&[1.0, 2.0, 3.0]),
            2,
            &GroupNormOptions::grpo()
        )
        .is_err());
    }
}
