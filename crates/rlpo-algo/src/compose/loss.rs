//! Stage 5 of the composition (see [`crate::compose`]): the loss of one micro-batch from the
//! step plan: ratio → HAPO terms → clipped surrogate (or CISPO) → rollout-correction weights →
//! KL → aggregation. Shapes `[n, T]`.

use tch::{Kind, Tensor};

use super::plan::{hapo_token_terms, need, MicroBatchPlan};
use crate::aggregate::{aggregate, LossNormaliser};
use crate::config::{AlgorithmConfig, BaseLoss, GspoRatioTokens, HapoStatsScope, LossConfig};
use crate::error::{input_err, Result};
use crate::gspo::{gspo_token_ratio, sequence_ratio};
use crate::hapo::{entropy_stats, redistribute_advantages};
use crate::kl::kl_penalty;
use crate::surrogate::{cispo_loss_with_flags, clipped_surrogate_with_flags, ratio, ClipRange};

/// Per-micro-batch inputs of [`policy_loss`], all `[n, T]`.
#[derive(Debug)]
pub struct PolicyInputs<'a> {
    /// Current-policy log-probs (carries gradient).
    pub logp: &'a Tensor,
    /// Rollout-policy log-probs (detached).
    pub old_logp: &'a Tensor,
    /// Reference log-probs; needed when `loss.kl_coef > 0`.
    pub ref_logp: Option<&'a Tensor>,
    /// Current-policy entropies; needed by HAPO with `stats_scope = "micro_batch"`.
    pub entropy: Option<&'a Tensor>,
}

/// Output of [`policy_loss`]. Metrics are detached and use the same step normaliser, so summing
/// them over the micro-batches of an optimizer step gives the step value.
#[derive(Debug)]
pub struct PolicyLoss {
    /// Scalar to back-propagate (policy-gradient loss + β·KL).
    pub loss: Tensor,
    /// The policy-gradient part, detached.
    pub pg_loss: Tensor,
    /// The KL part before β, detached (`None` when `kl_coef = 0`).
    pub kl: Option<Tensor>,
    /// Fraction of loss tokens whose surrogate is clipped, detached.
    pub clip_frac: Tensor,
}

/// Stage 5: the loss of one micro-batch: ratio (token, GSPO or GSPO-token) → HAPO h̃ / clip
/// widths / redistribution → clipped surrogate (+ dual clip for `grpo`) or CISPO → `× w_IS`
/// (rollout correction) → `+ β·KL` → aggregation over `loss_mask` with the optimizer step's
/// `norm`.
pub fn policy_loss(
    alg: &AlgorithmConfig,
    loss: &LossConfig,
    mb: &MicroBatchPlan,
    inputs: &PolicyInputs,
    norm: &LossNormaliser,
) -> Result<PolicyLoss> {
    let size = mb.loss_mask.size();
    for (name, t) in [
        ("logp", Some(inputs.logp)),
        ("old_logp", Some(inputs.old_logp)),
        ("ref_logp", inputs.ref_logp),
        ("entropy", inputs.entropy),
    ] {
        if let Some(t) = t {
            if t.size() != size {
                return Err(input_err(
                    name,
                    format!("expected {size:?}, got {:?}", t.size()),
                ));
            }
        }
    }
    let (logp, old) = (inputs.logp, inputs.old_logp);
    let ratio_mask = match loss.gspo_ratio_tokens {
        GspoRatioTokens::Kept => &mb.loss_mask,
        GspoRatioTokens::Response => &mb.response_mask,
    };
    let rho = match loss.base {
        BaseLoss::Grpo | BaseLoss::Cispo => ratio(logp, old),
        BaseLoss::GspoToken => gspo_token_ratio(logp, old, ratio_mask),
        BaseLoss::Gspo => sequence_ratio(logp, old, ratio_mask)
            .unsqueeze(-1)
            .expand_as(logp),
    };

    let (lo, hi) = loss.clip_widths();
    let (h_tilde, clip) = match &alg.hapo {
        Some(h) if h.stats_scope == HapoStatsScope::MicroBatch => {
            // Released-code scope: statistics of this micro-batch's current-policy entropies.
            let ent = need(
                inputs.entropy,
                "entropy",
                "algorithm.hapo.stats_scope = \"micro_batch\"",
            )?;
            let stats = entropy_stats(ent, &mb.response_mask, h.quantile, h.code_compat);
            let (ht, clip) = hapo_token_terms(
                h,
                ent,
                &mb.response_mask,
                stats.as_ref(),
                &ClipRange::new(lo, hi),
                lo,
                hi,
            );
            (Some(ht), clip)
        }
        _ => (
            mb.h_tilde.as_ref().map(Tensor::shallow_clone),
            mb.clip.clone(),
        ),
    };

    // `[n, 1]`, broadcast against the ratio; redistribution makes it `[n, T]`.
    let mut adv = mb.advantages.detach().to_kind(logp.kind()).unsqueeze(-1);
    if let (Some(h), Some(ht)) = (&alg.hapo, &h_tilde) {
        if h.redistribution {
            adv = redistribute_advantages(&adv, ht, &rho.detach(), &clip, h.beta);
        }
    }

    // Only the GRPO base has a dual clip (`dual_clip()` is `None` for GSPO and CISPO).
    let (pg, clipped) = match loss.base {
        BaseLoss::Cispo => cispo_loss_with_flags(logp, old, &adv, &clip),
        _ => clipped_surrogate_with_flags(&rho, &adv, &clip, loss.dual_clip()),
    };
    // Rollout correction multiplies the policy-gradient term only (verl: `pg_losses *
    // rollout_is_weights`; the KL term is not reweighted).
    let pg = match &mb.is_weights {
        Some(w) => pg * w.detach().to_kind(logp.kind()),
        None => pg,
    };
    let agg = loss.aggregation();
    let kl = if loss.kl_coef > 0.0 {
        let r = need(inputs.ref_logp, "ref_logp", "loss.kl_coef > 0")?;
        Some(kl_penalty(logp, r, loss.kl_estimator))
    } else {
        None
    };
    let total = match &kl {
        Some(k) => &pg + k * loss.kl_coef,
        None => pg.shallow_clone(),
    };
    let out_loss = aggregate(&total, &mb.loss_mask, agg, norm);
    let (pg_loss, kl_metric, clip_frac) = tch::no_grad(|| {
        let clipped = clipped.logical_and(&mb.loss_mask.gt(0.0)).sum(Kind::Float);
        let frac = if norm.tokens > 0.0 {
            clipped / norm.tokens
        } else {
            clipped * 0.0
        };
        (
            // Without KL the policy-gradient part is the loss itself: no second pass.
            match &kl {
                Some(_) => aggregate(&pg.detach(), &mb.loss_mask, agg, norm),
                None => out_loss.detach(),
            },
            kl.as_ref()
                .map(|k| aggregate(&k.detach(), &mb.loss_mask, agg, norm)),
            frac,
        )
    });
    Ok(PolicyLoss {
        loss: out_loss,
        pg_loss,
        kl: kl_metric,
        clip_frac,
    })
}
