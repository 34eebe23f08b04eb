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
mod tests;
