//! Rotary position embedding, computed the way transformers computes it (fp32 inverse frequencies,
//! `cat(freqs, freqs)` layout, `rotate_half`), so logits match to fp32 rounding.
//!
//! Shapes: positions `[B, T]` (i64) → cos/sin `[B, 1, T, head_dim]`; q/k `[B, H, T, head_dim]`.

use crate::config::{ModelConfig, RopeScaling};
use tch::{Device, Kind, Tensor};

/// Precomputed inverse frequencies `[head_dim / 2]` (fp32).
#[derive(Debug)]
pub struct Rope {
    inv_freq: Tensor,
}

impl Rope {
    /// Build from the config on `device`.
    pub fn new(cfg: &ModelConfig, device: Device) -> Self {
        let dim = cfg.head_dim;
        let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / dim as f64;
        let base = Tensor::full([1], cfg.rope_theta, (Kind::Float, device));
        let inv_freq = base.pow(&exponents).reciprocal();
        let inv_freq = match &cfg.rope_scaling {
            RopeScaling::Default => inv_freq,
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                llama3_scale(&inv_freq, *factor, *low_freq_factor, *high_freq_factor, *original_max_position_embeddings)
            }
        };
        Rope { inv_freq }
    }

    /// cos and sin `[B, 1, T, head_dim]` in `kind` for positions `[B, T]`.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]);
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// Apply RoPE to `x [B, H, T, D]` with `cos`/`sin` `[B, 1, T, D]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    let rotated = Tensor::cat(&[&(-x2), &x1], 3);
    x * cos + rotated * sin
}

/// Llama 3.1 scaling: low frequencies divided by `factor`, high ones kept, a smooth ramp between.
fn llama3_scale(inv_freq: &Tensor, factor: f64, low: f64, high: f64, old_ctx: f64) -> Tensor {
    let low_freq_wavelen = old_ctx / low;
    let high_freq_wavelen = old_ctx / high;
    let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
    let scaled = inv_freq.where_self(&wavelen.le(low_freq_wavelen), &(inv_freq / factor));
    let smooth = (wavelen.reciprocal() * old_ctx - low) / (high - low);
    let smoothed = (smooth.ones_like() - &smooth) * &scaled / factor + &smooth * &scaled;
    let medium = wavelen.ge(high_freq_wavelen).logical_and(&wavelen.le(low_freq_wavelen));
    smoothed.where_self(&medium, &scaled)
}
