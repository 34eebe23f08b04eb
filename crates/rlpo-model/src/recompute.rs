//! Activation checkpointing (`trainer.activation_checkpointing`): keep only each decoder layer's
//! input during the forward and recompute the layer in the backward.
//!
//! tch has no custom autograd function, so the backward is driven by hand:
//!
//! 1. forward ([`forward`]): the embedding and every layer run under `no_grad`, saving each
//!    layer's input `[B, T, D]` (the embedding output is not saved: it is recomputed from the
//!    ids); the last layer's output becomes a leaf `top` that requires grad, and the final norm
//!    (and whatever the caller does next) is recorded by autograd as usual;
//! 2. the caller's `loss.backward()` stops at `top`, leaving `top.grad`;
//! 3. [`backward`] walks the layers top-down: re-run layer `l` with grad from its saved input
//!    (a fresh leaf; layer 0 re-embeds the ids, so the embedding gets its gradient), back-propagate
//!    `sum(y · g)` — whose gradient with respect to `y` is exactly `g` — which accumulates the
//!    layer's parameter gradients and leaves the input's gradient, the next `g`.
//!
//! The recomputed forward is the same computation as the first, so every gradient equals the
//! plain backward's bit for bit on CPU, with one exception: a tied embedding (`lm_head` =
//! `embed_tokens`) whose gradient is already non-zero (a second micro-batch) receives its two
//! contributions in two additions instead of one, which can differ in the last bit.
//!
//! Memory: L saved inputs of `[B, T, D]` in the model dtype instead of every layer's activations,
//! plus one layer's activations during its recompute.

use crate::attention::AttnMask;
use crate::model::CausalLm;
use tch::Tensor;

/// One checkpointed forward waiting for its backward.
#[derive(Debug)]
pub struct Pending {
    /// Token ids as the layers saw them (packed when rows were rotated).
    ids: Tensor,
    /// Input of layers `1..L` (layer 0's is recomputed from `ids`).
    inputs: Vec<Tensor>,
    cos: Tensor,
    sin: Tensor,
    /// `None` = causal SDPA without a mask.
    mask: Option<Tensor>,
    /// Output of the last layer: the leaf the caller's backward stops at.
    top: Tensor,
}

/// Checkpointed layers: returns the last layer's output as a grad-requiring leaf (the caller
/// applies the final norm) and records what the backward needs on `model`.
pub(crate) fn forward(model: &CausalLm, ids: &Tensor, cos: &Tensor, sin: &Tensor, mask: Option<&Tensor>) -> Tensor {
    let attn = mask.map_or(AttnMask::Causal, AttnMask::Bool);
    let (inputs, out) = tch::no_grad(|| {
        let mut h = model.embed(ids);
        let mut inputs = Vec::with_capacity(model.num_layers().saturating_sub(1));
        for l in 0..model.num_layers() {
            if l > 0 {
                inputs.push(h.shallow_clone());
            }
            h = model.layer_forward(l, &h, cos, sin, attn);
        }
        (inputs, h)
    });
    let top = out.detach().set_requires_grad(true);
    model.push_pending(Pending {
        ids: ids.shallow_clone(),
        inputs,
        cos: cos.shallow_clone(),
        sin: sin.shallow_clone(),
        mask: mask.map(Tensor::shallow_clone),
        top: top.shallow_clone(),
    });
    top
}

/// Run the recomputing backward of every pending checkpointed forward (newest first). Forwards
/// whose output received no gradient are dropped. Returns how many were back-propagated.
pub(crate) fn backward(model: &CausalLm) -> usize {
    let mut done = 0;
    while let Some(p) = model.pop_pending() {
        let mut g = p.top.grad();
        if !g.defined() {
            continue;
        }
        let attn = p.mask.as_ref().map_or(AttnMask::Causal, AttnMask::Bool);
        tch::with_grad(|| {
            for l in (0..model.num_layers()).rev() {
                let x = if l == 0 { model.embed(&p.ids) } else { p.inputs[l - 1].detach().set_requires_grad(true) };
                let y = model.layer_forward(l, &x, &p.cos, &p.sin, attn);
                (&y * &g).sum(y.kind()).backward();
                if l > 0 {
                    g = x.grad();
                }
            }
        });
        done += 1;
    }
    done
}
