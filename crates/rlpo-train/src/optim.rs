//! AdamW written on tensors (tch's C++ optimizer cannot expose its state, so it could not be
//! checkpointed), global-norm gradient clipping, and the learning-rate schedule.
//!
//! Moments are kept in fp32 per parameter (`[same shape as the parameter]`), keyed by HF name.
//! Parameters stored in bf16/f16 (fast forward/backward on CPUs with AVX-512 BF16 and on GPUs)
//! get an fp32 master copy: updates are computed and accumulated in fp32 and only then rounded into
//! the low-precision parameter, so small updates (lr 1e-6 × Adam's unit step) are not lost to
//! bf16's 8-bit mantissa.

use crate::recipe::{LrSchedule, OptimConfig};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

/// AdamW state: first/second moments per parameter and the number of updates taken.
#[derive(Debug)]
pub struct AdamW {
    cfg: OptimConfig,
    /// `(name, parameter)` in a fixed (sorted) order so updates are deterministic.
    params: Vec<(String, Tensor)>,
    /// First moments.
    pub exp_avg: BTreeMap<String, Tensor>,
    /// Second moments.
    pub exp_avg_sq: BTreeMap<String, Tensor>,
    /// fp32 master copies of low-precision parameters.
    pub master: BTreeMap<String, Tensor>,
    /// Updates applied so far.
    pub step: u64,
}

impl AdamW {
    /// Optimizer over `params` (trainable variables by name).
    pub fn new(params: impl IntoIterator<Item = (String, Tensor)>, cfg: OptimConfig) -> Self {
        let mut params: Vec<(String, Tensor)> = params.into_iter().collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |p: &Tensor| p.zeros_like().to_kind(Kind::Float);
        let exp_avg = params.iter().map(|(n, p)| (n.clone(), zeros(p))).collect();
        let exp_avg_sq = params.iter().map(|(n, p)| (n.clone(), zeros(p))).collect();
        let master = params
            .iter()
            .filter(|(_, p)| p.kind() != Kind::Float)
            .map(|(n, p)| (n.clone(), p.detach().to_kind(Kind::Float)))
            .collect();
        AdamW { cfg, params, exp_avg, exp_avg_sq, master, step: 0 }
    }

    /// Zero every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for (_, p) in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Global L2 norm of the gradients (fp32). NaN/inf when any gradient is non-finite.
    pub fn grad_norm(&self) -> f64 {
        let sq: Vec<Tensor> = self
            .params
            .iter()
            .filter_map(|(_, p)| {
                let g = p.grad();
                g.defined().then(|| g.to_kind(Kind::Float).square().sum(Kind::Float))
            })
            .collect();
        if sq.is_empty() {
            return 0.0;
        }
        Tensor::stack(&sq, 0).sum(Kind::Float).sqrt().double_value(&[])
    }

    /// Scale gradients so their global norm is at most `max_norm` (given the measured `norm`).
    pub fn clip_grad(&mut self, norm: f64, max_norm: f64) {
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            for (_, p) in &self.params {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        }
    }

    /// One AdamW update at learning rate `lr` (decoupled weight decay, bias-corrected moments).
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for (name, p) in &self.params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                let m = self.exp_avg.get_mut(name).expect("moment per parameter");
                *m = &*m * c.beta1 + &g * (1.0 - c.beta1);
                let v = self.exp_avg_sq.get_mut(name).expect("moment per parameter");
                *v = &*v * c.beta2 + g.square() * (1.0 - c.beta2);
                let denom = (&*v / bc2).sqrt() + c.eps;
                let update = &self.exp_avg[name] / bc1 / denom;
                let mut p = p.shallow_clone();
                match self.master.get_mut(name) {
                    Some(master) => {
                        let new = &*master * (1.0 - lr * c.weight_decay) - update * lr;
                        master.copy_(&new);
                        p.copy_(&new.to_kind(p.kind()));
                    }
                    None => {
                        let new = &p * (1.0 - lr * c.weight_decay) - update * lr;
                        p.copy_(&new);
                    }
                }
            }
        });
    }
}

/// Learning rate at optimizer step `step` (0-based) of `total` steps.
pub fn learning_rate(cfg: &OptimConfig, step: u64, total: u64) -> f64 {
    if cfg.warmup_steps > 0 && step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    match cfg.schedule {
        LrSchedule::Constant => cfg.lr,
        LrSchedule::Cosine => {
            let span = total.saturating_sub(cfg.warmup_steps).max(1) as f64;
            let t = ((step - cfg.warmup_steps.min(step)) as f64 / span).min(1.0);
            let floor = cfg.lr * cfg.min_lr_ratio;
            floor + (cfg.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference AdamW on scalars, written out independently.
    fn adamw_scalar(p0: f64, grads: &[f64], lr: f64, b1: f64, b2: f64, eps: f64, wd: f64) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (i, g) in grads.iter().enumerate() {
            let t = (i + 1) as i32;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let mh = m / (1.0 - b1.powi(t));
            let vh = v / (1.0 - b2.powi(t));
            p = p * (1.0 - lr * wd) - lr * mh / (vh.sqrt() + eps);
        }
        p
    }

    #[test]
    fn matches_scalar_reference_and_torch_adamw_semantics() {
        let cfg = OptimConfig { lr: 0.1, weight_decay: 0.05, ..OptimConfig::default() };
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = AdamW::new([("w".to_string(), p.shallow_clone())], cfg.clone());
        let grads = [[0.5f32, -1.0], [0.25, 3.0], [-1.0, 0.1]];
        for g in grads {
            opt.zero_grad();
            let loss = (&p * Tensor::from_slice(&g)).sum(Kind::Float);
            loss.backward();
            opt.step(cfg.lr);
        }
        let got: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        for (i, p0) in [1.0, -2.0].iter().enumerate() {
            let gs: Vec<f64> = grads.iter().map(|g| g[i] as f64).collect();
            let want = adamw_scalar(*p0, &gs, 0.1, 0.9, 0.999, 1e-8, 0.05);
            assert!((got[i] as f64 - want).abs() < 1e-6, "param {i}: {} vs {want}", got[i]);
        }
    }

    #[test]
    fn bf16_parameters_accumulate_small_updates_in_the_fp32_master() {
        // 100 updates of ~1e-4 each on a parameter of 1.0: bf16 alone (spacing 2^-7 near 1) would
        // round every single update away; the master copy keeps them.
        let cfg = OptimConfig { lr: 1e-4, weight_decay: 0.0, ..OptimConfig::default() };
        let p = Tensor::from_slice(&[1.0f32]).to_kind(Kind::BFloat16).set_requires_grad(true);
        let mut opt = AdamW::new([("w".to_string(), p.shallow_clone())], cfg.clone());
        for _ in 0..100 {
            opt.zero_grad();
            (&p * 1.0).sum(Kind::Float).backward();
            opt.step(cfg.lr);
        }
        let master = opt.master["w"].double_value(&[0]);
        assert!((master - (1.0 - 100.0 * 1e-4)).abs() < 1e-5, "master {master}");
        assert!((p.double_value(&[0]) - master).abs() < 4e-3, "bf16 param follows the master");
        assert_eq!(p.kind(), Kind::BFloat16);
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let p = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
        let mut opt = AdamW::new([("w".to_string(), p.shallow_clone())], OptimConfig::default());
        (&p * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float).backward();
        let n = opt.grad_norm();
        assert!((n - 5.0).abs() < 1e-6);
        opt.clip_grad(n, 1.0);
        assert!((opt.grad_norm() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn schedule_shapes() {
        let mut cfg = OptimConfig { lr: 1.0, warmup_steps: 4, ..OptimConfig::default() };
        assert_eq!(learning_rate(&cfg, 0, 10), 0.25);
        assert_eq!(learning_rate(&cfg, 3, 10), 1.0);
        assert_eq!(learning_rate(&cfg, 8, 10), 1.0);
        cfg.schedule = LrSchedule::Cosine;
        assert!((learning_rate(&cfg, 4, 10) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cfg, 7, 10) - 0.5).abs() < 1e-12);
        assert!(learning_rate(&cfg, 10, 10).abs() < 1e-12);
    }
}
