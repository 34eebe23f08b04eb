//! Token log-probabilities and full-vocabulary entropies from logits, chunked over positions
//! (spec §0.1). Input logits `[rows, T, V]` in any float dtype (bf16 on GPU), or a closure that
//! produces the logits of a chunk of positions (so even the bf16 `[rows, T, V]` tensor need not
//! exist); targets `[rows, T]` (i64 token ids, `targets[r, t]` is the token predicted by the
//! logits at `[r, t]`). Output `logp[rows, T]` and optional `entropy[rows, T]`, fp32 (fp64 if
//! the logits are fp64).
//!
//! Memory: every chunk is cast to fp32 on its own, so at most one `[chunk, V]` fp32 buffer is
//! live when called under `no_grad` (old/ref log-probs, entropies). With gradient enabled,
//! autograd keeps one fp32 `[chunk, V]` per chunk for the backward pass, i.e. a micro-batch's
//! worth: bound `rows × T` per micro-batch accordingly. Entropies are always detached (they
//! are statistics for D³S/HAPO, never a loss term here).

use tch::{Kind, Tensor};

use crate::error::{input_err, Result};

/// Options for [`token_logprobs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogProbOptions {
    /// Sampling temperature the logits are divided by (the *base* rollout temperature, spec §0.1).
    pub temperature: f64,
    /// Positions (`rows × T` flattened) per chunk. 0 = one chunk.
    pub chunk_positions: i64,
    /// Also compute the per-position entropy.
    pub with_entropy: bool,
}

impl Default for LogProbOptions {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            chunk_positions: 1024,
            with_entropy: true,
        }
    }
}

/// Output of [`token_logprobs`].
#[derive(Debug)]
pub struct TokenLogProbs {
    /// `log π(target | ·)` per position, `[rows, T]`; carries gradient if the logits do.
    pub logp: Tensor,
    /// Full-vocabulary entropy per position, `[rows, T]`, detached; `None` unless requested.
    pub entropy: Option<Tensor>,
}

/// Log-probs (and entropies) of `targets` under `logits` `[rows, T, V]`, chunked over positions.
pub fn token_logprobs(
    logits: &Tensor,
    targets: &Tensor,
    opts: &LogProbOptions,
) -> Result<TokenLogProbs> {
    let size = logits.size();
    if size.len() != 3 {
        return Err(input_err(
            "logits",
            format!("expected [rows, T, V], got {size:?}"),
        ));
    }
    let flat = logits.view([-1, size[2]]);
    token_logprobs_with(size[0], size[1], targets, opts, |start, len| {
        Ok(flat.narrow(0, start, len))
    })
}

/// Like [`token_logprobs`], but the logits of positions `start..start+len` (flattened
/// `row · T + t`) come from `logits_chunk(start, len)` as `[len, V]`. Lets the model apply its
/// LM head chunk by chunk.
pub fn token_logprobs_with<F>(
    rows: i64,
    t: i64,
    targets: &Tensor,
    opts: &LogProbOptions,
    mut logits_chunk: F,
) -> Result<TokenLogProbs>
where
    F: FnMut(i64, i64) -> Result<Tensor>,
{
    if targets.size() != [rows, t] {
        return Err(input_err(
            "targets",
            format!("expected [{rows}, {t}], got {:?}", targets.size()),
        ));
    }
    if opts.temperature.is_nan() || opts.temperature <= 0.0 {
        return Err(input_err(
            "temperature",
            format!("must be > 0, got {}", opts.temperature),
        ));
    }
    let total = rows * t;
    let chunk = if opts.chunk_positions <= 0 {
        total.max(1)
    } else {
        opts.chunk_positions
    };
    let targets = targets.reshape([-1]).to_kind(Kind::Int64);
    let mut logps = Vec::new();
    let mut ents = Vec::new();
    let mut start = 0;
    while start < total {
        let len = chunk.min(total - start);
        let z = logits_chunk(start, len)?;
        if z.dim() != 2 || z.size()[0] != len {
            return Err(input_err(
                "logits",
                format!("chunk expected [{len}, V], got {:?}", z.size()),
            ));
        }
        let kind = if z.kind() == Kind::Double {
            Kind::Double
        } else {
            Kind::Float
        };
        // Out of place on purpose: `to_kind` to the same kind aliases the caller's logits, and
        // `/=` would scale them in place.
        let z = z.to_kind(kind);
        let z = if opts.temperature != 1.0 {
            z / opts.temperature
        } else {
            z
        };
        let lse = z.logsumexp([-1], false);
        let tgt = targets.narrow(0, start, len).unsqueeze(-1);
        logps.push(z.gather(-1, &tgt, false).squeeze_dim(-1) - &lse);
        if opts.with_entropy {
            // H = lse − Σ softmax(z)·z, from detached values: one temporary [len, V] buffer.
            ents.push(tch::no_grad(|| {
                let (z, lse) = (z.detach(), lse.detach());
                let p = (&z - lse.unsqueeze(-1)).exp();
                lse - (p * z).sum_dim_intlist(-1, false, kind)
            }));
        }
        start += len;
    }
    let cat = |v: &[Tensor]| Tensor::cat(v, 0).view([rows, t]);
    Ok(TokenLogProbs {
        logp: cat(&logps),
        entropy: opts.with_entropy.then(|| cat(&ents)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Unchunked reference: full log_softmax / softmax, entropy as −Σ p log p.
    fn reference(logits: &Tensor, targets: &Tensor, temp: f64) -> (Tensor, Tensor) {
        let z = logits.to_kind(Kind::Double) / temp;
        let lsm = z.log_softmax(-1, Kind::Double);
        let logp = lsm
            .gather(-1, &targets.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let ent = -(lsm.exp() * &lsm).sum_dim_intlist(-1, false, Kind::Double);
        (logp, ent)
    }

    /// Property: chunked log-softmax gather and entropy equal the unchunked ones, for many chunk
    /// sizes (including ones that do not divide rows·T), and for bf16 logits.
    #[test]
    fn chunked_equals_unchunked() {
        let mut rng = crate::seeded::SplitMix(3);
        let (rows, t, v) = (3, 5, 11);
        let logits = rng.randn([rows, t, v], (Kind::Float, Device::Cpu)) * 3.0;
        let targets = rng.randint(v, [rows, t], (Kind::Int64, Device::Cpu));
        for temp in [1.0, 0.7] {
            let (want_lp, want_h) = reference(&logits, &targets, temp);
            for chunk in [0, 1, 4, 7, 15, 100] {
                let opts = LogProbOptions {
                    temperature: temp,
                    chunk_positions: chunk,
                    with_entropy: true,
                };
                let out = token_logprobs(&logits, &targets, &opts).unwrap();
                assert_eq!(out.logp.size(), vec![rows, t]);
                let d_lp = (out.logp.to_kind(Kind::Double) - &want_lp)
                    .abs()
                    .max()
                    .double_value(&[]);
                let h = out.entropy.unwrap().to_kind(Kind::Double);
                let d_h = (h - &want_h).abs().max().double_value(&[]);
                assert!(d_lp < 1e-5 && d_h < 1e-5, "chunk {chunk}: {d_lp} {d_h}");
            }
        }
        // bf16 input: computed in fp32 from the bf16 values.
        let bf = logits.to_kind(Kind::BFloat16);
        let (want_lp, _) = reference(&bf.to_kind(Kind::Float), &targets, 1.0);
        let out = token_logprobs(
            &bf,
            &targets,
            &LogProbOptions {
                chunk_positions: 4,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out.logp.kind(), Kind::Float);
        assert!(
            (out.logp.to_kind(Kind::Double) - want_lp)
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
    }

    #[test]
    fn gradient_matches_unchunked() {
        let mut rng = crate::seeded::SplitMix(5);
        let (rows, t, v) = (2, 4, 6);
        let base = rng.randn([rows, t, v], (Kind::Double, Device::Cpu));
        let targets = rng.randint(v, [rows, t], (Kind::Int64, Device::Cpu));
        let w = rng.randn([rows, t], (Kind::Double, Device::Cpu));
        let a = base.copy().set_requires_grad(true);
        let opts = LogProbOptions {
            chunk_positions: 3,
            with_entropy: false,
            ..Default::default()
        };
        (token_logprobs(&a, &targets, &opts).unwrap().logp * &w)
            .sum(Kind::Double)
            .backward();
        let b = base.copy().set_requires_grad(true);
        (reference(&b, &targets, 1.0).0 * &w)
            .sum(Kind::Double)
            .backward();
        assert!((a.grad() - b.grad()).abs().max().double_value(&[]) < 1e-10);
    }

    #[test]
    fn input_logits_are_not_modified() {
        let logits = crate::seeded::SplitMix(8).randn([2, 3, 5], (Kind::Float, Device::Cpu));
        let before = logits.copy();
        let targets = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
        let opts = LogProbOptions {
            temperature: 0.7,
            chunk_positions: 2,
            with_entropy: true,
        };
        let _ = token_logprobs(&logits, &targets, &opts).unwrap();
        assert!(logits.equal(&before));
    }

    #[test]
    fn closure_variant_and_shape_errors() {
        let logits = crate::seeded::SplitMix(9).randn([2, 3, 5], (Kind::Float, Device::Cpu));
        let targets = Tensor::zeros([2, 3], (Kind::Int64, Device::Cpu));
        let flat = logits.view([-1, 5]);
        let opts = LogProbOptions {
            chunk_positions: 2,
            ..Default::default()
        };
        let a =
            token_logprobs_with(2, 3, &targets, &opts, |s, l| Ok(flat.narrow(0, s, l))).unwrap();
        let b = token_logprobs(&logits, &targets, &opts).unwrap();
        assert!(a.logp.allclose(&b.logp, 0.0, 0.0, false));
        assert!(token_logprobs(&logits.view([6, 5]), &targets, &opts).is_err());
        assert!(token_logprobs(&logits, &targets.view([3, 2]), &opts).is_err());
    }
}
