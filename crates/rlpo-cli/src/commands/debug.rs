//! `rlpo debug ...` (hidden): probes for checking a build on a new machine against an oracle.
//!
//! - `rlpo debug device`: what LibTorch sees (CUDA devices, cuDNN), as one JSON line;
//! - `rlpo debug logits --model DIR --inputs IN.safetensors --out OUT.safetensors`: the model's
//!   logits for `input_ids`/`attention_mask` (`[B, T]`, i64) as f32 `logits [B, T, V]`; with
//!   `--decode-from P` also `decode_logits [B, T - P + 1, V]`: the prefix `[:, :P]` prefilled
//!   into a KV cache, then one decode step per remaining token, i.e. the logits of positions
//!   `P - 1 .. T - 1` as the rollout computes them. `scripts/gpu_check.sh` compares both with
//!   transformers;
//! - `rlpo debug dist-selftest [--nproc-per-node N]`: every distributed operation of the
//!   training step across real processes, checked against known values (`dist_selftest.rs`).
//! - `rlpo debug adamw --device cuda:0`: LibTorch's fused AdamW against the per-parameter one on
//!   the device (f32 parameters and bf16 parameters with fp32 masters, a few steps with clipping
//!   from identical states); prints the largest relative difference and fails above 1e-5 (on the
//!   CPU they are bit-identical, see `rlpo-train/src/optim.rs`).

use anyhow::{bail, Context, Result};
use rlpo_model::{parse_device, parse_dtype, CausalLm, LoadOptions};
use rlpo_rollout::{FastDecoder, RolloutModel};
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

/// `rlpo debug ...`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Print what LibTorch sees: CUDA availability, device count, cuDNN (one JSON line).
    Device,
    /// Write a model's logits for given token ids (see the module docs).
    Logits(LogitsArgs),
    /// Check every distributed operation across ranks (run with --nproc-per-node, torchrun, srun).
    DistSelftest(super::dist_selftest::Args),
    /// Compare the fused and the per-parameter AdamW on a device (see the module docs).
    Adamw {
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Optimizer steps.
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
}

/// Arguments of `rlpo debug logits`.
#[derive(clap::Args)]
pub struct LogitsArgs {
    /// HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// safetensors file with `input_ids` and `attention_mask`, both `[B, T]` integers.
    #[arg(long)]
    inputs: PathBuf,
    /// Output safetensors file (`logits`, and `decode_logits` with --decode-from).
    #[arg(long)]
    out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Also run the cached decode path: prefill `[:, :P]`, then step through the rest.
    #[arg(long, value_name = "P")]
    decode_from: Option<i64>,
    /// Decode path for --decode-from: plain (CausalLm, the trainer's) or fast (FastDecoder).
    #[arg(long, default_value = "plain")]
    decoder: String,
}

/// Dispatch.
pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Device => {
            println!(
                "{{\"cuda_available\": {}, \"cuda_devices\": {}, \"cudnn\": {}}}",
                tch::Cuda::is_available(),
                tch::Cuda::device_count(),
                tch::Cuda::cudnn_is_available()
            );
            Ok(())
        }
        Command::Logits(a) => logits(a),
        Command::DistSelftest(a) => super::dist_selftest::run(a),
        Command::Adamw { device, steps } => adamw(&device, steps),
    }
}

/// Parameters after `steps` clipped AdamW steps (fused or not) from a seeded start, plus moments.
fn adamw_run(fused: bool, kind: Kind, device: Device, steps: usize) -> Result<Vec<Tensor>> {
    use rlpo_train::optim::AdamW;
    use rlpo_train::recipe::OptimConfig;
    tch::manual_seed(5);
    let shapes: [&[i64]; 4] = [&[1536, 256], &[256], &[37, 29], &[8960, 64]];
    let params: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, device)).to_kind(kind).set_requires_grad(true)).collect();
    let cfg = OptimConfig { lr: 1e-3, weight_decay: 0.1, fused, ..OptimConfig::default() };
    let mut opt = AdamW::new(params.iter().enumerate().map(|(i, p)| (format!("p{i}"), p.shallow_clone())), cfg.clone());
    for _ in 0..steps {
        opt.zero_grad();
        for p in &params {
            (p.to_kind(Kind::Float) * Tensor::randn(p.size().as_slice(), (Kind::Float, device))).sum(Kind::Float).backward();
        }
        let n = opt.grad_norm();
        opt.clip_grad(n, 50.0)?;
        opt.step(cfg.lr)?;
    }
    let mut out: Vec<Tensor> = params.iter().map(|p| p.detach().to_kind(Kind::Float)).collect();
    out.extend(opt.exp_avg.values().chain(opt.exp_avg_sq.values()).chain(opt.master.values()).map(Tensor::copy));
    Ok(out)
}

fn adamw(device: &str, steps: usize) -> Result<()> {
    let device = parse_device(device)?;
    let mut worst = 0f64;
    for kind in [Kind::Float, Kind::BFloat16] {
        let (a, b) = (adamw_run(true, kind, device, steps)?, adamw_run(false, kind, device, steps)?);
        let mut identical = true;
        for (x, y) in a.iter().zip(&b) {
            identical &= x.equal(y);
            let rel = ((x - y).abs() / y.abs().clamp_min(1e-3)).max().double_value(&[]);
            worst = worst.max(rel);
        }
        println!("adamw {kind:?} on {device:?}: fused vs per-parameter after {steps} steps: {} (max relative difference {worst:.2e})", if identical { "bit-identical" } else { "differ" });
    }
    anyhow::ensure!(worst <= 1e-5, "fused and per-parameter AdamW differ by {worst:.2e} (> 1e-5)");
    Ok(())
}

fn logits(a: LogitsArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let kind = parse_dtype(&a.dtype)?;
    let inputs: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&a.inputs)
        .with_context(|| format!("{}: not a readable safetensors file", a.inputs.display()))?
        .into_iter()
        .collect();
    let get = |name: &str| -> Result<Tensor> {
        let t = inputs.get(name).with_context(|| format!("{}: no tensor `{name}`", a.inputs.display()))?;
        if t.dim() != 2 {
            bail!("{}: `{name}` must be [B, T], got {:?}", a.inputs.display(), t.size());
        }
        Ok(t.to_kind(Kind::Int64).to_device(device))
    };
    let (ids, mask) = (get("input_ids")?, get("attention_mask")?);
    if ids.size() != mask.size() {
        bail!("{}: input_ids {:?} and attention_mask {:?} differ in shape", a.inputs.display(), ids.size(), mask.size());
    }
    let model = CausalLm::load(&a.model, &LoadOptions { device, kind })?;
    let vocab = model.config.vocab_size;
    let bad = ids.lt(0).logical_or(&ids.ge(vocab)).any().int64_value(&[]) != 0;
    if bad {
        bail!("{}: input_ids outside the vocabulary (size {vocab})", a.inputs.display());
    }
    let full = tch::no_grad(|| model.forward(&ids, &mask)).to_kind(Kind::Float).to_device(Device::Cpu);
    let mut out = vec![("logits".to_string(), full)];
    if let Some(p) = a.decode_from {
        let t = ids.size()[1];
        if p < 1 || p >= t {
            bail!("--decode-from must be in 1..{t} (the sequence length), got {p}");
        }
        if mask.narrow(1, p, t - p).min().int64_value(&[]) != 1 {
            bail!("--decode-from {p}: attention_mask must be 1 from column {p} on (only the prefix may be padded)");
        }
        let decoder: Box<dyn RolloutModel> = match a.decoder.as_str() {
            "plain" => Box::new(model),
            "fast" => Box::new(FastDecoder::new(model)?),
            other => bail!("--decoder must be plain or fast, got {other}"),
        };
        let steps = tch::no_grad(|| {
            let (first, mut cache) = decoder.prefill(&ids.narrow(1, 0, p), &mask.narrow(1, 0, p), t)?;
            let mut rows = vec![first.into_tensor().to_kind(Kind::Float).to_device(Device::Cpu)];
            let host: Vec<i64> = Vec::try_from(ids.to_device(Device::Cpu).flatten(0, -1))?;
            for col in p..t {
                let feed: Vec<i64> = (0..ids.size()[0]).map(|r| host[(r * t + col) as usize]).collect();
                rows.push(decoder.step(&feed, &mut cache)?.into_tensor().to_kind(Kind::Float).to_device(Device::Cpu));
            }
            Ok::<_, anyhow::Error>(Tensor::stack(&rows, 1))
        })?;
        out.push(("decode_logits".to_string(), steps));
    }
    let refs: Vec<(&str, &Tensor)> = out.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&refs, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("wrote {} ({})", a.out.display(), out.iter().map(|(n, t)| format!("{n} {:?}", t.size())).collect::<Vec<_>>().join(", "));
    Ok(())
}
