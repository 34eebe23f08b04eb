//! Host-memory KV cache of the CPU decoder ([`crate::CpuDecoder`]), with the rules of
//! `rlpo_model::KvCache`: one write slot `len` shared by all rows (prompts are left-padded),
//! `valid [B, T_max]` marking real tokens, `next_pos [B]` the next RoPE position of each row.
//!
//! Layout per layer: keys in **slot blocks** `[B, H_kv, T_max/16, hd, 16]` (16 consecutive slots of
//! one head dimension side by side), so the scores of 16 slots are 16-lane multiply-adds over hd
//! from one contiguous block (no horizontal sums, one prefetchable stream); values
//! `[B, H_kv, T_max, hd]`, so the weighted sum is vectorised over hd. `T_max` is rounded up to a
//! multiple of 16. Elements are f32 for f32 models and bf16 for bf16/f16 models (as the model's
//! own cache would hold them): attention reads the whole cache every step, so its bytes matter.
//!
//! It is filled once from the LibTorch cache of the prefill ([`HostCache::from_torch`]) and then
//! only touched by Rust code, so a decode step needs no tensor round trips for attention.

use crate::error::Result;
use crate::gemm::bf16_bits;
use rlpo_model::KvCache;
use tch::{Kind, Tensor};

/// Slots per key block.
pub const SLOT_BLOCK: usize = 16;

/// A cache element: f32, or bf16 stored as its bit pattern.
pub trait KvElem: Copy + Default + Send + Sync + 'static {
    /// Widen to f32 (exact).
    fn to_f32(self) -> f32;
    /// Round from f32 (nearest even for bf16).
    fn from_f32(x: f32) -> Self;
}

impl KvElem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl KvElem for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self as u32) << 16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16_bits(x)
    }
}

/// One layer's keys or values.
#[derive(Debug, Clone)]
pub enum KvBuf {
    /// f32 elements.
    F32(Vec<f32>),
    /// bf16 bit patterns.
    Bf16(Vec<u16>),
}

impl KvBuf {
    /// Store `x` at `i` (rounded to the buffer's type).
    pub fn set(&mut self, i: usize, x: f32) {
        match self {
            KvBuf::F32(v) => v[i] = x,
            KvBuf::Bf16(v) => v[i] = bf16_bits(x),
        }
    }

    /// Store `xs` at `i..`.
    pub fn set_slice(&mut self, i: usize, xs: &[f32]) {
        match self {
            KvBuf::F32(v) => v[i..i + xs.len()].copy_from_slice(xs),
            KvBuf::Bf16(v) => v[i..i + xs.len()].iter_mut().zip(xs).for_each(|(d, &x)| *d = bf16_bits(x)),
        }
    }

    fn gather(&self, len: usize, spans: impl Iterator<Item = (usize, usize)>, n: usize) -> KvBuf {
        fn go<T: Copy + Default>(src: &[T], len: usize, spans: impl Iterator<Item = (usize, usize)>, n: usize) -> Vec<T> {
            let mut dst = vec![T::default(); n];
            for (s, d) in spans {
                dst[d..d + len].copy_from_slice(&src[s..s + len]);
            }
            dst
        }
        match self {
            KvBuf::F32(v) => KvBuf::F32(go(v, len, spans, n)),
            KvBuf::Bf16(v) => KvBuf::Bf16(go(v, len, spans, n)),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            KvBuf::F32(v) => v.len() * 4,
            KvBuf::Bf16(v) => v.len() * 2,
        }
    }
}

/// A contiguous run of rows of one layer's keys or values, borrowed mutably (one part of a
/// row-split decode step).
#[derive(Debug)]
pub enum KvRows<'a> {
    /// f32 elements.
    F32(&'a mut [f32]),
    /// bf16 bit patterns.
    Bf16(&'a mut [u16]),
}

impl KvRows<'_> {
    /// Store `x` at `i` (rounded to the buffer's type).
    pub fn set(&mut self, i: usize, x: f32) {
        match self {
            KvRows::F32(v) => v[i] = x,
            KvRows::Bf16(v) => v[i] = bf16_bits(x),
        }
    }

    /// Store `xs` at `i..`.
    pub fn set_slice(&mut self, i: usize, xs: &[f32]) {
        match self {
            KvRows::F32(v) => v[i..i + xs.len()].copy_from_slice(xs),
            KvRows::Bf16(v) => v[i..i + xs.len()].iter_mut().zip(xs).for_each(|(d, &x)| *d = bf16_bits(x)),
        }
    }
}

/// Split every layer's buffers at row boundaries `bounds` (`[0, .., B]`, increasing) into one
/// `Vec` per part of `(keys, values)` per layer; `row_len` is the elements per row.
pub fn split_rows<'a>(keys: &'a mut [KvBuf], values: &'a mut [KvBuf], bounds: &[usize], row_len: usize) -> Vec<Vec<(KvRows<'a>, KvRows<'a>)>> {
    let parts = bounds.len() - 1;
    let mut out: Vec<Vec<(KvRows<'a>, KvRows<'a>)>> = (0..parts).map(|_| Vec::with_capacity(keys.len())).collect();
    fn cut<'a, T>(mut v: &'a mut [T], bounds: &[usize], row_len: usize) -> Vec<&'a mut [T]> {
        let mut pieces = Vec::with_capacity(bounds.len() - 1);
        for w in bounds.windows(2) {
            let (a, rest) = std::mem::take(&mut v).split_at_mut((w[1] - w[0]) * row_len);
            pieces.push(a);
            v = rest;
        }
        pieces
    }
    let rows = |b: &'a mut KvBuf| -> Vec<KvRows<'a>> {
        match b {
            KvBuf::F32(v) => cut(v, bounds, row_len).into_iter().map(KvRows::F32).collect(),
            KvBuf::Bf16(v) => cut(v, bounds, row_len).into_iter().map(KvRows::Bf16).collect(),
        }
    };
    for (k, v) in keys.iter_mut().zip(values.iter_mut()) {
        for (p, (kp, vp)) in rows(k).into_iter().zip(rows(v)).enumerate() {
            out[p].push((kp, vp));
        }
    }
    out
}

/// K/V of every layer for `batch` rows, in host memory.
#[derive(Debug, Clone)]
pub struct HostCache {
    /// Keys per layer, `[B, H_kv, T_max/16, hd, 16]`.
    pub keys: Vec<KvBuf>,
    /// Values per layer, `[B, H_kv, T_max, hd]`.
    pub values: Vec<KvBuf>,
    /// Real-token slots `[B, T_max]`.
    pub valid: Vec<bool>,
    /// Next RoPE position per row `[B]`.
    pub next_pos: Vec<i64>,
    /// Slots written (same for every row).
    pub len: usize,
    /// `T_max` (a multiple of [`SLOT_BLOCK`]).
    pub capacity: usize,
    /// Rows B.
    pub batch: usize,
    /// K/V heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl HostCache {
    /// Copy a LibTorch cache into host buffers: bf16 elements when `bf16`, f32 otherwise.
    pub fn from_torch(c: &KvCache, bf16: bool) -> Result<Self> {
        let size = c.keys.first().map(|k| k.size()).unwrap_or_default();
        let (batch, kv_heads, torch_cap, head_dim) = match size.as_slice() {
            [b, h, t, d] => (*b as usize, *h as usize, *t as usize, *d as usize),
            _ => (c.batch() as usize, 0, c.capacity as usize, 0),
        };
        let capacity = torch_cap.div_ceil(SLOT_BLOCK) * SLOT_BLOCK;
        let n = batch * kv_heads * capacity * head_dim;
        let pad = (capacity - torch_cap) as i64;
        let (b, h, nb, d) = (batch as i64, kv_heads as i64, (capacity / SLOT_BLOCK) as i64, head_dim as i64);
        // Any dtype in, n elements of the cache's element type out (`t` has n elements).
        let host = |t: Tensor| -> Result<KvBuf> {
            let t = t.f_contiguous()?;
            Ok(if bf16 {
                // tch declares bf16 elements as Kind::Half, so copy the bit patterns as i16.
                let mut bits = vec![0i16; n];
                t.f_to_kind(Kind::BFloat16)?.f_view_dtype(Kind::Int16)?.f_copy_data(&mut bits, n)?;
                KvBuf::Bf16(bits.into_iter().map(|x| x as u16).collect())
            } else {
                let mut v = vec![0f32; n];
                t.f_to_kind(Kind::Float)?.f_copy_data(&mut v, n)?;
                KvBuf::F32(v)
            })
        };
        let padded = |t: &Tensor| t.f_constant_pad_nd([0, 0, 0, pad]); // [B, H, T_max, d]
        // keys: [B, H, T, d] -> [B, H, T/16, 16, d] -> [B, H, T/16, d, 16]
        let keys = c
            .keys
            .iter()
            .map(|k| host(padded(k)?.view([b, h, nb, SLOT_BLOCK as i64, d]).transpose(3, 4)))
            .collect::<Result<Vec<_>>>()?;
        let values = c.values.iter().map(|v| host(padded(v)?)).collect::<Result<Vec<_>>>()?;
        let mut torch_valid = vec![false; batch * torch_cap];
        c.valid.f_copy_data(&mut torch_valid, batch * torch_cap)?;
        let mut valid = vec![false; batch * capacity];
        for r in 0..batch {
            valid[r * capacity..r * capacity + torch_cap].copy_from_slice(&torch_valid[r * torch_cap..(r + 1) * torch_cap]);
        }
        let mut next_pos = vec![0i64; batch];
        c.next_pos.f_to_kind(Kind::Int64)?.f_copy_data(&mut next_pos, batch)?;
        Ok(HostCache { keys, values, valid, next_pos, len: c.len as usize, capacity, batch, kv_heads, head_dim })
    }

    /// Offset of head `j` of row `b` in a layer buffer (its `[T_max/16, hd, 16]` keys or
    /// `[T_max, hd]` values).
    pub fn head(&self, b: usize, j: usize) -> usize {
        (b * self.kv_heads + j) * self.capacity * self.head_dim
    }

    /// Index of key element `e` of slot `t` within a head's key block.
    pub fn key_index(&self, t: usize, e: usize) -> usize {
        ((t / SLOT_BLOCK) * self.head_dim + e) * SLOT_BLOCK + t % SLOT_BLOCK
    }

    /// Keep (or repeat) rows `rows` (indices into the current batch): fan-out of a prompt into its
    /// G samples, or dropping finished rows. Only the written slots are copied.
    pub fn select_rows(&self, rows: &[i64]) -> HostCache {
        let (kv, cap, hd) = (self.kv_heads, self.capacity, self.head_dim);
        let n = rows.len() * kv * cap * hd;
        // Whole key blocks up to `len`, value rows up to `len`.
        let key_len = self.len.div_ceil(SLOT_BLOCK) * SLOT_BLOCK * hd;
        let spans = || rows.iter().enumerate().flat_map(move |(i, &r)| (0..kv).map(move |j| (self.head(r as usize, j), (i * kv + j) * cap * hd)));
        let mut valid = vec![false; rows.len() * cap];
        let mut next_pos = vec![0i64; rows.len()];
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            valid[i * cap..(i + 1) * cap].copy_from_slice(&self.valid[r * cap..(r + 1) * cap]);
            next_pos[i] = self.next_pos[r];
        }
        HostCache {
            keys: self.keys.iter().map(|k| k.gather(key_len, spans(), n)).collect(),
            values: self.values.iter().map(|v| v.gather(self.len * hd, spans(), n)).collect(),
            valid,
            next_pos,
            len: self.len,
            capacity: cap,
            batch: rows.len(),
            kv_heads: kv,
            head_dim: hd,
        }
    }

    /// Bytes held by the K/V buffers.
    pub fn bytes(&self) -> usize {
        self.keys.iter().chain(&self.values).map(KvBuf::bytes).sum()
    }
}
