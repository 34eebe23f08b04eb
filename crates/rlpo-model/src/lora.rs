//! LoRA adapters (`[model.lora]`), compatible with PEFT's `LoraModel`.
//!
//! An adapted linear layer keeps a frozen copy of its base weight `W0 [out, in]` and trains
//! `A [r, in]` and `B [out, r]` in fp32: `y = x W0ᵀ + b + s · (dropout(x) Aᵀ) Bᵀ` with
//! `s = alpha / r`, PEFT's order of operations (the adapter path runs in fp32 and is cast back
//! to x's dtype). The layer's own weight `W` (the one the rollout kernels, the HF export and
//! `rlpo check` read) holds the merged `W0 + s·B·A`, rewritten by [`CausalLm::merge_lora`] after
//! every optimizer step, so every rollout path decodes the current version with no change.
//!
//! Adapter variables live in their own `VarStore` under the base layer's HF name plus
//! `.lora_A.weight` / `.lora_B.weight` (`model.layers.0.self_attn.q_proj.lora_A.weight`); PEFT's
//! file names add the `base_model.model.` prefix ([`peft_key`]). Init (`init = "default"`,
//! PEFT's `init_lora_weights = True`): A kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in), and
//! B zeros, so a fresh adapter leaves the model unchanged; `"gaussian"`: A ~ N(0, 1/r), B zeros.

use crate::error::{ModelError, Result};
use crate::layers::Linear;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// The modules an adapter may target (PEFT's `target_modules` names).
pub const TARGETS: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// How A is initialised (B always starts at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// PEFT's default: A kaiming-uniform (a = √5).
    #[default]
    Default,
    /// A ~ N(0, 1/r) (PEFT's `init_lora_weights = "gaussian"`).
    Gaussian,
}

/// `[model.lora]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank r. Default 16.
    pub rank: i64,
    /// Scale numerator: the update is `alpha / rank · B·A`. Default 32.
    pub alpha: f64,
    /// Dropout on the adapter's input during the learner's update (not in rollout or scoring
    /// forwards). Default 0.
    pub dropout: f64,
    /// Adapted projections: `q`, `k`, `v`, `o`, `gate`, `up`, `down` (or their `_proj` names).
    /// Default all seven.
    pub target_modules: Vec<String>,
    /// Initialisation of A. Default `default` (PEFT's).
    pub init: LoraInit,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            target_modules: ["q", "k", "v", "o", "gate", "up", "down"].iter().map(|s| s.to_string()).collect(),
            init: LoraInit::Default,
        }
    }
}

impl LoraConfig {
    /// Scale s = alpha / rank.
    pub fn scaling(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// The targets as PEFT module names (`q_proj`, ...), in [`TARGETS`] order; an error names a
    /// value that is none of them.
    pub fn module_names(&self) -> std::result::Result<Vec<&'static str>, String> {
        let mut out = Vec::new();
        for t in &self.target_modules {
            let full = if t.ends_with("_proj") { t.clone() } else { format!("{t}_proj") };
            let Some(&name) = TARGETS.iter().find(|&&x| x == full) else {
                return Err(format!("unknown target module {t:?} (expected q, k, v, o, gate, up, down)"));
            };
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out.sort_by_key(|n| TARGETS.iter().position(|x| x == n));
        Ok(out)
    }

    /// Check the values; the error text names the key (without the `model.lora.` prefix).
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.rank < 1 || self.rank > 65_536 {
            return Err(("rank", format!("must be in 1..=65536, got {}", self.rank)));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(("alpha", format!("must be a positive number, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(("dropout", format!("must be in [0, 1), got {}", self.dropout)));
        }
        let names = self.module_names().map_err(|e| ("target_modules", e))?;
        if names.is_empty() {
            return Err(("target_modules", "must name at least one module".into()));
        }
        Ok(())
    }
}

/// One adapted linear layer's LoRA state.
#[derive(Debug)]
pub struct LoraAdapter {
    /// Frozen base weight `W0 [out, in]` (model dtype).
    pub base: Tensor,
    /// `[r, in]` fp32, trainable.
    pub a: Tensor,
    /// `[out, r]` fp32, trainable.
    pub b: Tensor,
    /// alpha / r.
    pub scaling: f64,
    dropout: f64,
    /// Whether dropout applies (the learner's update forward only).
    training: Arc<AtomicBool>,
}

impl LoraAdapter {
    pub(crate) fn new(base: Tensor, a: Tensor, b: Tensor, cfg: &LoraConfig, training: Arc<AtomicBool>) -> Self {
        LoraAdapter { base, a, b, scaling: cfg.scaling(), dropout: cfg.dropout, training }
    }

    /// `x W0ᵀ + bias + s · (dropout(x) Aᵀ) Bᵀ` for `x [..., in]`.
    pub(crate) fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Tensor {
        let y = x.linear(&self.base, bias);
        let train = self.dropout > 0.0 && self.training.load(Ordering::Relaxed);
        let xa = x.to_kind(self.a.kind());
        let xa = if train { xa.dropout(self.dropout, true) } else { xa };
        let delta = xa.linear::<&Tensor>(&self.a, None).linear::<&Tensor>(&self.b, None) * self.scaling;
        y + delta.to_kind(x.kind())
    }

    /// The merged weight `W0 + s·B·A` in the base dtype.
    pub fn merged(&self) -> Tensor {
        (self.base.to_kind(Kind::Float) + self.b.mm(&self.a) * self.scaling).to_kind(self.base.kind())
    }
}

/// Attach an adapter to `lin` (registered under `path`, e.g. `model.layers.0.self_attn.q_proj`),
/// initialised per `cfg` from the generator of `seed` and `path`'s name.
pub(crate) fn attach(lin: &mut Linear, path: &tch::nn::Path, cfg: &LoraConfig, seed: u64, training: &Arc<AtomicBool>) -> Result<()> {
    if lin.lora.is_some() {
        return Err(ModelError::Invalid("LoRA adapter attached twice".into()));
    }
    let (out, inp) = (lin.weight.size()[0], lin.weight.size()[1]);
    let r = cfg.rank;
    let a = (path / "lora_A").var("weight", &[r, inp], tch::nn::Init::Const(0.));
    let b = (path / "lora_B").var("weight", &[out, r], tch::nn::Init::Const(0.));
    let mut rng = SplitMix(seed ^ fnv1a(path.path("lora_A").as_bytes()));
    let n = (r * inp) as usize;
    let values: Vec<f64> = match cfg.init {
        LoraInit::Default => {
            let bound = 1.0 / (inp as f64).sqrt();
            (0..n).map(|_| (2.0 * rng.uniform() - 1.0) * bound).collect()
        }
        LoraInit::Gaussian => (0..n).map(|_| rng.normal() / r as f64).collect(),
    };
    tch::no_grad(|| -> Result<()> {
        let init = Tensor::f_from_slice(&values)?.f_view([r, inp])?.f_to_kind(Kind::Float)?.f_to_device(a.device())?;
        a.shallow_clone().f_copy_(&init)?;
        Ok(())
    })?;
    let base = lin.weight.detach().copy();
    lin.lora = Some(LoraAdapter::new(base, a, b, cfg, training.clone()));
    Ok(())
}

/// PEFT's key for an adapter variable named `name` (`model.layers.0...lora_A.weight`).
pub fn peft_key(name: &str) -> String {
    format!("base_model.model.{name}")
}

/// Trainable parameters and fp32 bytes of LoRA adapters of rank `r` on layers with shapes
/// `(in, out)`: `r·(in + out)` each.
pub fn adapter_parameters(shapes: &[(i64, i64)], r: i64) -> i64 {
    shapes.iter().map(|&(i, o)| r * (i + o)).sum()
}

/// FNV-1a of `bytes`: mixes a layer's name into its adapter's seed.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// SplitMix64 (Steele et al. 2014): the adapters' own generator.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) (53 bits).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * self.uniform()).cos()
    }
}
