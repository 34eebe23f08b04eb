//! One-pass kernels over a row of logits `[V]` (f32), written so LLVM vectorises them with the
//! baseline x86-64 instruction set (no `unsafe`, no target features): fixed-width lane
//! accumulators instead of serial reductions, and an `exp` built from arithmetic and bit casts
//! (Cephes `expf`: Cody–Waite range reduction, degree-6 polynomial, exponent by bit shift; about
//! 1 ulp) instead of a libm call per element.
//!
//! Why here and not in LibTorch: sampling a 49k vocabulary with `softmax` + `multinomial` costs
//! ~16 ms per step at batch 16 on the 2-core benchmark machine; these passes cost ~0.1 ms per row.
//! They are `#[inline(always)]` so that the sampler, when `simd` runs it inside an AVX-512
//! function, gets them vectorised with 512-bit registers.

/// Lanes per accumulator block (four SSE registers, one AVX-512 register).
const LANES: usize = 16;

/// `exp(x)` for `x <= 0` (the engine only exponentiates `(z - max) / T`): relative error about
/// 2e-7; inputs below -87 (including -inf) give exactly 0.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to the nearest integer in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.max(-87.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let y = p * r * r + r + 1.0;
    // 2^n: n = (bits(t) - bits(MAGIC)) is a small integer; put n + 127 in the exponent field.
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    let e = y * scale;
    if x < -87.0 {
        0.0
    } else {
        e
    }
}

/// Maximum of a non-empty row (NaN-free input assumed; logits are finite or -inf).
#[inline(always)]
pub fn max(z: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = z.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(tail) {
        if v > m {
            m = v;
        }
    }
    m
}

/// Index of the first maximum (greedy decoding; torch's `argmax` also returns the first).
#[inline(always)]
pub fn argmax(z: &[f32]) -> usize {
    let m = max(z);
    z.iter().position(|&v| v == m).unwrap_or(0)
}

/// Sums of one exp pass at inverse temperature `inv_t`, with `x_i = (z_i - m) * inv_t`.
#[derive(Debug, Clone, Copy)]
pub struct ExpSums {
    /// `Σ exp(x_i)` over kept tokens (≥ 1 when the max token is kept).
    pub z: f64,
    /// `Σ exp(x_i) · x_i` over kept tokens (for the entropy).
    pub zx: f64,
}

/// Writes `e_i = exp((z_i - m) * inv_t)` into `out` (0 where `z_i < floor`) and returns the sums.
/// `floor = -inf` keeps everything; a finite floor implements top-k (`floor` = k-th largest logit).
#[inline(always)]
pub fn exp_pass(z: &[f32], m: f32, inv_t: f32, floor: f32, out: &mut [f32]) -> ExpSums {
    debug_assert_eq!(z.len(), out.len());
    let mut s = [0f32; LANES];
    let mut sx = [0f32; LANES];
    let (mut tot, mut totx) = (0f64, 0f64);
    // Blocks of 512 so the f32 lane sums stay short (accuracy) before folding into f64.
    for (zb, ob) in z.chunks(512).zip(out.chunks_mut(512)) {
        let zc = zb.chunks_exact(LANES);
        let tail = zc.remainder().len();
        for (c, o) in zc.zip(ob.chunks_exact_mut(LANES)) {
            for l in 0..LANES {
                let x = (c[l] - m) * inv_t;
                let e = if c[l] >= floor { exp_neg(x) } else { 0.0 };
                o[l] = e;
                s[l] += e;
                // e == 0 for dropped tokens, but x may be -inf there: avoid 0 * inf = NaN.
                sx[l] += if e > 0.0 { e * x } else { 0.0 };
            }
        }
        let n = zb.len() - tail;
        for i in n..zb.len() {
            let x = (zb[i] - m) * inv_t;
            let e = if zb[i] >= floor { exp_neg(x) } else { 0.0 };
            ob[i] = e;
            tot += e as f64;
            totx += if e > 0.0 { (e * x) as f64 } else { 0.0 };
        }
        for l in 0..LANES {
            tot += s[l] as f64;
            totx += sx[l] as f64;
            s[l] = 0.0;
            sx[l] = 0.0;
        }
    }
    ExpSums { z: tot, zx: totx }
}

/// Zeroes `e_i < floor` in place and returns the new `Σ e` (min-p on the exp row).
#[inline(always)]
pub fn drop_below(e: &mut [f32], floor: f32) -> f64 {
    let mut tot = 0f64;
    for blk in e.chunks_mut(512) {
        let mut s = [0f32; LANES];
        let chunks = blk.chunks_exact_mut(LANES);
        for c in chunks {
            for l in 0..LANES {
                c[l] = if c[l] >= floor { c[l] } else { 0.0 };
                s[l] += c[l];
            }
        }
        let n = blk.len() / LANES * LANES;
        for v in &mut blk[n..] {
            *v = if *v >= floor { *v } else { 0.0 };
            tot += *v as f64;
        }
        tot += s.iter().map(|&v| v as f64).sum::<f64>();
    }
    tot
}

/// Inverse-CDF walk: the first index whose running sum of `e` exceeds `target` (skipping whole
/// blocks by their sums). Falls back to the last positive entry when rounding leaves `target`
/// just above the total.
#[inline(always)]
pub fn walk(e: &[f32], target: f64) -> usize {
    const BLOCK: usize = 256;
    let mut cum = 0f64;
    for (b, blk) in e.chunks(BLOCK).enumerate() {
        let mut s = [0f32; LANES];
        let chunks = blk.chunks_exact(LANES);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for l in 0..LANES {
                s[l] += c[l];
            }
        }
        let bsum = s.iter().map(|&v| v as f64).sum::<f64>() + tail as f64;
        if cum + bsum <= target {
            cum += bsum;
            continue;
        }
        for (i, &v) in blk.iter().enumerate() {
            cum += v as f64;
            if v > 0.0 && cum > target {
                return b * BLOCK + i;
            }
        }
    }
    e.iter().rposition(|&v| v > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_neg_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let rel = ((exp_neg(x) as f64) - (x as f64).exp()).abs() / (x as f64).exp();
            worst = worst.max(rel);
            x += 0.001_37;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
        assert_eq!(exp_neg(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_neg(-100.0), 0.0);
    }

    #[test]
    fn passes_agree_with_plain_loops() {
        let z: Vec<f32> = (0..1003).map(|i| ((i * 7919 % 1000) as f32) * 0.013 - 6.0).collect();
        let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(max(&z), m);
        assert_eq!(argmax(&z), z.iter().position(|&v| v == m).unwrap());
        let mut e = vec![0f32; z.len()];
        let s = exp_pass(&z, m, 1.0 / 0.7, f32::NEG_INFINITY, &mut e);
        let want: f64 = z.iter().map(|&v| ((v - m) as f64 / 0.7).exp()).sum();
        assert!((s.z - want).abs() / want < 1e-6);
        let wantx: f64 = z.iter().map(|&v| ((v - m) as f64 / 0.7).exp() * (v - m) as f64 / 0.7).sum();
        assert!((s.zx - wantx).abs() / wantx.abs() < 1e-5);
        let kept = drop_below(&mut e, 0.5);
        let want_kept: f64 = z.iter().map(|&v| ((v - m) as f64 / 0.7).exp()).filter(|&p| p >= 0.5).sum();
        assert!((kept - want_kept).abs() / want_kept < 1e-5);
        // walk: index whose cumulative sum first exceeds the target
        let e2 = vec![0.0, 1.0, 0.0, 2.0, 1.0];
        assert_eq!(walk(&e2, 0.0), 1);
        assert_eq!(walk(&e2, 0.99), 1);
        assert_eq!(walk(&e2, 1.0), 3);
        assert_eq!(walk(&e2, 3.5), 4);
        assert_eq!(walk(&e2, 4.0), 4); // rounding fallback: last positive entry
    }
}
