//! The rlpo side of each case, through the public API the trainer uses (`compute_step_plan`,
//! `StepPlan::micro_batch`, `policy_loss`, `shape_rewards`), in float64; plus independent
//! counts of the clip branches each case hits.

use super::cases::{AdvCase, CorrCase, OverlongCase, PolicyCase};
use super::{matrix, to_rows};
use rlpo_algo::config::{BaseLoss, DapoConfig, OverlongConfig};
use rlpo_algo::surrogate::ClipRange;
use rlpo_algo::{compute_step_plan, policy_loss, shape_rewards, AlgoState, AlgorithmConfig, PolicyInputs, StepInputs, StepPlan};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// Token-level advantages `A_i · mask` from the step plan.
pub fn advantages(c: &AdvCase) -> Vec<Vec<f64>> {
    let alg = AlgorithmConfig { advantage: c.kind, adv_eps: c.eps, ..Default::default() };
    let mask = matrix(&c.shape.mask());
    let rewards = Tensor::from_slice(&c.rewards);
    let inputs = StepInputs {
        rewards: &rewards,
        response_mask: &mask,
        group_size: c.shape.g as i64,
        entropy: None,
        truncated: None,
        old_logp: None,
        rollout_logp: None,
    };
    let plan = compute_step_plan(&alg, &Default::default(), &AlgoState::new(1), &inputs).unwrap();
    to_rows(&(plan.advantages.to_kind(Kind::Double).unsqueeze(-1) * mask))
}

fn plan_for(c: &PolicyCase, loss_mask: Tensor, is_weights: Option<Tensor>) -> StepPlan {
    let (lo, hi) = c.loss.clip_widths();
    StepPlan {
        advantages: Tensor::from_slice(&c.adv),
        response_mask: matrix(&c.shape.mask()),
        row_keep: loss_mask.sum_dim_intlist(-1, false, Kind::Double).gt(0.0),
        loss_mask,
        h_tilde: None,
        clip: ClipRange::new(lo, hi),
        hapo_stats: None,
        hapo_fallback: None,
        d3s: None,
        is_weights,
        correction: None,
        mismatch: None,
    }
}

/// Sum over the micro-batches of `policy_loss` with the step normaliser, and d/d(logp).
fn run_plan(c: &PolicyCase, plan: &StepPlan) -> (f64, Vec<Vec<f64>>) {
    let alg = AlgorithmConfig::default();
    let n = c.shape.n() as i64;
    let old = matrix(&c.old);
    let logp = matrix(&c.logp).set_requires_grad(true);
    let reference = c.reference.as_ref().map(|r| matrix(r));
    let norm = plan.normaliser(0, n);
    let mut total = 0.0;
    for &(s, l) in &c.micro {
        let (s, l) = (s as i64, l as i64);
        let mb = plan.micro_batch(s, l);
        let (lp, op) = (logp.narrow(0, s, l), old.narrow(0, s, l));
        let rp = reference.as_ref().map(|r| r.narrow(0, s, l));
        let pi = PolicyInputs { logp: &lp, old_logp: &op, ref_logp: rp.as_ref(), entropy: None };
        let out = policy_loss(&alg, &c.loss, &mb, &pi, &norm).unwrap();
        out.loss.backward();
        total += out.loss.double_value(&[]);
    }
    (total, to_rows(&logp.grad()))
}

pub fn policy(c: &PolicyCase) -> (f64, Vec<Vec<f64>>) {
    let mask = matrix(&c.shape.mask());
    run_plan(c, &plan_for(c, mask, None))
}

/// Rollout correction through `compute_step_plan`: weights, loss mask, mismatch k3, and the loss.
pub struct CorrOut {
    pub weights: Vec<Vec<f64>>,
    pub mask: Vec<Vec<f64>>,
    pub k3: f64,
    pub value: f64,
    pub grad: Vec<Vec<f64>>,
}

pub fn correction(c: &CorrCase) -> CorrOut {
    let alg = AlgorithmConfig { rollout_correction: Some(c.cfg.clone()), ..Default::default() };
    let p = &c.policy;
    let mask = matrix(&p.shape.mask());
    let (old, rollout) = (matrix(&p.old), matrix(&c.rollout));
    let rewards = Tensor::zeros([p.shape.n() as i64], (Kind::Double, tch::Device::Cpu));
    let inputs = StepInputs {
        rewards: &rewards,
        response_mask: &mask,
        group_size: p.shape.g as i64,
        entropy: None,
        truncated: None,
        old_logp: Some(&old),
        rollout_logp: Some(&rollout),
    };
    let plan = compute_step_plan(&alg, &p.loss, &AlgoState::new(1), &inputs).unwrap();
    let loss_mask = plan.loss_mask.to_kind(Kind::Double);
    let weights = plan.is_weights.as_ref().expect("weights").shallow_clone();
    let k3 = plan.mismatch.expect("mismatch statistics").kl().unwrap();
    let (value, grad) = run_plan(p, &plan_for(p, loss_mask.shallow_clone(), Some(weights.shallow_clone())));
    CorrOut { weights: to_rows(&weights), mask: to_rows(&loss_mask), k3, value, grad }
}

pub fn overlong(c: &OverlongCase) -> Vec<f64> {
    let alg = AlgorithmConfig {
        dapo: DapoConfig {
            overlong: Some(OverlongConfig { max_len: Some(c.max_len as u64), cache_len: c.cache_len as u64, penalty_factor: c.factor }),
            ..Default::default()
        },
        ..Default::default()
    };
    let lengths = Tensor::from_slice(&c.lengths.iter().map(|&l| l as f64).collect::<Vec<_>>());
    let scores = Tensor::from_slice(&c.scores);
    Vec::<f64>::try_from(&shape_rewards(&alg, &scores, &lengths, c.max_len as u64).to_kind(Kind::Double)).unwrap()
}

/// Clip branches hit by a case, counted on its valid tokens from the inputs alone.
pub fn branches(c: &PolicyCase, hits: &mut BTreeMap<String, usize>) {
    let (lo, hi) = c.loss.clip_widths();
    let mut hit = |k: &str| *hits.entry(k.to_string()).or_default() += 1;
    for (i, len) in c.shape.lengths.iter().enumerate() {
        let a = c.adv[i];
        let deltas: Vec<f64> = (0..*len).map(|j| c.logp[i][j] - c.old[i][j]).collect();
        match c.loss.base {
            BaseLoss::Gspo | BaseLoss::GspoToken if *len > 0 => {
                let m = deltas.iter().sum::<f64>() / *len as f64;
                let s = m.min(10.0).exp();
                if m > 10.0 {
                    hit("gspo: log-ratio clamp at 10");
                } else if a > 0.0 && s > 1.0 + hi {
                    hit("gspo: upper clip");
                } else if a < 0.0 && s < 1.0 - lo {
                    hit("gspo: lower clip");
                }
            }
            _ => {
                for d in deltas {
                    let r = d.clamp(-20.0, 20.0).exp();
                    if d.abs() > 20.0 {
                        hit(&format!("{:?}: ±20 log-ratio clamp", c.loss.base));
                    }
                    if a > 0.0 && r > 1.0 + hi {
                        hit(&format!("{:?}: upper clip", c.loss.base));
                    }
                    if a < 0.0 && r < 1.0 - lo {
                        hit(&format!("{:?}: lower clip", c.loss.base));
                    }
                    if let Some(cc) = c.loss.dual_clip() {
                        if a < 0.0 && r > cc {
                            hit("Grpo: dual clip");
                        }
                    }
                }
            }
        }
    }
}
