#!/usr/bin/env bash
# Same-process-tree comparisons of the paths issue 19 added, for a quiet machine (numbers on a
# busy one mean nothing). Each pair runs back to back and prints its ratio:
#
#   learner: fused AdamW vs per-parameter AdamW, activation checkpointing off vs on
#            (`rlpo bench learner`, forward + backward + AdamW on random tokens);
#   rollout: device sampling (tensor ops) vs host sampling (`rlpo bench rollout`, fast decoder).
#
#   bash scripts/bench_paths.sh [MODEL_DIR] [DEVICE]     # defaults: SmolLM2-135M, cpu
# Environment: DTYPE (f32), ROWS (4), SEQ (256), BATCH (16), NEW (128), RLPO (target/release/rlpo).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-.cache/models/SmolLM2-135M-Instruct}
DEVICE=${2:-cpu}
RLPO=${RLPO:-target/release/rlpo}
DTYPE=${DTYPE:-f32}
ROWS=${ROWS:-4}; SEQ=${SEQ:-256}; BATCH=${BATCH:-16}; NEW=${NEW:-128}
[ -x "$RLPO" ] || cargo build --release --bin rlpo
field() { grep '^{' | tail -n 1 | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
learner() { "$RLPO" bench learner --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --rows "$ROWS" --seq "$SEQ" --steps 5 --json "$@" | field tokens_per_s; }
rollout() { "$RLPO" bench rollout --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" --batch "$BATCH" --new-tokens "$NEW" --decoder fast --warmup-tokens 0 --json "$@" | field tokens_per_s; }
ratio() { python3 -c "print(f'{$1 / $2:.3f}')"; }

echo "model $MODEL on $DEVICE ($DTYPE); load $(cut -d' ' -f1 /proc/loadavg)"
fused=$(learner); per=$(learner --per-parameter-adamw)
echo "learner tokens/s: fused AdamW $fused, per-parameter $per, ratio fused/per-parameter $(ratio "$fused" "$per")"
ckpt=$(learner --activation-checkpointing)
echo "learner tokens/s: checkpointing off $fused, on $ckpt, ratio on/off $(ratio "$ckpt" "$fused")"
dev=$(rollout --sampler device); host=$(rollout --sampler host)
echo "rollout tokens/s: device sampling $dev, host sampling $host, ratio device/host $(ratio "$dev" "$host")"
