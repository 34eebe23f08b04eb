//! Unit tests of `hapo`: the spec's worked examples and property tests.
use super::*;
use crate::surrogate::clipped_surrogate;
use crate::seeded::SplitMix;
use tch::Device;

fn vecf(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

fn close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < tol, "{got:?} vs {want:?}");
    }
}

fn tla(r: &[f64], l: &[f64], g: i64) -> TokenLevelAdvantages {
    token_level_group_average(
        &Tensor::from_slice(r),
        &Tensor::from_slice(l),
        g,
        &TokenLevelOptions::default(),
    )
    .unwrap()
}

/// Spec §4.6 example 1 a–c: token-level group average and its fallback.
#[test]
fn spec_4_6_token_level_group_average() {
    let a = tla(&[1.0, 0.0], &[2.0, 4.0], 2);
    let av = vecf(&a.advantages);
    close(&av, &[1.414211, -0.707105], 1e-5);
    // Token sum 2·A_1 + 4·A_2 = 0.
    assert!((2.0 * av[0] + 4.0 * av[1]).abs() < 1e-9);
    let b = tla(&[1.0, 0.0, 0.0, 1.0], &[10.0, 20.0, 30.0, 40.0], 4);
    close(
        &vecf(&b.advantages),
        &[0.999998, -0.999998, -0.999998, 0.999998],
        1e-5,
    );
    let mut r = vec![0.0; 16];
    r[0] = 1.0;
    let mut l = vec![1000.0; 16];
    l[0] = 1.0;
    let c = tla(&r, &l, 16);
    let mut want = vec![-0.249999; 16];
    want[0] = 3.749985;
    close(&vecf(&c.advantages), &want, 1e-5);
    assert_eq!(Vec::<bool>::try_from(&c.fallback).unwrap(), vec![true]);
    assert_eq!(Vec::<bool>::try_from(&a.fallback).unwrap(), vec![false]);
}

/// Spec §4.6 example 2: normalised entropy (intended and released code) and temperatures.
#[test]
fn spec_4_6_normalised_entropy() {
    let h = Tensor::from_slice(&[0.05, 0.1, 0.2, 0.4, 0.8, 1.6]).view([1, 6]);
    let mask = h.ones_like();
    let st = entropy_stats(&h, &mask, 0.8, false).unwrap();
    assert!((st.q - (-0.223144)).abs() < 1e-6);
    assert!((st.s - 1.575545).abs() < 1e-6);
    let raw: Vec<f64> = vecf(&h).iter().map(|e| (e.ln() - st.q) / st.s).collect();
    close(
        &raw,
        &[-1.7598, -1.3198, -0.8799, -0.4399, 0.0, 0.4399],
        1e-4,
    );
    close(
        &vecf(&normalised_entropy(&h, &mask, &st)),
        &[-1.0, -0.75, -0.5, -0.25, 0.0, 1.0],
        1e-5,
    );
    let code = entropy_stats(&h, &mask, 0.8, true).unwrap();
    close(
        &vecf(&normalised_entropy(&h, &mask, &code)),
        &[1.0, 0.75, 0.5, 0.25, 0.0, 1.0],
        1e-5,
    );
    for (ht, want) in [
        (1.0, 1.05),
        (0.5, 1.025),
        (0.0, 1.0),
        (-0.5, 0.975),
        (-1.0, 0.95),
    ] {
        assert!((temperature_from_h_tilde(ht, 1.0, 0.05) - want).abs() < 1e-12);
    }
    // From entropies through the rollout formula (its 1e-6 terms move h̃ by < 1e-5).
    let temps: Vec<f64> = [0.05, 0.2, 0.8, 1.6]
        .iter()
        .map(|&e| token_temperature(e, &st, 1.0, 0.05))
        .collect();
    close(&temps, &[0.95, 0.975, 1.0, 1.05], 1e-5);
    close(
        &vecf(&token_temperatures(
            &Tensor::from_slice(&[0.05, 1.6]),
            &st,
            1.0,
            0.05,
        )),
        &[0.95, 1.05],
        1e-5,
    );
}

/// Spec §4.6 example 3: the clip-bounds and redistribution table (ε_L = ε_H = 0.2,
/// α = β = 1, c = 10), plus the ε_H = 0.28 variant of its first row.
#[test]
fn spec_4_6_clip_and_redistribution_table() {
    // (A, h̃, ρ, ε_L(t), ε_H(t), in zone, A', loss, ε_H base)
    let rows = [
        (1.0, 0.5, 1.0, 0.2, 0.3, true, 1.0, -1.0, 0.2),
        (1.0, 0.5, 1.3, 0.2, 0.3, false, 1.5, -1.95, 0.2),
        (1.0, -0.5, 1.0, 0.3, 0.2, true, 0.5, -0.5, 0.2),
        (1.0, -0.5, 0.8, 0.3, 0.2, false, 1.0, -0.8, 0.2),
        (-1.0, 0.5, 0.8, 0.2, 0.3, false, -1.5, 1.2, 0.2),
        (-1.0, -1.0, 1.0, 0.4, 0.2, true, 0.0, 0.0, 0.2),
        (1.0, 0.5, 1.2, 0.2, 0.42, true, 1.0, -1.2, 0.28),
    ];
    for (i, &(a, ht, rho, el, eh, zone, a2, loss, eh_base)) in rows.iter().enumerate() {
        let (a_t, ht_t, rho_t) = (
            Tensor::from_slice(&[a]),
            Tensor::from_slice(&[ht]),
            Tensor::from_slice(&[rho]),
        );
        let clip = adaptive_clip(&ht_t, 0.2, eh_base, 1.0);
        let (ClipWidth::PerToken(lo), ClipWidth::PerToken(hi)) = (&clip.low, &clip.high) else {
            unreachable!()
        };
        assert!((lo.double_value(&[0]) - el).abs() < 1e-12, "row {i}: ε_L");
        assert!((hi.double_value(&[0]) - eh).abs() < 1e-12, "row {i}: ε_H");
        assert_eq!(
            rho > 1.0 - el / 2.0 && rho < 1.0 + eh / 2.0,
            zone,
            "row {i}: zone"
        );
        let a_new = redistribute_advantages(&a_t, &ht_t, &rho_t, &clip, 1.0);
        assert!((a_new.double_value(&[0]) - a2).abs() < 1e-12, "row {i}: A'");
        let l = clipped_surrogate(&rho_t, &a_new, &clip, Some(10.0)).double_value(&[0]);
        assert!((l - loss).abs() < 1e-9, "row {i}: loss {l} vs {loss}");
    }
}

/// Property: without fallback, token-level advantages sum to zero over each group's tokens.
#[test]
fn token_level_advantages_sum_to_zero() {
    let mut rng = SplitMix(9);
    let (b, g) = (40, 8);
    let r: Vec<f64> = (0..b * g)
        .map(|_| if rng.uniform() < 0.5 { 1.0 } else { -1.0 } - rng.uniform() * 0.3)
        .collect();
    let l: Vec<f64> = (0..b * g)
        .map(|_| 1.0 + (rng.next_u64() % 300) as f64)
        .collect();
    let out = token_level_group_average(
        &Tensor::from_slice(&r),
        &Tensor::from_slice(&l),
        g as i64,
        &TokenLevelOptions::default(),
    )
    .unwrap();
    let a = vecf(&out.advantages);
    let fb = Vec::<bool>::try_from(&out.fallback).unwrap();
    assert!(
        fb.iter().filter(|f| !**f).count() > b / 2,
        "most groups should not fall back"
    );
    for grp in 0..b {
        if fb[grp] {
            continue;
        }
        let s: f64 = (0..g).map(|i| l[grp * g + i] * a[grp * g + i]).sum();
        let scale: f64 = (0..g).map(|i| l[grp * g + i] * a[grp * g + i].abs()).sum();
        assert!(s.abs() <= 1e-9 * scale.max(1.0), "group {grp}: Σ L·A = {s}");
    }
}

#[test]
fn padding_check_and_empty_stats() {
    // Row lengths [1, 1]: μ = 0.5; with padding to T = 4 the padded value −μ/σ = −1 is small.
    let opts = TokenLevelOptions {
        padded_len: Some(4),
        fallback_threshold: 0.9,
        ..Default::default()
    };
    let out = token_level_group_average(
        &Tensor::from_slice(&[1.0, 0.0]),
        &Tensor::from_slice(&[1.0, 1.0]),
        2,
        &opts,
    )
    .unwrap();
    // |A| = 0.999998 ≥ 0.9 already → fallback regardless.
    assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![true]);
    let opts = TokenLevelOptions {
        padded_len: Some(4),
        fallback_threshold: 1.5,
        ..Default::default()
    };
    // R = [1, 0, 0], L = [1, 1, 1]: A = [1.414, −0.707, −0.707], padded −μ/σ = −0.707 → no fallback.
    let out = token_level_group_average(
        &Tensor::from_slice(&[1.0, 0.0, 0.0]),
        &Tensor::from_slice(&[1.0, 1.0, 1.0]),
        3,
        &opts,
    )
    .unwrap();
    assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![false]);
    // R = [5, 5, 2], L = [1, 1, 1]: A ≈ [0.707, 0.707, −1.414] (all below 1.5), but the
    // padded value −μ/σ = −4/1.414 = −2.83 trips the released-code check.
    let (r, l) = (
        Tensor::from_slice(&[5.0, 5.0, 2.0]),
        Tensor::from_slice(&[1.0, 1.0, 1.0]),
    );
    let out = token_level_group_average(&r, &l, 3, &opts).unwrap();
    assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![true]);
    let valid_only = TokenLevelOptions {
        padded_len: None,
        ..opts
    };
    let out = token_level_group_average(&r, &l, 3, &valid_only).unwrap();
    assert_eq!(Vec::<bool>::try_from(&out.fallback).unwrap(), vec![false]);
    let none = entropy_stats(
        &Tensor::ones([2, 2], (Kind::Float, Device::Cpu)),
        &Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        0.8,
        false,
    );
    assert!(none.is_none());
    // All entropies equal: s clamps to 1e-4, h = 0, h̃ = 0.
    let flat = Tensor::full([1, 4], 0.3, (Kind::Float, Device::Cpu));
    let st = entropy_stats(&flat, &flat.ones_like(), 0.8, false).unwrap();
    assert!((st.s - 1e-4).abs() < 1e-12);
    assert_eq!(
        vecf(&normalised_entropy(&flat, &flat.ones_like(), &st)),
        vec![0.0; 4]
    );
}
