//! Row-wise kernels of the CPU decoder's step (host f32 buffers, row-major): RMSNorm, RoPE, bias
//! and residual adds, SwiGLU, and attention of one row over its host KV cache. Plain Rust written
//! for vectorisation (16-lane accumulators, no serial float reductions); attention is also
//! compiled inside an AVX-512 wrapper (`simd`), which replaces it with intrinsics when possible.
//!
//! Shapes: rows of width D for norms/adds, `gu [B, 2I]` for SwiGLU, one row's `q [H, hd]` and its
//! K/V heads (keys `[H_kv, cap/16, hd, 16]`, values `[H_kv, cap, hd]`) for attention.

use crate::host_cache::{KvElem, KvRows, SLOT_BLOCK};
use crate::{simd, vecmath};
use rayon::prelude::*;

/// `out[r] = w ⊙ x[r] / sqrt(mean(x[r]²) + eps)` for rows of width `d` (f32, as transformers).
pub(crate) fn rms_rows(x: &[f32], w: &[f32], eps: f32, out: &mut Vec<f32>, d: usize) {
    out.resize(x.len(), 0.0);
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let inv = 1.0 / (sum_squares(xr) / d as f32 + eps).sqrt();
        for i in 0..d {
            or[i] = w[i] * (xr[i] * inv);
        }
    }
}

pub(crate) fn rms_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let inv = 1.0 / (sum_squares(x) / x.len() as f32 + eps).sqrt();
    for (v, &wi) in x.iter_mut().zip(w) {
        *v = wi * (*v * inv);
    }
}

fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for l in 0..16 {
            acc[l] += c[l] * c[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// transformers' RoPE: `x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]`.
pub(crate) fn rope_rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    for i in 0..half {
        let (a, b) = (x[i], x[i + half]);
        x[i] = a * cos[i] + (-b) * sin[i];
        x[i + half] = b * cos[i + half] + a * sin[i + half];
    }
}

pub(crate) fn add_bias(y: &mut [f32], bias: Option<&[f32]>, n: usize) {
    if let Some(bias) = bias {
        for row in y.chunks_exact_mut(n) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

pub(crate) fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `act = silu(gate) ⊙ up` from `gu [B, 2I]` (gate first, as the fused weight is packed).
pub(crate) fn swiglu(gu: &[f32], inter: usize, act: &mut Vec<f32>) {
    act.resize(gu.len() / 2, 0.0);
    for (row, out) in gu.chunks_exact(2 * inter).zip(act.chunks_exact_mut(inter)) {
        let (g, u) = row.split_at(inter);
        for i in 0..inter {
            // silu(g) = g·σ(g); σ via exp of a non-positive argument (fast exp, ~1 ulp).
            let e = vecmath::exp_neg(-g[i].abs());
            let sig = if g[i] >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
            out[i] = g[i] * sig * u[i];
        }
    }
}

/// Causal attention of each of a part's rows: H query heads over the row's cache slots
/// `[0, total)` (pads masked), K/V head `j` serving query heads `j·G .. (j + 1)·G`.
/// `qkv [m, nq]`, keys/values the part's rows, `valid [m, cap]`, `out [m, H·hd]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_rows(qkv: &[f32], nq: usize, keys: &KvRows, values: &KvRows, valid: &[bool], kv: usize, cap: usize, hd: usize, total: usize, h: usize, out: &mut [f32], parallel: bool) {
    #[allow(clippy::too_many_arguments)]
    fn go<T: KvElem>(qkv: &[f32], nq: usize, keys: &[T], values: &[T], valid: &[bool], kv: usize, cap: usize, hd: usize, total: usize, h: usize, out: &mut [f32], parallel: bool) {
        let row = kv * cap * hd;
        let one = |(r, o): (usize, &mut [f32])| {
            let q = &qkv[r * nq..r * nq + h * hd];
            let v = &valid[r * cap..r * cap + total];
            simd::dispatch_attention_row(q, &keys[r * row..(r + 1) * row], &values[r * row..(r + 1) * row], v, kv, cap, hd, total, o);
        };
        if parallel {
            out.par_chunks_mut(h * hd).enumerate().for_each(one);
        } else {
            out.chunks_mut(h * hd).enumerate().for_each(one);
        }
    }
    match (keys, values) {
        (KvRows::F32(k), KvRows::F32(v)) => go(qkv, nq, k, v, valid, kv, cap, hd, total, h, out, parallel),
        (KvRows::Bf16(k), KvRows::Bf16(v)) => go(qkv, nq, k, v, valid, kv, cap, hd, total, h, out, parallel),
        _ => unreachable!("keys and values share an element type"),
    }
}

/// One row: `q [H, hd]` against its K/V heads (keys `[H_kv, cap/16, hd, 16]`, values
/// `[H_kv, cap, hd]`) over slots `[0, total)` (`valid [total]`) → `out [H, hd]`. The scores of a
/// block of 16 slots accumulate in one 16-lane register over hd; the output accumulates
/// `o[d] += p[t]·V[t][d]` over d. Inlined into an AVX-512 wrapper by `simd`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_row<T: KvElem>(q: &[f32], keys: &[T], values: &[T], valid: &[bool], kv: usize, cap: usize, hd: usize, total: usize, out: &mut [f32]) {
    const L: usize = SLOT_BLOCK;
    let g = q.len() / hd / kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let blocks = total.div_ceil(L);
    let stride = blocks * L;
    let mut scores = vec![0f32; g * stride];
    for j in 0..kv {
        let kt = &keys[j * hd * cap..j * hd * cap + blocks * hd * L];
        let v = &values[j * cap * hd..(j * cap + total) * hd];
        let qj = &q[j * g * hd..(j + 1) * g * hd];
        for (blk, kb) in kt.chunks_exact(hd * L).enumerate() {
            for gi in 0..g {
                let qg = &qj[gi * hd..(gi + 1) * hd];
                // Four independent accumulator chains: one chain of hd dependent adds would be
                // latency-bound.
                let mut a = [[0f32; L]; 4];
                let (qc, kc) = (qg.chunks_exact(4), kb.chunks_exact(4 * L));
                let (qr, kr) = (qc.remainder(), kc.remainder());
                for (q4, k4) in qc.zip(kc) {
                    for c in 0..4 {
                        for l in 0..L {
                            a[c][l] += q4[c] * k4[c * L + l].to_f32();
                        }
                    }
                }
                for (&qe, ke) in qr.iter().zip(kr.chunks_exact(L)) {
                    for l in 0..L {
                        a[0][l] += qe * ke[l].to_f32();
                    }
                }
                let dst = &mut scores[gi * stride + blk * L..gi * stride + (blk + 1) * L];
                for l in 0..L {
                    dst[l] = (a[0][l] + a[1][l]) + (a[2][l] + a[3][l]);
                }
            }
        }
        for gi in 0..g {
            softmax_masked(&mut scores[gi * stride..gi * stride + total], valid, scale);
        }
        let oj = &mut out[j * g * hd..(j + 1) * g * hd];
        oj.fill(0.0);
        for (t, vt) in v.chunks_exact(hd).enumerate() {
            for gi in 0..g {
                let p = scores[gi * stride + t];
                for (a, &b) in oj[gi * hd..(gi + 1) * hd].iter_mut().zip(vt) {
                    *a += p * b.to_f32();
                }
            }
        }
    }
}

/// In place: `x ← softmax(x · scale)` over the slots where `valid`, 0 elsewhere (lane-wise
/// reductions so it vectorises).
#[inline(always)]
fn softmax_masked(x: &mut [f32], valid: &[bool], scale: f32) {
    const L: usize = 16;
    for (v, &ok) in x.iter_mut().zip(valid) {
        *v = if ok { *v * scale } else { f32::NEG_INFINITY };
    }
    let mut mx = [f32::NEG_INFINITY; L];
    let chunks = x.chunks_exact(L);
    let mut m = chunks.remainder().iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for c in chunks {
        for l in 0..L {
            mx[l] = if c[l] > mx[l] { c[l] } else { mx[l] };
        }
    }
    for &v in &mx {
        m = m.max(v);
    }
    let mut sums = [0f32; L];
    let mut chunks = x.chunks_exact_mut(L);
    for c in &mut chunks {
        for l in 0..L {
            c[l] = vecmath::exp_neg(c[l] - m);
            sums[l] += c[l];
        }
    }
    let mut sum: f32 = 0.0;
    for v in chunks.into_remainder() {
        *v = vecmath::exp_neg(*v - m);
        sum += *v;
    }
    let inv = 1.0 / (sums.iter().sum::<f32>() + sum);
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain f64 attention of one row for `q [H, hd]`, keys/values given per head as `[S, hd]`.
    fn reference(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], valid: &[bool], kv: usize, hd: usize) -> Vec<f64> {
        let g = q.len() / hd / kv;
        let mut out = vec![0f64; q.len()];
        for hh in 0..q.len() / hd {
            let j = hh / g;
            let s: Vec<f64> = (0..valid.len())
                .map(|t| if valid[t] { (0..hd).map(|e| q[hh * hd + e] as f64 * k[j][t * hd + e] as f64).sum::<f64>() / (hd as f64).sqrt() } else { f64::NEG_INFINITY })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for t in 0..valid.len() {
                let p = (s[t] - m).exp() / z;
                for e in 0..hd {
                    out[hh * hd + e] += p * v[j][t * hd + e] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn attention_kernels_match_a_plain_reference() {
        let (kv, hd, cap) = (2usize, 32usize, 48usize);
        let h = 6;
        for total in [1usize, 7, 16, 17, 40] {
            let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.5;
            let q: Vec<f32> = (0..h * hd).map(|i| val(i + 3)).collect();
            let ks: Vec<Vec<f32>> = (0..kv).map(|j| (0..total * hd).map(|i| val(i * 3 + j)).collect()).collect();
            let vs: Vec<Vec<f32>> = (0..kv).map(|j| (0..total * hd).map(|i| val(i * 5 + j + 11)).collect()).collect();
            // Left padding: the first 3 slots (when there are more than 3) are pads.
            let valid: Vec<bool> = (0..total).map(|t| total <= 3 || t >= 3).collect();
            let mut keys = vec![0f32; kv * cap * hd];
            let mut values = vec![0f32; kv * cap * hd];
            for j in 0..kv {
                for t in 0..total {
                    for e in 0..hd {
                        keys[j * cap * hd + ((t / SLOT_BLOCK) * hd + e) * SLOT_BLOCK + t % SLOT_BLOCK] = ks[j][t * hd + e];
                        values[j * cap * hd + t * hd + e] = vs[j][t * hd + e];
                    }
                }
            }
            let want = reference(&q, &ks, &vs, &valid, kv, hd);
            let mut portable = vec![0f32; h * hd];
            attention_row(&q, &keys, &values, &valid, kv, cap, hd, total, &mut portable);
            let mut dispatched = vec![0f32; h * hd];
            simd::dispatch_attention_row(&q, &keys, &values, &valid, kv, cap, hd, total, &mut dispatched);
            for (name, got) in [("portable", &portable), ("dispatched", &dispatched)] {
                let err = got.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
                assert!(err < 1e-5, "{name}, total {total}: {err}");
            }
        }
    }

    #[test]
    fn norms_rope_and_swiglu_follow_their_definitions() {
        let x = vec![1.0f32, -2.0, 3.0, 0.5];
        let w = vec![1.0f32, 2.0, 0.5, 1.0];
        let mut out = Vec::new();
        rms_rows(&x, &w, 1e-6, &mut out, 4);
        let rms = ((1.0 + 4.0 + 9.0 + 0.25) / 4.0f64 + 1e-6).sqrt();
        for i in 0..4 {
            assert!((out[i] as f64 - w[i] as f64 * x[i] as f64 / rms).abs() < 1e-6);
        }
        // RoPE with cos = 0, sin = 1 is rotate_half: [-x2, x1].
        let mut r = vec![1.0f32, 2.0, 3.0, 4.0];
        rope_rotate(&mut r, &[0.0; 4], &[1.0; 4]);
        assert_eq!(r, vec![-3.0, -4.0, 1.0, 2.0]);
        let gu = vec![2.0f32, -1.0, 3.0, 4.0];
        let mut act = Vec::new();
        swiglu(&gu, 2, &mut act);
        let silu = |g: f64| g / (1.0 + (-g).exp());
        assert!((act[0] as f64 - silu(2.0) * 3.0).abs() < 1e-6);
        assert!((act[1] as f64 - silu(-1.0) * 4.0).abs() < 1e-6);
    }
}
