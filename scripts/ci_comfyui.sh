#!/usr/bin/env bash
# CI, part 2: real ComfyUIs for the integration, worker-handler and browser tests.
#
#   bash scripts/ci_comfyui.sh            # prints the environment for the test run; .ci/run sources its output
#
# Sets up ComfyUI 0.3.64 (the oldest supported: requires-comfyui) and ComfyUI 0.33.0 (the newest whose source is
# reachable here) from ${SAFECUT_SHARED:-<repo>/../shared}, plus worker-comfyui 5.8.5 (read-only test fixtures,
# never needed by the product). ComfyUI writes into its own tree, so each is copied to $SAFECUT_CI_WORK
# (default ${TMPDIR:-/tmp}/safecut-ci)/ComfyUI-<version> and gets its own venv there. SafeCut is installed into
# each venv the way ComfyUI-Manager does it (requirements.txt, then install.py), plus llama-cpp-python built like
# scripts/setup.sh (scripts/llama_wheel.sh: the second build is free). Then Debian chromium and npm
# playwright-core for the browser, and the newest frontend on PyPI for a second browser run.
# Everything this script installs goes to stderr; stdout is only the `export` lines. The tests run once per
# ComfyUI in COMFYUI_DIRS (tests/comfyui_harness.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=$(cd "${SAFECUT_SHARED:-$ROOT/../shared}" && pwd)
WORK=${SAFECUT_CI_WORK:-${TMPDIR:-/tmp}/safecut-ci}
LLAMA_VERSION=0.3.36            # keep in step with scripts/setup.sh
PLAYWRIGHT_VERSION=1.65.1      # drives Debian's chromium 150
log() { echo "[ci_comfyui $(date +%H:%M:%S)] $*" >&2; }
# pip's notes about the machine's extra local indexes ("WARNING: Location ... is ignored") are noise here
pip() { "$PY" -m pip "$@" 2>&1 | { grep -v '^WARNING: Location' || true; } >&2; }

# comfyui SHARED_FOLDER TORCH_PINS...: copies one ComfyUI to $WORK/ComfyUI-<version>, gives it a venv with the
# torch pins, its own requirements and SafeCut; appends the folder to COMFYUI_DIRS.
COMFYUI_DIRS=""
comfyui() {
  local src=$SHARED/$1; shift
  [ -f "$src/main.py" ] || { echo "no ComfyUI at $src (set SAFECUT_SHARED)" >&2; exit 1; }
  local version; version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$src/comfyui_version.py")
  local comfy=$WORK/ComfyUI-$version
  PY=$comfy/.venv/bin/python
  log "ComfyUI $version: copying it to $comfy"
  mkdir -p "$comfy"
  cp -r --no-preserve=mode "$src/." "$comfy/"
  if [ ! -x "$PY" ]; then "${PYTHON:-python3}" -m venv "$comfy/.venv"; fi
  log "ComfyUI $version's Python: $*, its requirements, requests"
  pip install -q --upgrade pip
  pip install -q "$@"
  # its requirements minus the torch family (pinned above, so nothing pulls another build), plus requests
  grep -v -E '^(torch|torchvision|torchaudio)([^a-z_-]|$)' "$comfy/requirements.txt" > "$comfy/.ci-requirements.txt"
  pip install -q -r "$comfy/.ci-requirements.txt" requests
  log "ComfyUI $version: SafeCut the ComfyUI-Manager way (requirements.txt, then install.py), llama-cpp-python $LLAMA_VERSION"
  pip install -q -r requirements.txt
  "$PY" install.py >&2
  # built for this CPU like scripts/setup.sh: its cached wheel after the first time
  bash scripts/llama_wheel.sh "$PY" "$LLAMA_VERSION" >&2
  log "ComfyUI $version ready: $("$PY" -c 'import torch, llama_cpp, onnxruntime; import importlib.metadata as m; print("torch", torch.__version__, "| frontend", m.version("comfyui-frontend-package"), "| llama-cpp-python", llama_cpp.__version__, "| onnxruntime", onnxruntime.__version__)')"
  COMFYUI_DIRS=${COMFYUI_DIRS:+$COMFYUI_DIRS:}$comfy
}

mkdir -p "$WORK"
# the pairs that import cleanly here (../shared/README.md). 0.3.64: torchaudio is optional (audio nodes only);
# 0.33 imports torchaudio at start-up and the index has none for torch 2.14, hence the older trio.
comfyui comfyui "torch==2.14.1" "torchvision==0.29.1"
comfyui comfyui-0.33 "torch==2.10.0" "torchvision==0.25.0" "torchaudio==2.10.0"

# The newest frontend on PyPI as well, in a folder of its own: the browser tests run once more against it
# (COMFYUI_FRONTEND_ROOT -> --front-end-root); each ComfyUI's own pinned frontend stays installed.
log "newest comfyui-frontend-package (for a second browser run)"
rm -rf "$WORK/frontend-latest"
pip install -q --no-deps --target "$WORK/frontend-latest" -U comfyui-frontend-package
log "newest frontend: $(cd "$WORK/frontend-latest" && ls -d comfyui_frontend_package-*.dist-info)"

CHROMIUM=${CHROMIUM:-$(command -v chromium || true)}
if [ -z "$CHROMIUM" ]; then
  log "chromium (Debian)"
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
  CHROMIUM=$(command -v chromium)
fi
if [ ! -f "$WORK/pw/node_modules/playwright-core/package.json" ]; then
  log "playwright-core $PLAYWRIGHT_VERSION (npm; drives the system chromium, downloads no browser)"
  mkdir -p "$WORK/pw"
  npm install --silent --no-audit --no-fund --prefix "$WORK/pw" "playwright-core@$PLAYWRIGHT_VERSION" >&2
fi

# COMFYUI_DIRS: the tests run once per folder, each with its own .venv (tests/comfyui_harness.py)
cat <<ENV
export COMFYUI_DIRS='$COMFYUI_DIRS'
unset COMFYUI_DIR COMFYUI_PYTHON
export WORKER_COMFYUI_DIR='$SHARED/worker-comfyui'
export CHROMIUM='$CHROMIUM'
export PLAYWRIGHT_CORE_DIR='$WORK/pw/node_modules'
export SAFECUT_FRONTEND_LATEST='$WORK/frontend-latest/comfyui_frontend_package/static'
ENV
