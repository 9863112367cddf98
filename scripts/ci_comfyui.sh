#!/usr/bin/env bash
# CI, part 2: a real ComfyUI for the integration, worker-handler and browser tests.
#
#   bash scripts/ci_comfyui.sh            # prints the environment for the test run; .ci/run sources its output
#
# Uses ComfyUI 0.3.64 and worker-comfyui 5.8.5 from ${SAFECUT_SHARED:-<repo>/../shared} (read-only test fixtures,
# never needed by the product). ComfyUI writes into its own tree, so it is copied to $SAFECUT_CI_WORK
# (default ${TMPDIR:-/tmp}/safecut-ci) and gets its own venv there. SafeCut is installed into that venv the way
# ComfyUI-Manager does it (requirements.txt, then install.py), plus llama-cpp-python built like scripts/setup.sh
# (scripts/llama_wheel.sh: the second build is free). Then Debian chromium and npm playwright-core for the browser.
# Everything this script installs goes to stderr; stdout is only the `export` lines.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=$(cd "${SAFECUT_SHARED:-$ROOT/../shared}" && pwd)
WORK=${SAFECUT_CI_WORK:-${TMPDIR:-/tmp}/safecut-ci}
COMFY=$WORK/ComfyUI
PY=$COMFY/.venv/bin/python
LLAMA_VERSION=0.3.36            # keep in step with scripts/setup.sh
PLAYWRIGHT_VERSION=1.65.1      # drives Debian's chromium 150
log() { echo "[ci_comfyui $(date +%H:%M:%S)] $*" >&2; }
# pip's notes about the machine's extra local indexes ("WARNING: Location ... is ignored") are noise here
pip() { "$PY" -m pip "$@" 2>&1 | { grep -v '^WARNING: Location' || true; } >&2; }

[ -f "$SHARED/comfyui/main.py" ] || { echo "no ComfyUI at $SHARED/comfyui (set SAFECUT_SHARED)" >&2; exit 1; }
mkdir -p "$WORK"
log "copying ComfyUI to $COMFY"
mkdir -p "$COMFY"
cp -r --no-preserve=mode "$SHARED/comfyui/." "$COMFY/"

if [ ! -x "$PY" ]; then "${PYTHON:-python3}" -m venv "$COMFY/.venv"; fi
log "ComfyUI's Python: torch, its requirements, requests"
pip install -q --upgrade pip
# the pair that imports cleanly here (../shared/README.md); torchaudio is optional (audio nodes only)
pip install -q "torch==2.14.1" "torchvision==0.29.1"
grep -v -E '^(torch|torchvision|torchaudio)([^a-z_-]|$)' "$COMFY/requirements.txt" > "$WORK/comfyui-requirements.txt"
pip install -q -r "$WORK/comfyui-requirements.txt" requests
# The newest frontend on PyPI as well, in a folder of its own: the browser test runs once more against it
# (COMFYUI_FRONTEND_ROOT -> --front-end-root); ComfyUI's own pinned frontend stays installed.
log "newest comfyui-frontend-package (for a second browser run)"
rm -rf "$WORK/frontend-latest"
pip install -q --no-deps --target "$WORK/frontend-latest" -U comfyui-frontend-package
log "newest frontend: $(cd "$WORK/frontend-latest" && ls -d comfyui_frontend_package-*.dist-info)"

log "SafeCut the ComfyUI-Manager way: requirements.txt, then install.py"
pip install -q -r requirements.txt
"$PY" install.py >&2
log "llama-cpp-python $LLAMA_VERSION, built for this CPU like scripts/setup.sh (its cached wheel after the first time)"
bash scripts/llama_wheel.sh "$PY" "$LLAMA_VERSION" >&2

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
log "ready: $("$PY" -c 'import torch, comfyui_frontend_package as f, llama_cpp, onnxruntime; import importlib.metadata as m; print("torch", torch.__version__, "| frontend", m.version("comfyui-frontend-package"), "| llama-cpp-python", llama_cpp.__version__, "| onnxruntime", onnxruntime.__version__)')"

cat <<ENV
export COMFYUI_DIR='$COMFY'
export COMFYUI_PYTHON='$PY'
export WORKER_COMFYUI_DIR='$SHARED/worker-comfyui'
export CHROMIUM='$CHROMIUM'
export PLAYWRIGHT_CORE_DIR='$WORK/pw/node_modules'
export SAFECUT_FRONTEND_LATEST='$WORK/frontend-latest/comfyui_frontend_package/static'
ENV
