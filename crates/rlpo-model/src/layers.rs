//! Small building blocks named after their HF modules: `Linear` (weight `[out, in]`, optional bias),
//! `RmsNorm`, and the SwiGLU `Mlp` (`gate_proj`, `up_proj`, `down_proj`).
//!
//! Parameters are created with zeros and filled by the weight loader; creating them with a random
//! init would waste seconds on large models for values that are overwritten anyway.

use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// `y = x Wᵀ + b` with HF's `[out, in]` weight layout.
#[derive(Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
    /// LoRA adapter (`[model.lora]`): the forward uses its frozen base weight plus the adapter,
    /// and `weight` holds the merged weight for everything else ([`crate::lora`]).
    pub lora: Option<crate::lora::LoraAdapter>,
}

impl Linear {
    /// Register `weight` (and `bias`) under `path`.
    pub fn new(path: Path, d_in: i64, d_out: i64, bias: bool) -> Self {
        let weight = path.var("weight", &[d_out, d_in], Init::Const(0.));
        let bias = bias.then(|| path.var("bias", &[d_out], Init::Const(0.)));
        Linear { weight, bias, lora: None }
    }

    /// `[..., in] -> [..., out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        match &self.lora {
            Some(l) => l.forward(x, self.bias.as_ref()),
            None => x.linear(&self.weight, self.bias.as_ref()),
        }
    }
}

/// RMSNorm computed in fp32 and cast back, as transformers' `LlamaRMSNorm` does.
#[derive(Debug)]
pub struct RmsNorm {
    /// `[D]`.
    pub weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    /// Register `weight` under `path`.
    pub fn new(path: Path, dim: i64, eps: f64) -> Self {
        RmsNorm { weight: path.var("weight", &[dim], Init::Const(1.)), eps }
    }

    /// Normalise over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let var = x32.square().mean_dim(-1, true, Kind::Float);
        let normed = (x32 * (var + self.eps).rsqrt()).to_kind(kind);
        &self.weight * normed
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    /// Register under `path` (`mlp`).
    pub fn new(path: Path, hidden: i64, intermediate: i64, bias: bool) -> Self {
        Mlp {
            gate_proj: Linear::new(&path / "gate_proj", hidden, intermediate, bias),
            up_proj: Linear::new(&path / "up_proj", hidden, intermediate, bias),
            down_proj: Linear::new(&path / "down_proj", intermediate, hidden, bias),
        }
    }

    /// The projections by PEFT module name.
    pub(crate) fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 3] {
        [("gate_proj", &mut self.gate_proj), ("up_proj", &mut self.up_proj), ("down_proj", &mut self.down_proj)]
    }

    /// The projections by PEFT module name.
    pub(crate) fn linears(&self) -> [(&'static str, &Linear); 3] {
        [("gate_proj", &self.gate_proj), ("up_proj", &self.up_proj), ("down_proj", &self.down_proj)]
    }

    /// `[..., D] -> [..., D]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.down_proj.forward(&(self.gate_proj.forward(x).silu() * self.up_proj.forward(x)))
    }
}
