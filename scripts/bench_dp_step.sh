#!/usr/bin/env bash
# The cost of data parallelism on one machine: `rlpo bench step` as one process and as 2 ranks
# (`--nproc-per-node 2`, Gloo over loopback) on the same global batch, one after the other, then
# the ratio of the step times and the share of the 2-rank step spent in collectives. On a 2-core
# CPU no speed-up is expected (each rank gets one core); the figure is the communication cost.
# Record the output in docs/benchmarks.md ("Data-parallel step"). Run on a quiet machine:
#
#   cargo build --release && scripts/bench_dp_step.sh            # SmolLM2-135M, 4 prompts x 4, 64 tokens
#   scripts/bench_dp_step.sh --dtype bf16 --steps 5               # extra flags go to both runs
set -euo pipefail
cd "$(dirname "$0")/.."
RLPO=${RLPO:-target/release/rlpo}
[ -x "$RLPO" ] || { echo "no $RLPO: cargo build --release first (or set RLPO=...)" >&2; exit 1; }
ARGS=(--model .cache/models/SmolLM2-135M-Instruct --prompts 4 --group-size 4 --new-tokens 64 --steps 3 "$@")
echo "== 1 process: $RLPO bench step ${ARGS[*]}"
one=$("$RLPO" bench step "${ARGS[@]}")
echo "$one"
echo "== 2 ranks: $RLPO bench step ${ARGS[*]} --nproc-per-node 2"
two=$("$RLPO" bench step "${ARGS[@]}" --nproc-per-node 2 | sed 's/^\[rank 0\] //')
echo "$two"
val() { echo "$1" | awk -v k="$2" '$1 == k { print $2 }' | head -n 1; }
s1=$(val "$one" step); s2=$(val "$two" step); c2=$(val "$two" collectives)
awk -v a="$s1" -v b="$s2" -v c="$c2" 'BEGIN {
  printf "step time: 1 process %.3f s, 2 ranks %.3f s, ratio 2 ranks / 1 process = %.2f\n", a, b, b / a;
  printf "collectives (rank 0): %.3f s per step = %.0f%% of the 2-rank step\n", c, 100 * c / b }'
