//! KL estimators against the frozen reference policy (spec §0.4), evaluated on the sampled
//! token. Inputs `logp` (current policy, carries gradient) and `ref_logp` (detached), both
//! `[N, T]`; output `[N, T]`, to be added to the per-token loss as `β · k` and aggregated with it.

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Which estimator of `KL(π_θ ‖ π_ref)` to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// `logp − ref_logp`.
    K1,
    /// `½ (logp − ref_logp)²`.
    K2,
    /// Schulman's k3 (DeepSeekMath): `exp(x) − x − 1`, `x = ref_logp − logp`, with verl's
    /// clamps (x to ±20, result to ±10).
    #[default]
    K3,
}

/// Per-token KL penalty `[N, T]`; the gradient flows through `logp` only.
pub fn kl_penalty(logp: &Tensor, ref_logp: &Tensor, estimator: KlEstimator) -> Tensor {
    let ref_logp = ref_logp.detach();
    match estimator {
        KlEstimator::K1 => logp - ref_logp,
        KlEstimator::K2 => (logp - ref_logp).square() * 0.5,
        KlEstimator::K3 => {
            // Clamps as in verl's `low_var_kl`: they only bite for wildly diverged policies.
            let x = (ref_logp - logp).clamp(-20.0, 20.0);
            (x.exp() - &x - 1.0).clamp(-10.0, 10.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v).to_kind(Kind::Double)
    }

    /// Spec §0.4 worked examples.
    #[test]
    fn spec_0_4_k3() {
        let logp = t(&[0.5f64.ln(), 0.25f64.ln(), 0.3f64.ln()]);
        let reference = t(&[0.25f64.ln(), 0.5f64.ln(), 0.3f64.ln()]);
        let k3 = Vec::<f64>::try_from(&kl_penalty(&logp, &reference, KlEstimator::K3)).unwrap();
        let want = [0.193147, 0.306853, 0.0];
        for (g, w) in k3.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{k3:?}");
        }
    }

    #[test]
    fn k1_k2_and_clamp() {
        let logp = t(&[-1.0, -3.0]);
        let reference = t(&[-2.0, -1.0]);
        let k1 = Vec::<f64>::try_from(&kl_penalty(&logp, &reference, KlEstimator::K1)).unwrap();
        assert_eq!(k1, vec![1.0, -2.0]);
        let k2 = Vec::<f64>::try_from(&kl_penalty(&logp, &reference, KlEstimator::K2)).unwrap();
        assert_eq!(k2, vec![0.5, 2.0]);
        // x = ref − logp = 30 → clamped to 20 → exp(20) − 21 ≫ 10 → clamped to 10.
        let k3 = kl_penalty(&t(&[-31.0]), &t(&[-1.0]), KlEstimator::K3).double_value(&[0]);
        assert_eq!(k3, 10.0);
    }

    #[test]
    fn k3_gradient_flows_through_logp_only() {
        let logp = t(&[0.5f64.ln()]).set_requires_grad(true);
        let reference = t(&[0.25f64.ln()]).set_requires_grad(true);
        kl_penalty(&logp, &reference, KlEstimator::K3)
            .sum(Kind::Double)
            .backward();
        // d/dlogp [exp(r − l) − (r − l) − 1] = −exp(r − l) + 1 = 1 − 0.5.
        assert!((logp.grad().double_value(&[0]) - 0.5).abs() < 1e-12);
        assert!(!reference.grad().defined());
    }
}
