//! The one host copy per decode step: next-token logits `[B, V]` (f32 or bf16, as the model
//! produced them) copied into a reusable buffer, then sampled row by row, in parallel over rows
//! with rayon when the batch is large enough to pay for it.
//!
//! bf16 logits are copied as bf16 (half the bytes) and widened per row; widening is exact, so the
//! recorded logprobs are those of the bf16 logits, as the learner would see them.

use crate::error::Result;
use crate::model::Logits;
use crate::sampler::{Sampler, Scratch, TokenSample};
use rayon::prelude::*;
use std::cell::RefCell;
use tch::{Kind, Tensor};

/// Rows × vocabulary at which sampling is spread over rayon's threads (smaller batches are
/// cheaper serially than the fork/join).
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

thread_local! {
    /// Per-thread scratch (weights row, candidates, and a widened bf16 row), reused across steps.
    static SCRATCH: RefCell<(Scratch, Vec<f32>)> = RefCell::new((Scratch::default(), Vec::new()));
}

/// Host buffer of the latest logits.
#[derive(Debug, Default)]
pub struct HostLogits {
    f32s: Vec<f32>,
    /// bf16 bit patterns.
    bf16s: Vec<i16>,
    is_bf16: bool,
    rows: usize,
    vocab: usize,
}

impl HostLogits {
    /// Take the step's logits: host logits are moved in, tensors copied (the step's only
    /// device→host transfer).
    pub fn load(&mut self, logits: Logits) -> Result<()> {
        match logits {
            Logits::Tensor(t) => self.load_tensor(&t),
            Logits::Host { data, rows, vocab } => {
                debug_assert_eq!(data.len(), rows * vocab);
                // Swap instead of copying; the old buffer comes back for reuse next time.
                self.f32s = data;
                self.is_bf16 = false;
                self.rows = rows;
                self.vocab = vocab;
                Ok(())
            }
        }
    }

    /// Copy `logits [B, V]` to the host.
    pub fn load_tensor(&mut self, logits: &Tensor) -> Result<()> {
        let (b, v) = logits.size2()?;
        let (rows, vocab) = (b as usize, v as usize);
        let n = rows * vocab;
        let logits = logits.contiguous();
        match logits.kind() {
            Kind::BFloat16 => {
                // tch 0.24 declares `half::bf16` as `Kind::Half`, so copy the raw 16-bit patterns.
                self.bf16s.resize(n, 0);
                logits.f_view_dtype(Kind::Int16)?.f_copy_data(&mut self.bf16s, n)?;
                self.is_bf16 = true;
            }
            Kind::Float => {
                self.f32s.resize(n, 0.0);
                logits.f_copy_data(&mut self.f32s, n)?;
                self.is_bf16 = false;
            }
            _ => {
                self.f32s.resize(n, 0.0);
                logits.f_to_kind(Kind::Float)?.f_copy_data(&mut self.f32s, n)?;
                self.is_bf16 = false;
            }
        }
        self.rows = rows;
        self.vocab = vocab;
        Ok(())
    }

    /// Sample one token from each logits row `rows[i]` with uniform `us[i]`; results in order.
    pub fn sample_rows(&self, sampler: &Sampler, rows: &[usize], us: &[f64]) -> Vec<TokenSample> {
        debug_assert_eq!(rows.len(), us.len());
        let one = |(&r, &u): (&usize, &f64)| {
            debug_assert!(r < self.rows);
            SCRATCH.with(|cell| {
                let (scratch, wide) = &mut *cell.borrow_mut();
                let v = self.vocab;
                if self.is_bf16 {
                    wide.clear();
                    // bf16 -> f32 is exact: the bf16 bits are the high half of the f32.
                    wide.extend(self.bf16s[r * v..(r + 1) * v].iter().map(|&x| f32::from_bits(((x as u16) as u32) << 16)));
                    sampler.sample(wide, u, scratch)
                } else {
                    sampler.sample(&self.f32s[r * v..(r + 1) * v], u, scratch)
                }
            })
        };
        if rows.len() > 1 && rows.len() * self.vocab >= PARALLEL_MIN_ELEMS && rayon::current_num_threads() > 1 {
            rows.par_iter().zip(us.par_iter()).map(one).collect()
        } else {
            rows.iter().zip(us.iter()).map(one).collect()
        }
    }
}
