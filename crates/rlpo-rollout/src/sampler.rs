//! Host-side sampling of one token per row from next-token logits `[V]`, returning what the
//! learner needs: the token, its logprob under the distribution actually sampled from, its logprob
//! under the base temperature, and the full-vocabulary entropy at the base temperature.
//!
//! Per row (z = raw logits, m = max z, T_b = base temperature, T_s = this token's temperature):
//! 1. `m = max z`;
//! 2. base pass: `e_i = exp((z_i − m)/T_b)`, `Z_b = Σ e_i`; `base_logprob(i) = (z_i − m)/T_b − ln Z_b`
//!    (= `log_softmax(z / T_b)_i`, the learner's view); entropy `H = ln Z_b − Σ e_i x_i / Z_b`;
//! 3. `T_s` = `T_b`, or HAPO's `T_b (1 + τ h̃(H))`;
//! 4. sampling weights `exp((z − m)/T_s)` with top-k (logits below the k-th largest are dropped;
//!    ties with it kept), then top-p on the top-k-renormalised weights (smallest most-likely prefix
//!    whose mass reaches p, the crossing token included), then min-p (weights below `min_p` times
//!    the largest dropped) — transformers' warper order and tie rules;
//! 5. inverse CDF with the row's uniform `u`: the first token (in vocabulary order, or in
//!    descending-probability order after top-p) whose running weight exceeds `u · Σ weights`;
//!    `logprob = (z_i − m)/T_s − ln Σ kept weights`.
//!
//! Greedy takes the first argmax and records `logprob = 0` (a point mass). Memory: one `[V]` f32
//! scratch row per thread; nothing `[B, V]` beyond the host copy of the logits.

use crate::adaptive_temperature::{token_temperature, EntropyStats};
use crate::params::SamplingParams;
use crate::vecmath;

/// What one sampling decision produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenSample {
    /// Sampled token id.
    pub token: i64,
    /// `ln p(token)` under the distribution it was drawn from (temperature T_s after truncation);
    /// 0 for greedy.
    pub logprob: f32,
    /// `log_softmax(z / T_base)[token]`: what the learner recomputes.
    pub base_logprob: f32,
    /// Entropy of `softmax(z / T_base)` over the full vocabulary (nats).
    pub entropy: f32,
    /// Temperature the token was drawn at (T_base unless adaptive).
    pub temperature: f32,
}

/// Per-request sampling settings, resolved from [`SamplingParams`] plus the step's HAPO statistics.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// Base temperature T_b.
    pub temperature: f64,
    /// top-k (0 = off).
    pub top_k: usize,
    /// top-p (1 = off).
    pub top_p: f64,
    /// min-p (0 = off).
    pub min_p: f64,
    /// Argmax instead of sampling.
    pub greedy: bool,
    /// HAPO: `(τ, statistics)` when adaptive temperature is on and statistics exist.
    pub adaptive: Option<(f64, EntropyStats)>,
}

/// Reusable per-thread buffers (one `[V]` row of weights plus the top-p candidate list).
#[derive(Debug, Default)]
pub struct Scratch {
    e: Vec<f32>,
    cand: Vec<(f32, u32)>,
    heap: std::collections::BinaryHeap<std::cmp::Reverse<OrdF32>>,
}

/// Total order on f32 for the top-k heap.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrdF32(f32);
impl Eq for OrdF32 {}
impl PartialOrd for OrdF32 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF32 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl Sampler {
    /// Settings of `params`; `stats` are used only when adaptive temperature is enabled.
    pub fn new(params: &SamplingParams, stats: Option<EntropyStats>) -> Self {
        Sampler {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            min_p: params.min_p,
            greedy: params.greedy,
            adaptive: params.adaptive_temperature.and_then(|a| stats.map(|s| (a.tau, s))),
        }
    }

    /// Sample one token from logits `z [V]` with uniform `u ∈ [0, 1)` (vectorised for AVX-512
    /// when the CPU has it).
    pub fn sample(&self, z: &[f32], u: f64, scratch: &mut Scratch) -> TokenSample {
        crate::simd::dispatch_sample(self, z, u, scratch)
    }

    /// [`Sampler::sample`]'s body, inlined into the AVX-512 and portable wrappers of `simd`.
    #[inline(always)]
    pub(crate) fn sample_impl(&self, z: &[f32], u: f64, scratch: &mut Scratch) -> TokenSample {
        let v = z.len();
        scratch.e.resize(v, 0.0);
        let m = vecmath::max(z);
        let tb = self.temperature as f32;
        let base = vecmath::exp_pass(z, m, 1.0 / tb, f32::NEG_INFINITY, &mut scratch.e);
        let ln_zb = base.z.ln();
        let entropy = (ln_zb - base.zx / base.z) as f32;
        let base_lp = |i: usize| (((z[i] - m) / tb) as f64 - ln_zb) as f32;
        if self.greedy {
            let i = vecmath::argmax(z);
            return TokenSample { token: i as i64, logprob: 0.0, base_logprob: base_lp(i), entropy, temperature: tb };
        }
        let t = match &self.adaptive {
            Some((tau, st)) => token_temperature(entropy as f64, self.temperature, *tau, Some(st)),
            None => self.temperature,
        } as f32;
        let k_floor = self.top_k_floor(z, scratch);
        // Reuse the base pass's weights when nothing changes them (the common T = T_b, no top-k case).
        let mut total = if t != tb || k_floor > f32::NEG_INFINITY {
            vecmath::exp_pass(z, m, 1.0 / t, k_floor, &mut scratch.e).z
        } else {
            base.z
        };
        let target_u = u;
        let i = if self.top_p < 1.0 {
            self.sample_nucleus(&scratch.e, total, target_u, &mut scratch.cand, &mut total)
        } else {
            if self.min_p > 0.0 {
                // min-p relative to the most likely token, whose weight is exactly 1.
                total = vecmath::drop_below(&mut scratch.e, self.min_p as f32);
            }
            vecmath::walk(&scratch.e, target_u * total)
        };
        let logprob = (((z[i] - m) / t) as f64 - total.ln()) as f32;
        TokenSample { token: i as i64, logprob, base_logprob: base_lp(i), entropy, temperature: t }
    }

    /// The k-th largest logit (top-k keeps `z >= floor`), or -inf when top-k is off.
    fn top_k_floor(&self, z: &[f32], scratch: &mut Scratch) -> f32 {
        if self.top_k == 0 || self.top_k >= z.len() {
            return f32::NEG_INFINITY;
        }
        let heap = &mut scratch.heap;
        heap.clear();
        for &x in z {
            if heap.len() < self.top_k {
                heap.push(std::cmp::Reverse(OrdF32(x)));
            } else if x > heap.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0) {
                heap.pop();
                heap.push(std::cmp::Reverse(OrdF32(x)));
            }
        }
        heap.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0)
    }

    /// top-p (then min-p) over weights `e` with sum `total`; samples with uniform `u` and writes
    /// the kept mass into `kept_total`.
    fn sample_nucleus(&self, e: &[f32], total: f64, u: f64, cand: &mut Vec<(f32, u32)>, kept_total: &mut f64) -> usize {
        let need = self.top_p * total;
        // Only tokens above a threshold can be in the nucleus once those tokens alone reach the
        // required mass; start high (few candidates to sort) and lower it until they do.
        let mut thr = 1e-3f32;
        loop {
            cand.clear();
            let mut mass = 0f64;
            for (i, &w) in e.iter().enumerate() {
                if w >= thr && w > 0.0 {
                    cand.push((w, i as u32));
                    mass += w as f64;
                }
            }
            if mass >= need || thr == 0.0 {
                break;
            }
            thr = if thr < 1e-30 { 0.0 } else { thr * 1e-4 };
        }
        // Descending weight, ties by token id (deterministic).
        cand.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut cum = 0f64;
        let mut keep = cand.len();
        for (j, &(w, _)) in cand.iter().enumerate() {
            if cum >= need {
                keep = j;
                break;
            }
            cum += w as f64;
        }
        cand.truncate(keep.max(1));
        if self.min_p > 0.0 {
            let floor = self.min_p as f32; // the top token's weight is 1
            let n = cand.iter().position(|&(w, _)| w < floor).unwrap_or(cand.len());
            cand.truncate(n.max(1));
        }
        let kept: f64 = cand.iter().map(|&(w, _)| w as f64).sum();
        *kept_total = kept;
        let target = u * kept;
        let mut run = 0f64;
        for &(w, i) in cand.iter() {
            run += w as f64;
            if run > target {
                return i as usize;
            }
        }
        cand.last().map_or(0, |&(_, i)| i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portable_and_dispatched_sampling_agree() {
        let z: Vec<f32> = (0..5000).map(|i| ((i * 7919 % 1000) as f32 / 100.0) - 5.0).collect();
        for (top_k, top_p, min_p) in [(0, 1.0, 0.0), (40, 0.9, 0.05)] {
            let s = Sampler { temperature: 0.8, top_k, top_p, min_p, greedy: false, adaptive: None };
            for u in [0.0, 0.3, 0.77, 0.999] {
                let a = s.sample(&z, u, &mut Scratch::default());
                let b = s.sample_impl(&z, u, &mut Scratch::default());
                assert_eq!(a.token, b.token);
                assert!((a.logprob - b.logprob).abs() < 1e-5 && (a.entropy - b.entropy).abs() < 1e-5);
            }
        }
    }
}
