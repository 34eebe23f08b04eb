#!/usr/bin/env python3
"""TRL `GRPOTrainer` on rlpo's CPU quickstart task, for the time-to-learn side-by-side.

Same task as `rlpo train` (recipes/quickstart.toml): SmolLM2-135M-Instruct from the local HF
directory, rlpo's synthetic single-digit arithmetic prompts (identical texts, answers and order:
scripts/rlpo_task.py ports rlpo's generator and shuffle), the chat template with its default system
message (rlpo sets no system prompt), reward 1 when the last number of the response equals the
answer (rlpo's `math` reward, `extract = "last_number"`). Settings: 4 prompts x G = 8 per step, one
optimizer step per 32 completions, at most 32 new tokens, T = 1, top-p 1, lr 1e-5 constant, no
warm-up, grad clip 1.0, no KL, ε 0.2 / 0.28, token-mean loss, seed 0, CPU, fp32 (`--bf16`: TRL's
bf16 mixed precision). rlpo's D³S down-sampling has no TRL counterpart: TRL trains on every row
and token.

One JSON line per step in --out:
  {"step": N, "seconds": wall-clock since training start, "reward": mean reward,
   "step_s": seconds of this step, "stages": {...}, ...}

    .venv/bin/python scripts/trl_quickstart.py --out bench_out/trl_quickstart_fp32.jsonl
    .venv/bin/python scripts/trl_quickstart.py --bf16 --out bench_out/trl_quickstart_bf16.jsonl

Needs scripts/requirements-bench.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import trl_common  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=trl_common.DEFAULT_MODEL)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision (fp32 weights, bf16 autocast)")
    ap.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="TRL's GRPO default (recompute activations); off by default like rlpo",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = all cores of this process")
    ap.add_argument("--out", default=None, help="JSONL log (default bench_out/trl_quickstart_{fp32,bf16}.jsonl)")
    ap.add_argument("--quiet", action="store_true", help="no per-step line on stdout")
    a = ap.parse_args()

    threads = trl_common.pin_threads(a.threads)
    import torch
    import transformers
    import trl

    out = a.out or f"bench_out/trl_quickstart_{'bf16' if a.bf16 else 'fp32'}.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    log = open(out, "w")
    header = {
        "header": True,
        "impl": "trl",
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "threads": threads,
        "dtype": "bf16-amp" if a.bf16 else "fp32",
        "model": a.model,
        "steps": a.steps,
        "prompts_per_step": a.prompts_per_step,
        "group_size": a.group_size,
        "max_new_tokens": a.max_new_tokens,
        "lr": a.lr,
        "seed": a.seed,
        "gradient_checkpointing": a.gradient_checkpointing,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    log.write(json.dumps(header) + "\n")
    log.flush()

    def on_step(p, logs):
        rec = {
            "step": p["step"],
            "seconds": p["elapsed_s"],
            "reward": logs["reward"],
            "step_s": p["step_s"],
            "stages": p["stages"],
            "completion_tokens": p["completion_tokens"],
            "completion_mean_length": logs.get("completions/mean_length"),
            "clipped_ratio": logs.get("completions/clipped_ratio"),
            "entropy": logs.get("entropy"),
            "grad_norm": logs.get("grad_norm"),
        }
        log.write(json.dumps(rec) + "\n")
        log.flush()
        if not a.quiet:
            s = p["stages"]
            print(
                f"step {p['step']:3d}  reward {logs['reward']:.3f}  {p['step_s']:6.2f} s "
                f"(generate {s['generate_s']:.2f}, loss fwd+bwd {s['loss_fwd_bwd_s']:.2f}, "
                f"optim {s['optim_s']:.2f})  total {p['elapsed_s']:7.1f} s",
                flush=True,
            )

    timer = trl_common.step_timer_callback(on_step)
    with tempfile.TemporaryDirectory(prefix="trl_quickstart_") as tmp:
        t_load = time.perf_counter()
        trainer = trl_common.make_trainer(
            a.model,
            tmp,
            steps=a.steps,
            prompts_per_step=a.prompts_per_step,
            group_size=a.group_size,
            max_new_tokens=a.max_new_tokens,
            bf16=a.bf16,
            seed=a.seed,
            lr=a.lr,
            gradient_checkpointing=a.gradient_checkpointing,
            callbacks=[timer],
        )
        timer.trainer = trainer
        print(
            f"trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
            f"{threads} threads, {header['dtype']}; set-up {time.perf_counter() - t_load:.1f} s",
            flush=True,
        )
        trainer.train()
    log.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
