#!/usr/bin/env bash
# Installs llama-cpp-python into the Python given as $1, compiled for THIS machine's CPU (safecut.runtime.cpu decides:
# the portable AVX2 set, plus AVX-512 and each of its extensions the CPU has; never GGML_NATIVE, which crashed
# on an AMX Xeon). The wheel is kept in ~/.cache/safecut/wheels/<version>-<isa>/: pip's own cache is keyed by the
# source archive only, and would hand an AVX-512 build to an AVX2 machine (SIGILL at the first call).
#   bash scripts/llama_wheel.sh .venv/bin/python [version]
set -euo pipefail
PY=$1
VERSION=${2:-0.3.36}
cd "$(dirname "$0")/.."
"$PY" -c "import llama_cpp" 2>/dev/null && exit 0
ARGS=${CMAKE_ARGS:-$(python3 -m safecut.runtime.cpu --llama-cmake-args)}
ISA=$(python3 -m safecut.runtime.cpu --llama-isa)
[ -n "${CMAKE_ARGS:-}" ] && ISA=custom-$(printf '%s' "$CMAKE_ARGS" | md5sum | cut -c1-8)
DIR=${SAFECUT_WHEEL_CACHE:-$HOME/.cache/safecut/wheels}/llama-cpp-python-$VERSION-$ISA
if ! ls "$DIR"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "compiling llama-cpp-python $VERSION for this CPU ($ISA; CMAKE_ARGS=\"$ARGS\"), ~6 min once" >&2
  mkdir -p "$DIR"
  SRC="llama-cpp-python==$VERSION"
  SDIST=$(ls .cache/sdist/llama_cpp_python-"$VERSION".tar.gz 2>/dev/null || true)   # already fetched for the vocab
  [ -n "$SDIST" ] && SRC=$SDIST
  CMAKE_ARGS="$ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$PY" -m pip wheel -q --no-deps --no-cache-dir --no-binary=llama-cpp-python -w "$DIR" "$SRC"
fi
"$PY" -m pip install -q "$DIR"/llama_cpp_python-*.whl
