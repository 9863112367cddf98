#!/usr/bin/env bash
# CI: the Comfy Registry's own checks. Installs comfy-cli (PyPI) into a venv of its own, runs
# `comfy node validate` (fails here on any warning it prints, not only on its errors) and `comfy node pack`,
# the archive `comfy node publish` uploads (git-tracked files minus .comfyignore).
#
#   eval "$(bash scripts/registry_check.sh)"   # prints `export SAFECUT_NODE_ZIP=…`; tests/test_registry.py reads it
#
# Everything it installs or says goes to stderr; stdout is only the export line.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${SAFECUT_CI_WORK:-${TMPDIR:-/tmp}/safecut-ci}
VENV=$WORK/comfy-cli
COMFY_CLI_VERSION=1.23.0
log() { echo "[registry_check $(date +%H:%M:%S)] $*" >&2; }

mkdir -p "$WORK"
if [ ! -x "$VENV/bin/comfy" ]; then
  log "comfy-cli $COMFY_CLI_VERSION and ruff (its security check) into $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q "comfy-cli==$COMFY_CLI_VERSION" ruff 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
fi
comfy() { "$VENV/bin/comfy" --skip-prompt --no-json "$@" < /dev/null; }

log "comfy node validate"
out=$(comfy node validate 2>&1) || { echo "$out" >&2; log "comfy node validate failed"; exit 1; }
echo "$out" >&2
if grep -qiE 'warning|error' <<<"$out"; then log "comfy node validate printed warnings: fix them"; exit 1; fi

log "comfy node pack"
rm -f node.zip
out=$(comfy node pack 2>&1) || { echo "$out" >&2; log "comfy node pack failed"; exit 1; }
echo "$out" >&2
mv node.zip "$WORK/node.zip"
log "archive: $WORK/node.zip ($(du -h "$WORK/node.zip" | cut -f1))"
echo "export SAFECUT_NODE_ZIP='$WORK/node.zip'"
