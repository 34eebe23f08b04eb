//! `rlpo bench rollout`: tokens/s of [`Engine::generate`] on a model directory, with the machine's
//! own ceilings measured in the same process, so the result reads as a fraction of what the
//! hardware allows (architecture.md, "Performance method").
//!
//! - Prompts: [`BENCH_PROMPTS`] (the same list `scripts/bench_hf_generate.py` uses), chat-templated,
//!   cycled to fill the batch; with `group_size = G`, `batch / G` prompts × G samples each.
//! - Sampling: T = 1, no truncation, EOS ignored, so every row produces exactly `new_tokens`;
//!   on the host or on the device (`BenchOptions::sampler`, `auto` = device on CUDA).
//! - Warm-up: one untimed run of `warmup_tokens` new tokens on the same batch first (one-time
//!   costs: allocator growth, kernel selection, packing); its time is reported on its own line.
//! - Ceilings: a 2048³ matmul in the model's dtype (FLOP/s) and a 256 MiB tensor copy (bytes/s)
//!   on the CPU; on a GPU an 8192³ matmul and a 1 GiB copy, timed between device synchronisations.
//!   The floor of one decode step is `max(FLOPs / FLOP/s, bytes / bandwidth)` with FLOPs =
//!   2 · matmul parameters · rows (+ attention) and bytes = matmul weights + KV cache read once.
//! - Device: `BenchOptions::device` (`cuda:N` runs the `fast` or `plain` LibTorch paths on the GPU;
//!   the `cpu` decoder is host-only). GPU kernels run asynchronously and the per-step logits copy
//!   waits for them, so on a GPU the forward/sampling split of a step is indicative; tokens/s and
//!   the total are exact.

use crate::engine::{Engine, GenerateRequest};
use crate::error::{Error, Result};
use crate::cpu_decoder::CpuDecoder;
use crate::fast::FastDecoder;
use crate::model::RolloutModel;
use crate::output::RolloutStats;
use crate::worker::RolloutPool;
use crate::params::{SamplerPlacement, SamplingParams};
use crate::rng::RolloutSeed;
use rlpo_model::{CausalLm, ChatMessage, LoadOptions, ModelConfig, TextTokenizer};
use std::path::PathBuf;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Prompts shared with `scripts/bench_hf_generate.py` (keep the two lists identical).
pub const BENCH_PROMPTS: [&str; 16] = [
    "What is 17 times 23? Think step by step.",
    "Write a short poem about the sea.",
    "Explain why the sky is blue in two sentences.",
    "List three prime numbers greater than 100 and explain how you checked them.",
    "A train travels 120 km in 1.5 hours. What is its average speed?",
    "Give me a recipe for pancakes.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Solve for x: 3x + 7 = 25.",
    "Describe how a bicycle gear system works.",
    "What are the main differences between a virus and a bacterium?",
    "Write a haiku about autumn leaves.",
    "If a rectangle has a perimeter of 30 and a width of 5, what is its area?",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "Why do we have leap years?",
    "Translate 'good morning, how are you?' into French and Spanish.",
    "Give two tips for writing clear emails.",
];

/// Which decode path to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderKind {
    /// `rlpo_model::CausalLm::step` as is.
    Plain,
    /// [`FastDecoder`] (fused projections, fewer LibTorch calls).
    Fast,
    /// [`CpuDecoder`] (host kernels, packed weights).
    Cpu,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// HF model directory.
    pub model_dir: PathBuf,
    /// Rows decoded together.
    pub batch: usize,
    /// Tokens generated per row.
    pub new_tokens: usize,
    /// Parameter dtype (`Kind::Float` or `Kind::BFloat16`).
    pub dtype: Kind,
    /// Samples per prompt (1 = `batch` distinct prompts).
    pub group_size: usize,
    /// LibTorch threads (0 = leave LibTorch's default).
    pub threads: usize,
    /// Decode path.
    pub decoder: DecoderKind,
    /// Timed repetitions (the best is reported, as the least disturbed by other processes).
    pub repeats: usize,
    /// Rollout workers sharing the batch (each gets `batch / workers` rows, its own model copy and
    /// `threads / workers` LibTorch threads); 1 = the engine on the calling thread.
    pub workers: usize,
    /// Device the model runs on (`Device::Cpu` by default).
    pub device: Device,
    /// Where tokens are sampled (`auto` = on the device for CUDA).
    pub sampler: SamplerPlacement,
    /// New tokens of the untimed warm-up run (capped at `new_tokens`; `new_tokens` = a full run).
    pub warmup_tokens: usize,
}

impl BenchOptions {
    /// Defaults: batch 16, 128 tokens, fp32, G = 1, CPU decoder, 1 repetition.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        BenchOptions {
            model_dir: model_dir.into(),
            batch: 16,
            new_tokens: 128,
            dtype: Kind::Float,
            group_size: 1,
            threads: 0,
            decoder: DecoderKind::Cpu,
            repeats: 1,
            workers: 1,
            device: Device::Cpu,
            sampler: SamplerPlacement::Auto,
            warmup_tokens: 8,
        }
    }
}

/// Measured machine ceilings.
#[derive(Debug, Clone, Copy)]
pub struct Ceilings {
    /// Large-matmul FLOP/s in the benchmark dtype.
    pub matmul_flops: f64,
    /// Copy bandwidth, bytes read + written per second.
    pub bandwidth: f64,
}

/// Result of [`bench_rollout`].
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Options it ran with.
    pub options: BenchOptions,
    /// Generated tokens per second over the whole `generate` call (prefill included).
    pub tokens_per_s: f64,
    /// Seconds of the timed `generate` call.
    pub total_s: f64,
    /// Prefill (and fan-out) seconds.
    pub prefill_s: f64,
    /// Milliseconds per decode step (forward only).
    pub ms_per_step: f64,
    /// Milliseconds per step spent copying logits and sampling.
    pub sample_ms_per_step: f64,
    /// Machine ceilings measured in this process.
    pub ceilings: Ceilings,
    /// Lower bound on a decode step from the ceilings, ms (at the mean context length).
    pub floor_ms_per_step: f64,
    /// Seconds of the untimed warm-up run.
    pub warmup_s: f64,
    /// Tokens were sampled on the device.
    pub device_sampling: bool,
    /// Device→host reads of sampled tokens in the timed run (device sampling).
    pub syncs: usize,
}

impl BenchReport {
    /// `floor / measured` of a full step (forward + sampling): 1.0 = at the machine's ceiling.
    pub fn fraction_of_ceiling(&self) -> f64 {
        self.floor_ms_per_step / (self.ms_per_step + self.sample_ms_per_step)
    }

    /// One JSON line (the format `scripts/bench_hf_generate.py --compare-rlpo` and
    /// `scripts/gpu_check.py` read).
    pub fn to_json(&self) -> String {
        let o = &self.options;
        let dtype = if o.dtype == Kind::BFloat16 { "bf16" } else { "f32" };
        format!(
            "{{\"impl\": \"rlpo\", \"decoder\": \"{:?}\", \"device\": \"{:?}\", \"dtype\": \"{dtype}\", \"batch\": {}, \"group_size\": {}, \"new_tokens\": {}, \"threads\": {}, \"workers\": {}, \"device_sampling\": {}, \"warmup_s\": {:.4}, \"seconds\": {:.4}, \"tokens_per_s\": {:.2}, \"ms_per_step\": {:.3}, \"sample_ms_per_step\": {:.3}, \"prefill_s\": {:.4}, \"syncs\": {}, \"matmul_flops\": {:.4e}, \"fraction_of_ceiling\": {:.4}}}",
            o.decoder, o.device, o.batch, o.group_size, o.new_tokens, o.threads, o.workers, self.device_sampling, self.warmup_s, self.total_s,
            self.tokens_per_s, self.ms_per_step, self.sample_ms_per_step, self.prefill_s, self.syncs, self.ceilings.matmul_flops, self.fraction_of_ceiling()
        )
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "rollout bench: {} | batch {} (G = {}) | {} new tokens | {:?} | {:?} decoder on {:?} | {} worker(s) | {} threads",
            o.model_dir.display(), o.batch, o.group_size, o.new_tokens, o.dtype, o.decoder, o.device, o.workers, o.threads
        )?;
        writeln!(f, "  sampling          {}", if self.device_sampling { format!("on the device ({} reads of sampled tokens)", self.syncs) } else { "on the host".into() })?;
        writeln!(f, "  warm-up           {:9.3} s ({} new tokens, untimed)", self.warmup_s, o.warmup_tokens.min(o.new_tokens))?;
        writeln!(f, "  tokens/s          {:9.1}", self.tokens_per_s)?;
        writeln!(f, "  total             {:9.3} s (prefill {:.3} s)", self.total_s, self.prefill_s)?;
        writeln!(f, "  decode step       {:9.2} ms forward + {:.2} ms sampling", self.ms_per_step, self.sample_ms_per_step)?;
        writeln!(
            f,
            "  machine ceiling   {:9.1} GFLOP/s matmul, {:.1} GB/s copy -> floor {:.2} ms/step",
            self.ceilings.matmul_flops / 1e9, self.ceilings.bandwidth / 1e9, self.floor_ms_per_step
        )?;
        write!(f, "  fraction of ceiling {:7.1} %", 100.0 * self.fraction_of_ceiling())
    }
}

fn best_of<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Time a 2048³ matmul in `kind` and a 256 MiB copy on the CPU, in this process.
pub fn measure_ceilings(kind: Kind) -> Ceilings {
    measure_ceilings_on(kind, Device::Cpu)
}

/// [`measure_ceilings`] on `device`: on a GPU an 8192³ matmul and a 1 GiB copy, each timed between
/// device synchronisations.
pub fn measure_ceilings_on(kind: Kind, device: Device) -> Ceilings {
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let (n, copy_elems): (i64, i64) = if device.is_cuda() { (8192, 256 << 20) } else { (2048, 64 << 20) };
    tch::no_grad(|| {
        let a = Tensor::randn([n, n], (kind, device));
        let b = Tensor::randn([n, n], (kind, device));
        let t = best_of(3, || {
            let _ = a.matmul(&b);
            sync();
        });
        let matmul_flops = 2.0 * (n as f64).powi(3) / t;
        let src = Tensor::ones([copy_elems], (Kind::Float, device));
        let mut dst = src.zeros_like();
        let t = best_of(3, || {
            dst.copy_(&src);
            sync();
        });
        Ceilings { matmul_flops, bandwidth: 2.0 * (copy_elems * 4) as f64 / t }
    })
}

/// Matmul parameters per token (all projections plus the LM head) and attention FLOPs per
/// context position per token.
fn model_costs(c: &ModelConfig) -> (f64, f64) {
    let (d, h, kv, hd, i) = (c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size);
    let per_layer = d * h * hd * 2 + 2 * d * kv * hd + 3 * d * i;
    let params = (per_layer * c.num_hidden_layers + c.vocab_size * d) as f64;
    let attn_per_pos = (4 * c.num_hidden_layers * h * hd) as f64;
    (params, attn_per_pos)
}

/// The benchmark prompts for `rows` rows in groups of `g`, chat-templated.
pub fn bench_prompts(tok: &TextTokenizer, rows: usize, g: usize) -> Result<Vec<Vec<i64>>> {
    if g == 0 || !rows.is_multiple_of(g) {
        return Err(Error::Input(format!("batch {rows} is not a multiple of group size {g}")));
    }
    (0..rows / g)
        .map(|i| {
            let msg = ChatMessage { role: "user".into(), content: BENCH_PROMPTS[i % BENCH_PROMPTS.len()].into() };
            Ok(tok.encode_chat(&[msg], true)?)
        })
        .collect()
}

/// Run the benchmark described by `opts` and return the report (also `Display`s as text).
pub fn bench_rollout(opts: &BenchOptions) -> Result<BenchReport> {
    if opts.threads > 0 && opts.workers <= 1 {
        tch::set_num_threads(opts.threads as i32);
    }
    if opts.device != Device::Cpu && opts.decoder == DecoderKind::Cpu {
        return Err(Error::Input(format!("the cpu decoder runs on the host; use the fast or plain decoder on {:?}", opts.device)));
    }
    let device = opts.device;
    let model = CausalLm::load(&opts.model_dir, &LoadOptions { device, kind: opts.dtype })?;
    let tok = TextTokenizer::from_dir(&opts.model_dir)?;
    let prompts = bench_prompts(&tok, opts.batch, opts.group_size)?;
    let cfg = model.config.clone();
    let params = SamplingParams {
        group_size: opts.group_size,
        max_new_tokens: opts.new_tokens,
        temperature: 1.0,
        ignore_eos: true,
        compact_fraction: 1.0,
        sampler: opts.sampler,
        ..SamplingParams::default()
    };
    let workers = opts.workers.max(1);
    if workers > 1 && !prompts.len().is_multiple_of(workers) {
        return Err(Error::Input(format!("{} prompts cannot be split over {workers} workers", prompts.len())));
    }
    // One timed generate of `n` tokens at step `step`: (stats of the slowest worker, row lengths).
    type Run = Box<dyn FnMut(usize, u64) -> Result<(RolloutStats, Vec<usize>)>>;
    let mut run: Run = if workers == 1 {
        let decoder: Box<dyn RolloutModel> = match opts.decoder {
            DecoderKind::Plain => Box::new(model),
            DecoderKind::Fast => Box::new(FastDecoder::new(model)?),
            DecoderKind::Cpu => Box::new(CpuDecoder::new(model)?),
        };
        let mut engine = Engine::new(tok.eos_ids.clone());
        let prompts = prompts.clone();
        let params = params.clone();
        Box::new(move |n, step| {
            let mut req = GenerateRequest::new(prompts.clone(), SamplingParams { max_new_tokens: n, ..params.clone() });
            req.seed = RolloutSeed::new(0, step);
            let out = engine.generate(&decoder, &req)?;
            Ok((out.stats, out.completions().map(|c| c.len()).collect()))
        })
    } else {
        drop(model);
        let (dir, kind, decoder) = (opts.model_dir.clone(), opts.dtype, opts.decoder);
        let eos = tok.eos_ids.clone();
        let threads = (opts.threads / workers).max(1);
        let mut pool = RolloutPool::spawn(workers, threads, move |_| {
            let m = CausalLm::load(&dir, &LoadOptions { device, kind })?;
            let d: Box<dyn RolloutModel> = match decoder {
                DecoderKind::Plain => Box::new(m),
                DecoderKind::Fast => Box::new(FastDecoder::new(m)?),
                DecoderKind::Cpu => Box::new(CpuDecoder::new(m)?),
            };
            Ok((d, Engine::new(eos.clone())))
        })?;
        let per = prompts.len() / workers;
        let prompts = prompts.clone();
        let params = params.clone();
        Box::new(move |n, step| {
            let reqs = (0..workers)
                .map(|w| {
                    let mut r = GenerateRequest::new(prompts[w * per..(w + 1) * per].to_vec(), SamplingParams { max_new_tokens: n, ..params.clone() });
                    r.seed = RolloutSeed::new(0, step);
                    r.prompt_indices = Some((w * per..(w + 1) * per).map(|i| i as u64).collect());
                    r
                })
                .collect();
            let outs = pool.generate_all(reqs)?;
            // The slowest worker's times (they run concurrently).
            let stats = outs.iter().map(|o| o.stats).max_by(|a, b| a.decode_s.total_cmp(&b.decode_s)).unwrap_or_default();
            Ok((stats, outs.iter().flat_map(|o| o.completions().map(|c| c.len())).collect()))
        })
    };
    // Warm-up (allocator, kernel selection, packing), timed on its own.
    let t_warm = Instant::now();
    run(opts.warmup_tokens.clamp(1, opts.new_tokens), 1000)?;
    let warmup_s = t_warm.elapsed().as_secs_f64();
    let mut best: Option<(f64, RolloutStats)> = None;
    for rep in 0..opts.repeats.max(1) {
        let t = Instant::now();
        let (stats, lens) = run(opts.new_tokens, rep as u64)?;
        let total = t.elapsed().as_secs_f64();
        if lens.iter().any(|&l| l != opts.new_tokens) {
            return Err(Error::Input("a row stopped early although EOS is ignored".into()));
        }
        if best.as_ref().is_none_or(|(b, _)| total < *b) {
            best = Some((total, stats));
        }
    }
    drop(run);
    let (total_s, stats) = best.expect("at least one repetition");
    let ceilings = measure_ceilings_on(opts.dtype, opts.device);
    let (params_n, attn_per_pos) = model_costs(&cfg);
    let rows = opts.batch as f64;
    let mean_prompt = prompts.iter().map(Vec::len).sum::<usize>() as f64 / prompts.len() as f64;
    let ctx = mean_prompt + opts.new_tokens as f64 / 2.0;
    let flops = rows * (2.0 * params_n + attn_per_pos * ctx);
    let elt = opts.dtype.elt_size_in_bytes() as f64;
    let kv_bytes = rows * ctx * (2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim) as f64 * elt;
    let bytes = params_n * elt + kv_bytes;
    let floor_s = (flops / ceilings.matmul_flops).max(bytes / ceilings.bandwidth);
    let steps = stats.steps.max(1) as f64;
    Ok(BenchReport {
        options: opts.clone(),
        tokens_per_s: rows * opts.new_tokens as f64 / total_s,
        total_s,
        prefill_s: stats.prefill_s,
        ms_per_step: 1e3 * stats.decode_s / steps,
        sample_ms_per_step: 1e3 * stats.sample_s / (steps + 1.0),
        ceilings,
        floor_ms_per_step: 1e3 * floor_s,
        warmup_s,
        device_sampling: stats.device_sampling,
        syncs: stats.syncs,
    })
}
