#!/usr/bin/env bash
# rlpo vs TRL GRPOTrainer side by side on the CPU quickstart. Run on a QUIET machine (nothing else
# using the cores): every number it prints is wall-clock time.
#
#   scripts/compare_trl.sh            # time to learn: rlpo fp32 + bf16, TRL fp32 (30 steps each), then the plot
#   scripts/compare_trl.sh --learn --trl-bf16   # ... and TRL bf16 too
#   scripts/compare_trl.sh --step     # only the step benchmark: TRL fp32/bf16/LoRA-16 (PEFT), rlpo bench step
#                                     # f32/bf16/LoRA-16, then the TRL/rlpo step-time ratios
#   scripts/compare_trl.sh --all      # both
#
# Options: --steps N (learning runs, default 30), --bench-steps N (timed steps, default 3),
#          --trl-bf16 (also the TRL bf16 learning run), --no-rlpo-bf16, --out DIR (default bench_out),
#          --threads N (both sides; default 0 = all cores; on a busy machine 1 is far faster than 2).
# Needs: target/release/rlpo (cargo build --release), scripts/setup.sh, and the bench extras:
#   .venv/bin/pip install -r scripts/requirements-bench.txt -c scripts/requirements.txt
# Outputs: DIR/*.jsonl|json|log, checkpoints/ttl_rlpo_{f32,bf16}/metrics.jsonl, docs/time_to_learn.png.
set -euo pipefail
cd "$(dirname "$0")/.."

learn=0 step=0 steps=30 bench_steps=3 trl_bf16=0 rlpo_bf16=1 out=bench_out threads=0
[ $# -eq 0 ] && learn=1
while [ $# -gt 0 ]; do
  case "$1" in
    --learn) learn=1 ;;
    --step) step=1 ;;
    --all) learn=1 step=1 ;;
    --steps) steps="$2"; shift ;;
    --bench-steps) bench_steps="$2"; shift ;;
    --trl-bf16) trl_bf16=1 ;;
    --no-rlpo-bf16) rlpo_bf16=0 ;;
    --out) out="$2"; shift ;;
    --threads) threads="$2"; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$learn" = 1 ] || [ "$step" = 1 ] || learn=1

PY=.venv/bin/python
RLPO=target/release/rlpo
MODEL=.cache/models/SmolLM2-135M-Instruct
mkdir -p "$out"

[ -x "$PY" ] || { echo "no $PY: run scripts/setup.sh" >&2; exit 1; }
[ -d "$MODEL" ] || { echo "no $MODEL: run scripts/setup.sh" >&2; exit 1; }
"$PY" -c "import trl, matplotlib" 2>/dev/null || {
  echo "TRL/matplotlib missing: .venv/bin/pip install -r scripts/requirements-bench.txt -c scripts/requirements.txt" >&2
  exit 1
}

note() { echo; echo "== $* ($(date -u '+%F %T') UTC, load: $(cut -d' ' -f1-3 /proc/loadavg))"; }

machine() {
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
  echo "software: $("$PY" -c 'import torch, transformers, trl; print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")')"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
}
machine | tee "$out/machine.txt"

rlpo_run() {  # name, extra --set args...
  local name="$1"; shift
  [ -x "$RLPO" ] || { echo "no $RLPO: cargo build --release" >&2; exit 1; }
  # a fresh run every time: --resume never refuses a run directory that has checkpoints
  rm -rf "checkpoints/$name"
  note "rlpo train ($name)"
  "$RLPO" train --resume never --set "run.name=$name" --set metrics.console=false \
    --set "trainer.total_steps=$steps" --set "run.threads=$threads" "$@" 2>&1 | tee "$out/$name.log"
}

if [ "$learn" = 1 ]; then
  rlpo_run ttl_rlpo_f32
  [ "$rlpo_bf16" = 1 ] && rlpo_run ttl_rlpo_bf16 --set model.dtype=bf16

  note "TRL GRPOTrainer fp32"
  "$PY" scripts/trl_quickstart.py --steps "$steps" --threads "$threads" --out "$out/trl_quickstart_fp32.jsonl" 2>&1 \
    | grep --line-buffered -v -e Warning -e 'warnings.warn' | tee "$out/trl_quickstart_fp32.log"
  if [ "$trl_bf16" = 1 ]; then
    note "TRL GRPOTrainer bf16 (mixed precision)"
    "$PY" scripts/trl_quickstart.py --steps "$steps" --threads "$threads" --bf16 --out "$out/trl_quickstart_bf16.jsonl" 2>&1 \
      | grep --line-buffered -v -e Warning -e 'warnings.warn' | tee "$out/trl_quickstart_bf16.log"
  fi

  note "time to learn"
  args=(--rlpo checkpoints/ttl_rlpo_f32/metrics.jsonl=rlpo-fp32)
  [ "$rlpo_bf16" = 1 ] && args+=(--rlpo checkpoints/ttl_rlpo_bf16/metrics.jsonl=rlpo-bf16)
  args+=(--trl "$out/trl_quickstart_fp32.jsonl=trl-fp32")
  [ "$trl_bf16" = 1 ] && args+=(--trl "$out/trl_quickstart_bf16.jsonl=trl-bf16")
  "$PY" scripts/plot_time_to_learn.py "${args[@]}" --out docs/time_to_learn.png | tee "$out/time_to_learn.txt"
fi

if [ "$step" = 1 ]; then
  # lora16: LoRA rank 16 (alpha 32) on every projection, fp32 base, on both sides (TRL via PEFT).
  for dt in fp32 bf16 lora16; do
    note "TRL step benchmark $dt"
    flag=(); [ "$dt" = bf16 ] && flag=(--bf16); [ "$dt" = lora16 ] && flag=(--lora-rank 16)
    # One failing configuration (e.g. a TRL/PEFT incompatibility) must not cost the others.
    if ! "$PY" scripts/trl_bench_step.py --steps "$bench_steps" --threads "$threads" "${flag[@]}" --out "$out/trl_bench_step_$dt.json" 2>&1 \
      | grep --line-buffered -v -e Warning -e 'warnings.warn' | tee "$out/trl_bench_step_$dt.log"; then
      echo "TRL step benchmark $dt FAILED (log: $out/trl_bench_step_$dt.log)" >&2
    fi
  done
  if [ -x "$RLPO" ] && "$RLPO" bench step --help >/dev/null 2>&1; then
    for dt in f32 bf16 lora16; do
      note "rlpo bench step $dt"
      flag=(--dtype "$dt"); [ "$dt" = lora16 ] && flag=(--dtype f32 --lora-rank 16)
      if ! "$RLPO" bench step --model "$MODEL" "${flag[@]}" --steps "$bench_steps" --threads "$threads" \
        --out "$out/rlpo_bench_step_$dt.jsonl" 2>&1 | tee "$out/rlpo_bench_step_$dt.log"; then
        echo "rlpo bench step $dt FAILED (log: $out/rlpo_bench_step_$dt.log)" >&2
      fi
    done
    note "step time ratios (TRL median / rlpo mean; the issue-15 goal is >= 3 for fp32 and bf16)"
    "$PY" - "$out" <<'PYEOF'
import json, sys, os
out = sys.argv[1]
for trl_name, rlpo_name in [("fp32", "f32"), ("bf16", "bf16"), ("lora16", "lora16")]:
    tp, rp = f"{out}/trl_bench_step_{trl_name}.json", f"{out}/rlpo_bench_step_{rlpo_name}.jsonl"
    if not (os.path.exists(tp) and os.path.exists(rp)):
        print(f"{trl_name:7} missing {tp if not os.path.exists(tp) else rp}")
        continue
    trl = json.load(open(tp))["step_s"]["median"]
    rows = [json.loads(l)["metrics"] for l in open(rp) if l.strip()]
    rl = sum(r["timing/step_s"] for r in rows) / len(rows)
    upd = sum(r.get("timing/update_s", 0.0) for r in rows) / len(rows)
    trl_upd = json.load(open(tp))["stages"].get("loss_fwd_bwd_s", {}) or {}
    print(f"{trl_name:7} TRL {trl:7.2f} s  rlpo {rl:7.2f} s (update {upd:.2f} s)  ratio {trl / rl:5.2f}x"
          + (f"  [TRL loss fwd+bwd {trl_upd['median']:.2f} s]" if trl_upd else ""))
PYEOF
  else
    note "rlpo bench step"
    echo "SKIPPED: '$RLPO bench step' does not exist in this build yet (only the TRL side ran)." \
      | tee "$out/rlpo_bench_step_SKIPPED.txt"
  fi
fi
echo; echo "outputs in $out/"
