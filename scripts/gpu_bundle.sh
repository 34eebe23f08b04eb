#!/usr/bin/env bash
# Build everything scripts/gpu_check.sh needs on a GPU machine that has no Rust, into gpu_bundle/
# (git-ignored; the device tool carries it: carry ["gpu_bundle"], 64 MiB at most):
#
#   gpu_bundle/rlpo                       release `rlpo` with NCCL (`--features nccl`), debug info stripped
#   gpu_bundle/rlpo_dist_cuda             `cargo test -p rlpo-dist --features cuda-tests --test cuda` (NCCL)
#   gpu_bundle/tests/rlpo_model_cuda      `cargo test -p rlpo-model --features cuda-tests --test cuda`
#   gpu_bundle/tests/rlpo_rollout_cuda    the same for rlpo-rollout
#   gpu_bundle/tokenizer/                 the tiny fixture tokenizer (written by scripts/setup.sh)
#   gpu_bundle/MANIFEST                   commit, build time, sizes and sha256 of the above
#
# The binaries find LibTorch through LD_LIBRARY_PATH, which gpu_check.sh sets to the machine's torch.
# Honours CARGO_TARGET_DIR. Run from anywhere: scripts/gpu_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUTB="$ROOT/gpu_bundle"
LIMIT=$((64 * 1024 * 1024))
say() { printf '\033[1m[gpu_bundle]\033[0m %s\n' "$*"; }

[ -f "$ROOT/.venv/torch/lib/libtorch_cuda.so" ] || {
  echo "gpu_bundle: .venv/torch/lib/libtorch_cuda.so missing: the bundle must link a CUDA LibTorch (run scripts/setup.sh)" >&2
  exit 1
}
[ -f "$ROOT/.cache/fixtures/tokenizer/tokenizer.json" ] || {
  echo "gpu_bundle: .cache/fixtures/tokenizer missing (run scripts/setup.sh)" >&2
  exit 1
}

say "building rlpo (release)"
cargo build --release -p rlpo-cli --bin rlpo --features nccl
# Test executables: cargo prints their paths as JSON with --no-run.
test_exe() {
  cargo test --release -p "$1" --features cuda-tests --test cuda --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])' | tail -n 1
}
say "building the CUDA test binaries (rlpo-model, rlpo-rollout)"
MODEL_T=$(test_exe rlpo-model)
ROLLOUT_T=$(test_exe rlpo-rollout)
DIST_T=$(test_exe rlpo-dist)
[ -x "$MODEL_T" ] && [ -x "$ROLLOUT_T" ] && [ -x "$DIST_T" ] || { echo "gpu_bundle: could not build the cuda test binaries" >&2; exit 1; }

rm -rf "$OUTB"
mkdir -p "$OUTB/tests" "$OUTB/tokenizer"
copy_stripped() { strip --strip-debug -o "$2" "$1" 2>/dev/null || cp "$1" "$2"; chmod +x "$2"; }
copy_stripped "$TARGET/release/rlpo" "$OUTB/rlpo"
copy_stripped "$MODEL_T" "$OUTB/tests/rlpo_model_cuda"
copy_stripped "$ROLLOUT_T" "$OUTB/tests/rlpo_rollout_cuda"
# Not under tests/: gpu_check.sh runs it in a step of its own (it starts one process per GPU).
copy_stripped "$DIST_T" "$OUTB/rlpo_dist_cuda"
cp "$ROOT"/.cache/fixtures/tokenizer/* "$OUTB/tokenizer/"

# The binary must keep libtorch_cuda (see crates/rlpo-cli/build.rs), or the GPU stays invisible.
for b in "$OUTB/rlpo" "$OUTB/rlpo_dist_cuda" "$OUTB"/tests/*; do
  readelf -d "$b" | grep -q 'libtorch_cuda.so' || { echo "gpu_bundle: $b does not link libtorch_cuda.so" >&2; exit 1; }
done
{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates || echo ' (+ uncommitted changes in crates/)')"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), torch $(grep -m1 '^__version__' "$ROOT/.venv/torch/version.py" | cut -d"'" -f2)"
  (cd "$OUTB" && find . -type f ! -name MANIFEST -printf '%P\n' | sort | while read -r f; do
     printf '%10d  %s  %s\n' "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"; done)
} > "$OUTB/MANIFEST"
size=$(du -sb "$OUTB" | cut -f1)
cat "$OUTB/MANIFEST"
if [ "$size" -gt "$LIMIT" ]; then
  echo "gpu_bundle: $size bytes > 64 MiB carry limit" >&2
  exit 1
fi
say "gpu_bundle/ is $((size / 1024 / 1024)) MiB (limit 64). On the GPU machine: bash scripts/gpu_check.sh (carry [\"gpu_bundle\"])"
