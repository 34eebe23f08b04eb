#!/usr/bin/env python3
"""Baseline for `rlpo bench rollout`: transformers `generate` on the same model, prompts, batch and
sampling, reporting generated tokens per second.

Same setup as the Rust benchmark (crates/rlpo-rollout/src/bench.rs):
  * prompts: the 16 chat prompts below (identical to `BENCH_PROMPTS`), chat-templated with
    add_generation_prompt, cycled to fill the batch, left-padded;
  * with --group-size G: batch/G prompts and num_return_sequences=G (transformers expands the
    prompts to G rows *before* its prefill; rlpo prefills each prompt once and copies its cache);
  * sampling: do_sample, temperature 1, top_k 0 (off), top_p 1, no min_p, and min_new_tokens =
    max_new_tokens so that EOS cannot end a row early: every row produces exactly N tokens;
  * one warm-up call (--warmup-tokens new tokens, default 8; its seconds are reported as
    `warmup_s`), then --repeats timed calls, the best reported (least disturbed by other processes
    on a shared machine);
  * --device cuda[:N] runs on a GPU (timed between torch.cuda.synchronize calls), like
    `rlpo bench rollout --device cuda:N`.

With --compare-rlpo PATH (the `bench_rollout` example binary) the script alternates HF and rlpo
runs back to back in this one process tree and prints their ratio, which is the number to quote.

    .venv/bin/python scripts/bench_hf_generate.py --model .cache/models/SmolLM2-135M-Instruct \
        --batch 16 --new-tokens 128 --dtype bf16 --threads 2 \
        --compare-rlpo target/release/examples/bench_rollout
"""
import argparse
import json
import os
import subprocess
import time

BENCH_PROMPTS = [
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
]


def hf_bench(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dtype = {"f32": torch.float32, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    tok = AutoTokenizer.from_pretrained(args.model)
    device = torch.device(args.device)
    # Load, then convert: `.to(dtype)` means the same in every transformers version.
    model = AutoModelForCausalLM.from_pretrained(args.model).to(device=device, dtype=dtype).eval()
    assert args.batch % args.group_size == 0, "batch must be a multiple of group size"
    n_prompts = args.batch // args.group_size
    prompts = []
    for i in range(n_prompts):
        msgs = [{"role": "user", "content": BENCH_PROMPTS[i % len(BENCH_PROMPTS)]}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        prompts.append(list(ids))
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def run(n):
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                min_p=None,
                max_new_tokens=n,
                min_new_tokens=n,
                num_return_sequences=args.group_size,
                pad_token_id=pad,
                use_cache=True,
            )
        assert out.shape == (args.batch, width + n), out.shape
        sync()
        return out

    torch.manual_seed(0)
    sync()
    t = time.perf_counter()
    run(max(1, min(args.warmup_tokens, args.new_tokens)))
    warmup_s = time.perf_counter() - t
    best = float("inf")
    for _ in range(max(1, args.repeats)):
        sync()
        t = time.perf_counter()
        run(args.new_tokens)
        best = min(best, time.perf_counter() - t)
    return {
        "impl": "hf",
        "dtype": args.dtype,
        "device": args.device,
        "batch": args.batch,
        "group_size": args.group_size,
        "new_tokens": args.new_tokens,
        "threads": torch.get_num_threads(),
        "warmup_s": warmup_s,
        "seconds": best,
        "tokens_per_s": args.batch * args.new_tokens / best,
    }


def rlpo_bench(args):
    cmd = [args.compare_rlpo, "--model", args.model, "--batch", str(args.batch), "--new-tokens",
           str(args.new_tokens), "--dtype", args.dtype, "--group-size", str(args.group_size),
           "--threads", str(args.threads), "--repeats", str(args.repeats), "--workers", str(args.rlpo_workers), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = [l for l in out.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--dtype", default="f32", choices=["f32", "fp32", "bf16"])
    p.add_argument("--group-size", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup-tokens", type=int, default=8, help="new tokens of the untimed warm-up call")
    p.add_argument("--rounds", type=int, default=1, help="HF/rlpo alternations with --compare-rlpo")
    p.add_argument("--compare-rlpo", metavar="PATH", help="bench_rollout example binary to run back to back")
    p.add_argument("--rlpo-workers", type=int, default=1, help="rlpo rollout workers splitting the batch (threads are divided among them)")
    args = p.parse_args()
    if args.dtype == "fp32":
        args.dtype = "f32"
    if not args.compare_rlpo:
        print(json.dumps(hf_bench(args)))
        return
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        hf = hf_bench(args)
        rl = rlpo_bench(args)
        print(json.dumps(hf))
        print(json.dumps(rl))
        print(f"round {r}: load {load:.1f} | HF {hf['tokens_per_s']:.1f} tok/s | rlpo {rl['tokens_per_s']:.1f} tok/s "
              f"| ratio {rl['tokens_per_s'] / hf['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
