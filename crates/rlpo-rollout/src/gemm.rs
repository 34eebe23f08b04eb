//! Skinny matrix products for decode steps, `out [M, N] = x [M, K] · Wᵀ` with `W [N, K]` (HF
//! layout) and M = decode rows (1–64), on CPU.
//!
//! Why not LibTorch: at M = 16, `linear` repacks the whole weight matrix on every call (MKL and
//! oneDNN both copy B into their blocked format), so a SmolLM2 decode step ran its projections at
//! ~6 GB/s of weights, a fifth of the machine's bandwidth. Here weights are packed once, when the
//! decoder is built, into 16-column panels:
//! - bf16: `[N/16][K/2][16]` u32, each u32 two consecutive k of one column (the VNNI pair layout of
//!   `vdpbf16ps`); the kernel broadcasts a pair of x values and does 32 multiply-adds per
//!   instruction, accumulating in f32;
//! - f32: `[N/16][K][16]`, one FMA per (k, row) with a broadcast x value.
//!
//! x is transposed to `[K, M]` (bf16: `[K/2, M]` pairs), so one k step of a tile reads the weights
//! as one 64-byte line and the up-to-16 row values as one more. A tile keeps up to 16 rows × 16
//! columns of accumulators in registers, so each weight panel is read once per call; the kernel
//! prefetches the panel stream ahead of use. Column panels are split across rayon's threads.
//! AVX-512 kernels (`avx512f`, plus `avx512bf16` for bf16) are chosen at run time; other CPUs use
//! a portable kernel with the same results up to summation order.

use crate::simd;
use rayon::prelude::*;
use std::ops::Range;

/// Columns per panel (one 512-bit register of f32).
pub const LANES: usize = 16;
const MAX_ROWS: usize = 16;

/// A weight matrix `[N, K]` packed into 16-column panels (see module docs).
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    /// Output columns N.
    pub n: usize,
    /// Reduction length K.
    pub k: usize,
    panels: usize,
    data: Packed,
}

#[derive(Debug, Clone)]
enum Packed {
    /// `[panels][ceil(K/2)][16]` bf16 pairs.
    Bf16(Vec<u32>),
    /// `[panels][K][16]`.
    F32(Vec<f32>),
}

/// Round f32 to bf16 bits (round to nearest even, as LibTorch does).
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return 0x7fc0;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// A source element for packing: f32 values, or bf16 bit patterns (as LibTorch hands them out,
/// `i16`), which pack without a round trip through f32.
pub trait PackSource: Copy + Send + Sync {
    /// As bf16 bits (rounded to nearest even from f32).
    fn bf16(self) -> u16;
    /// As f32 (exact for bf16).
    fn f32(self) -> f32;
}

impl PackSource for f32 {
    fn bf16(self) -> u16 {
        bf16_bits(self)
    }
    fn f32(self) -> f32 {
        self
    }
}

impl PackSource for i16 {
    fn bf16(self) -> u16 {
        self as u16
    }
    fn f32(self) -> f32 {
        f32::from_bits((self as u16 as u32) << 16)
    }
}

impl PackedMatrix {
    /// Pack `w [N, K]` (row-major). `bf16 = true` stores bf16 (exact when the values came from a
    /// bf16 tensor) and multiplies in bf16 with f32 accumulation.
    pub fn new<S: PackSource>(w: &[S], n: usize, k: usize, bf16: bool) -> Self {
        assert_eq!(w.len(), n * k, "weight is not [{n}, {k}]");
        let panels = n.div_ceil(LANES);
        // Panel by panel (in parallel), writing each panel sequentially while reading its 16
        // source rows as 16 sequential streams.
        let col = |p: usize, lane: usize| p * LANES + lane;
        let data = if bf16 {
            let kp = k.div_ceil(2);
            let mut d = vec![0u32; panels * kp * LANES];
            d.par_chunks_mut((kp * LANES).max(1)).enumerate().for_each(|(p, panel)| {
                for (q, slot) in panel.chunks_exact_mut(LANES).enumerate() {
                    for (lane, v) in slot.iter_mut().enumerate() {
                        let c = col(p, lane);
                        if c < n {
                            let lo = w[c * k + 2 * q].bf16() as u32;
                            let hi = if 2 * q + 1 < k { w[c * k + 2 * q + 1].bf16() as u32 } else { 0 };
                            *v = lo | (hi << 16);
                        }
                    }
                }
            });
            Packed::Bf16(d)
        } else {
            let mut d = vec![0f32; panels * k * LANES];
            d.par_chunks_mut((k * LANES).max(1)).enumerate().for_each(|(p, panel)| {
                for (kk, slot) in panel.chunks_exact_mut(LANES).enumerate() {
                    for (lane, v) in slot.iter_mut().enumerate() {
                        let c = col(p, lane);
                        if c < n {
                            *v = w[c * k + kk].f32();
                        }
                    }
                }
            });
            Packed::F32(d)
        };
        PackedMatrix { n, k, panels, data }
    }

    /// Whether the weights are stored (and multiplied) in bf16.
    pub fn is_bf16(&self) -> bool {
        matches!(self.data, Packed::Bf16(_))
    }

    /// Bytes of packed weights.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Packed::Bf16(d) => d.len() * 4,
            Packed::F32(d) => d.len() * 4,
        }
    }
}

/// Reusable buffers: x transposed (bf16 pairs or f32) and one output slab per thread.
#[derive(Debug, Default)]
pub struct GemmScratch {
    xq: Vec<u32>,
    xt: Vec<f32>,
    parts: Vec<Vec<f32>>,
}

/// `out [M, N] = x [M, K] · Wᵀ` (`out` is resized), column panels split over rayon's threads.
/// For bf16 weights x is rounded to bf16 first.
pub fn matmul(x: &[f32], m: usize, w: &PackedMatrix, out: &mut Vec<f32>, scratch: &mut GemmScratch) {
    out.resize(m * w.n, 0.0);
    matmul_into(x, m, w, out, scratch, rayon::current_num_threads());
}

/// `out [M, N] = x [M, K] · Wᵀ` on the calling thread (the CPU decoder splits rows, not columns,
/// across threads, so each part runs its matmuls serially).
pub fn matmul_serial(x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], scratch: &mut GemmScratch) {
    matmul_into(x, m, w, out, scratch, 1)
}

/// `out [M, N] = x [M, K] · Wᵀ` with the column panels split over `threads` rayon tasks.
pub fn matmul_into(x: &[f32], m: usize, w: &PackedMatrix, out: &mut [f32], scratch: &mut GemmScratch, threads: usize) {
    let (n, k) = (w.n, w.k);
    assert_eq!(x.len(), m * k, "x is not [{m}, {k}]");
    assert_eq!(out.len(), m * n, "out is not [{m}, {n}]");
    if m == 0 {
        return;
    }
    let kp = k.div_ceil(2);
    if w.is_bf16() {
        // xq [K/2, M]: pair q of row r at q·M + r.
        scratch.xq.clear();
        scratch.xq.resize(kp * m, 0);
        for r in 0..m {
            for kk in 0..k {
                let bits = bf16_bits(x[r * k + kk]) as u32;
                scratch.xq[(kk / 2) * m + r] |= if kk % 2 == 0 { bits } else { bits << 16 };
            }
        }
    } else {
        // xt [K, M].
        scratch.xt.resize(k * m, 0.0);
        for r in 0..m {
            for kk in 0..k {
                scratch.xt[kk * m + r] = x[r * k + kk];
            }
        }
    }
    let (xq, xt) = (&scratch.xq, &scratch.xt);
    let run = |panels: Range<usize>, part: &mut [f32], cols: usize| match &w.data {
        Packed::Bf16(d) => simd::dispatch_bf16_gemm(xq, m, kp, d, panels, part, cols),
        Packed::F32(d) => simd::dispatch_f32_gemm(xt, m, k, d, panels, part, cols),
    };
    if threads <= 1 && n % LANES == 0 {
        // One thread and no padding columns: write straight into `out`.
        return run(0..w.panels, out, n);
    }
    // Split the column panels into one contiguous range per thread.
    let threads = threads.clamp(1, w.panels);
    let per = w.panels.div_ceil(threads);
    scratch.parts.resize_with(threads, Vec::new);
    let slab = |t: usize, part: &mut Vec<f32>| {
        let panels = (t * per).min(w.panels)..((t + 1) * per).min(w.panels);
        let cols = panels.len() * LANES;
        part.resize(m * cols, 0.0);
        run(panels, part, cols);
    };
    if threads == 1 {
        slab(0, &mut scratch.parts[0]);
    } else {
        scratch.parts.par_iter_mut().enumerate().for_each(|(t, part)| slab(t, part));
    }
    // Gather the column slabs into row-major `out` (dropping the padding columns past N).
    for (t, part) in scratch.parts.iter().enumerate() {
        let c0 = (t * per * LANES).min(n);
        let c1 = ((t + 1) * per * LANES).min(n);
        let cols = part.len() / m;
        for r in 0..m {
            out[r * n + c0..r * n + c1].copy_from_slice(&part[r * cols..r * cols + (c1 - c0)]);
        }
    }
}

/// Row tiles of at most 16 rows, largest first: 16, 8, 4, 2, 1.
pub(crate) fn row_tiles(m: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut r = 0;
    std::iter::from_fn(move || {
        if r >= m {
            return None;
        }
        let left = m - r;
        let t = [MAX_ROWS, 8, 4, 2, 1].into_iter().find(|&t| t <= left).unwrap_or(1);
        r += t;
        Some((r - t, t))
    })
}

/// Portable bf16 kernel (x as `[K/2, M]` pairs): widen both operands to f32 (exact) and
/// multiply-add in f32.
pub(crate) fn bf16_gemm_portable(xq: &[u32], m: usize, kp: usize, w: &[u32], panels: Range<usize>, out: &mut [f32], ldo: usize) {
    let lo = |v: u32| f32::from_bits(v << 16);
    let hi = |v: u32| f32::from_bits(v & 0xffff_0000);
    for (pi, p) in panels.enumerate() {
        let wp = &w[p * kp * LANES..(p + 1) * kp * LANES];
        for r in 0..m {
            let mut acc = [0f32; LANES];
            for (q, wq) in wp.chunks_exact(LANES).enumerate() {
                let xv = xq[q * m + r];
                let (x0, x1) = (lo(xv), hi(xv));
                for l in 0..LANES {
                    acc[l] += x0 * lo(wq[l]) + x1 * hi(wq[l]);
                }
            }
            out[r * ldo + pi * LANES..r * ldo + (pi + 1) * LANES].copy_from_slice(&acc);
        }
    }
}

/// Portable f32 kernel (x as `[K, M]`).
pub(crate) fn f32_gemm_portable(xt: &[f32], m: usize, k: usize, w: &[f32], panels: Range<usize>, out: &mut [f32], ldo: usize) {
    for (pi, p) in panels.enumerate() {
        let wp = &w[p * k * LANES..(p + 1) * k * LANES];
        for r in 0..m {
            let mut acc = [0f32; LANES];
            for (kk, wk) in wp.chunks_exact(LANES).enumerate() {
                let xv = xt[kk * m + r];
                for l in 0..LANES {
                    acc[l] += xv * wk[l];
                }
            }
            out[r * ldo + pi * LANES..r * ldo + (pi + 1) * LANES].copy_from_slice(&acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                out[r * n + c] = (0..k).map(|i| x[r * k + i] as f64 * w[c * k + i] as f64).sum();
            }
        }
        out
    }

    fn data(len: usize, seed: u64) -> Vec<f32> {
        (0..len).map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    #[test]
    fn f32_and_bf16_match_a_plain_reference_for_odd_shapes() {
        for &(m, n, k) in &[(1, 16, 8), (3, 20, 7), (16, 48, 64), (21, 33, 130), (64, 96, 576)] {
            let x = data(m * k, 1);
            let w = data(n * k, 2);
            let mut out = Vec::new();
            let mut s = GemmScratch::default();
            matmul(&x, m, &PackedMatrix::new(&w, n, k, false), &mut out, &mut s);
            let want = reference(&x, m, &w, n, k);
            let mut serial = vec![0f32; m * n];
            matmul_serial(&x, m, &PackedMatrix::new(&w, n, k, false), &mut serial, &mut s);
            assert_eq!(serial, out, "serial and parallel f32 ({m},{n},{k})");
            let err = out.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            // f32 accumulation over k terms of magnitude <= 1: error grows ~ k·eps.
            let tol = 2e-6 * k as f64;
            assert!(err < tol, "f32 ({m},{n},{k}): {err}");
            // bf16: compare against the reference on bf16-rounded inputs.
            let round = |v: &[f32]| v.iter().map(|&a| f32::from_bits((bf16_bits(a) as u32) << 16)).collect::<Vec<_>>();
            let (xb, wb) = (round(&x), round(&w));
            matmul(&x, m, &PackedMatrix::new(&w, n, k, true), &mut out, &mut s);
            let want = reference(&xb, m, &wb, n, k);
            let err = out.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(err < tol, "bf16 ({m},{n},{k}): {err}");
        }
    }

    #[test]
    fn portable_kernels_agree_with_the_dispatched_ones() {
        let (m, n, k) = (5usize, 32usize, 40usize);
        let x = data(m * k, 3);
        let w = data(n * k, 4);
        for bf16 in [false, true] {
            let p = PackedMatrix::new(&w, n, k, bf16);
            let mut want = Vec::new();
            matmul(&x, m, &p, &mut want, &mut GemmScratch::default());
            let kp = k.div_ceil(2);
            let mut got = vec![0f32; m * n];
            match &p.data {
                Packed::Bf16(d) => {
                    let mut xq = vec![0u32; kp * m];
                    for r in 0..m {
                        for kk in 0..k {
                            let bits = bf16_bits(x[r * k + kk]) as u32;
                            xq[(kk / 2) * m + r] |= if kk % 2 == 0 { bits } else { bits << 16 };
                        }
                    }
                    bf16_gemm_portable(&xq, m, kp, d, 0..p.panels, &mut got, n);
                }
                Packed::F32(d) => {
                    let xt: Vec<f32> = (0..k * m).map(|i| x[(i % m) * k + i / m]).collect();
                    f32_gemm_portable(&xt, m, k, d, 0..p.panels, &mut got, n);
                }
            }
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 1e-4, "bf16={bf16}: {err}");
        }
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), 0xc020);
    }

    #[test]
    fn row_tiles_cover_every_row_once() {
        for m in 0..70 {
            let tiles: Vec<_> = row_tiles(m).collect();
            assert_eq!(tiles.iter().map(|t| t.1).sum::<usize>(), m);
            assert!(tiles.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        }
    }
}
