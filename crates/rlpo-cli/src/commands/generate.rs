//! `rlpo generate --model DIR --prompt TEXT`: chat-templated completion (greedy by default).

use anyhow::{Context, Result};
use rlpo_model::{generate, parse_device, parse_dtype, CausalLm, ChatMessage, GenerateParams, LoadOptions, TextTokenizer};
use std::path::PathBuf;

/// Arguments of `rlpo generate`.
#[derive(clap::Args)]
pub struct Args {
    /// HF model directory (config.json, safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// Optional system message.
    #[arg(long)]
    system: Option<String>,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: i64,
    /// Sampling temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
}

/// Load, render, generate, print.
pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.temperature >= 0.0, "--temperature must be >= 0, got {}", args.temperature);
    anyhow::ensure!(args.max_new_tokens > 0, "--max-new-tokens must be positive");
    let opts = LoadOptions { device: parse_device(&args.device)?, kind: parse_dtype(&args.dtype)? };
    let tok = TextTokenizer::from_dir(&args.model)?;
    let model = CausalLm::load(&args.model, &opts).with_context(|| format!("loading model from {}", args.model.display()))?;
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", &args.prompt));
    let prompt = tok.encode_chat(&messages, true)?;
    let params = GenerateParams {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        seed: args.seed,
        eos_ids: tok.eos_ids.clone(),
    };
    let ids = generate(&model, &prompt, &params);
    let text = tok.decode(&ids, true)?;
    println!("{text}");
    Ok(())
}
