#!/usr/bin/env python3
"""Time TRL `GRPOTrainer` training steps on SmolLM2-135M-Instruct, the peer of `rlpo bench step`.

One step = generate 4 prompts x G = 4 completions (at most 64 new tokens, T = 1, top-p 1) with
transformers `generate`, score them (rlpo's `math`/`last_number` reward on rlpo's quickstart
arithmetic prompts), GRPO advantages, the clipped token-mean loss forward + backward, grad clip and
AdamW. One warm-up step, then --steps timed steps. Per step it prints the wall time and where it
went:

  generate      transformers `generate` (prefill + decode of all rows)
  score         prompt tokenization, decoding, reward, advantages
  loss_fwd_bwd  the learner's forward pass over prompt + completion, loss, backward
  optim         grad-norm clipping, AdamW step, zero_grad, LR scheduler

and writes a JSON summary (--out). `--fixed-length` makes every row exactly --max-new-tokens long
(EOS suppressed), so the work per step does not depend on what the model samples.

    .venv/bin/python scripts/trl_bench_step.py --steps 3 --out bench_out/trl_bench_step_fp32.json
    .venv/bin/python scripts/trl_bench_step.py --bf16 --steps 3 --out bench_out/trl_bench_step_bf16.json

Needs scripts/requirements-bench.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trl_common  # noqa: E402

STAGES = ("generate_s", "score_s", "loss_fwd_bwd_s", "optim_s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=trl_common.DEFAULT_MODEL)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--fixed-length", action="store_true", help="suppress EOS: every row is max-new-tokens long")
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision (fp32 weights, bf16 autocast)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="TRL's GRPO default; off like rlpo")
    ap.add_argument("--lora-rank", type=int, default=0, help="PEFT LoRA of this rank on every projection (alpha 2r); 0 = full training")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores of this process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON summary (default bench_out/trl_bench_step_{fp32,bf16}.json)")
    a = ap.parse_args()

    threads = trl_common.pin_threads(a.threads)
    import torch
    import transformers
    import trl

    dtype = "bf16-amp" if a.bf16 else "fp32"
    out = a.out or f"bench_out/trl_bench_step_{'bf16' if a.bf16 else 'fp32'}.json"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    steps: list[dict] = []

    def on_step(p, logs):
        rec = {
            "step": p["step"],
            "warmup": p["step"] <= a.warmup,
            "step_s": p["step_s"],
            **p["stages"],
            "completion_tokens": p["completion_tokens"],
            "reward": logs.get("reward"),
        }
        steps.append(rec)
        tag = "warm-up" if rec["warmup"] else "timed  "
        print(
            f"{tag} step {p['step']}: {p['step_s']:7.2f} s  = generate {rec['generate_s']:.2f} + score "
            f"{rec['score_s']:.2f} + loss fwd+bwd {rec['loss_fwd_bwd_s']:.2f} + optim {rec['optim_s']:.2f}  "
            f"({p['completion_tokens']} completion tokens, {p['completion_tokens'] / max(rec['generate_s'], 1e-9):.1f} tok/s)",
            flush=True,
        )

    timer = trl_common.step_timer_callback(on_step)
    with tempfile.TemporaryDirectory(prefix="trl_bench_step_") as tmp:
        trainer = trl_common.make_trainer(
            a.model,
            tmp,
            steps=a.warmup + a.steps,
            prompts_per_step=a.prompts,
            group_size=a.group_size,
            max_new_tokens=a.max_new_tokens,
            bf16=a.bf16,
            seed=a.seed,
            fixed_length=a.fixed_length,
            gradient_checkpointing=a.gradient_checkpointing,
            lora_rank=a.lora_rank,
            callbacks=[timer],
        )
        timer.trainer = trainer
        print(
            f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
            f"{threads} threads, {dtype}; {a.prompts} prompts x G {a.group_size}, "
            f"{'exactly' if a.fixed_length else 'at most'} {a.max_new_tokens} new tokens",
            flush=True,
        )
        trainer.train()

    timed = [s for s in steps if not s["warmup"]]

    def summary(key):
        v = [s[key] for s in timed]
        return {"median": statistics.median(v), "min": min(v), "max": max(v)} if v else None

    result = {
        "impl": "trl",
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "model": a.model,
        "dtype": dtype,
        "threads": threads,
        "prompts": a.prompts,
        "group_size": a.group_size,
        "max_new_tokens": a.max_new_tokens,
        "fixed_length": a.fixed_length,
        "gradient_checkpointing": a.gradient_checkpointing,
        "lora_rank": a.lora_rank,
        "load_average": os.getloadavg(),
        "steps": steps,
        "step_s": summary("step_s"),
        "stages": {k: summary(k) for k in STAGES},
        "completion_tokens": summary("completion_tokens"),
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    if timed:
        st = result["stages"]
        print(
            f"median of {len(timed)}: {result['step_s']['median']:.2f} s per step "
            + ", ".join(f"{k[:-2]} {st[k]['median']:.2f}" for k in STAGES)
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
