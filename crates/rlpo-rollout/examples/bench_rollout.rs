//! `cargo run --release -p rlpo-rollout --example bench_rollout -- --model DIR [--batch 16]
//! [--new-tokens 128] [--dtype f32|bf16] [--group-size 1] [--threads 0] [--decoder cpu|fast|plain]
//! [--repeats 1] [--workers 1] [--json]`: the library benchmark behind `rlpo bench rollout`, printed as text
//! (or, with `--json`, also as one JSON line for `scripts/bench_hf_generate.py --compare-rlpo`).

use rlpo_rollout::bench::{bench_rollout, BenchOptions, DecoderKind};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let num = |k: &str, d: usize| get(k).map_or(d, |v| v.parse().unwrap_or_else(|_| panic!("{k}: not a number: {v}")));
    let Some(model) = get("--model") else {
        eprintln!("usage: bench_rollout --model DIR [--batch B] [--new-tokens N] [--dtype f32|bf16] [--group-size G] [--threads T] [--decoder cpu|fast|plain] [--repeats R] [--workers W] [--json]");
        std::process::exit(2);
    };
    let mut o = BenchOptions::new(model);
    o.batch = num("--batch", 16);
    o.new_tokens = num("--new-tokens", 128);
    o.group_size = num("--group-size", 1);
    o.threads = num("--threads", 0);
    o.repeats = num("--repeats", 1);
    o.workers = num("--workers", 1);
    o.dtype = rlpo_model::parse_dtype(&get("--dtype").unwrap_or_else(|| "f32".into())).expect("dtype");
    o.decoder = match get("--decoder").as_deref() {
        None | Some("cpu") => DecoderKind::Cpu,
        Some("fast") => DecoderKind::Fast,
        Some("plain") => DecoderKind::Plain,
        Some(other) => panic!("--decoder: cpu, fast or plain, got {other}"),
    };
    match bench_rollout(&o) {
        Ok(report) => {
            println!("{report}");
            if args.iter().any(|a| a == "--json") {
                println!("{}", report.to_json());
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
