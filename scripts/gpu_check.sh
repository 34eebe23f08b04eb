#!/usr/bin/env bash
# The one script a lent GPU machine runs (no Rust, no network; torch 2.11.0 + transformers there).
# It uses only what `scripts/gpu_bundle.sh` put into gpu_bundle/ (the stripped `rlpo` binary, the
# CUDA test binaries of rlpo-model and rlpo-rollout, the fixture tokenizer) plus this tree. Budget:
# 8 minutes on one H100/H200 (GPU_CHECK_BUDGET_S, default 470 s). Parts, in this order (the
# training check before the long baselines), each with its own timeout and elapsed time:
#
#   1. preflight: the binary sees the GPU; LibTorch's fused AdamW agrees with the per-parameter
#      one on the device; the CUDA test binaries pass (logits f32/bf16 vs CPU, cached decode,
#      training micro-step, rollout log-probs with device and host sampling on the device);
#   2. a random-init model with Qwen2.5-1.5B's shape (config only, no hub) and parity with
#      transformers on the GPU: f32 max |diff| <= 1e-3, bf16 relative L2 <= 5e-2, full forward and
#      cached decode; which SDPA kernels take the learner's mask-free call (information);
#   3. `rlpo check` of the derived recipe (plan vs the card's memory), then 3 training steps of
#      recipes/d3s_qwen.toml (GSM8K swapped for the built-in arithmetic task; a random model never
#      emits EOS, so new tokens are capped; no end-of-run checkpoint) with GPU memory sampled;
#   4. learner throughput: `rlpo bench learner` (8 rows x 1024 tokens, bf16), tokens/s and MFU,
#      with and without activation checkpointing;
#   5. rollout throughput: `rlpo bench rollout` (fast decoder, device sampling) at batch 256 x 512
#      new tokens bf16, then transformers `generate` on the same card and settings; each with a
#      full-size warm-up run timed on its own (one-time costs) before the timed run (steady state);
#   6. the results table (summary.md), printed last.
#
# Every check prints PASS or FAIL; the exit status is 1 if any failed. What comes back from the
# machine is at most 8 files: $OUT/results.txt, $OUT/summary.md, $OUT/metrics.jsonl and
# $OUT/logs.tar.gz (every part's log); the model and run directories go to $GPU_CHECK_WORK
# (default /tmp). GPU_CHECK_TRAIN_SETS adds --set overrides to the training run.
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
LOGS="$WORK/logs"
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
START=$(date +%s)
mkdir -p "$OUTDIR" "$WORK"
rm -rf "$WORK/ckpt" "$WORK"/*.safetensors "$WORK"/*.json "$LOGS" "$WORK/train_run"
rm -f "$OUTDIR/results.txt" "$OUTDIR/summary.md" "$OUTDIR/metrics.jsonl" "$OUTDIR/logs.tar.gz"
mkdir -p "$LOGS"
FAILED=0
RESULTS="$OUTDIR/results.txt"
TIMES="$WORK/times.txt"
: > "$RESULTS"
: > "$TIMES"

log() { printf '[gpu_check %4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
pass() { echo "PASS $1: $2" | tee -a "$RESULTS"; }
fail() { echo "FAIL $1: $2" | tee -a "$RESULTS"; FAILED=1; }
# Seconds left before the budget (minus a reserve for the summary), capped by the part's own limit.
left() { local l=$(( BUDGET_S - 20 - ($(date +%s) - START) )); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 5 ] && l=5; echo "$l"; }
# run NAME LIMIT CMD...: run with a timeout, output to $LOGS/NAME.log; returns the exit status.
run() {
  local name=$1 limit; limit=$(left "$2"); shift 2
  log "$name (limit ${limit} s): $*"
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "timed out after ${limit} s" >> "$LOGS/$name.log"
  tail -n 6 "$LOGS/$name.log" | sed "s/^/  [$name] /"
  echo "$name $(( $(date +%s) - t0 ))" >> "$TIMES"
  return $rc
}
# part NAME: print the elapsed time of the part that just ended.
PART_T0=$START
part_done() { local now; now=$(date +%s); log "part '$1' took $(( now - PART_T0 )) s"; echo "part:$1 $(( now - PART_T0 ))" >> "$TIMES"; PART_T0=$now; }
# Pack the logs, keep at most 8 files in $OUTDIR, print the results table last.
finish() {
  cp "$WORK/ckpt/train_run/metrics.jsonl" "$OUTDIR/metrics.jsonl" 2>/dev/null || : > "$OUTDIR/metrics.jsonl"
  [ -f "$OUTDIR/summary.md" ] || echo "no summary (the check stopped early; see results.txt)" > "$OUTDIR/summary.md"
  cp "$TIMES" "$LOGS/times.txt" 2>/dev/null
  tar -czf "$OUTDIR/logs.tar.gz" -C "$WORK" logs 2>/dev/null
  local n; n=$(find "$OUTDIR" -type f | wc -l)
  local top=1
  for f in results.txt summary.md metrics.jsonl logs.tar.gz; do [ -f "$OUTDIR/$f" ] || top=0; done
  if [ "$n" -le 8 ] && [ "$top" -eq 1 ]; then
    pass output-files "$n files in $OUTDIR (at most 8): $(cd "$OUTDIR" && find . -type f -printf '%P ' | sort)"
  else
    fail output-files "$n files in $OUTDIR (at most 8, with results.txt, summary.md, metrics.jsonl, logs.tar.gz at the top)"
  fi
  log "done: $(grep -c '^PASS' "$RESULTS") passed, $(grep -c '^FAIL' "$RESULTS") failed in $(( $(date +%s) - START )) s (details: $OUTDIR/logs.tar.gz)"
  echo
  cat "$RESULTS"
  echo
  cat "$OUTDIR/summary.md"
  exit $FAILED
}

# --- 1. preflight ----------------------------------------------------------------------------
if [ "$MODE" = cpu ] && [ -z "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; fi
PY=${PYTHON:-python3}
if [ ! -x "$RLPO" ]; then
  fail bundle "no $RLPO: run scripts/gpu_bundle.sh on the build machine and carry gpu_bundle"
  finish
fi
sed 's/^/  [bundle] /' "$BUNDLE/MANIFEST" 2>/dev/null | head -n 3
# torch's lib/ and the wheel's nvidia/*/lib folders (cuBLAS, cuDNN, NCCL, ...), so the bundled
# binary finds every library libtorch_cuda pulls in.
if ! LIBS=$("$PY" scripts/gpu_check.py lib-path 2>"$LOGS/torch_import.log"); then
  fail python "$PY cannot import torch: $(tail -n 1 "$LOGS/torch_import.log")"
  finish
fi
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "  [env] LD_LIBRARY_PATH=$LIBS"
"$PY" scripts/gpu_check.py env > "$LOGS/env.log" 2>&1
ENV_RC=$?
sed 's/^/  [env] /' "$LOGS/env.log"
if [ "$ENV_RC" -ne 0 ]; then
  fail transformers "not importable by $PY: the oracle checks need it (set PYTHON=... to an interpreter with torch 2.11 + transformers)"
  finish
fi
if ! DEV_JSON=$("$RLPO" debug device 2>"$LOGS/rlpo_start.log"); then
  fail rlpo-start "the bundled binary does not run here: $(tail -n 3 "$LOGS/rlpo_start.log" | tr '\n' ' ') (glibc >= 2.34 and libstdc++ with GLIBCXX_3.4.26 are needed)"
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
  SHAPE=qwen2.5-1.5b; BATCH=256; NEW=512; SEQ=48; LROWS=8; LSEQ=1024; SAMPLER=auto; BDTYPE=bf16
  TRAIN_SETS=(--set rollout.max_new_tokens=256)
else
  DEVICE=cpu; GPU_NAME=""; GPU_MIB=""
  SHAPE=tiny; BATCH=4; NEW=16; SEQ=24; LROWS=2; LSEQ=32
  SAMPLER=device   # the device sampler, on CPU tensors (auto would sample on the host here)
  BDTYPE=f32       # LibTorch's bf16 matmul is very slow on CPUs without AVX-512 BF16 (the benches' ceilings)
  TRAIN_SETS=(--set model.device=cpu --set trainer.prompts_per_step=2 --set trainer.mini_batch_rows=16
              --set trainer.micro_batch_rows=8 --set rollout.max_new_tokens=16)
fi
MODEL="$WORK/model"
if run adamw 60 "$RLPO" debug adamw --device "$DEVICE"; then
  pass adamw "$(grep -c bit-identical "$LOGS/adamw.log") of 2 dtypes bit-identical; $(tail -n 1 "$LOGS/adamw.log")"
else
  fail adamw "fused and per-parameter AdamW disagree (see adamw.log)"
fi
for t in "$BUNDLE"/tests/*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  if RLPO_TEST_DEVICE=$DEVICE run "test-$name" 120 "$t" --test-threads 1 --nocapture; then
    pass "test-$name" "$(grep -E '^test result' "$LOGS/test-$name.log" | tail -n 1)"
  else
    fail "test-$name" "see test-$name.log"
  fi
done
part_done preflight

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

# --- 2. model + parity ------------------------------------------------------------------------
if run make-model 180 "$PY" scripts/gpu_check.py make-model --out "$MODEL" --shape "$SHAPE" \
     --tokenizer "$BUNDLE/tokenizer" --device "$DEVICE"; then
  pass make-model "$(tail -n 1 "$LOGS/make-model.log")"
else
  fail make-model "see make-model.log"
  finish
fi
[ "$MODE" = gpu ] && run sdpa-probe 60 "$PY" scripts/gpu_check.py sdpa-probe --device "$DEVICE"
run parity 240 "$PY" scripts/gpu_check.py parity --model "$MODEL" --rlpo "$RLPO" --device "$DEVICE" \
  --seq "$SEQ" --work "$WORK" --decoder fast
grep -E '^(PASS|FAIL)' "$LOGS/parity.log" >> "$RESULTS"
grep -q '^FAIL' "$LOGS/parity.log" && FAILED=1
grep -qE '^(PASS|FAIL) parity-bf16' "$LOGS/parity.log" || fail parity "no result (see parity.log)"
part_done parity

# --- 3. memory plan + 3 training steps --------------------------------------------------------
RECIPE="$WORK/d3s_synthetic.toml"
"$PY" scripts/gpu_check.py derive-recipe --recipe recipes/d3s_qwen.toml --out "$RECIPE" > /dev/null
COMMON=(--set "model.path=$MODEL" --set trainer.total_steps=3 --set run.name=train_run
        --set "checkpoint.root=$WORK/ckpt" --set metrics.console=false --set metrics.tensorboard=false
        --set checkpoint.save_final=false --set checkpoint.save_every=0 --set checkpoint.save_at_end=false
        "${TRAIN_SETS[@]}")
# Extra overrides without editing this file, e.g. GPU_CHECK_TRAIN_SETS="--set rollout.max_new_tokens=512".
# shellcheck disable=SC2206
[ -n "${GPU_CHECK_TRAIN_SETS:-}" ] && COMMON+=(${GPU_CHECK_TRAIN_SETS})
MEM_ARGS=()
[ -n "$GPU_MIB" ] && MEM_ARGS=(--gpu-mem "${GPU_MIB}MiB")
if run check 60 "$RLPO" check "$RECIPE" "${COMMON[@]}" "${MEM_ARGS[@]}"; then
  pass check "$(grep 'peak per device' "$LOGS/check.log" | tr -s ' ')"
else
  fail check "the plan is refused or the recipe is invalid (see check.log); training anyway"
fi
cp "$LOGS/check.log" "$WORK/check.txt"
MEMPID=""
if [ "$MODE" = gpu ] && command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$LOGS/gpu_mem_train.log" 2>/dev/null &
  MEMPID=$!
fi
if run train 240 "$RLPO" train "$RECIPE" "${COMMON[@]}" --resume never; then
  steps=$(wc -l < "$WORK/ckpt/train_run/metrics.jsonl" 2>/dev/null || echo 0)
  if [ "$steps" -eq 3 ]; then pass train "3 steps of d3s_qwen.toml (synthetic data)"; else fail train "$steps steps logged, 3 expected"; fi
else
  fail train "see train.log ($(wc -l < "$WORK/ckpt/train_run/metrics.jsonl" 2>/dev/null || echo 0) step(s) logged)"
fi
[ -n "$MEMPID" ] && kill "$MEMPID" 2>/dev/null
grep -E '^(paths|  learner|  rollout|attention calls)' "$LOGS/train.log" | sed 's/^/  [train] /'
part_done training

# --- 4. learner throughput --------------------------------------------------------------------
for ck in off on; do
  flag=(); [ "$ck" = on ] && flag=(--activation-checkpointing)
  if run "bench-learner-ckpt-$ck" 90 "$RLPO" bench learner --model "$MODEL" --rows "$LROWS" --seq "$LSEQ" \
       --dtype "$BDTYPE" --device "$DEVICE" --steps 3 --json "${flag[@]}"; then
    grep '^{' "$LOGS/bench-learner-ckpt-$ck.log" | tail -n 1 > "$WORK/bench_learner_ckpt_$ck.json"
    pass "bench-learner-ckpt-$ck" "$(grep -E 'tokens/s|MFU' "$LOGS/bench-learner-ckpt-$ck.log" | tr -s ' ' | tr '\n' ';')"
  else
    fail "bench-learner-ckpt-$ck" "see bench-learner-ckpt-$ck.log"
  fi
done
part_done learner

# --- 5. rollout throughput: rlpo, then transformers (the long baseline) last --------------------
if run bench-rlpo 150 "$RLPO" bench rollout --model "$MODEL" --batch "$BATCH" --new-tokens "$NEW" \
     --dtype "$BDTYPE" --decoder fast --device "$DEVICE" --sampler "$SAMPLER" --warmup-tokens 0 --json; then
  grep '^{' "$LOGS/bench-rlpo.log" | tail -n 1 > "$WORK/bench_rlpo.json"
  pass bench-rlpo "$(grep -E 'tokens/s|warm-up|sampling' "$LOGS/bench-rlpo.log" | tr -s ' ' | tr '\n' ';')"
else
  fail bench-rlpo "see bench-rlpo.log"
fi
if run bench-hf 200 "$PY" scripts/bench_hf_generate.py --model "$MODEL" --batch "$BATCH" --new-tokens "$NEW" \
     --dtype "$BDTYPE" --device "$DEVICE" --warmup-tokens "$NEW"; then
  grep '^{' "$LOGS/bench-hf.log" | tail -n 1 > "$WORK/bench_hf.json"
  pass bench-hf "$(cat "$WORK/bench_hf.json")"
else
  fail bench-hf "see bench-hf.log"
fi
part_done rollout

# --- 6. summary --------------------------------------------------------------------------------
cp "$LOGS/gpu_mem_train.log" "$WORK/gpu_mem_train.log" 2>/dev/null
mkdir -p "$WORK/train_run"
cp "$WORK/ckpt/train_run/metrics.jsonl" "$WORK/train_run/" 2>/dev/null
if "$PY" scripts/gpu_check.py summary --work "$WORK" --model "$MODEL" --gpu-name "${GPU_NAME:-cpu}" \
     --batch "$BATCH" --new-tokens "$NEW" > "$LOGS/summary.log" 2>&1; then
  cp "$WORK/summary.md" "$OUTDIR/summary.md"
else
  fail summary "see summary.log: $(tail -n 2 "$LOGS/summary.log" | tr '\n' ' ')"
fi
finish
