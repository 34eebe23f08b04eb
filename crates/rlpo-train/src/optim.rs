//! AdamW written on tensors (tch's C++ optimizer cannot expose its state, so it could not be
//! checkpointed), global-norm gradient clipping, and the learning-rate schedule.
//!
//! Moments are kept in fp32 per parameter (`[same shape as the parameter]`), keyed by HF name.
//! Parameters stored in bf16/f16 (fast forward/backward on CPUs with AVX-512 BF16 and on GPUs)
//! get an fp32 master copy: updates are computed and accumulated in fp32 and only then rounded into
//! the low-precision parameter, so small updates (lr 1e-6 × Adam's unit step) are not lost to
//! bf16's 8-bit mantissa.
//!
//! Two implementations of the same update (`optim.fused`):
//! - **fused** (default): LibTorch's multi-tensor `_fused_adamw_` over every fp32 master (or fp32
//!   parameter) at once (through `rlpo-aten`), then one `_foreach_copy_` into the bf16/f16
//!   parameters, and `_foreach_mul_` for clipping: a handful of launches per optimizer step on
//!   CUDA instead of about ten per parameter;
//! - **per parameter**: the same arithmetic as tensor ops, one parameter at a time, written in the
//!   fused kernel's operation order — `p·(1 − lr·wd)`, `m.lerp(g, 1 − β₁)`,
//!   `v·β₂ + ((1 − β₂)·g)·g`, `d = √v / √(1 − β₂ᵗ) + ε`, `p + (−lr/(1 − β₁ᵗ))·m / d` — with the
//!   square root taken in f64 (LibTorch's vectorised f32 `sqrt` on the CPU is not correctly
//!   rounded, the fused kernel's is). On the CPU the two give bit-identical parameters and
//!   moments for tensors whose size is a multiple of the vector width (every tensor of a real
//!   model); the last `numel mod 16` elements of other tensors go through the kernel's scalar
//!   tail, whose `v` update may differ in the last bit. On CUDA they agree to rounding.
//!
//! The gradient norm is computed per parameter in both (so clipping scales are identical).

use crate::recipe::{LrSchedule, OptimConfig};

/// Parameters per `_fused_adamw_` call: low-precision parameters need fp32 copies of their
/// gradients, and chunking bounds those copies to 512 MiB at once.
pub const FUSED_CHUNK_ELEMENTS: i64 = 1 << 27;
use rlpo_aten::AdamWStep;
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

    /// Whether steps use LibTorch's fused kernel (`optim.fused`).
    pub fn fused(&self) -> bool {
        self.cfg.fused
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

    /// The defined gradients, in parameter order.
    fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(|(_, p)| p.grad()).filter(Tensor::defined).collect()
    }

    /// Scale gradients so their global norm is at most `max_norm` (given the measured `norm`).
    pub fn clip_grad(&mut self, norm: f64, max_norm: f64) -> crate::error::Result<()> {
        if max_norm > 0.0 && norm > max_norm {
            let scale = max_norm / (norm + 1e-6);
            if self.cfg.fused {
                tch::no_grad(|| rlpo_aten::foreach_mul_scalar_(&self.grads(), scale)).map_err(optimizer_error)?;
            } else {
                for mut g in self.grads() {
                    let _ = g.g_mul_scalar_(scale);
                }
            }
        }
        Ok(())
    }

    /// One AdamW update at learning rate `lr` (decoupled weight decay, bias-corrected moments).
    pub fn step(&mut self, lr: f64) -> crate::error::Result<()> {
        self.step += 1;
        if self.cfg.fused {
            self.step_fused(lr)
        } else {
            self.step_per_parameter(lr);
            Ok(())
        }
    }

    fn hyper(&self, lr: f64) -> AdamWStep {
        let c = &self.cfg;
        AdamWStep { lr, beta1: c.beta1, beta2: c.beta2, weight_decay: c.weight_decay, eps: c.eps }
    }

    fn step_per_parameter(&mut self, lr: f64) {
        let c = &self.cfg;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bc1;
        tch::no_grad(|| {
            for (name, p) in &self.params {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let g = g.to_kind(Kind::Float);
                let mut m = self.exp_avg[name].shallow_clone();
                let mut v = self.exp_avg_sq[name].shallow_clone();
                let mut target = self.master.get(name).unwrap_or(p).shallow_clone();
                let _ = target.g_mul_scalar_(1.0 - lr * c.weight_decay);
                let _ = m.lerp_(&g, 1.0 - c.beta1);
                let _ = v.g_mul_scalar_(c.beta2).addcmul_(&(&g * (1.0 - c.beta2)), &g);
                let denom = v.to_kind(Kind::Double).sqrt().to_kind(Kind::Float) / bc2_sqrt + c.eps;
                let _ = target.g_add_(&((&m * -step_size) / denom));
                if self.master.contains_key(name) {
                    p.shallow_clone().copy_(&target);
                }
            }
        });
    }

    fn step_fused(&mut self, lr: f64) -> crate::error::Result<()> {
        let h = self.hyper(lr);
        let with_grad: Vec<usize> = (0..self.params.len()).filter(|&i| self.params[i].1.grad().defined()).collect();
        let Some(&first) = with_grad.first() else { return Ok(()) };
        // The step count, already incremented, on the parameters' device (the CUDA kernel reads
        // it there); one tensor serves every parameter.
        let step = Tensor::full([1], self.step as f64, (Kind::Float, self.params[first].1.device()));
        let mut chunk: Vec<usize> = Vec::new();
        let mut elements = 0i64;
        for (k, &i) in with_grad.iter().enumerate() {
            chunk.push(i);
            elements += self.params[i].1.numel() as i64;
            if elements >= FUSED_CHUNK_ELEMENTS || k + 1 == with_grad.len() {
                self.fused_chunk(&chunk, &step, &h).map_err(optimizer_error)?;
                chunk.clear();
                elements = 0;
            }
        }
        Ok(())
    }

    /// `_fused_adamw_` over parameters `idx` (fp32 masters in place of low-precision
    /// parameters), then the masters copied into those parameters.
    fn fused_chunk(&self, idx: &[usize], step: &Tensor, h: &AdamWStep) -> rlpo_aten::Result<()> {
        tch::no_grad(|| {
            let (mut targets, mut grads, mut ms, mut vs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut low, mut low_src) = (Vec::new(), Vec::new());
            for &i in idx {
                let (name, p) = &self.params[i];
                let target = match self.master.get(name) {
                    Some(master) => {
                        low.push(p.shallow_clone());
                        low_src.push(master.shallow_clone());
                        master.shallow_clone()
                    }
                    None => p.shallow_clone(),
                };
                targets.push(target);
                grads.push(p.grad().to_kind(Kind::Float));
                ms.push(self.exp_avg[name].shallow_clone());
                vs.push(self.exp_avg_sq[name].shallow_clone());
            }
            let steps: Vec<Tensor> = targets.iter().map(|_| step.shallow_clone()).collect();
            rlpo_aten::fused_adamw_(&targets, &grads, &ms, &vs, &steps, h)?;
            rlpo_aten::foreach_copy_(&low, &low_src)
        })
    }
}

fn optimizer_error(e: rlpo_aten::AtenError) -> crate::error::TrainError {
    crate::error::TrainError::Aborted(format!("AdamW step (optim.fused = true): {e}"))
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
        for fused in [true, false] {
            matches_scalar_reference(fused);
        }
    }

    fn matches_scalar_reference(fused: bool) {
        let cfg = OptimConfig { lr: 0.1, weight_decay: 0.05, fused, ..OptimConfig::default() };
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut opt = AdamW::new([("w".to_string(), p.shallow_clone())], cfg.clone());
        let grads = [[0.5f32, -1.0], [0.25, 3.0], [-1.0, 0.1]];
        for g in grads {
            opt.zero_grad();
            let loss = (&p * Tensor::from_slice(&g)).sum(Kind::Float);
            loss.backward();
            opt.step(cfg.lr).unwrap();
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
            opt.step(cfg.lr).unwrap();
        }
        let master = opt.master["w"].double_value(&[0]);
        assert!((master - (1.0 - 100.0 * 1e-4)).abs() < 1e-5, "master {master}");
        assert!((p.double_value(&[0]) - master).abs() < 4e-3, "bf16 param follows the master");
        assert_eq!(p.kind(), Kind::BFloat16);
    }

    /// `steps` AdamW steps with clipping on fixed pseudo-random gradients; returns the optimizer.
    fn run(fused: bool, shapes: &[Vec<i64>], kind: Kind, steps: usize) -> (Vec<Tensor>, AdamW) {
        // Inputs from the test's own seed: LibTorch's global generator is shared with the tests
        // running beside this one, and the two runs compared here must see the same draws.
        let mut rng = rlpo_algo::seeded::SplitMix(3);
        let params: Vec<Tensor> = shapes.iter().map(|s| rng.randn(s.as_slice(), (Kind::Float, tch::Device::Cpu)).to_kind(kind).set_requires_grad(true)).collect();
        let cfg = OptimConfig { lr: 3e-3, weight_decay: 0.1, fused, ..OptimConfig::default() };
        let named = params.iter().enumerate().map(|(i, p)| (format!("p{i}"), p.shallow_clone()));
        let mut opt = AdamW::new(named, cfg.clone());
        for step in 0..steps {
            opt.zero_grad();
            for (i, p) in params.iter().enumerate() {
                let w = rng.randn(p.size().as_slice(), (Kind::Float, tch::Device::Cpu)) * (1.0 + step as f64 + i as f64);
                (p.to_kind(Kind::Float) * w).sum(Kind::Float).backward();
            }
            let n = opt.grad_norm();
            opt.clip_grad(n, 5.0).unwrap();
            opt.step(cfg.lr).unwrap();
        }
        (params, opt)
    }

    #[test]
    fn fused_kernel_equals_the_per_parameter_update_bit_for_bit() {
        // Sizes that are multiples of the vector width (as every tensor of a real model is).
        let shapes = vec![vec![64, 48], vec![16], vec![32, 32, 2]];
        for kind in [Kind::Float, Kind::BFloat16] {
            let (pa, a) = run(true, &shapes, kind, 6);
            let (pb, b) = run(false, &shapes, kind, 6);
            for (i, (x, y)) in pa.iter().zip(&pb).enumerate() {
                let n = format!("p{i}");
                assert!(x.equal(y), "{kind:?} p{i}: parameters differ");
                assert!(a.exp_avg[&n].equal(&b.exp_avg[&n]) && a.exp_avg_sq[&n].equal(&b.exp_avg_sq[&n]), "{kind:?} {n}: moments differ");
                if kind != Kind::Float {
                    assert!(a.master[&n].equal(&b.master[&n]), "{kind:?} {n}: masters differ");
                }
                assert!(a.exp_avg_sq[&n].abs().sum(Kind::Float).double_value(&[]) > 0.0);
            }
        }
        // Other sizes: the kernel's scalar tail may round v's update differently in the last bit.
        let (pa, _) = run(true, &[vec![7, 5]], Kind::Float, 6);
        let (pb, _) = run(false, &[vec![7, 5]], Kind::Float, 6);
        let rel = ((&pa[0] - &pb[0]).abs() / pb[0].abs().clamp_min(1e-6)).max().double_value(&[]);
        assert!(rel < 1e-6, "odd-sized tensor: relative difference {rel}");
    }

    #[test]
    fn clipping_bounds_the_norm() {
        let p = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
        let mut opt = AdamW::new([("w".to_string(), p.shallow_clone())], OptimConfig::default());
        (&p * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float).backward();
        let n = opt.grad_norm();
        assert!((n - 5.0).abs() < 1e-6);
        opt.clip_grad(n, 1.0).unwrap();
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
