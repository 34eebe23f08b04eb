//! Packed variable-length rows: several sequences concatenated into one row with no padding,
//! each attending only to itself (block-diagonal causal attention), and optionally continuing a
//! shared prefix segment (a group's prompt forwarded once, its keys/values seen by each of the
//! group's responses).
//!
//! Shapes: the packed row is `ids [L]` (L = sum of segment lengths); hidden states `[1, L, D]`;
//! q `[1, H, L, hd]`, k/v `[1, H_kv, L, hd]`. A [`Segment`] is a run `start..start+len` of the
//! row. Without a prefix its RoPE positions are `0..len` and it attends causally to itself; with
//! a prefix segment `p` (which has none itself) its positions are `len_p..len_p+len` and query
//! `i` sees every key of `p` and keys `0..=i` of its own run — exactly what the same tokens see
//! in an unshared `[prefix | segment]` row. Autograd sums the gradients that reach the prefix's
//! activations from every segment continuing it.
//!
//! Attention runs once per segment (SDPA `is_causal` without a mask for a plain segment; SDPA
//! with a `[len, len_p + len]` boolean mask for a continuation), so no `[L, L]` mask is ever
//! built; projections, norms and the MLP run once over the whole packed row.

use tch::{Device, Kind, Tensor};

/// One sequence of a packed row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// First column in the packed row.
    pub start: i64,
    /// Tokens.
    pub len: i64,
    /// Index (into [`PackedSeqs::segments`]) of the prefix segment this one continues.
    pub prefix: Option<usize>,
}

/// The layout of a packed row: segments in column order, covering `0..total` without gaps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedSeqs {
    segments: Vec<Segment>,
    total: i64,
}

impl PackedSeqs {
    /// An empty layout; add segments with [`PackedSeqs::push`].
    pub fn new() -> Self {
        PackedSeqs { segments: Vec::new(), total: 0 }
    }

    /// Append a segment of `len >= 1` tokens (continuing segment `prefix`, which must be an
    /// earlier segment without a prefix); returns its index.
    pub fn push(&mut self, len: i64, prefix: Option<usize>) -> usize {
        assert!(len >= 1, "packed segment of {len} tokens");
        if let Some(p) = prefix {
            assert!(p < self.segments.len() && self.segments[p].prefix.is_none(), "prefix {p} is not an earlier plain segment");
        }
        self.segments.push(Segment { start: self.total, len, prefix });
        self.total += len;
        self.segments.len() - 1
    }

    /// The segments, in column order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Total tokens L.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// RoPE position of every column `[1, L]` (i64).
    pub fn positions(&self, device: Device) -> Tensor {
        let mut pos = Vec::with_capacity(self.total as usize);
        for s in &self.segments {
            let off = s.prefix.map_or(0, |p| self.segments[p].len);
            pos.extend(off..off + s.len);
        }
        Tensor::from_slice(&pos).view([1, self.total]).to_device(device)
    }

    /// Block-diagonal causal attention of `q [1, H, L, hd]` over `k`, `v` `[1, H_kv, L, hd]`
    /// (`gqa`: H != H_kv); returns `[1, H, L, hd]`.
    pub fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, gqa: bool) -> Tensor {
        let mut out = Vec::with_capacity(self.segments.len());
        for s in &self.segments {
            let qs = q.narrow(2, s.start, s.len);
            let (ks, vs) = (k.narrow(2, s.start, s.len), v.narrow(2, s.start, s.len));
            let y = match s.prefix {
                None => Tensor::scaled_dot_product_attention::<Tensor>(&qs, &ks, &vs, None, 0.0, true, None::<f64>, gqa),
                Some(p) => {
                    let ps = &self.segments[p];
                    let keys = Tensor::cat(&[k.narrow(2, ps.start, ps.len), ks], 2);
                    let values = Tensor::cat(&[v.narrow(2, ps.start, ps.len), vs], 2);
                    // Query i sits at position len_p + i: it sees keys 0..=len_p + i.
                    let qi = Tensor::arange(s.len, (Kind::Int64, q.device())).view([s.len, 1]) + ps.len;
                    let kj = Tensor::arange(ps.len + s.len, (Kind::Int64, q.device())).view([1, ps.len + s.len]);
                    let mask = kj.le_tensor(&qi);
                    Tensor::scaled_dot_product_attention(&qs, &keys, &values, Some(&mask), 0.0, false, None::<f64>, gqa)
                }
            };
            out.push(y);
        }
        Tensor::cat(&out, 2)
    }
}

impl Default for PackedSeqs {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_restart_per_segment_and_continue_a_prefix() {
        let mut p = PackedSeqs::new();
        let a = p.push(3, None);
        p.push(2, Some(a));
        p.push(2, None);
        p.push(1, Some(a));
        let pos: Vec<i64> = Vec::try_from(p.positions(Device::Cpu).view([-1])).unwrap();
        assert_eq!(pos, vec![0, 1, 2, 3, 4, 0, 1, 3]);
        assert_eq!(p.total(), 8);
    }

    /// Each segment's attention output equals SDPA over the same tokens laid out alone
    /// (`[prefix | segment]` for a continuation), computed independently.
    #[test]
    fn attention_is_block_diagonal() {
        let mut rng = rlpo_algo::seeded::SplitMix(3);
        let mut p = PackedSeqs::new();
        let a = p.push(3, None);
        p.push(2, Some(a));
        p.push(4, None);
        let (h, hd, l) = (2, 4, p.total());
        let q = rng.randn([1, h, l, hd], (Kind::Double, Device::Cpu));
        let k = rng.randn([1, h, l, hd], (Kind::Double, Device::Cpu));
        let v = rng.randn([1, h, l, hd], (Kind::Double, Device::Cpu));
        let y = p.attend(&q, &k, &v, false);
        let alone = |cols: &[i64]| {
            let idx = Tensor::from_slice(cols);
            let (q, k, v) = (q.index_select(2, &idx), k.index_select(2, &idx), v.index_select(2, &idx));
            Tensor::scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, 0.0, true, None::<f64>, false)
        };
        assert!(y.narrow(2, 0, 3).allclose(&alone(&[0, 1, 2]), 1e-12, 1e-12, false));
        assert!(y.narrow(2, 3, 2).allclose(&alone(&[0, 1, 2, 3, 4]).narrow(2, 3, 2), 1e-12, 1e-12, false));
        assert!(y.narrow(2, 5, 4).allclose(&alone(&[5, 6, 7, 8]), 1e-12, 1e-12, false));
    }
}
