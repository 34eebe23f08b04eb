//! Sampling in tensor ops, on the device that holds the logits: the same decisions as the host
//! [`crate::sampler`] without copying `[B, V]` logits anywhere.
//!
//! Per row (z = logits `[B, V]` widened to fp32, m = row max, T_b = base temperature):
//! 1. base pass: `x_b = (z − m)/T_b`, `lse_b = logsumexp(x_b)`; `base_logprob = x_b[tok] − lse_b`;
//!    full-vocabulary entropy `H = lse_b − Σ softmax(x_b)·x_b`;
//! 2. the token's temperature `T_s`: `T_b`, or HAPO's `T_b (1 + τ h̃(H))` (f64 on `[B]`);
//! 3. weights `w = exp((z − m)/T_s)` (the row max has weight exactly 1), top-k as a floor on z
//!    (ties with the k-th kept), then top-p on a stable descending sort (keep while the mass
//!    before a token is `< top_p · Σw`), then min-p (`w ≥ min_p`) — transformers' order;
//! 4. inverse CDF with the row's uniform `u`: `cum = cumsum(w_kept)`, the token is the first with
//!    `cum > u · cum[-1]` (`searchsorted(right)`), in vocabulary order, or in descending-weight
//!    order after top-p, as on the host; `logprob = (z_tok − m)/T_s − ln Σ w_kept`.
//!
//! Greedy takes the first argmax with `logprob = 0`.
//!
//! Randomness: [`uniforms`] evaluates the host's counter-based SplitMix64 stream
//! ([`crate::rng::RowRng::uniform`]) in int64 tensor ops — wrapping multiplies and adds, logical
//! shifts as arithmetic shifts masked — so row `(prompt, sample)` draws bit-identical uniforms on
//! either side, independent of the batch it shares.
//!
//! Working memory: a few `[B, V]` fp32 temporaries (plus a sort's values and i64 indices with
//! top-p); nothing leaves the device but what the caller reads back.

use crate::adaptive_temperature::EntropyStats;
use crate::rng::GOLDEN_GAMMA;
use crate::sampler::Sampler;
use tch::{Kind, Tensor};

/// `x >> s` as on u64 (logical), for int64 tensors.
fn lsr(x: &Tensor, s: i64) -> Tensor {
    x.bitwise_right_shift_tensor_scalar(s).bitwise_and((1i64 << (64 - s)) - 1)
}

/// SplitMix64's output function on int64 tensors (bit-identical to [`crate::rng::mix64`]).
pub fn mix64(z: &Tensor) -> Tensor {
    let z = z.bitwise_xor_tensor(&lsr(z, 30)) * (0xBF58_476D_1CE4_E5B9u64 as i64);
    let z = z.bitwise_xor_tensor(&lsr(&z, 27)) * (0x94D0_49BB_1331_11EBu64 as i64);
    z.bitwise_xor_tensor(&lsr(&z, 31))
}

/// Uniforms `[B]` f64 in `[0, 1)` for rows with stream keys `keys [B]` (i64, the bits of
/// [`crate::rng::RowRng::key`]) at token position `t` (the same for every row of a decode batch):
/// `RowRng { key }.uniform(t)` for each row.
pub fn uniforms(keys: &Tensor, t: u64) -> Tensor {
    let offset = t.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA) as i64;
    let bits = mix64(&(keys + offset));
    lsr(&bits, 11).to_kind(Kind::Double) * (1.0 / (1u64 << 53) as f64)
}

/// What one sampling step produced, on the device.
#[derive(Debug)]
pub struct DeviceSamples {
    /// Sampled ids `[B]` i64 (fed to the next step without leaving the device).
    pub tokens: Tensor,
    /// `[B, 4]` fp32: logprob, base logprob, entropy, temperature (see [`crate::TokenSample`]).
    pub values: Tensor,
}

/// Sampling settings resolved for one request (the host [`Sampler`]'s, applied in tensor ops).
#[derive(Debug, Clone, Copy)]
pub struct DeviceSampler {
    /// The settings.
    pub sampler: Sampler,
}

impl DeviceSampler {
    /// Sample with `sampler`'s settings.
    pub fn new(sampler: Sampler) -> Self {
        DeviceSampler { sampler }
    }

    /// One token per row of `logits [B, V]` (any float dtype) with uniforms `u [B]` (f64).
    pub fn sample(&self, logits: &Tensor, u: &Tensor) -> DeviceSamples {
        let s = &self.sampler;
        let z = logits.to_kind(Kind::Float);
        let (b, v) = (z.size()[0], z.size()[1]);
        let device = z.device();
        let m = z.amax([-1], true);
        let xb = (&z - &m) / s.temperature;
        let lse_b = xb.logsumexp([-1], true);
        // -inf logits have probability 0; clamping keeps 0 · x finite in the entropy sum.
        let p_b = (&xb - &lse_b).exp();
        let entropy = lse_b.view([b]) - (p_b * xb.clamp_min(f32::MIN as f64)).sum_dim_intlist(-1, false, Kind::Float);
        let base_at = |tok: &Tensor| xb.gather(1, &tok.view([b, 1]), false).view([b]) - lse_b.view([b]);
        if s.greedy {
            let tok = z.argmax(-1, false);
            let base = base_at(&tok);
            let zeros = Tensor::zeros([b], (Kind::Float, device));
            let temps = Tensor::full([b], s.temperature, (Kind::Float, device));
            return DeviceSamples { values: Tensor::stack(&[zeros, base, entropy, temps], 1), tokens: tok };
        }
        let t_s = match &s.adaptive {
            Some((tau, st)) => adaptive_temperatures(&entropy, s.temperature, *tau, st),
            None => Tensor::full([b], s.temperature, (Kind::Float, device)),
        };
        let x = (&z - &m) / t_s.view([b, 1]);
        let mut w = x.exp();
        if s.top_k > 0 && (s.top_k as i64) < v {
            let k = s.top_k as i64;
            let kth = z.topk(k, -1, true, true).0.narrow(1, k - 1, 1);
            w *= z.ge_tensor(&kth);
        }
        let (tok, kept_total) = if s.top_p < 1.0 {
            let (ws, idx) = w.sort_stable(true, -1, true);
            let total = ws.sum_dim_intlist(-1, true, Kind::Float);
            let before = ws.cumsum(-1, Kind::Float) - &ws;
            let mut keep = before.lt_tensor(&(total * s.top_p));
            if s.min_p > 0.0 {
                keep = keep.logical_and(&ws.ge(s.min_p));
            }
            let n_kept = keep.sum_dim_intlist(-1, true, Kind::Int64);
            let (j, kept_total) = inverse_cdf(&(ws * keep), u, &(n_kept - 1));
            (idx.gather(1, &j, false).view([b]), kept_total)
        } else {
            if s.min_p > 0.0 {
                w = &w * w.ge(s.min_p);
            }
            let cols = Tensor::arange(v, (Kind::Int64, device)).view([1, v]);
            let last_positive = (cols * w.gt(0.0)).amax([-1], true);
            let (j, kept_total) = inverse_cdf(&w, u, &last_positive);
            (j.view([b]), kept_total)
        };
        let logprob = x.gather(1, &tok.view([b, 1]), false).view([b]) - kept_total.log();
        let base = base_at(&tok);
        DeviceSamples { values: Tensor::stack(&[logprob, base, entropy, t_s], 1), tokens: tok }
    }
}

/// Inverse-CDF draw over weights `w [B, N]` with uniforms `u [B]`: the first column whose
/// running sum exceeds `u · Σw`, capped at `last [B, 1]` (the last column that can be drawn,
/// reached only when rounding puts the target at the very top). Returns the column `[B, 1]`
/// and `Σw [B]`.
fn inverse_cdf(w: &Tensor, u: &Tensor, last: &Tensor) -> (Tensor, Tensor) {
    let b = w.size()[0];
    let n = w.size()[1];
    let cum = w.cumsum(-1, Kind::Float);
    let total = cum.narrow(1, n - 1, 1);
    let target = (u.view([b, 1]) * total.to_kind(Kind::Double)).to_kind(Kind::Float);
    let j = target.searchsorted(&cum, false, true, "right", None::<Tensor>);
    (j.minimum(last), total.view([b]))
}

/// HAPO per-token temperatures `[B]` f32 from entropies `h [B]` (the formula of
/// [`crate::adaptive_temperature::token_temperature`], in f64).
fn adaptive_temperatures(h: &Tensor, base: f64, tau: f64, st: &EntropyStats) -> Tensor {
    let lam = h.to_kind(Kind::Double).clamp_min(1e-6).log();
    let hn = (lam - st.q) / (st.s + 1e-6);
    let pos = hn.gt(0.0);
    let ht = (&hn * st.inv_h_pos).where_self(&pos, &(&hn * st.scale_neg)).clamp(-1.0, 1.0);
    ((ht * tau + 1.0) * base).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{mix64 as mix64_host, RolloutSeed};

    #[test]
    fn tensor_splitmix_equals_the_host_stream() {
        let xs: Vec<u64> = vec![0, 1, u64::MAX, 1 << 63, 0x9E37_79B9_7F4A_7C15, 12345678901234567890, 42];
        let t = Tensor::from_slice(&xs.iter().map(|&x| x as i64).collect::<Vec<_>>());
        let got: Vec<i64> = Vec::try_from(&mix64(&t)).unwrap();
        for (x, g) in xs.iter().zip(got) {
            assert_eq!(g as u64, mix64_host(*x), "mix64({x:#x})");
        }
        let seed = RolloutSeed::new(7, 3);
        let rows: Vec<_> = (0..50).map(|i| seed.row(i % 7, i / 7)).collect();
        let keys = Tensor::from_slice(&rows.iter().map(|r| r.key as i64).collect::<Vec<_>>());
        for t in [0u64, 1, 2, 511, 1 << 40] {
            let u: Vec<f64> = Vec::try_from(&uniforms(&keys, t)).unwrap();
            for (r, got) in rows.iter().zip(u) {
                assert_eq!(got.to_bits(), r.uniform(t).to_bits(), "key {:#x} t {t}", r.key);
            }
        }
    }
}
