#!/usr/bin/env bash
# Put `rlpo` on PATH: build the release binary (unless --no-build) and link it into a bin
# directory (default ~/.local/bin).
#
#   scripts/install.sh                      # cargo build --release, then ~/.local/bin/rlpo
#   scripts/install.sh --prefix /usr/local/bin
#   scripts/install.sh --binary target/debug/rlpo --no-build --prefix DIR   # (what the tests do)
#
# Why a symlink and not `cargo install` or a copy: the binary finds LibTorch through an rpath
# relative to itself ($ORIGIN/../../.venv/torch/lib, see .cargo/config.toml). The dynamic loader
# resolves $ORIGIN through symlinks, so the link keeps finding the venv's LibTorch, and it follows
# every later `cargo build --release`. A copied binary (`cargo install`) would look for LibTorch
# next to the copy and fail to start. The repository must therefore stay where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PREFIX="$HOME/.local/bin"
BINARY="$ROOT/target/release/rlpo"
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX="$2"; shift 2 ;;
    --binary) BINARY="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$BINARY" in /*) ;; *) BINARY="$ROOT/$BINARY" ;; esac

if [ "$BUILD" = 1 ]; then
  echo "[install] cargo build --release --bin rlpo"
  cargo build --release --bin rlpo
fi
[ -x "$BINARY" ] || { echo "install.sh: $BINARY is not an executable (build it, or drop --no-build)" >&2; exit 1; }
mkdir -p "$PREFIX"
ln -sfn "$BINARY" "$PREFIX/rlpo"
# The installed command must start from anywhere (LibTorch found through the link).
if ! (cd / && "$PREFIX/rlpo" --version > /dev/null); then
  echo "install.sh: $PREFIX/rlpo does not start (is .venv set up? run scripts/setup.sh)" >&2
  exit 1
fi
echo "[install] $PREFIX/rlpo -> $BINARY ($("$PREFIX/rlpo" --version))"
case ":$PATH:" in
  *":$PREFIX:"*) echo "[install] $PREFIX is on PATH: run \`rlpo --help\`" ;;
  *) echo "[install] add it to PATH, e.g. in ~/.bashrc: export PATH=\"$PREFIX:\$PATH\"" ;;
esac
