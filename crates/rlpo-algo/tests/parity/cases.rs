//! Seeded random cases of every family, as the oracle's JSON plus what the rlpo side needs.
//! Log-ratio distributions are mixtures chosen so that every clip branch occurs: small changes,
//! changes past `1 ± ε`, ratios above the dual-clip constant, and log-ratios beyond ±20.

use super::{Rng, Shape};
use rlpo_algo::config::{AdvantageKind, BaseLoss, GspoAgg, LossConfig};
use rlpo_algo::kl::KlEstimator;
use rlpo_algo::rollout_corr::{CorrectionMode, IsLevel, RolloutCorrectionConfig};
use rlpo_algo::AggMode;
use serde_json::{json, Value};

/// One advantage case (GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline).
#[derive(Debug, Clone)]
pub struct AdvCase {
    pub family: &'static str,
    pub kind: AdvantageKind,
    pub shape: Shape,
    pub rewards: Vec<f64>,
    pub eps: f64,
}

/// One policy-loss case: rlpo's `[loss]` and verl's loss mode / aggregation for the same thing.
#[derive(Debug, Clone)]
pub struct PolicyCase {
    pub family: String,
    pub shape: Shape,
    pub loss: LossConfig,
    pub verl_mode: &'static str,
    pub verl_agg: &'static str,
    pub old: Vec<Vec<f64>>,
    pub logp: Vec<Vec<f64>>,
    pub adv: Vec<f64>,
    pub micro: Vec<(usize, usize)>,
    pub reference: Option<Vec<Vec<f64>>>,
    /// Documented difference: verl's trainer divides sequence means by all rows of the
    /// mini-batch, rlpo by the rows that have loss tokens.
    pub rows_all: bool,
}

/// A rollout-correction case: the correction config, the rollout's log-probs, and the loss.
#[derive(Debug, Clone)]
pub struct CorrCase {
    pub cfg: RolloutCorrectionConfig,
    pub rollout: Vec<Vec<f64>>,
    pub policy: PolicyCase,
}

/// A DAPO overlong-penalty case.
#[derive(Debug, Clone)]
pub struct OverlongCase {
    pub lengths: Vec<usize>,
    pub scores: Vec<f64>,
    pub max_len: usize,
    pub cache_len: usize,
    pub factor: f64,
}

pub const AGGS: [(AggMode, &str); 4] = [
    (AggMode::TokenMean, "token-mean"),
    (AggMode::SeqMeanTokenMean, "seq-mean-token-mean"),
    (AggMode::SeqMeanTokenSum, "seq-mean-token-sum"),
    (AggMode::ConstantNorm, "seq-mean-token-sum-norm"),
];

pub fn advantage_cases(rng: &mut Rng, family: &'static str, kind: AdvantageKind, count: usize) -> Vec<AdvCase> {
    (0..count)
        .map(|i| {
            let mut shape = Shape::random(rng, i % 2 == 0);
            if i % 4 == 1 {
                shape = Shape { g: 1, b: shape.n(), ..shape }; // every group a singleton
            }
            let discrete = i % 3 != 2;
            let rewards = (0..shape.n())
                .map(|_| if discrete { [0.0, 1.0, -1.0][rng.int(0, 2)] } else { rng.normal() })
                .collect();
            AdvCase { family, kind, shape, rewards, eps: [1e-6, 1e-8][i % 2] }
        })
        .collect()
}

impl AdvCase {
    pub fn json(&self) -> Value {
        json!({"family": self.family, "rewards": self.rewards, "mask": self.shape.mask(), "g": self.shape.g, "eps": self.eps})
    }
}

fn token_delta(rng: &mut Rng) -> f64 {
    let u = rng.uniform();
    if u < 0.5 {
        0.12 * rng.normal()
    } else if u < 0.65 {
        rng.sign() * rng.range(0.25, 0.9)
    } else if u < 0.8 {
        rng.range(1.2, 2.5)
    } else if u < 0.93 {
        -rng.range(0.3, 2.0)
    } else {
        rng.sign() * rng.range(20.5, 24.0)
    }
}

fn logprobs(rng: &mut Rng, shape: &Shape, delta: &mut dyn FnMut(&mut Rng, usize) -> f64) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let old: Vec<Vec<f64>> = (0..shape.n()).map(|_| (0..shape.t).map(|_| rng.range(-4.0, -0.05)).collect()).collect();
    let logp = old.iter().enumerate().map(|(i, row)| row.iter().map(|o| o + delta(rng, i)).collect()).collect();
    (old, logp)
}

fn row_advantages(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * rng.range(0.3, 2.0)).collect()
}

/// The vanilla clipped surrogate (rlpo `base = "grpo"`) under `agg`, with KL when `kl` is set.
pub fn vanilla_case(rng: &mut Rng, agg: (AggMode, &'static str), kl: Option<KlEstimator>, i: usize) -> PolicyCase {
    let shape = Shape::random(rng, i % 2 == 0);
    let (old, logp) = logprobs(rng, &shape, &mut |r, _| token_delta(r));
    let lo = [0.2, 0.1, 0.3][i % 3];
    let hi = [0.28, 0.2, 0.3][i % 3];
    let c = [3.0, 2.0, 5.0][i % 3];
    let reference = kl.map(|_| {
        logp.iter()
            .map(|row| row.iter().map(|l| l + if rng.uniform() < 0.08 { rng.sign() * rng.range(20.5, 23.0) } else { 0.6 * rng.normal() }).collect())
            .collect()
    });
    let kl_name = kl.map_or(String::new(), |k| format!("+kl_{k:?}").to_lowercase());
    let micro = shape.micro_batches(rng);
    PolicyCase {
        family: format!("vanilla/{}{kl_name}", agg.1),
        loss: LossConfig {
            clip_low: Some(lo),
            clip_high: Some(hi),
            dual_clip: Some(c),
            agg: Some(agg.0),
            norm_len: (agg.0 == AggMode::ConstantNorm).then_some(shape.t as u64 + 3),
            kl_coef: if kl.is_some() { rng.range(0.01, 0.5) } else { 0.0 },
            kl_estimator: kl.unwrap_or_default(),
            ..Default::default()
        },
        verl_mode: "vanilla",
        verl_agg: agg.1,
        adv: row_advantages(rng, shape.n()),
        micro,
        reference,
        rows_all: false,
        old,
        logp,
        shape,
    }
}

/// GSPO (`gspo`, sequence losses) or GSPO-token (`gspo_token`, token losses) against verl's
/// `compute_policy_loss_gspo`.
pub fn gspo_case(rng: &mut Rng, token: bool, agg_index: usize, i: usize) -> PolicyCase {
    let shape = Shape::random(rng, i % 2 == 0);
    // Per-row offset: inside the tiny clip range, outside it either way, or past the clamp at 10.
    let offsets: Vec<f64> = (0..shape.n())
        .map(|_| {
            let u = rng.uniform();
            if u < 0.15 {
                rng.range(10.2, 12.0)
            } else if u < 0.3 {
                rng.sign() * rng.range(5e-4, 0.5)
            } else {
                3e-4 * rng.normal()
            }
        })
        .collect();
    let (old, logp) = logprobs(rng, &shape, &mut |r, row| offsets[row] + 2e-4 * r.normal());
    let (loss, verl_agg, family) = if token {
        let (mode, name) = AGGS[agg_index % 4];
        let norm_len = (mode == AggMode::ConstantNorm).then_some(shape.t as u64 + 1);
        (LossConfig { base: BaseLoss::GspoToken, agg: Some(mode), norm_len, ..Default::default() }, name, format!("gspo_token/{name}"))
    } else {
        let (a, name) = [(GspoAgg::SeqMean, "seq-mean-token-mean"), (GspoAgg::TokenMean, "token-mean")][agg_index % 2];
        (LossConfig { base: BaseLoss::Gspo, gspo_agg: Some(a), ..Default::default() }, name, format!("gspo/{name}"))
    };
    PolicyCase {
        family,
        loss,
        verl_mode: "gspo",
        verl_agg,
        adv: row_advantages(rng, shape.n()),
        micro: shape.micro_batches(rng),
        reference: None,
        rows_all: false,
        old,
        logp,
        shape,
    }
}

/// CISPO against verl's `compute_policy_loss_cispo`, under `agg`.
pub fn cispo_case(rng: &mut Rng, agg: (AggMode, &'static str), i: usize) -> PolicyCase {
    let shape = Shape::random(rng, i % 2 == 0);
    let (old, logp) = logprobs(rng, &shape, &mut |r, _| token_delta(r));
    // The default (no lower bound, ε_hi = 0.2) and a two-sided setting.
    let (lo, hi) = if i % 2 == 0 { (None, None) } else { (Some(0.2), Some(0.28)) };
    PolicyCase {
        family: format!("cispo/{}", agg.1),
        loss: LossConfig {
            base: BaseLoss::Cispo,
            clip_low: lo,
            clip_high: hi,
            agg: Some(agg.0),
            norm_len: (agg.0 == AggMode::ConstantNorm).then_some(shape.t as u64 + 2),
            ..Default::default()
        },
        verl_mode: "cispo",
        verl_agg: agg.1,
        adv: row_advantages(rng, shape.n()),
        micro: shape.micro_batches(rng),
        reference: None,
        rows_all: false,
        old,
        logp,
        shape,
    }
}

/// Rollout correction: `rollout = old − noise`, the loss is the vanilla surrogate with verl's
/// IS weights and rejection mask.
pub fn corr_case(rng: &mut Rng, i: usize) -> CorrCase {
    let mut policy = vanilla_case(rng, AGGS[i % 4], None, i);
    let level = if i % 2 == 0 { IsLevel::Token } else { IsLevel::Sequence };
    let mode = if (i / 2) % 2 == 0 { CorrectionMode::Truncate } else { CorrectionMode::Mask };
    let threshold = [1.5, 2.0, 3.0][i % 3];
    let threshold_lower = (mode == CorrectionMode::Mask && i % 3 == 0).then(|| rng.range(0.3, 0.9));
    let scale = if level == IsLevel::Sequence { 0.15 } else { 0.5 };
    let rollout = policy
        .old
        .iter()
        .map(|row| row.iter().map(|o| o - scale * rng.normal() - if rng.uniform() < 0.05 { rng.sign() * 21.0 } else { 0.0 }).collect())
        .collect();
    let tag = format!("{level:?}/{mode:?}").to_lowercase();
    policy.family = format!("rollout_corr/{tag}");
    CorrCase { cfg: RolloutCorrectionConfig { level, mode, threshold, threshold_lower }, rollout, policy }
}

pub fn overlong_case(rng: &mut Rng) -> OverlongCase {
    let max_len = rng.int(6, 20);
    let cache_len = rng.int(1, max_len - 1);
    let n = rng.int(4, 12);
    OverlongCase {
        lengths: (0..n).map(|_| rng.int(0, max_len + 3)).collect(),
        scores: (0..n).map(|_| [1.0, -1.0, 0.0, 0.5][rng.int(0, 3)]).collect(),
        max_len,
        cache_len,
        factor: rng.range(0.5, 2.0),
    }
}

impl OverlongCase {
    pub fn json(&self) -> Value {
        json!({"family": "overlong", "lengths": self.lengths, "scores": self.scores, "max_len": self.max_len,
               "cache_len": self.cache_len, "factor": self.factor})
    }
}

impl PolicyCase {
    pub fn json(&self) -> Value {
        let (lo, hi) = self.loss.clip_widths();
        let mut v = json!({
            "family": "policy", "loss_mode": self.verl_mode, "agg": self.verl_agg,
            "clip_low": lo, "clip_high": hi, "clip_c": self.loss.dual_clip.unwrap_or(3.0),
            "loss_scale_factor": self.loss.norm_len,
            "old": self.old, "logp": self.logp, "adv": self.adv, "mask": self.shape.mask(),
            "micro": self.micro.iter().map(|&(s, l)| [s, l]).collect::<Vec<_>>(),
            "rows": if self.rows_all { "all" } else { "nonempty" },
        });
        if let Some(r) = &self.reference {
            let name = match self.loss.kl_estimator {
                KlEstimator::K1 => "k1",
                KlEstimator::K2 => "k2",
                KlEstimator::K3 => "k3",
            };
            v["kl"] = json!({"ref": r, "type": name, "coef": self.loss.kl_coef});
        }
        v
    }
}

impl CorrCase {
    pub fn json(&self) -> Value {
        let mut v = self.policy.json();
        v["family"] = json!("rollout_corr");
        v["rollout"] = json!(self.rollout);
        v["level"] = json!(if self.cfg.level == IsLevel::Token { "token" } else { "sequence" });
        v["mode"] = json!(if self.cfg.mode == CorrectionMode::Truncate { "truncate" } else { "mask" });
        v["upper"] = json!(self.cfg.threshold);
        v["lower"] = json!(self.cfg.lower());
        v
    }
}
