"""ComfyUI-Manager install hook (runs once at install time, never at import or run time).

requirements.txt cannot say "install onnxruntime only if no onnxruntime flavour is present", and a
plain `onnxruntime` line overwrites onnxruntime-gpu (the most common complaint about ONNX node packs).
This script installs the CPU build only when no flavour is installed, and NudeNet without its
dependencies (SafeCut uses only its bundled detector weights: no opencv needed).
"""
from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys

ORT_FLAVOURS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                "onnxruntime-silicon", "onnxruntime-rocm", "onnxruntime-qnn")


def installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def pip(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])


def main() -> None:
    present = [d for d in ORT_FLAVOURS if installed(d)]
    if present:
        print(f"SafeCut: keeping the installed ONNX Runtime ({', '.join(present)})")
    else:
        pip("onnxruntime>=1.18")
    if not installed("nudenet"):
        pip("--no-deps", "nudenet>=3.4.2")
    if not installed("llama-cpp-python"):
        print("SafeCut: llama-cpp-python is not installed; the Llama Safety Classifier needs it. "
              "See the README section 'GPU install' for prebuilt CPU/CUDA wheels.")


if __name__ == "__main__":
    main()
