//! Row packing: lets a padded batch run causal attention without a mask.
//!
//! The learner's rows are `[left pads | prompt | response | right pads]` and the rollout's prompt
//! batch is left-padded: in every row the real tokens are one contiguous run. Rotating each row
//! left by its number of leading pads moves that run to column 0, after which plain causal
//! attention (SDPA `is_causal`, no mask) is exact for every real token: it sees exactly the real
//! tokens before it, and the pads now trail it. Trailing pads attend to real tokens too, which
//! keeps their (ignored) outputs finite.
//!
//! Shapes: `mask [B, T]` (1 = real token); `lead [B]` i64 leading pads; the rotation index
//! `[B, T]` maps packed column `j` to original column `(j + lead) mod T`, and its inverse maps
//! back. RoPE positions of the packed rows are `0..T` (real tokens get `0..len`, as
//! `positions_from_mask` gives them).

use tch::{Kind, Tensor};

/// How a batch's rows are laid out, from its mask.
#[derive(Debug)]
pub struct RowPacking {
    /// Leading pads per row `[B]` (i64); `None` when no row has any (nothing to rotate).
    lead: Option<Tensor>,
    /// Real tokens per row `[B]` (i64).
    pub lens: Tensor,
}

impl RowPacking {
    /// The packing of `mask [B, T]`, or `None` when some row's real tokens are not contiguous
    /// (then only a masked attention is exact). Costs one device→host read of two flags.
    pub fn detect(mask: &Tensor) -> Option<RowPacking> {
        let (b, t) = (mask.size()[0], mask.size()[1]);
        let m = mask.to_kind(Kind::Int64);
        let lens = m.sum_dim_intlist(1, false, Kind::Int64);
        let lead = m.cumsum(1, Kind::Int64).eq(0).sum_dim_intlist(1, false, Kind::Int64);
        let col = Tensor::arange(t, (Kind::Int64, mask.device())).view([1, t]);
        let first = lead.view([b, 1]);
        let run = col.ge_tensor(&first).logical_and(&col.lt_tensor(&(&first + lens.view([b, 1]))));
        // Both flags in one read (one device synchronisation on a GPU).
        let flags = Tensor::stack(&[run.eq_tensor(&m.ne(0)).all().to_kind(Kind::Int64), lead.max()], 0);
        let flags: Vec<i64> = Vec::try_from(&flags.to_device(tch::Device::Cpu)).expect("two i64 flags");
        if flags[0] == 0 {
            return None;
        }
        Some(RowPacking { lead: (flags[1] > 0).then_some(lead), lens })
    }

    /// Whether rows need rotating (some row has leading pads).
    pub fn rotates(&self) -> bool {
        self.lead.is_some()
    }

    fn index(&self, t: i64, sign: i64) -> Option<Tensor> {
        let lead = self.lead.as_ref()?;
        let col = Tensor::arange(t, (Kind::Int64, lead.device())).view([1, t]);
        Some((col + lead.view([-1, 1]) * sign).remainder(t))
    }

    /// Packed copy of `x [B, T, ...]` (real tokens first); `x` itself when nothing rotates.
    pub fn pack(&self, x: &Tensor) -> Tensor {
        self.gather(x, 1)
    }

    /// Inverse of [`RowPacking::pack`]: `x [B, T, ...]` back to the original columns.
    pub fn unpack(&self, x: &Tensor) -> Tensor {
        self.gather(x, -1)
    }

    fn gather(&self, x: &Tensor, sign: i64) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let Some(idx) = self.index(t, sign) else { return x.shallow_clone() };
        // Row-major flat index `[B·T]` (not an index expanded over the feature dimension, which
        // would be B·T·D i64 values).
        let base = Tensor::arange(b, (Kind::Int64, idx.device())).view([b, 1]) * t;
        let flat = (idx + base).view([-1]);
        let mut rows = vec![b * t];
        rows.extend_from_slice(&x.size()[2..]);
        x.reshape(rows.as_slice()).index_select(0, &flat).reshape(x.size().as_slice())
    }

    /// Mask of the packed rows `[B, T]` (bool): real tokens in columns `0..len`.
    pub fn packed_mask(&self, t: i64) -> Tensor {
        let col = Tensor::arange(t, (Kind::Int64, self.lens.device())).view([1, t]);
        col.lt_tensor(&self.lens.view([-1, 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_left_padding_and_refuses_holes() {
        let mask = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 0, 1, 1, 1, 1, 0, 0]).view([2, 6]);
        let p = RowPacking::detect(&mask).expect("contiguous rows");
        assert!(p.rotates());
        let x = Tensor::arange(12, (Kind::Int64, tch::Device::Cpu)).view([2, 6]);
        let packed: Vec<i64> = Vec::try_from(p.pack(&x).flatten(0, -1)).unwrap();
        assert_eq!(packed, vec![2, 3, 4, 5, 0, 1, 6, 7, 8, 9, 10, 11]);
        let back: Vec<i64> = Vec::try_from(p.unpack(&p.pack(&x)).flatten(0, -1)).unwrap();
        assert_eq!(back, (0..12).collect::<Vec<_>>());
        // 3-D values rotate along dim 1 as well.
        let x3 = x.unsqueeze(-1).repeat([1, 1, 2]);
        assert!(p.unpack(&p.pack(&x3)).equal(&x3));
        let pm: Vec<bool> = Vec::try_from(p.packed_mask(6).flatten(0, -1)).unwrap();
        assert_eq!(pm, vec![true, true, true, false, false, false, true, true, true, true, false, false]);
        let holes = Tensor::from_slice(&[1i64, 0, 1, 1]).view([1, 4]);
        assert!(RowPacking::detect(&holes).is_none());
        let right = Tensor::from_slice(&[1i64, 1, 0, 0]).view([1, 4]);
        assert!(!RowPacking::detect(&right).unwrap().rotates());
    }
}
