//! Host-memory KV cache of the CPU decoder ([`crate::CpuDecoder`]), with the rules of
//! `rlpo_model::KvCache`: one write slot `len` shared by all rows (prompts are left-padded),
//! `valid [B, T_max]` marking real tokens, `next_pos [B]` the next RoPE position of each row.
//! Layout per layer (f32): keys in **slot blocks** `[B, H_kv, T_max/16, hd, 16]` (16 consecutive
//! slots of one head dimension side by side), so the scores of 16 slots are 16-lane multiply-adds
//! over hd from one contiguous 4 KiB block (no horizontal sums, one prefetchable stream); values
//! `[B, H_kv, T_max, hd]`, so the weighted sum is vectorised over hd. `T_max` is rounded up to a
//! multiple of 16.
//!
//! It is filled once from the LibTorch cache of the prefill ([`HostCache::from_torch`]) and then
//! only touched by Rust code, so a decode step needs no tensor round trips for attention.

use crate::error::Result;

/// Slots per key block.
pub const SLOT_BLOCK: usize = 16;
use rlpo_model::KvCache;
use tch::Kind;

/// K/V of every layer for `batch` rows, in host memory.
#[derive(Debug, Clone)]
pub struct HostCache {
    /// Keys per layer, `[B, H_kv, T_max/16, hd, 16]`.
    pub keys: Vec<Vec<f32>>,
    /// Values per layer, `[B, H_kv, T_max, hd]`.
    pub values: Vec<Vec<f32>>,
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
    /// Copy a LibTorch cache (any dtype) into f32 host buffers.
    pub fn from_torch(c: &KvCache) -> Result<Self> {
        let size = c.keys.first().map(|k| k.size()).unwrap_or_default();
        let (batch, kv_heads, torch_cap, head_dim) = match size.as_slice() {
            [b, h, t, d] => (*b as usize, *h as usize, *t as usize, *d as usize),
            _ => (c.batch() as usize, 0, c.capacity as usize, 0),
        };
        let capacity = torch_cap.div_ceil(SLOT_BLOCK) * SLOT_BLOCK;
        let n = batch * kv_heads * capacity * head_dim;
        let pad = (capacity - torch_cap) as i64;
        let host = |t: tch::Tensor| -> Result<Vec<f32>> {
            let mut v = vec![0f32; n];
            t.f_to_kind(Kind::Float)?.f_constant_pad_nd([0, 0, 0, pad])?.f_contiguous()?.f_copy_data(&mut v, n)?;
            Ok(v)
        };
        let (b, h, nb, d) = (batch as i64, kv_heads as i64, (capacity / SLOT_BLOCK) as i64, head_dim as i64);
        let blocked = |k: &tch::Tensor| -> Result<Vec<f32>> {
            let mut v = host(k.shallow_clone())?;
            // [B, H, T, d] -> [B, H, T/16, 16, d] -> [B, H, T/16, d, 16]
            let t = tch::Tensor::from_slice(&v).view([b, h, nb, SLOT_BLOCK as i64, d]).transpose(3, 4).contiguous();
            t.f_copy_data(&mut v, n)?;
            Ok(v)
        };
        let keys = c.keys.iter().map(blocked).collect::<Result<Vec<_>>>()?;
        let values = c.values.iter().map(|v| host(v.shallow_clone())).collect::<Result<Vec<_>>>()?;
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

    /// Keep (or repeat) rows `rows` (indices into the current batch): fan-out of a prompt into its
    /// G samples, or dropping finished rows. Only the written slots are copied.
    pub fn select_rows(&self, rows: &[i64]) -> HostCache {
        let (kv, cap, hd) = (self.kv_heads, self.capacity, self.head_dim);
        let row_len = kv * cap * hd;
        let len = self.len;
        // Only written slots: whole key blocks up to `len`, value rows up to `len`.
        let used = len.div_ceil(SLOT_BLOCK) * SLOT_BLOCK;
        let copy = |src: &Vec<f32>, upto: usize| {
            let mut dst = vec![0f32; rows.len() * row_len];
            for (i, &r) in rows.iter().enumerate() {
                for j in 0..kv {
                    let (s, d) = (self.head(r as usize, j), (i * kv + j) * cap * hd);
                    dst[d..d + upto * hd].copy_from_slice(&src[s..s + upto * hd]);
                }
            }
            dst
        };
        let mut valid = vec![false; rows.len() * cap];
        let mut next_pos = vec![0i64; rows.len()];
        for (i, &r) in rows.iter().enumerate() {
            let r = r as usize;
            valid[i * cap..(i + 1) * cap].copy_from_slice(&self.valid[r * cap..(r + 1) * cap]);
            next_pos[i] = self.next_pos[r];
        }
        HostCache {
            keys: self.keys.iter().map(|k| copy(k, used)).collect(),
            values: self.values.iter().map(|v| copy(v, len)).collect(),
            valid,
            next_pos,
            len: self.len,
            capacity: cap,
            batch: rows.len(),
            kv_heads: kv,
            head_dim: hd,
        }
    }

    /// Index of key element `e` of slot `t` within a head's key block.
    pub fn key_index(&self, t: usize, e: usize) -> usize {
        ((t / SLOT_BLOCK) * self.head_dim + e) * SLOT_BLOCK + t % SLOT_BLOCK
    }

    /// Bytes held by the K/V buffers.
    pub fn bytes(&self) -> usize {
        self.keys.iter().chain(&self.values).map(|v| v.len() * 4).sum()
    }
}
