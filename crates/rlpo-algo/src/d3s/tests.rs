//! Unit tests of `d3s`: the spec's worked examples and property tests.
use super::*;
use crate::advantage::{group_advantages, GroupNormOptions};
use crate::seeded::SplitMix;

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
            1.620182, 1.620182, -0.540061, -0.540061, -0.540061, -0.540061, -0.540061, -0.540061,
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
            0.866024, -0.866024, -0.866024, 0.866024, 1.499997, -0.499999, -0.499999, -0.499999,
            0., 0., 0., 0.,
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
    let mut tr = crate::seeded::SplitMix(1);
    let mut rng = SplitMix(3);
    for trial in 0..30 {
        let (n, t) = (6, 9);
        // Some zero advantages so that many scores tie at 0.
        let adv = tr.randn([n], (Kind::Float, Device::Cpu))
            * tr.randint(2, [n], (Kind::Int64, Device::Cpu));
        let h = tr.rand([n, t], (Kind::Float, Device::Cpu));
        let lens = tr.randint(t + 1, [n, 1], (Kind::Int64, Device::Cpu));
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
