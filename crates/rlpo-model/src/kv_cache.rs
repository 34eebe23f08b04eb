//! Preallocated key/value cache for incremental decoding, owned by the caller (the rollout engine)
//! and passed into the model.
//!
//! Layout per layer: keys and values `[B, H_kv, T_max, head_dim]`. All rows share one write slot
//! (`len`), so prompts are left-padded; `valid [B, T_max]` marks which slots hold real tokens (pads
//! are never attended to) and `next_pos [B]` is each row's next RoPE position (its count of real
//! tokens so far). Rows can be gathered (`select_rows`) to fan a prompt out into G samples or to drop
//! finished rows so they stop costing compute.

use tch::{Device, Kind, Tensor};

/// Per-layer K/V buffers plus the bookkeeping shared by all layers.
#[derive(Debug)]
pub struct KvCache {
    /// Keys per layer, `[B, H_kv, T_max, D]`.
    pub keys: Vec<Tensor>,
    /// Values per layer, `[B, H_kv, T_max, D]`.
    pub values: Vec<Tensor>,
    /// Real-token slots, `[B, T_max]` bool.
    pub valid: Tensor,
    /// Next RoPE position per row, `[B]` i64.
    pub next_pos: Tensor,
    /// Number of slots written (the same for every row).
    pub len: i64,
    /// Capacity `T_max`.
    pub capacity: i64,
}

impl KvCache {
    /// Zeroed cache for `batch` rows and `capacity` slots.
    pub fn new(layers: i64, batch: i64, kv_heads: i64, capacity: i64, head_dim: i64, kind: Kind, device: Device) -> Self {
        let shape = [batch, kv_heads, capacity, head_dim];
        KvCache {
            keys: (0..layers).map(|_| Tensor::zeros(shape, (kind, device))).collect(),
            values: (0..layers).map(|_| Tensor::zeros(shape, (kind, device))).collect(),
            valid: Tensor::zeros([batch, capacity], (Kind::Bool, device)),
            next_pos: Tensor::zeros([batch], (Kind::Int64, device)),
            len: 0,
            capacity,
        }
    }

    /// Number of rows B.
    pub fn batch(&self) -> i64 {
        self.valid.size()[0]
    }

    /// Keep (or repeat) rows: `rows` is `[B']` i64 indices into the current batch.
    /// Used to copy one prefilled prompt into its G sample rows and to drop finished rows.
    pub fn select_rows(&self, rows: &Tensor) -> KvCache {
        KvCache {
            keys: self.keys.iter().map(|k| k.index_select(0, rows)).collect(),
            values: self.values.iter().map(|v| v.index_select(0, rows)).collect(),
            valid: self.valid.index_select(0, rows),
            next_pos: self.next_pos.index_select(0, rows),
            len: self.len,
            capacity: self.capacity,
        }
    }

    /// Bytes held by the K/V buffers.
    pub fn bytes(&self) -> i64 {
        self.keys.iter().chain(&self.values).map(|t| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64).sum()
    }
}
