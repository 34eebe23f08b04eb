//! AVX-512 kernels for the CPU decoder and their run-time dispatch. This is the crate's only
//! `unsafe`: calling a `#[target_feature]` function is unsafe because the caller must guarantee
//! the CPU has the features; every call below sits behind `is_x86_feature_detected!`. The kernels
//! themselves are safe code (intrinsics on values, loads/stores through `bytemuck` casts of
//! fixed-size arrays, which compile to plain vector loads).
//!
//! - bf16 GEMM tile: 16 columns × R rows of f32 accumulators, `vdpbf16ps` with an embedded
//!   broadcast of one x pair (32 multiply-adds per instruction);
//! - f32 GEMM tile: the same with `vfmadd` and a broadcast x value;
//! - attention is plain Rust (`cpu_kernels::attention_row`, `#[inline(always)]`) compiled inside
//!   an `avx512f` function, so LLVM vectorises it with 512-bit registers.
//!
//! The kernels prefetch their weight stream ahead of use (`_mm_prefetch`, which cannot fault).
//!
//! `RLPO_PORTABLE_KERNELS=1` (read once, by [`portable_kernels_forced`]) makes every dispatch
//! below take the portable kernel even on an AVX-512 CPU, so parity and greedy tests can run both
//! paths on one machine (`RLPO_PORTABLE_KERNELS=1 cargo test --workspace`).

use crate::gemm::{self, row_tiles, LANES};
use crate::host_cache::KvElem;
use std::ops::Range;

/// Whether `RLPO_PORTABLE_KERNELS=1` forces the portable kernels (read once per process; any
/// other value, or none, lets the CPU's features decide).
pub fn portable_kernels_forced() -> bool {
    static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *F.get_or_init(|| std::env::var("RLPO_PORTABLE_KERNELS").is_ok_and(|v| v.trim() == "1"))
}

/// Whether this CPU has AVX-512F (the f32 GEMM kernel's features), checked once.
pub fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *F.get_or_init(|| !portable_kernels_forced() && is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has every feature the attention and sampling kernels are compiled with
/// (`avx512f,avx512bw,avx512vl,fma`), checked once. AVX-512F alone is not enough: a CPU (or a
/// hypervisor's CPUID mask) may expose F without BW/VL, and running code compiled for them there
/// is undefined behaviour.
pub fn has_avx512_core() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *F.get_or_init(|| {
            !portable_kernels_forced()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("fma")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether this CPU has AVX-512 BF16 (`vdpbf16ps`) and the other features the bf16 GEMM kernel
/// is compiled with (`avx512f,avx512bf16,avx512bw,avx512vl`), checked once.
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static F: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *F.get_or_init(|| {
            !portable_kernels_forced()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bf16")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// bf16 GEMM over column `panels` into `out [m, ldo]` (see `gemm.rs` for layouts).
pub(crate) fn dispatch_bf16_gemm(xq: &[u32], m: usize, kp: usize, w: &[u32], panels: Range<usize>, out: &mut [f32], ldo: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_bf16() {
        // SAFETY: the CPU supports every feature `bf16_gemm_avx512` is compiled with (checked).
        #[allow(unsafe_code)]
        unsafe {
            x86::bf16_gemm_avx512(xq, m, kp, w, panels, out, ldo)
        };
        return;
    }
    gemm::bf16_gemm_portable(xq, m, kp, w, panels, out, ldo)
}

/// f32 GEMM over column `panels` into `out [m, ldo]`.
pub(crate) fn dispatch_f32_gemm(x: &[f32], m: usize, k: usize, w: &[f32], panels: Range<usize>, out: &mut [f32], ldo: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512f() {
        // SAFETY: the CPU supports AVX-512F, the only feature `f32_gemm_avx512` is compiled with
        // (checked).
        #[allow(unsafe_code)]
        unsafe {
            x86::f32_gemm_avx512(x, m, k, w, panels, out, ldo)
        };
        return;
    }
    gemm::f32_gemm_portable(x, m, k, w, panels, out, ldo)
}

/// Attention of one row (see `cpu_kernels::attention_row`), vectorised for AVX-512 when present.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dispatch_attention_row<T: KvElem>(q: &[f32], keys: &[T], values: &[T], valid: &[bool], kv: usize, cap: usize, hd: usize, total: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_core() {
        // SAFETY: the CPU supports every feature `attention_row_avx512` is compiled with
        // (avx512f, avx512bw, avx512vl, fma; checked).
        #[allow(unsafe_code)]
        unsafe {
            x86::attention_row_avx512(q, keys, values, valid, kv, cap, hd, total, out)
        };
        return;
    }
    crate::cpu_kernels::attention_row(q, keys, values, valid, kv, cap, hd, total, out)
}

/// One sampling decision (see `Sampler::sample`), compiled for AVX-512 when present.
pub(crate) fn dispatch_sample(s: &crate::sampler::Sampler, z: &[f32], u: f64, scratch: &mut crate::sampler::Scratch) -> crate::sampler::TokenSample {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_core() {
        // SAFETY: the CPU supports every feature `sample_avx512` is compiled with (avx512f,
        // avx512bw, avx512vl, fma; checked).
        #[allow(unsafe_code)]
        return unsafe { x86::sample_avx512(s, z, u, scratch) };
    }
    s.sample_impl(z, u, scratch)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub(super) fn sample_avx512(s: &crate::sampler::Sampler, z: &[f32], u: f64, scratch: &mut crate::sampler::Scratch) -> crate::sampler::TokenSample {
        s.sample_impl(z, u, scratch)
    }

    /// Cache lines of weights to prefetch ahead of the kernel. Measured on the 2-core Zen 4 box:
    /// 8 lines beat no prefetch by ~1.5x on cold weights; farther (24–192) was slower.
    const PREFETCH_LINES: usize = 8;

    /// Prefetch the weight line `PREFETCH_LINES` lines past element `i` of `w` (no-op past the end).
    #[inline(always)]
    fn prefetch<T>(w: &[T], i: usize) {
        let j = i + PREFETCH_LINES * 64 / std::mem::size_of::<T>();
        if j < w.len() {
            // SAFETY: a prefetch never faults and reads nothing observable; the address is in bounds.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(w.as_ptr().add(j).cast())
            };
        }
    }

    /// `exp(x)` for `x <= 0` on 16 lanes (the polynomial of `vecmath::exp_neg`).
    #[target_feature(enable = "avx512f")]
    fn exp_neg_ps(x: __m512) -> __m512 {
        let xc = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let magic = _mm512_set1_ps(12_582_912.0);
        let t = _mm512_fmadd_ps(xc, _mm512_set1_ps(std::f32::consts::LOG2_E), magic);
        let n = _mm512_sub_ps(t, magic);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), xc);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0));
        let ni = _mm512_sub_epi32(_mm512_castps_si512(t), _mm512_castps_si512(magic));
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(ni, _mm512_set1_epi32(127))));
        let e = _mm512_mul_ps(y, scale);
        // x < -87 (and -inf) -> 0
        let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(-87.0));
        _mm512_maskz_mov_ps(keep, e)
    }

    #[inline(always)]
    fn load16(s: &[f32]) -> __m512 {
        bytemuck::cast(<[f32; LANES]>::try_from(&s[..LANES]).expect("16 lanes"))
    }

    /// 16 cache elements widened to f32 (a plain load for f32, a zero-extend and shift for bf16).
    #[inline(always)]
    fn load16_kv<T: KvElem>(s: &[T]) -> __m512 {
        let a: &[T; LANES] = s[..LANES].try_into().expect("16 lanes");
        let mut o = [0f32; LANES];
        for i in 0..LANES {
            o[i] = a[i].to_f32();
        }
        bytemuck::cast(o)
    }

    #[inline(always)]
    fn store16(d: &mut [f32], v: __m512) {
        d[..LANES].copy_from_slice(&bytemuck::cast::<__m512, [f32; LANES]>(v));
    }

    /// AVX-512 attention of one row; same contract as `cpu_kernels::attention_row` (whose
    /// portable loops it replaces): scores of 16 slots per register over hd (4 chains), masked
    /// softmax, then `o += p[t]·V[t]` with hd/16 accumulators per head.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_row_avx512<T: KvElem>(q: &[f32], keys: &[T], values: &[T], valid: &[bool], kv: usize, cap: usize, hd: usize, total: usize, out: &mut [f32]) {
        const L: usize = LANES;
        if !hd.is_multiple_of(L) || hd > 8 * L {
            return crate::cpu_kernels::attention_row(q, keys, values, valid, kv, cap, hd, total, out);
        }
        let g = q.len() / hd / kv;
        let scale = 1.0 / (hd as f32).sqrt();
        // Left padding: slots before the first real one are skipped entirely.
        let lo = valid.iter().position(|&v| v).unwrap_or(total);
        let (b0, b1) = (lo / L, total.div_ceil(L));
        let stride = b1 * L;
        let mut scores = vec![0f32; g * stride];
        for j in 0..kv {
            let kt = &keys[j * hd * cap..j * hd * cap + b1 * hd * L];
            let v = &values[j * cap * hd..(j * cap + total) * hd];
            for gi in 0..g {
                let qg = &q[(j * g + gi) * hd..(j * g + gi + 1) * hd];
                let sc = &mut scores[gi * stride..(gi + 1) * stride];
                for blk in b0..b1 {
                    let kb = &kt[blk * hd * L..(blk + 1) * hd * L];
                    let mut a = [_mm512_setzero_ps(); 4];
                    for (e4, k4) in kb.chunks_exact(4 * L).enumerate() {
                        for c in 0..4 {
                            a[c] = _mm512_fmadd_ps(_mm512_set1_ps(qg[e4 * 4 + c]), load16_kv(&k4[c * L..]), a[c]);
                        }
                    }
                    let acc = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
                    store16(&mut sc[blk * L..], _mm512_mul_ps(acc, _mm512_set1_ps(scale)));
                }
                // Mask: before `lo`, past `total`, and any hole (none with left padding).
                let sc = &mut sc[b0 * L..b1 * L];
                for (t, x) in sc.iter_mut().enumerate() {
                    let slot = b0 * L + t;
                    if slot < lo || slot >= total || !valid[slot] {
                        *x = f32::NEG_INFINITY;
                    }
                }
                let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                for c in sc.chunks_exact(L) {
                    m = _mm512_max_ps(m, load16(c));
                }
                let m = _mm512_set1_ps(_mm512_reduce_max_ps(m));
                let mut sum = _mm512_setzero_ps();
                for c in sc.chunks_exact_mut(L) {
                    let e = exp_neg_ps(_mm512_sub_ps(load16(c), m));
                    sum = _mm512_add_ps(sum, e);
                    store16(c, e);
                }
                let inv = 1.0 / _mm512_reduce_add_ps(sum);
                // o = Σ_t p_t V[t]; hd/16 independent accumulators.
                let nv = hd / L;
                let mut acc = [_mm512_setzero_ps(); 8];
                for t in lo..total {
                    let p = _mm512_set1_ps(sc[t - b0 * L]);
                    let vt = &v[t * hd..(t + 1) * hd];
                    for c in 0..nv {
                        acc[c] = _mm512_fmadd_ps(p, load16_kv(&vt[c * L..]), acc[c]);
                    }
                }
                let o = &mut out[(j * g + gi) * hd..(j * g + gi + 1) * hd];
                for c in 0..nv {
                    store16(&mut o[c * L..], _mm512_mul_ps(acc[c], _mm512_set1_ps(inv)));
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    pub(super) fn bf16_gemm_avx512(xq: &[u32], m: usize, kp: usize, w: &[u32], panels: Range<usize>, out: &mut [f32], ldo: usize) {
        let run = &w[panels.start * kp * LANES..panels.end * kp * LANES];
        for (pi, wp) in run.chunks_exact(kp * LANES).enumerate() {
            let c0 = pi * LANES;
            let base = pi * kp * LANES;
            for (r0, t) in row_tiles(m) {
                match t {
                    16 => bf16_tile::<16>(xq, m, r0, wp, run, base, out, ldo, c0),
                    8 => bf16_tile::<8>(xq, m, r0, wp, run, base, out, ldo, c0),
                    4 => bf16_tile::<4>(xq, m, r0, wp, run, base, out, ldo, c0),
                    2 => bf16_tile::<2>(xq, m, r0, wp, run, base, out, ldo, c0),
                    _ => bf16_tile::<1>(xq, m, r0, wp, run, base, out, ldo, c0),
                }
            }
        }
    }

    /// Rows `r0 .. r0 + R` × one 16-column panel `wp` (`[K/2][16]` pairs); `run`/`base` locate the
    /// panel in this thread's whole weight stream for prefetching.
    #[target_feature(enable = "avx512f,avx512bf16,avx512bw,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    fn bf16_tile<const R: usize>(xq: &[u32], m: usize, r0: usize, wp: &[u32], run: &[u32], base: usize, out: &mut [f32], ldo: usize, c0: usize) {
        let mut acc = [_mm512_setzero_ps(); R];
        for (q, wq) in wp.chunks_exact(LANES).enumerate() {
            prefetch(run, base + q * LANES);
            let wv: __m512bh = bytemuck::cast(<[u32; LANES]>::try_from(wq).expect("16 lanes"));
            let xs: &[u32; R] = xq[q * m + r0..q * m + r0 + R].try_into().expect("R rows");
            for i in 0..R {
                let xb: __m512bh = bytemuck::cast(_mm512_set1_epi32(xs[i] as i32));
                acc[i] = _mm512_dpbf16_ps(acc[i], wv, xb);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let a: [f32; LANES] = bytemuck::cast(*a);
            let o = (r0 + i) * ldo + c0;
            out[o..o + LANES].copy_from_slice(&a);
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) fn f32_gemm_avx512(xt: &[f32], m: usize, k: usize, w: &[f32], panels: Range<usize>, out: &mut [f32], ldo: usize) {
        let run = &w[panels.start * k * LANES..panels.end * k * LANES];
        for (pi, wp) in run.chunks_exact(k * LANES).enumerate() {
            let c0 = pi * LANES;
            let base = pi * k * LANES;
            for (r0, t) in row_tiles(m) {
                match t {
                    16 => f32_tile::<16>(xt, m, r0, wp, run, base, out, ldo, c0),
                    8 => f32_tile::<8>(xt, m, r0, wp, run, base, out, ldo, c0),
                    4 => f32_tile::<4>(xt, m, r0, wp, run, base, out, ldo, c0),
                    2 => f32_tile::<2>(xt, m, r0, wp, run, base, out, ldo, c0),
                    _ => f32_tile::<1>(xt, m, r0, wp, run, base, out, ldo, c0),
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    fn f32_tile<const R: usize>(xt: &[f32], m: usize, r0: usize, wp: &[f32], run: &[f32], base: usize, out: &mut [f32], ldo: usize, c0: usize) {
        let mut acc = [_mm512_setzero_ps(); R];
        for (kk, wk) in wp.chunks_exact(LANES).enumerate() {
            prefetch(run, base + kk * LANES);
            let wv: __m512 = bytemuck::cast(<[f32; LANES]>::try_from(wk).expect("16 lanes"));
            let xs: &[f32; R] = xt[kk * m + r0..kk * m + r0 + R].try_into().expect("R rows");
            for i in 0..R {
                acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(xs[i]), wv, acc[i]);
            }
        }
        for (i, a) in acc.iter().enumerate() {
            let a: [f32; LANES] = bytemuck::cast(*a);
            let o = (r0 + i) * ldo + c0;
            out[o..o + LANES].copy_from_slice(&a);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The dispatch is checked against this file's own source: every kernel called from a
    //! `dispatch_*` function must be guarded by a `has_*` predicate that detects every feature in
    //! the kernel's `#[target_feature(enable = ...)]`. Adding a feature to a kernel without
    //! adding it to its guard fails here instead of crashing (or worse) on some CPU.
    use std::collections::{BTreeMap, BTreeSet};

    const SRC: &str = include_str!("simd.rs");

    /// The string literals between `open` and the next `close`, for each occurrence of `open`.
    fn quoted_after<'a>(text: &'a str, open: &str) -> Vec<&'a str> {
        text.match_indices(open).filter_map(|(i, _)| text[i + open.len()..].split('"').next()).collect()
    }

    /// The identifier at the start of `s`.
    fn ident(s: &str) -> String {
        s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    }

    /// `name -> body` of each `prefix name` in `text` (up to the next top-level item).
    fn bodies<'a>(text: &'a str, prefix: &str) -> BTreeMap<String, &'a str> {
        let mut out = BTreeMap::new();
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            let end = rest.find("\n}\n").unwrap_or(rest.len());
            out.insert(ident(rest), &rest[..end]);
        }
        out
    }

    #[test]
    fn every_kernel_is_guarded_by_all_of_its_target_features() {
        let (src, _) = SRC.split_once("#[cfg(test)]\nmod tests").expect("test module");
        // Predicates: the features each `has_*` detects.
        let preds: BTreeMap<String, BTreeSet<&str>> = bodies(src, "pub fn has_")
            .into_iter()
            .map(|(name, body)| (format!("has_{name}"), quoted_after(body, "is_x86_feature_detected!(\"").into_iter().collect()))
            .collect();
        // Kernels: the features each `pub(super) fn` is compiled with.
        let x86 = src.split_once("mod x86 {").expect("x86 module").1;
        let mut kernels: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        for (i, _) in x86.match_indices("#[target_feature(enable = \"") {
            let after = &x86[i..];
            let feats: BTreeSet<&str> = quoted_after(after, "enable = \"")[0].split(',').collect();
            let sig = after.lines().skip(1).find(|l| l.contains("fn ")).expect("fn after the attribute");
            if let Some(rest) = sig.trim_start().strip_prefix("pub(super) fn ") {
                kernels.insert(ident(rest), feats);
            }
        }
        assert_eq!(kernels.len(), 4, "kernels found: {kernels:?}");
        // Each dispatch: its guard must cover the kernel it calls.
        let dispatches = bodies(src, "pub(crate) fn dispatch_");
        assert_eq!(dispatches.len(), 4, "{:?}", dispatches.keys());
        for (name, body) in &dispatches {
            let at = body.find("if has_").unwrap_or_else(|| panic!("dispatch_{name} has no `if has_*()` guard"));
            let guard = ident(&body[at + 3..]);
            let kernel = ident(body.split("x86::").nth(1).expect("calls a kernel"));
            let (have, need) = (&preds[&guard], &kernels[&kernel]);
            assert!(need.is_subset(have), "dispatch_{name}: {guard}() detects {have:?} but {kernel} needs {need:?}");
        }
    }
}
