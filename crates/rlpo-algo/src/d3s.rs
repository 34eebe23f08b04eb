//! D³S, dynamic dual-level down-sampling (spec §3): keep the rows whose advantages have maximum
//! variance (intra-group or cross-group), then the top-K fraction of their tokens by
//! `|A|·H`, with (N, K) moving linearly with training progress.
//!
//! Shapes: advantages `[N]` (computed on full groups, never re-normalised here), entropies and
//! masks `[N, T]`; row selections are `[N]` bool, token selections `[N, T]` in the mask's kind.
//! Selection is decided once per rollout step, before mini-batching, without gradient.
//!
//! The exact maximum-variance subset of size n consists of the k smallest and n − k largest
//! values for some k (the structure PODS also uses); [`max_variance_subset`] scores all n + 1
//! candidates with prefix sums in O(M log M).

use tch::{Device, Kind, Tensor};

use crate::advantage::group_view;
use crate::config::{D3sConfig, D3sLevel};
use crate::error::{input_err, Result};

/// Population variance of `values` (0 for an empty slice).
pub fn population_variance(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n
}

/// Indices of a maximum-variance subset of size `n` of `values` (all indices when
/// `n ≥ len`). Ties between equally good subsets are broken by the smallest k (fewest low
/// values); callers should compare kept values or variances, not indices.
pub fn max_variance_subset(values: &[f64], n: usize) -> Vec<usize> {
    let m = values.len();
    if n >= m {
        return (0..m).collect();
    }
    if n == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    // Centre on the mean so the prefix sums of squares do not cancel catastrophically.
    let centre = values.iter().sum::<f64>() / m as f64;
    let sorted: Vec<f64> = order.iter().map(|&i| values[i] - centre).collect();
    let mut s1 = vec![0.0; m + 1];
    let mut s2 = vec![0.0; m + 1];
    for (i, v) in sorted.iter().enumerate() {
        s1[i + 1] = s1[i] + v;
        s2[i + 1] = s2[i] + v * v;
    }
    let nf = n as f64;
    let (mut best_k, mut best_var) = (0, f64::NEG_INFINITY);
    for k in 0..=n {
        // k smallest: sorted[0..k]; n − k largest: sorted[m − (n − k)..m].
        let hi = m - (n - k);
        let sum = s1[k] + (s1[m] - s1[hi]);
        let sq = s2[k] + (s2[m] - s2[hi]);
        let var = sq / nf - (sum / nf) * (sum / nf);
        if var > best_var + 1e-12 {
            best_k = k;
            best_var = var;
        }
    }
    let mut out: Vec<usize> = order[..best_k].to_vec();
    out.extend_from_slice(&order[m - (n - best_k)..]);
    out
}

/// The scheduled budgets at one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct D3sTargets {
    /// `N_s(p)`: rows kept per group (cross-group: `B · N_s` rows in total).
    pub samples_per_group: usize,
    /// `K(p)`: fraction of the kept rows' valid tokens that enter the loss, in (0, 1].
    pub token_keep: f64,
}

/// `[N_s(p), K(p)] = (1 − p)·[N_init, K_init] + p·[N_final, K_final]` (spec §3.3 step 4), with
/// the PROPOSAL rounding: `N_s` to the nearest integer (halves away from zero) clamped to
/// `[2, G]`, `K` clamped to (0, 1].
pub fn d3s_schedule(cfg: &D3sConfig, progress: f64, g: usize) -> D3sTargets {
    let p = progress.clamp(0.0, 1.0);
    let (n0, n1) = cfg.samples(g);
    let n = ((1.0 - p) * n0 as f64 + p * n1 as f64).round() as usize;
    let k = (1.0 - p) * cfg.token_keep_init + p * cfg.token_keep_final;
    D3sTargets {
        samples_per_group: n.max(2).min(g.max(1)),
        token_keep: k.clamp(f64::MIN_POSITIVE, 1.0),
    }
}

fn to_vec_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(
        &t.detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .reshape([-1]),
    )
    .expect("1-D float tensor converts to Vec<f64>")
}

fn to_vec_bool(t: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(
        &t.detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Bool)
            .reshape([-1]),
    )
    .expect("1-D bool tensor converts to Vec<bool>")
}

/// Candidate flags per row: `candidates` (or all rows), minus all-equal groups when asked.
fn candidate_rows(
    adv: &[f64],
    g: usize,
    candidates: Option<&Tensor>,
    drop_zero_variance: bool,
) -> Result<Vec<bool>> {
    let mut ok = match candidates {
        Some(c) => {
            let v = to_vec_bool(c);
            if v.len() != adv.len() {
                return Err(input_err(
                    "candidates",
                    format!("expected [{}], got {:?}", adv.len(), c.size()),
                ));
            }
            v
        }
        None => vec![true; adv.len()],
    };
    if drop_zero_variance {
        for (grp, flags) in adv.chunks(g).zip(ok.chunks_mut(g)) {
            if grp.iter().all(|a| *a == grp[0]) {
                flags.iter_mut().for_each(|f| *f = false);
            }
        }
    }
    Ok(ok)
}

fn mask_from_indices(n: usize, kept: impl IntoIterator<Item = usize>, device: Device) -> Tensor {
    let mut flags = vec![false; n];
    kept.into_iter().for_each(|i| flags[i] = true);
    Tensor::from_slice(&flags).to_device(device)
}

/// Intra-group selection: in every group keep a max-variance subset of `n_per_group` rows
/// among its candidate rows. `adv[N]`; `candidates[N]` bool (e.g. rows with tokens); → `[N]` bool.
pub fn select_intra_group(
    adv: &Tensor,
    g: i64,
    n_per_group: usize,
    candidates: Option<&Tensor>,
    drop_zero_variance: bool,
) -> Result<Tensor> {
    let _ = group_view(adv, g, "advantages")?; // shape check only
    let values = to_vec_f64(adv);
    let ok = candidate_rows(&values, g as usize, candidates, drop_zero_variance)?;
    let mut kept = Vec::new();
    for (b, grp) in values.chunks(g as usize).enumerate() {
        let base = b * g as usize;
        let idx: Vec<usize> = (0..grp.len()).filter(|&i| ok[base + i]).collect();
        let vals: Vec<f64> = idx.iter().map(|&i| grp[i]).collect();
        kept.extend(
            max_variance_subset(&vals, n_per_group)
                .into_iter()
                .map(|j| base + idx[j]),
        );
    }
    Ok(mask_from_indices(values.len(), kept, adv.device()))
}

/// Cross-group selection: keep a max-variance subset of `n_total` rows from the pooled candidate
/// rows of the whole batch (advantages are not re-normalised across groups). → `[N]` bool.
pub fn select_cross_group(
    adv: &Tensor,
    g: i64,
    n_total: usize,
    candidates: Option<&Tensor>,
    drop_zero_variance: bool,
) -> Result<Tensor> {
    let _ = group_view(adv, g, "advantages")?; // shape check only
    let values = to_vec_f64(adv);
    let ok = candidate_rows(&values, g as usize, candidates, drop_zero_variance)?;
    let idx: Vec<usize> = (0..values.len()).filter(|&i| ok[i]).collect();
    let vals: Vec<f64> = idx.iter().map(|&i| values[i]).collect();
    let kept = max_variance_subset(&vals, n_total)
        .into_iter()
        .map(|j| idx[j]);
    Ok(mask_from_indices(values.len(), kept, adv.device()))
}

/// Row selection at `level` with `samples_per_group` = `N_s` (cross-group budget `B · N_s`,
/// PROPOSAL). `N_s ≥ G` keeps every candidate row.
pub fn select_rows(
    adv: &Tensor,
    g: i64,
    level: D3sLevel,
    samples_per_group: usize,
    candidates: Option<&Tensor>,
    drop_zero_variance: bool,
) -> Result<Tensor> {
    match level {
        D3sLevel::IntraGroup => {
            select_intra_group(adv, g, samples_per_group, candidates, drop_zero_variance)
        }
        D3sLevel::CrossGroup => {
            let groups = adv.size()[0] as usize / g.max(1) as usize;
            select_cross_group(
                adv,
                g,
                groups * samples_per_group,
                candidates,
                drop_zero_variance,
            )
        }
    }
}

/// Token selection: among positions where `mask` (`[N, T]`, already restricted to the kept
/// rows) is 1, keep the `k = ceil(K·M)` positions with the largest `|A_row|·H` (M = number of
/// such positions; ties broken arbitrarily, as the spec allows). `adv_rows[N]`, `entropy[N, T]` → `[N, T]` in `mask`'s kind.
/// An empty mask gives an all-zero selection (the trainer then skips the step).
pub fn select_tokens(
    adv_rows: &Tensor,
    entropy: &Tensor,
    mask: &Tensor,
    keep_frac: f64,
) -> Result<Tensor> {
    let size = mask.size();
    if entropy.size() != size || adv_rows.size() != [size[0]] {
        return Err(input_err(
            "entropy",
            format!(
                "expected entropy {size:?} and advantages [{}], got {:?} and {:?}",
                size[0],
                entropy.size(),
                adv_rows.size()
            ),
        ));
    }
    Ok(tch::no_grad(|| {
        let valid = mask.gt(0.0);
        let m = valid.sum(Kind::Int64).int64_value(&[]);
        if m == 0 {
            return mask.zeros_like();
        }
        // ceil with a tolerance, so that K·M = 3.0000000000000004 keeps 3 tokens, not 4.
        let k = ((keep_frac * m as f64 - 1e-9).ceil() as i64).clamp(1, m);
        if k == m {
            return valid.to_kind(mask.kind());
        }
        let score = adv_rows.detach().abs().unsqueeze(-1).to_kind(Kind::Float)
            * entropy.detach().to_kind(Kind::Float);
        // topk (unsorted) measured faster on CPU than a kthvalue threshold plus tie handling
        // (masked_select and cumsum over 2M positions cost more than the partial sort).
        let flat = score
            .masked_fill(&valid.logical_not(), f64::NEG_INFINITY)
            .reshape([-1]);
        let (_, idx) = flat.topk(k, 0, true, false);
        let keep = Tensor::zeros([size[0] * size[1]], (mask.kind(), mask.device()));
        keep.scatter_value(0, &idx, 1.0).view([size[0], size[1]])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advantage::{group_advantages, GroupNormOptions};
    use crate::testutil::SplitMix;

    fn kept_values(values: &[f64], idx: &[usize]) -> Vec<f64> {
        let mut v: Vec<f64> = idx.iter().map(|&i| values[i]).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    /// Spec §3.6 example 1: intra-group, rewards [1,1,0,0,0,0,0,0].
    #[test]
    fn spec_3_6_intra_group() {
        let r = Tensor::from_slice(&[1.0, 1., 0., 0., 0., 0., 0., 0.]);
        let adv = group_advantages(&r, 8, &GroupNormOptions::grpo()).unwrap();
        let a = to_vec_f64(&adv);
        close(
            &a,
            &[
                1.620182, 1.620182, -0.540061, -0.540061, -0.540061, -0.540061, -0.540061,
                -0.540061,
            ],
        );
        for (n, var, kept) in [
            (4, 1.166662, vec![-0.540061, -0.540061, 1.620182, 1.620182]),
            (2, 1.166662, vec![-0.540061, 1.620182]),
            (
                6,
                1.037033,
                vec![
                    -0.540061, -0.540061, -0.540061, -0.540061, 1.620182, 1.620182,
                ],
            ),
        ] {
            let mask = select_intra_group(&adv, 8, n, None, false).unwrap();
            let idx: Vec<usize> = to_vec_bool(&mask)
                .iter()
                .enumerate()
                .filter(|(_, k)| **k)
                .map(|(i, _)| i)
                .collect();
            let vals = kept_values(&a, &idx);
            close(&vals, &kept);
            assert!((population_variance(&vals) - var).abs() < 1e-5, "N_s = {n}");
        }
    }

    /// Spec §3.6 example 2: cross-group over three groups of four.
    #[test]
    fn spec_3_6_cross_group() {
        let r = Tensor::from_slice(&[1.0, 0., 0., 1., 1., 0., 0., 0., 1., 1., 1., 1.]);
        let adv = group_advantages(&r, 4, &GroupNormOptions::grpo()).unwrap();
        let a = to_vec_f64(&adv);
        close(
            &a,
            &[
                0.866024, -0.866024, -0.866024, 0.866024, 1.499997, -0.499999, -0.499999,
                -0.499999, 0., 0., 0., 0.,
            ],
        );
        let mask = select_cross_group(&adv, 4, 4, None, false).unwrap();
        let idx: Vec<usize> = to_vec_bool(&mask)
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        let vals = kept_values(&a, &idx);
        close(&vals, &[-0.866024, -0.866024, 0.866024, 1.499997]);
        assert!((population_variance(&vals) - 1.099876).abs() < 1e-5);
        assert!(
            idx.iter().all(|&i| i < 8),
            "the all-correct group contributes nothing"
        );
        let mask = select_cross_group(&adv, 4, 6, None, false).unwrap();
        let idx: Vec<usize> = to_vec_bool(&mask)
            .iter()
            .enumerate()
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        assert!((population_variance(&kept_values(&a, &idx)) - 0.888886).abs() < 1e-5);
        // The same through select_rows with the B·N_s budget: 3 groups × N_s = 2 → 6 rows.
        let same = select_rows(&adv, 4, D3sLevel::CrossGroup, 2, None, false).unwrap();
        assert!(same.equal(&mask));
    }

    /// Spec §3.6 example 3: token-level top-K by |A|·H.
    #[test]
    fn spec_3_6_tokens() {
        let adv = Tensor::from_slice(&[0.866, -0.866]);
        let h = Tensor::from_slice(&[0.10f32, 1.50, 0.05, 0.80, 0.02, 2.00]).view([2, 3]);
        let mask = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let keep = select_tokens(&adv, &h, &mask, 0.5).unwrap();
        // Tokens 6, 2, 4 of the spec (1-based) = flat indices 5, 1, 3.
        assert_eq!(
            Vec::<f32>::try_from(&keep.view([-1])).unwrap(),
            vec![0., 1., 0., 1., 0., 1.]
        );
        // Masked positions are never picked, and an empty mask selects nothing.
        let partial = Tensor::from_slice(&[1.0f32, 1., 1., 1., 1., 0.]).view([2, 3]);
        // M = 5 → k = ceil(2.5) = 3: scores 1.299, 0.6928 and then 0.0866 (token 1).
        let keep = select_tokens(&adv, &h, &partial, 0.5).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&keep.view([-1])).unwrap(),
            vec![1., 1., 0., 1., 0., 0.]
        );
        let none = select_tokens(&adv, &h, &mask.zeros_like(), 0.5).unwrap();
        assert_eq!(none.sum(Kind::Float).double_value(&[]), 0.0);
    }

    /// Property: the selection keeps exactly ceil(K·M) valid tokens and every kept score is ≥
    /// every dropped valid score, also when many scores tie.
    #[test]
    fn token_selection_is_a_top_k() {
        tch::manual_seed(1);
        let mut rng = SplitMix(3);
        for trial in 0..30 {
            let (n, t) = (6, 9);
            // Some zero advantages so that many scores tie at 0.
            let adv = Tensor::randn([n], (Kind::Float, Device::Cpu))
                * Tensor::randint(2, [n], (Kind::Int64, Device::Cpu));
            let h = Tensor::rand([n, t], (Kind::Float, Device::Cpu));
            let lens = Tensor::randint(t + 1, [n, 1], (Kind::Int64, Device::Cpu));
            let mask = Tensor::arange(t, (Kind::Int64, Device::Cpu))
                .unsqueeze(0)
                .lt_tensor(&lens)
                .to_kind(Kind::Float);
            let k_frac = 0.05 + 0.95 * rng.uniform();
            let keep = select_tokens(&adv, &h, &mask, k_frac).unwrap();
            let m = mask.sum(Kind::Double).double_value(&[]);
            let kept = keep.sum(Kind::Double).double_value(&[]);
            let want = if m == 0.0 {
                0.0
            } else {
                (k_frac * m - 1e-9).ceil().max(1.0)
            };
            assert_eq!(kept, want, "trial {trial}");
            let score = to_vec_f64(&(adv.abs().unsqueeze(-1) * &h));
            let (kv, mv) = (to_vec_bool(&keep), to_vec_bool(&mask));
            let min_kept = (0..score.len())
                .filter(|&i| kv[i])
                .map(|i| score[i])
                .fold(f64::INFINITY, f64::min);
            let max_drop = (0..score.len())
                .filter(|&i| mv[i] && !kv[i])
                .map(|i| score[i])
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(
                min_kept >= max_drop,
                "trial {trial}: {min_kept} < {max_drop}"
            );
            assert!(
                (0..score.len()).all(|i| !kv[i] || mv[i]),
                "only valid tokens are kept"
            );
        }
        // Ties: row 0 has A = 0 (all scores 0); K = 0.7 of 6 → 5 tokens: all of row 1 and two
        // of the tied zeros of row 0.
        let adv = Tensor::from_slice(&[0.0f32, 1.0]);
        let h = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let keep = select_tokens(&adv, &h, &h, 0.7).unwrap();
        assert_eq!(keep.get(1).sum(Kind::Float).double_value(&[]), 3.0);
        assert_eq!(keep.get(0).sum(Kind::Float).double_value(&[]), 2.0);
    }

    /// Spec §3.6 example 4: the linear schedule.
    #[test]
    fn spec_3_6_schedule() {
        let cfg = D3sConfig {
            samples_init: Some(4),
            samples_final: Some(16),
            token_keep_init: 0.2,
            token_keep_final: 1.0,
            ..Default::default()
        };
        for (p, n, k) in [
            (0.0, 4, 0.2),
            (0.25, 7, 0.4),
            (0.5, 10, 0.6),
            (1.0, 16, 1.0),
        ] {
            let t = d3s_schedule(&cfg, p, 16);
            assert_eq!(t.samples_per_group, n, "p = {p}");
            assert!((t.token_keep - k).abs() < 1e-12, "p = {p}");
        }
        // Clamp to [2, G].
        let small = D3sConfig {
            samples_init: Some(1),
            samples_final: Some(1),
            ..Default::default()
        };
        assert_eq!(d3s_schedule(&small, 0.0, 8).samples_per_group, 2);
    }

    /// Property: the exact search reaches the brute-force maximum variance for all n ≤ 12.
    #[test]
    fn max_variance_matches_brute_force() {
        let mut rng = SplitMix(42);
        for trial in 0..300 {
            let m = 1 + (rng.next_u64() % 12) as usize;
            let values: Vec<f64> = (0..m)
                .map(|_| {
                    let x = rng.normal() * 2.0;
                    // Every third trial on a coarse grid, to exercise ties.
                    if trial % 3 == 0 {
                        (x * 2.0).round() / 2.0
                    } else {
                        x
                    }
                })
                .collect();
            for n in 1..=m {
                let mut best = f64::NEG_INFINITY;
                for bits in 0u32..(1 << m) {
                    if bits.count_ones() as usize == n {
                        let sub: Vec<f64> = (0..m)
                            .filter(|i| bits >> i & 1 == 1)
                            .map(|i| values[i])
                            .collect();
                        best = best.max(population_variance(&sub));
                    }
                }
                let idx = max_variance_subset(&values, n);
                assert_eq!(idx.len(), n);
                let got = population_variance(&kept_values(&values, &idx));
                assert!(
                    (got - best).abs() < 1e-9,
                    "trial {trial} n {n}: {got} vs {best}"
                );
            }
        }
    }

    #[test]
    fn candidates_and_zero_variance_groups() {
        let adv = Tensor::from_slice(&[1.0, -1.0, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0]);
        // Row 0 is not a candidate: group 0 must take rows from 1..4.
        let cand = Tensor::from_slice(&[false, true, true, true, true, true, true, true]);
        let m = select_intra_group(&adv, 4, 2, Some(&cand), false).unwrap();
        // The all-zero group is a tie; the search keeps its last two rows (k = 0).
        assert_eq!(
            to_vec_bool(&m),
            vec![false, true, true, false, false, false, true, true]
        );
        // Dropping zero-variance groups leaves group 1 empty.
        let m = select_intra_group(&adv, 4, 2, None, true).unwrap();
        assert_eq!(to_vec_bool(&m)[4..], [false; 4]);
        let m = select_cross_group(&adv, 4, 6, None, true).unwrap();
        assert_eq!(
            to_vec_bool(&m),
            vec![true, true, true, true, false, false, false, false]
        );
    }
}
