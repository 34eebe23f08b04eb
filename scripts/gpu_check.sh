#!/usr/bin/env bash
# The one script a lent GPU machine runs (no Rust, no network; torch 2.11.0 + transformers there).
# It uses only what `scripts/gpu_bundle.sh` put into gpu_bundle/ (the stripped `rlpo` binary, the
# CUDA test binaries of rlpo-model and rlpo-rollout, the fixture tokenizer) plus this tree, and
# checks the GPU path in about 6 minutes (budget 8):
#
#   1. the binary sees the GPU; the CUDA test binaries pass (logits f32/bf16 vs CPU, cached decode,
#      training micro-step, engine log-probs on the device); NCCL collectives (1b); with 2+ GPUs
#      2 data-parallel training steps against one process (2b);
#   2. a random-init model with Qwen2.5-1.5B's shape (config only, no hub) matches transformers on
#      the GPU: f32 max |diff| <= 1e-3, bf16 relative L2 <= 5e-2, full forward and cached decode;
#   3. `rlpo bench rollout` (fast and plain decoders) vs transformers generate, batch 64 x 512 bf16;
#   4. `rlpo check` of the derived recipe fits the card; 3 training steps of recipes/d3s_qwen.toml
#      (GSM8K swapped for the built-in arithmetic task) with the GPU memory sampled;
#   5. a table: tokens/s rlpo vs HF, seconds per stage, peak memory, MFU (summary.md).
#
# Each part has a timeout; every check prints PASS or FAIL; the exit status is 1 if any failed.
# Outputs (logs, metrics.jsonl, summary.md) go to $OUT (the device tool returns that folder) or
# gpu_bundle/out-<mode>; the model and run directories go to $GPU_CHECK_WORK (default /tmp).
# Training runs the recipe as written (256 rollouts x 1024 tokens per step) and ends with the
# trainer's end-of-run checkpoint (~21 GB for 1.5B: weights, fp32 masters, AdamW moments);
# GPU_CHECK_TRAIN_SETS adds --set overrides, GPU_CHECK_BUDGET_S (470) caps the whole script.
#
#   scripts/gpu_bundle.sh                 # here, once: builds and fills gpu_bundle/
#   bash scripts/gpu_check.sh             # on the GPU machine (device tool: carry ["gpu_bundle"])
#   bash scripts/gpu_check.sh --cpu       # the same flow on this CPU with a tiny model and sizes
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=gpu
[ "${1:-}" = "--cpu" ] && MODE=cpu
BUNDLE="$ROOT/gpu_bundle"
RLPO="$BUNDLE/rlpo"
OUTDIR=${OUT:-$BUNDLE/out-$MODE}
WORK=${GPU_CHECK_WORK:-/tmp/rlpo-gpu-check-$MODE}
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
mkdir -p "$OUTDIR" "$WORK"
rm -rf "$WORK/ckpt" "$WORK"/*.safetensors
FAILED=0
RESULTS="$OUTDIR/results.txt"
: > "$RESULTS"

log() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
pass() { echo "PASS $1: $2" | tee -a "$RESULTS"; }
fail() { echo "FAIL $1: $2" | tee -a "$RESULTS"; FAILED=1; }
# Seconds left before the budget (minus a reserve for the summary), capped by the part's own limit.
left() { local l=$(( BUDGET_S - 15 - ($(date +%s) - START) )); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 5 ] && l=5; echo "$l"; }
# run NAME LIMIT CMD...: run with a timeout, output to $OUTDIR/NAME.log; returns the exit status.
run() {
  local name=$1 limit; limit=$(left "$2"); shift 2
  log "$name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" > "$OUTDIR/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "timed out after ${limit} s" >> "$OUTDIR/$name.log"
  tail -n 25 "$OUTDIR/$name.log" | sed "s/^/  [$name] /"
  return $rc
}
finish() {
  log "done: $(grep -c '^PASS' "$RESULTS") passed, $(grep -c '^FAIL' "$RESULTS") failed (details in $OUTDIR)"
  cat "$RESULTS"
  exit $FAILED
}

# --- 0. preflight --------------------------------------------------------------------------
if [ "$MODE" = cpu ] && [ -z "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; fi
PY=${PYTHON:-python3}
if [ ! -x "$RLPO" ]; then
  fail bundle "no $RLPO: run scripts/gpu_bundle.sh on the build machine and carry gpu_bundle"
  finish
fi
cat "$BUNDLE/MANIFEST" 2>/dev/null | sed 's/^/  [bundle] /'
if ! TORCH_DIR=$("$PY" -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>"$OUTDIR/torch_import.log"); then
  fail python "$PY cannot import torch: $(tail -n 1 "$OUTDIR/torch_import.log")"
  finish
fi
export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
"$PY" scripts/gpu_check.py env 2>&1 | tee "$OUTDIR/env.log" | sed 's/^/  [env] /'
if [ "${PIPESTATUS[0]}" -ne 0 ]; then
  fail transformers "not importable by $PY: the oracle checks need it (set PYTHON=... to an interpreter with torch 2.11 + transformers)"
  finish
fi
if ! DEV_JSON=$("$RLPO" debug device 2>"$OUTDIR/rlpo_start.log"); then
  fail rlpo-start "the bundled binary does not run here: $(tail -n 3 "$OUTDIR/rlpo_start.log" | tr '\n' ' ') (glibc >= 2.34 and libstdc++ with GLIBCXX_3.4.26 are needed; torch libs from $TORCH_DIR/lib)"
  finish
fi
echo "  [rlpo] $DEV_JSON"
if [ "$MODE" = gpu ]; then
  DEVICE=cuda:0
  if echo "$DEV_JSON" | grep -q '"cuda_devices": 0'; then
    fail rlpo-sees-gpu "rlpo sees no CUDA device ($DEV_JSON): libtorch_cuda not linked or no driver"
    finish
  fi
  pass rlpo-sees-gpu "$DEV_JSON"
  GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
  GPU_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
  SHAPE=qwen2.5-1.5b; BATCH=64; NEW=512; SEQ=48
  TRAIN_SETS=()
else
  DEVICE=cpu; GPU_NAME=""; GPU_MIB=""
  SHAPE=tiny; BATCH=4; NEW=16; SEQ=24
  TRAIN_SETS=(--set model.device=cpu --set trainer.prompts_per_step=2 --set trainer.mini_batch_rows=16
              --set trainer.micro_batch_rows=8 --set rollout.max_new_tokens=16)
fi
MODEL="$WORK/model"

# --- 1. CUDA test binaries ----------------------------------------------------------------
for t in "$BUNDLE"/tests/*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if RLPO_TEST_DEVICE=$DEVICE run "test-$name" 120 "$t" --test-threads 1 --nocapture; then
    pass "test-$name" "$(grep -E '^test result' "$OUTDIR/test-$name.log" | tail -n 1)"
  else
    fail "test-$name" "see $OUTDIR/test-$name.log"
  fi
done

# --- 1b. NCCL across ranks (issue 14): the shim's collectives, 2 ranks with 2 GPUs else 1; with
# 2+ GPUs also the trainer's seam through `rlpo train`'s launcher (gradient buckets on each GPU).
if [ "$MODE" = gpu ] && [ -x "$BUNDLE/rlpo_dist_cuda" ]; then
  if run nccl 120 "$BUNDLE/rlpo_dist_cuda" --test-threads 1 --nocapture; then
    pass nccl "$(grep -m1 'NCCL collectives passed' "$OUTDIR/nccl.log")"
  else
    fail nccl "see $OUTDIR/nccl.log"
  fi
  if [ "$(echo "$DEV_JSON" | sed 's/.*"cuda_devices": *\([0-9]*\).*/\1/')" -ge 2 ]; then
    if run nccl-launcher 120 "$RLPO" debug dist-selftest --nproc-per-node 2 --cuda; then
      pass nccl-launcher "$(grep -c 'dist-selftest rank .* ok' "$OUTDIR/nccl-launcher.log") ranks ok"
    else
      fail nccl-launcher "see $OUTDIR/nccl-launcher.log"
    fi
  fi
fi

# --- 2. model + parity --------------------------------------------------------------------
if run make-model 180 "$PY" scripts/gpu_check.py make-model --out "$MODEL" --shape "$SHAPE" \
     --tokenizer "$BUNDLE/tokenizer" --device "$DEVICE"; then
  pass make-model "$(tail -n 1 "$OUTDIR/make-model.log")"
else
  fail make-model "see $OUTDIR/make-model.log"
  finish
fi
[ "$MODE" = gpu ] && run sdpa-probe 60 "$PY" scripts/gpu_check.py sdpa-probe --device "$DEVICE"
run parity 240 "$PY" scripts/gpu_check.py parity --model "$MODEL" --rlpo "$RLPO" --device "$DEVICE" \
  --seq "$SEQ" --work "$WORK"
grep -E '^(PASS|FAIL)' "$OUTDIR/parity.log" >> "$RESULTS"
grep -q '^FAIL' "$OUTDIR/parity.log" && FAILED=1
grep -qE '^PASS parity-bf16' "$OUTDIR/parity.log" || grep -qE '^FAIL parity-bf16' "$OUTDIR/parity.log" || fail parity "no result (see $OUTDIR/parity.log)"

# --- 2b. the data-parallel step (issue 14) with 2+ GPUs: `rlpo train --nproc-per-node 2` (rank k's
# learner and rollout on cuda:k, gradients through NCCL, host values through Gloo) vs one process on
# cuda:0, 2 steps of a tiny model: the plans of every step and the final weights (dp-compare).
NGPU=$(echo "$DEV_JSON" | sed 's/.*"cuda_devices": *\([0-9]*\).*/\1/')
if [ "$MODE" = gpu ] && [ "${NGPU:-0}" -ge 2 ] && [ -x "$BUNDLE/rlpo_dist_cuda" ]; then
  DPM="$WORK/dp_model"
  if run dp-model 120 "$PY" scripts/gpu_check.py make-model --out "$DPM" --shape tiny --tokenizer "$BUNDLE/tokenizer" --device cpu; then
    DP_SETS=(--set "model.path=$DPM" --set model.device=cuda --set model.dtype=f32 --set data.source=synthetic
             --set trainer.total_steps=2 --set trainer.prompts_per_step=4 --set rollout.group_size=8
             --set rollout.max_new_tokens=16 --set "checkpoint.root=$WORK/dp" --set checkpoint.save_final=false
             --set metrics.console=false)
    rm -rf "$WORK/dp"
    if RLPO_TEST_PLAN_LOG="$WORK/dp/one.plan.jsonl" run dp-one 120 "$RLPO" train "${DP_SETS[@]}" --set run.name=one --resume never \
       && RLPO_TEST_PLAN_LOG="$WORK/dp/two.plan.jsonl" run dp-two 180 "$RLPO" train "${DP_SETS[@]}" --set run.name=two --resume never --nproc-per-node 2; then
      run dp-compare 60 "$PY" scripts/gpu_check.py dp-compare --one "$WORK/dp/one" --two "$WORK/dp/two" --steps 2
      grep -E '^(PASS|FAIL)' "$OUTDIR/dp-compare.log" >> "$RESULTS"
      grep -q '^PASS' "$OUTDIR/dp-compare.log" || FAILED=1
    else
      fail dp-step "see $OUTDIR/dp-one.log and $OUTDIR/dp-two.log"
    fi
  else
    fail dp-step "no tiny model (see $OUTDIR/dp-model.log)"
  fi
fi

# --- 3. rollout throughput vs transformers -------------------------------------------------
for dec in fast plain; do
  if run "bench-rlpo-$dec" 150 "$RLPO" bench rollout --model "$MODEL" --batch "$BATCH" --new-tokens "$NEW" \
       --dtype bf16 --decoder "$dec" --device "$DEVICE"; then
    cp "$OUTDIR/bench-rlpo-$dec.log" "$WORK/bench_rlpo_$dec.txt"
    pass "bench-rlpo-$dec" "$(grep 'tokens/s' "$OUTDIR/bench-rlpo-$dec.log" | head -n 1 | tr -s ' ')"
  else
    fail "bench-rlpo-$dec" "see $OUTDIR/bench-rlpo-$dec.log"
  fi
done
if run bench-hf 150 "$PY" scripts/bench_hf_generate.py --model "$MODEL" --batch "$BATCH" --new-tokens "$NEW" \
     --dtype bf16 --device "$DEVICE"; then
  grep '^{' "$OUTDIR/bench-hf.log" > "$WORK/bench_hf.json"
  pass bench-hf "$(tail -n 1 "$WORK/bench_hf.json")"
else
  fail bench-hf "see $OUTDIR/bench-hf.log"
fi

# --- 4. memory plan + 3 training steps ------------------------------------------------------
RECIPE="$WORK/d3s_synthetic.toml"
"$PY" scripts/gpu_check.py derive-recipe --recipe recipes/d3s_qwen.toml --out "$RECIPE" > /dev/null
COMMON=(--set "model.path=$MODEL" --set trainer.total_steps=3 --set run.name=train_run
        --set "checkpoint.root=$WORK/ckpt" --set metrics.console=false --set checkpoint.save_final=false
        "${TRAIN_SETS[@]}")
# Extra overrides without editing this file, e.g. GPU_CHECK_TRAIN_SETS="--set rollout.max_new_tokens=512".
# shellcheck disable=SC2206
[ -n "${GPU_CHECK_TRAIN_SETS:-}" ] && COMMON+=(${GPU_CHECK_TRAIN_SETS})
MEM_ARGS=()
[ -n "$GPU_MIB" ] && MEM_ARGS=(--gpu-mem "${GPU_MIB}MiB")
if run check 60 "$RLPO" check "$RECIPE" "${COMMON[@]}" "${MEM_ARGS[@]}"; then
  cp "$OUTDIR/check.log" "$WORK/check.txt"
  pass check "$(grep 'peak per device' "$OUTDIR/check.log" | tr -s ' ')"
else
  cp "$OUTDIR/check.log" "$WORK/check.txt"
  fail check "the plan is refused or the recipe is invalid (see $OUTDIR/check.log); training anyway"
fi
MEMPID=""
if [ "$MODE" = gpu ] && command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$WORK/gpu_mem_train.log" 2>/dev/null &
  MEMPID=$!
fi
if run train 330 "$RLPO" train "$RECIPE" "${COMMON[@]}" --resume never; then
  steps=$(wc -l < "$WORK/ckpt/train_run/metrics.jsonl" 2>/dev/null || echo 0)
  if [ "$steps" -eq 3 ]; then pass train "3 steps of d3s_qwen.toml (synthetic data)"; else fail train "$steps steps logged, 3 expected"; fi
else
  fail train "see $OUTDIR/train.log ($(wc -l < "$WORK/ckpt/train_run/metrics.jsonl" 2>/dev/null || echo 0) step(s) logged)"
fi
[ -n "$MEMPID" ] && kill "$MEMPID" 2>/dev/null
mkdir -p "$WORK/train_run"
cp "$WORK/ckpt/train_run/metrics.jsonl" "$WORK/train_run/" 2>/dev/null
cp "$WORK/ckpt/train_run/metrics.jsonl" "$OUTDIR/" 2>/dev/null
cp "$WORK/gpu_mem_train.log" "$OUTDIR/" 2>/dev/null

# --- 5. summary -------------------------------------------------------------------------------
"$PY" scripts/gpu_check.py summary --work "$WORK" --model "$MODEL" --gpu-name "${GPU_NAME:-cpu}" \
  --batch "$BATCH" --new-tokens "$NEW" > "$OUTDIR/summary.log" 2>&1
cat "$OUTDIR/summary.log"
cp "$WORK/summary.md" "$OUTDIR/" 2>/dev/null
finish
