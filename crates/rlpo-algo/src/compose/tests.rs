//! Tests of the composition: spec §1.6 example 4 end to end, and micro-batch invariance of the
//! whole pipeline with D³S, HAPO and KL switched on.

use super::*;
use crate::aggregate::AggMode;
use crate::config::{AdvantageKind, BaseLoss, HapoConfig, HapoStatsScope, LossConfig};
use crate::config::{D3sConfig, D3sLevel, DapoConfig, FilterGroupsConfig, OverlongConfig};
use crate::d3s::D3sTargets;
use crate::kl::KlEstimator;
use crate::surrogate::ClipRange;
use tch::{Device, Kind};

fn d(v: &[f64]) -> Tensor {
    Tensor::from_slice(v)
}

fn mat(v: &[f64], n: i64) -> Tensor {
    Tensor::from_slice(v).view([n, -1])
}

/// Runs plan + one whole-batch policy loss with ρ = 1 and returns the loss value.
fn one_step(
    alg: &AlgorithmConfig,
    loss: &LossConfig,
    rewards: &Tensor,
    mask: &Tensor,
    logp: &Tensor,
    ref_logp: Option<&Tensor>,
) -> f64 {
    let inputs = StepInputs {
        rewards,
        response_mask: mask,
        group_size: 2,
        entropy: None,
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan = compute_step_plan(alg, loss, &AlgoState::new(10), &inputs).unwrap();
    let mb = plan.micro_batch(0, plan.rows());
    let pi = PolicyInputs {
        logp,
        old_logp: logp,
        ref_logp,
        entropy: None,
    };
    policy_loss(alg, loss, &mb, &pi, &plan.normaliser(0, plan.rows()))
        .unwrap()
        .loss
        .double_value(&[])
}

/// Spec §1.6 example 4: G = 2, rewards [1, 0], lengths [2, 1], ρ = 1.
#[test]
fn spec_1_6_example_4_end_to_end() {
    let rewards = d(&[1.0, 0.0]);
    let mask = mat(&[1.0, 1.0, 1.0, 0.0], 2);
    let logp = mat(&[0.5f64.ln(); 4], 2);
    let grpo = AlgorithmConfig::default();
    let tm = LossConfig {
        agg: Some(AggMode::TokenMean),
        ..Default::default()
    };
    assert!((one_step(&grpo, &tm, &rewards, &mask, &logp, None) - -0.235702).abs() < 1e-5);
    let smtm = LossConfig {
        agg: Some(AggMode::SeqMeanTokenMean),
        ..Default::default()
    };
    assert!(one_step(&grpo, &smtm, &rewards, &mask, &logp, None).abs() < 1e-5);
    let dr = AlgorithmConfig {
        advantage: AdvantageKind::DrGrpo,
        ..Default::default()
    };
    let cn = LossConfig {
        agg: Some(AggMode::ConstantNorm),
        norm_len: Some(4),
        ..Default::default()
    };
    assert!((one_step(&dr, &cn, &rewards, &mask, &logp, None) - -0.0625).abs() < 1e-9);
    // β = 0.04 with k3 = 0.193147 on every token (π_θ = 0.5, π_ref = 0.25).
    let kl = LossConfig {
        kl_coef: 0.04,
        kl_estimator: KlEstimator::K3,
        ..smtm
    };
    let reference = mat(&[0.25f64.ln(); 4], 2);
    assert!(
        (one_step(&grpo, &kl, &rewards, &mask, &logp, Some(&reference)) - 0.007726).abs() < 1e-5
    );
    // Missing reference log-probs are an error, not a silent zero.
    let inputs = StepInputs {
        rewards: &rewards,
        response_mask: &mask,
        group_size: 2,
        entropy: None,
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan = compute_step_plan(&grpo, &kl, &AlgoState::new(10), &inputs).unwrap();
    let pi = PolicyInputs {
        logp: &logp,
        old_logp: &logp,
        ref_logp: None,
        entropy: None,
    };
    let err = policy_loss(
        &grpo,
        &kl,
        &plan.micro_batch(0, 2),
        &pi,
        &plan.normaliser(0, 2),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ref_logp"), "{err}");
}

struct Batch {
    rewards: Tensor,
    mask: Tensor,
    entropy: Tensor,
    logp: Tensor,
    old: Tensor,
    reference: Tensor,
}

fn random_batch(b: i64, g: i64, t: i64, seed: i64) -> Batch {
    let mut rng = crate::seeded::SplitMix(seed as u64);
    let opts = (Kind::Double, Device::Cpu);
    let n = b * g;
    let rewards = rng.randint(2, [n], (Kind::Int64, Device::Cpu)).to_kind(Kind::Double);
    let lens = rng.randint(t, [n, 1], (Kind::Int64, Device::Cpu)) + 1;
    let mask = Tensor::arange(t, (Kind::Int64, Device::Cpu))
        .unsqueeze(0)
        .lt_tensor(&lens)
        .to_kind(Kind::Double);
    let entropy = rng.rand([n, t], opts) * 3.0;
    let old = -(rng.rand([n, t], opts) * 3.0);
    let logp = &old + rng.randn([n, t], opts) * 0.2;
    let reference = &old + rng.randn([n, t], opts) * 0.1;
    Batch {
        rewards,
        mask,
        entropy,
        logp,
        old,
        reference,
    }
}

/// Property: with D³S, HAPO (step scope) and KL on, splitting one optimizer step into
/// micro-batches leaves the loss and its gradient unchanged (≤ 1e-6), for every aggregation.
#[test]
fn micro_batches_match_whole_batch_full_stack() {
    let (b, g, t) = (4, 4, 7);
    let x = random_batch(b, g, t, 21);
    let alg = AlgorithmConfig {
        advantage: AdvantageKind::Hapo,
        d3s: Some(D3sConfig {
            level: D3sLevel::CrossGroup,
            samples_init: Some(3),
            samples_final: Some(3),
            ..Default::default()
        }),
        hapo: Some(HapoConfig::default()),
        ..Default::default()
    };
    let inputs = StepInputs {
        rewards: &x.rewards,
        response_mask: &x.mask,
        group_size: g,
        entropy: Some(&x.entropy),
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan =
        compute_step_plan(&alg, &LossConfig::default(), &AlgoState::new(4), &inputs).unwrap();
    assert!(plan.h_tilde.is_some() && plan.hapo_stats.is_some());
    for agg in [
        AggMode::TokenMean,
        AggMode::SeqMeanTokenMean,
        AggMode::SeqMeanTokenSum,
        AggMode::ConstantNorm,
    ] {
        for base in [BaseLoss::Grpo, BaseLoss::GspoToken] {
            let loss = LossConfig {
                agg: Some(agg),
                norm_len: Some(7),
                kl_coef: 0.01,
                base,
                clip_low: Some(0.2),
                clip_high: Some(0.28),
                ..Default::default()
            };
            let n = plan.rows();
            let norm = plan.normaliser(0, n);
            let run = |splits: &[(i64, i64)]| {
                let leaf = x.logp.copy().set_requires_grad(true);
                let mut total = 0.0;
                for &(s, l) in splits {
                    let pi = PolicyInputs {
                        logp: &leaf.narrow(0, s, l),
                        old_logp: &x.old.narrow(0, s, l),
                        ref_logp: Some(&x.reference.narrow(0, s, l)),
                        entropy: None,
                    };
                    let out =
                        policy_loss(&alg, &loss, &plan.micro_batch(s, l), &pi, &norm).unwrap();
                    out.loss.backward();
                    total += out.loss.double_value(&[]);
                }
                (total, leaf.grad().copy())
            };
            let (whole, g_whole) = run(&[(0, n)]);
            let (parts, g_parts) = run(&[(0, 5), (5, 3), (8, 8)]);
            let dg = (g_whole - &g_parts).abs().max().double_value(&[]);
            assert!(
                (whole - parts).abs() <= 1e-6 && dg <= 1e-6,
                "{agg:?} {base:?}: {whole} vs {parts}, grad {dg}"
            );
            assert!(g_parts.abs().sum(Kind::Double).double_value(&[]) > 0.0);
        }
    }
}

#[test]
fn d3s_plan_masks_and_budgets() {
    let (b, g, t) = (3, 8, 10);
    let x = random_batch(b, g, t, 5);
    let alg = AlgorithmConfig {
        d3s: Some(D3sConfig {
            level: D3sLevel::IntraGroup,
            samples_init: Some(4),
            samples_final: Some(8),
            token_keep_init: 0.5,
            token_keep_final: 1.0,
            ..Default::default()
        }),
        ..Default::default()
    };
    let inputs = StepInputs {
        rewards: &x.rewards,
        response_mask: &x.mask,
        group_size: g,
        entropy: Some(&x.entropy),
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan =
        compute_step_plan(&alg, &LossConfig::default(), &AlgoState::new(10), &inputs).unwrap();
    assert_eq!(
        plan.d3s,
        Some(D3sTargets {
            samples_per_group: 4,
            token_keep: 0.5
        })
    );
    // The loss mask is inside the response mask, and has ceil(K·M) tokens of the kept rows.
    assert_eq!(
        (&plan.loss_mask * (plan.response_mask.neg() + 1.0))
            .abs()
            .sum(Kind::Double)
            .double_value(&[]),
        0.0
    );
    let rows =
        crate::d3s::select_rows(&plan.advantages, g, D3sLevel::IntraGroup, 4, None, false).unwrap();
    let m = (&x.mask * rows.to_kind(Kind::Double).unsqueeze(-1))
        .sum(Kind::Double)
        .double_value(&[]);
    assert_eq!(plan.summary().kept_tokens, (0.5 * m).ceil());
    assert!(plan.summary().kept_rows <= 12);
    // Without entropies D³S cannot run.
    let no_h = StepInputs {
        entropy: None,
        ..inputs
    };
    let err =
        compute_step_plan(&alg, &LossConfig::default(), &AlgoState::new(10), &no_h).unwrap_err();
    assert!(
        err.to_string()
            .contains("entropy is required when algorithm.d3s is set"),
        "{err}"
    );
}

#[test]
fn overlong_filter_shaping_and_group_filter() {
    let x = random_batch(2, 2, 5, 8);
    let alg = AlgorithmConfig {
        dapo: DapoConfig {
            overlong: Some(OverlongConfig {
                max_len: Some(10),
                cache_len: 4,
                penalty_factor: 1.0,
            }),
            filter_groups: Some(FilterGroupsConfig::default()),
            overlong_filter: true,
        },
        ..Default::default()
    };
    let shaped = shape_rewards(
        &alg,
        &d(&[1.0, -1.0, 1.0, 1.0]),
        &d(&[8.0, 5.0, 10.0, 7.0]),
        20480,
    );
    assert_eq!(
        Vec::<f32>::try_from(&shaped).unwrap(),
        vec![0.5, -1.0, 0.0, 0.75]
    );
    let keep = group_filter(&alg, &d(&[1.0, 0.0, 1.0, 1.0]), &shaped, 2)
        .unwrap()
        .unwrap();
    assert_eq!(Vec::<bool>::try_from(&keep).unwrap(), vec![true, false]);
    let truncated = Tensor::from_slice(&[false, true, false, false]);
    let inputs = StepInputs {
        rewards: &x.rewards,
        response_mask: &x.mask,
        group_size: 2,
        entropy: None,
        truncated: Some(&truncated),
        old_logp: None,
        rollout_logp: None,
    };
    let plan =
        compute_step_plan(&alg, &LossConfig::default(), &AlgoState::new(1), &inputs).unwrap();
    assert_eq!(
        plan.loss_mask.get(1).sum(Kind::Double).double_value(&[]),
        0.0
    );
    assert_eq!(
        Vec::<bool>::try_from(&plan.row_keep).unwrap(),
        vec![true, false, true, true]
    );
    let err = compute_step_plan(
        &alg,
        &LossConfig::default(),
        &AlgoState::new(1),
        &StepInputs {
            truncated: None,
            ..inputs
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn gspo_base_is_the_sequence_mean_of_gspo_losses() {
    let x = random_batch(2, 2, 6, 13);
    let alg = AlgorithmConfig::default();
    let loss = LossConfig {
        base: BaseLoss::Gspo,
        ..Default::default()
    };
    let inputs = StepInputs {
        rewards: &x.rewards,
        response_mask: &x.mask,
        group_size: 2,
        entropy: None,
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan = compute_step_plan(&alg, &loss, &AlgoState::new(1), &inputs).unwrap();
    let pi = PolicyInputs {
        logp: &x.logp,
        old_logp: &x.old,
        ref_logp: None,
        entropy: None,
    };
    let got = policy_loss(
        &alg,
        &loss,
        &plan.micro_batch(0, 4),
        &pi,
        &plan.normaliser(0, 4),
    )
    .unwrap();
    let clip = ClipRange::new(3e-4, 4e-4);
    let want = crate::gspo::gspo_sequence_loss(
        &x.logp,
        &x.old,
        &plan.advantages,
        &x.mask,
        &clip,
    )
    .mean(Kind::Double);
    assert!((got.loss.double_value(&[]) - want.double_value(&[])).abs() < 1e-12);
}

#[test]
fn hapo_micro_batch_scope_needs_current_entropy() {
    let x = random_batch(2, 2, 6, 17);
    let alg = AlgorithmConfig {
        hapo: Some(HapoConfig {
            stats_scope: HapoStatsScope::MicroBatch,
            ..Default::default()
        }),
        ..Default::default()
    };
    let inputs = StepInputs {
        rewards: &x.rewards,
        response_mask: &x.mask,
        group_size: 2,
        entropy: Some(&x.entropy),
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan =
        compute_step_plan(&alg, &LossConfig::default(), &AlgoState::new(1), &inputs).unwrap();
    assert!(plan.h_tilde.is_none());
    let norm = plan.normaliser(0, 4);
    let pi = PolicyInputs {
        logp: &x.logp,
        old_logp: &x.old,
        ref_logp: None,
        entropy: None,
    };
    assert!(policy_loss(
        &alg,
        &LossConfig::default(),
        &plan.micro_batch(0, 4),
        &pi,
        &norm
    )
    .is_err());
    let pi = PolicyInputs {
        entropy: Some(&x.entropy),
        ..pi
    };
    let out = policy_loss(
        &alg,
        &LossConfig::default(),
        &plan.micro_batch(0, 4),
        &pi,
        &norm,
    )
    .unwrap();
    assert!(out.loss.double_value(&[]).is_finite());
    let cf = out.clip_frac.double_value(&[]);
    assert!((0.0..=1.0).contains(&cf));
}

#[test]
fn rmt_ntp_term_follows_the_recipe() {
    let logp = mat(&[-1.0, -2.0, -3.0, -4.0], 1);
    let m = mat(&[1.0, 0.0, 1.0, 1.0], 1);
    assert!(rmt_ntp_loss(&AlgorithmConfig::default(), &logp, &m, 3.0).is_none());
    let alg = AlgorithmConfig {
        rmt: Some(Default::default()),
        ..Default::default()
    };
    // λ = 0.1, token-mean over the step's 3 NTP tokens: 0.1 · (1 + 3 + 4) / 3.
    let v = rmt_ntp_loss(&alg, &logp, &m, 3.0)
        .unwrap()
        .double_value(&[]);
    assert!((v - 0.1 * 8.0 / 3.0).abs() < 1e-12);
}

/// Data parallelism: ranks holding disjoint rows of the step (any rows, cut to their own
/// width) take their part of the global plan with `select_rows`; with the global normaliser the
/// sum of their losses and their gradients equals the whole batch's, with D³S (cross-group),
/// HAPO (step scope, per-token clip widths) and KL on.
#[test]
fn ranks_selecting_their_rows_of_the_global_plan_sum_to_the_whole_batch() {
    let (b, g, t) = (4, 4, 7);
    let x = random_batch(b, g, t, 5);
    let alg = AlgorithmConfig {
        advantage: AdvantageKind::Hapo,
        d3s: Some(D3sConfig {
            level: D3sLevel::CrossGroup,
            samples_init: Some(3),
            samples_final: Some(3),
            ..Default::default()
        }),
        hapo: Some(HapoConfig::default()),
        ..Default::default()
    };
    let inputs = StepInputs {
        rewards: &x.rewards,
        response_mask: &x.mask,
        group_size: g,
        entropy: Some(&x.entropy),
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan =
        compute_step_plan(&alg, &LossConfig::default(), &AlgoState::new(4), &inputs).unwrap();
    assert!(matches!(plan.clip.low, crate::surrogate::ClipWidth::PerToken(_)));
    let loss = LossConfig { kl_coef: 0.01, ..Default::default() };
    let n = plan.rows();
    let norm = plan.normaliser(0, n);
    let leaf = x.logp.copy().set_requires_grad(true);
    let pi = PolicyInputs {
        logp: &leaf,
        old_logp: &x.old,
        ref_logp: Some(&x.reference),
        entropy: None,
    };
    let whole = policy_loss(&alg, &loss, &plan.micro_batch(0, n), &pi, &norm).unwrap().loss;
    whole.backward();
    let g_whole = leaf.grad().copy();
    // Two "ranks": groups 0 and 2, groups 1 and 3 (as a DAPO refill interleaves them).
    let leaf2 = x.logp.copy().set_requires_grad(true);
    let mut total = 0.0;
    for rows in [[0i64, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]] {
        let idx = Tensor::from_slice(&rows);
        let width = x.mask.index_select(0, &idx).sum_dim_intlist(-1, false, Kind::Int64).max().int64_value(&[]);
        let part = plan.select_rows(&idx, width);
        assert_eq!(part.loss_mask.size(), [8, width]);
        let cut = |t: &Tensor| t.index_select(0, &idx).narrow(1, 0, width);
        let pi = PolicyInputs {
            logp: &cut(&leaf2),
            old_logp: &cut(&x.old),
            ref_logp: Some(&cut(&x.reference)),
            entropy: None,
        };
        let out = policy_loss(&alg, &loss, &part.micro_batch(0, 8), &pi, &norm).unwrap();
        out.loss.backward();
        total += out.loss.double_value(&[]);
    }
    let dg = (g_whole - leaf2.grad()).abs().max().double_value(&[]);
    assert!((whole.double_value(&[]) - total).abs() <= 1e-9 && dg <= 1e-9, "{} vs {total}, grad {dg}", whole.double_value(&[]));
}
