#!/usr/bin/env python3
"""Time to learn: rlpo vs TRL on the CPU quickstart, from their per-step logs.

Inputs:
  --rlpo FILE   an rlpo run's metrics.jsonl ({"step": N, "metrics": {"reward/mean": r, "timing/step_s": s}});
                cumulative seconds = running sum of timing/step_s (training time, no set-up). Repeatable.
  --trl FILE    a scripts/trl_quickstart.py log ({"step", "seconds", "reward", "step_s"}). Repeatable.
  Optional labels: FILE=LABEL (e.g. --rlpo checkpoints/ttl_rlpo_f32/metrics.jsonl=rlpo-fp32).

For each run: the 3-step moving average (MA3) of the mean reward, and the first step where it
reaches --threshold (0.8), with the training seconds at that step. Prints a table (ratios are each
run's seconds over the first rlpo run's) and saves one PNG of reward vs training seconds (raw per
step as thin lines, MA3 thick; dashed line at the threshold).

    .venv/bin/python scripts/plot_time_to_learn.py \
        --rlpo checkpoints/ttl_rlpo_f32/metrics.jsonl=rlpo-fp32 \
        --trl bench_out/trl_quickstart_fp32.jsonl=trl-fp32 --out docs/time_to_learn.png

Needs matplotlib (scripts/requirements-bench.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _split_label(arg: str, default: str) -> tuple[str, str]:
    if "=" in arg and not os.path.exists(arg):
        path, label = arg.rsplit("=", 1)
        return path, label
    return arg, default


def load_rlpo(path: str) -> list[tuple[int, float, float]]:
    """[(step, cumulative seconds, reward)] from an rlpo metrics.jsonl."""
    rows = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        m = d.get("metrics", {})
        if "reward/mean" not in m or "timing/step_s" not in m:
            continue
        rows.append((int(d["step"]), m["timing/step_s"], m["reward/mean"]))
    rows.sort()
    out, total = [], 0.0
    for step, step_s, reward in rows:
        total += step_s if step_s is not None else 0.0
        out.append((step, total, reward))
    return out


def load_trl(path: str) -> list[tuple[int, float, float]]:
    """[(step, seconds since training start, reward)] from a trl_quickstart.py log."""
    out = []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        if d.get("header") or "reward" not in d:
            continue
        out.append((int(d["step"]), float(d["seconds"]), d["reward"]))
    out.sort()
    return out


def moving_average(values: list[float | None], k: int = 3) -> list[float | None]:
    """Trailing k-step mean; None until k values exist (or if any is missing)."""
    out: list[float | None] = []
    for i in range(len(values)):
        window = values[i - k + 1 : i + 1] if i + 1 >= k else None
        out.append(sum(window) / k if window and all(v is not None for v in window) else None)
    return out


def first_reaching(rows, ma, threshold):
    for (step, sec, _), m in zip(rows, ma):
        if m is not None and m >= threshold:
            return step, sec
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rlpo", action="append", default=[], metavar="FILE[=LABEL]")
    ap.add_argument("--trl", action="append", default=[], metavar="FILE[=LABEL]")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--out", default="docs/time_to_learn.png")
    ap.add_argument("--title", default="SmolLM2-135M-Instruct, single-digit arithmetic, CPU")
    a = ap.parse_args()
    if not a.rlpo and not a.trl:
        ap.error("give at least one --rlpo or --trl log")

    runs = []  # (label, kind, rows)
    for i, arg in enumerate(a.rlpo):
        path, label = _split_label(arg, "rlpo" if len(a.rlpo) == 1 else f"rlpo-{i + 1}")
        runs.append((label, "rlpo", load_rlpo(path)))
    for i, arg in enumerate(a.trl):
        path, label = _split_label(arg, "trl" if len(a.trl) == 1 else f"trl-{i + 1}")
        runs.append((label, "trl", load_trl(path)))

    results = []
    for label, kind, rows in runs:
        rewards = [r for _, _, r in rows]
        ma = moving_average(rewards, a.window)
        hit = first_reaching(rows, ma, a.threshold)
        last5 = [r for r in rewards[-5:] if r is not None]
        results.append(
            {
                "label": label,
                "kind": kind,
                "rows": rows,
                "ma": ma,
                "hit": hit,
                "steps": len(rows),
                "total_s": rows[-1][1] if rows else None,
                "last5": sum(last5) / len(last5) if last5 else None,
            }
        )

    base = next((r for r in results if r["kind"] == "rlpo" and r["hit"]), None)
    base_total = next((r for r in results if r["kind"] == "rlpo" and r["total_s"]), None)
    print(f"first step with MA{a.window} of the mean reward >= {a.threshold}")
    hdr = f"{'run':<16} {'steps':>5} {'step':>5} {'seconds':>9} {'vs ' + (base['label'] if base else 'rlpo'):>14} {'s/step':>8} {'last-5':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        per_step = r["total_s"] / r["steps"] if r["steps"] else float("nan")
        last5 = f"{r['last5']:.3f}" if r["last5"] is not None else "-"
        if r["hit"]:
            step, sec = r["hit"]
            ratio = f"{sec / base['hit'][1]:.2f}x" if base else "-"
            print(f"{r['label']:<16} {r['steps']:>5} {step:>5} {sec:>9.1f} {ratio:>14} {per_step:>8.2f} {last5:>7}")
        else:
            print(f"{r['label']:<16} {r['steps']:>5} {'never':>5} {'-':>9} {'-':>14} {per_step:>8.2f} {last5:>7}")
    if base_total:
        print(f"(s/step = training seconds / steps; ratio = seconds to reach over {base['label'] if base else '-'}'s)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8), dpi=120)
    colors = {"rlpo": ["#d62728", "#ff7f0e", "#8c564b"], "trl": ["#1f77b4", "#17becf", "#9467bd"]}
    used = {"rlpo": 0, "trl": 0}
    for r in results:
        c = colors[r["kind"]][used[r["kind"]] % 3]
        used[r["kind"]] += 1
        xs = [sec for _, sec, _ in r["rows"]]
        ys = [rew for _, _, rew in r["rows"]]
        ax.plot(xs, ys, color=c, linewidth=0.8, alpha=0.5)
        pts = [(x, m) for x, m in zip(xs, r["ma"]) if m is not None]
        lab = r["label"]
        if r["hit"]:
            lab += f" (MA{a.window} ≥ {a.threshold} at step {r['hit'][0]}, {r['hit'][1]:.0f} s)"
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=c, linewidth=2.5, label=lab)
        else:
            ax.plot([], [], color=c, linewidth=2.5, label=lab)
        if r["hit"]:
            ax.plot([r["hit"][1]], [r["ma"][[s for s, _, _ in r["rows"]].index(r["hit"][0])]], "o", color=c)
    ax.axhline(a.threshold, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("mean reward per step")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    ax.set_title(a.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    fig.savefig(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    sys.exit(main())
