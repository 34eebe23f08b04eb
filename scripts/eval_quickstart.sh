#!/usr/bin/env bash
# Held-out evaluation of the CPU quickstart, before and after training (docs/benchmarks.md):
#   1. `rlpo eval` on the base SmolLM2-135M-Instruct: n = 16 samples for each of PROBLEMS held-out
#      single-digit arithmetic problems (data seed 1; the quickstart trains on data seed 0), k = 1..16;
#   2. the quickstart training (`rlpo train`, the embedded recipe) as run `quickstart-eval`
#      (continued if it exists: --resume auto);
#   3. `rlpo eval` on its newest verified checkpoint: same problems, same recipe settings, same seeds;
#   4. a Markdown table of pass@k and maj@k before and after, for every k.
# Usage: scripts/eval_quickstart.sh [PROBLEMS (default 64)] [STEPS (default 45, the quickstart's)]
# The numbers are deterministic on CPU for fixed seeds; run it on a quiet machine only because it
# takes a while (two evaluations of PROBLEMS x 16 samples and the full quickstart).
set -euo pipefail
cd "$(dirname "$0")/.."
PROBLEMS=${1:-64}
STEPS=${2:-45}
RUN=${RUN:-quickstart-eval}
OUT=${OUT:-eval/quickstart-heldout}
BIN=target/release/rlpo
cargo build --release -q --bin rlpo
mkdir -p "$(dirname "$OUT")"
EVAL=(--data synthetic:arithmetic --data-seed 1 --problems "$PROBLEMS" --samples 16 --k all --audit)

echo "== 1/3 base model" >&2
"$BIN" eval --model .cache/models/SmolLM2-135M-Instruct "${EVAL[@]}" --out "$OUT/base" | tee "$OUT.base.txt"
echo "== 2/3 quickstart training ($STEPS steps, run $RUN)" >&2
"$BIN" train --set "run.name=$RUN" --set "trainer.total_steps=$STEPS"
echo "== 3/3 trained model" >&2
"$BIN" eval --model "checkpoints/$RUN" "${EVAL[@]}" --out "$OUT/trained" | tee "$OUT.trained.txt"

python3 - "$OUT/base/summary.json" "$OUT/trained/summary.json" "$PROBLEMS" "$STEPS" <<'EOF'
import json, sys
base, trained = (json.load(open(p))["overall"] for p in sys.argv[1:3])
problems, steps = sys.argv[3], sys.argv[4]
print(f"\nHeld-out single-digit arithmetic ({base['problems']} problems x 16 samples, data seed 1), "
      f"SmolLM2-135M-Instruct before vs after the quickstart ({steps} steps):\n")
print(f"mean reward {base['mean_reward']:.3f} -> {trained['mean_reward']:.3f}; "
      f"no answer {100 * base['no_answer_frac']:.1f}% -> {100 * trained['no_answer_frac']:.1f}%; "
      f"weak correct {base['weak_correct']} -> {trained['weak_correct']}\n")
print("| k | pass@k base | pass@k trained | maj@k base | maj@k trained |")
print("| ---: | ---: | ---: | ---: | ---: |")
for b, t in zip(base["by_k"], trained["by_k"]):
    print(f"| {b['k']} | {b['pass@k']:.3f} | {t['pass@k']:.3f} | {b['maj@k']:.3f} | {t['maj@k']:.3f} |")
rise = trained["by_k"][0]["pass@k"] - base["by_k"][0]["pass@k"]
print(f"\npass@1 {'rises' if rise > 0 else 'does NOT rise'}: {base['by_k'][0]['pass@k']:.3f} -> {trained['by_k'][0]['pass@k']:.3f} ({rise:+.3f})")
EOF
