"""ComfyUI-Manager install hook (runs once at install time, never at import or run time).

requirements.txt cannot say "install onnxruntime only if no onnxruntime flavour is present", and a
plain `onnxruntime` line overwrites onnxruntime-gpu (the most common complaint about ONNX node packs).
This script installs the CPU build only when no flavour is installed, and NudeNet without its
dependencies (SafeCut uses only its bundled detector weights: no opencv needed).

llama-cpp-python (the Llama Safety Classifier) has no wheel on PyPI, only an 80 MB source archive that
compiles for minutes, so it is installed only when asked: SAFECUT_BUILD_LLAMA=1 tries the prebuilt CPU
wheel from llama-cpp-python's own index, then compiles a portable CPU build. A failure there is reported
with the manual command and never fails the rest of the install (every other node works without it).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import shutil
import subprocess
import sys
import tempfile

ORT_FLAVOURS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                "onnxruntime-silicon", "onnxruntime-rocm", "onnxruntime-qnn")
# Kept at their installed version by every llama-cpp-python install (ComfyUI owns torch; an ORT flavour
# must never be swapped; numpy is shared with everything).
PROTECTED = ("torch", "torchvision", "torchaudio", "numpy") + ORT_FLAVOURS
LLAMA_VERSION = "0.3.36"   # the version SafeCut is tested with (deploy/Dockerfile.cpu builds the same)
LLAMA_CPU_INDEX = "https://abetlen.github.io/llama-cpp-python/whl/cpu"
# Portable: no -march=native (the build runs on any x86-64/arm64 of its family), no multimodal library.
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
WHEEL_CMD = f"pip install --only-binary=llama-cpp-python --extra-index-url {LLAMA_CPU_INDEX} llama-cpp-python"
BUILD_CMD = f'CMAKE_ARGS="{LLAMA_CMAKE_ARGS}" pip install llama-cpp-python=={LLAMA_VERSION}'


def installed(dist: str) -> bool:
    return version(dist) is not None


def version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def pip(*args: str, env: dict | None = None) -> None:
    """pip in this interpreter; its output streams straight to the console (ComfyUI-Manager's log)."""
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args], env=env)


def say(text: str) -> None:
    print(f"SafeCut: {text}", flush=True)


def protect_constraints() -> str:
    """A pip constraints file pinning PROTECTED packages to their installed versions."""
    lines = [f"{d}=={v}\n" for d in PROTECTED if (v := version(d))]
    fd, path = tempfile.mkstemp(prefix="safecut-constraints-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.writelines(lines)
    return path


def has_compiler() -> bool:
    if os.name == "nt":  # MSVC is found by CMake itself, not through PATH
        return True
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


def install_llama() -> bool:
    """Prebuilt CPU wheel if the index has one for this platform, else a portable source build."""
    constraints = protect_constraints()
    try:
        say(f"installing llama-cpp-python: trying a prebuilt CPU wheel from {LLAMA_CPU_INDEX} ...")
        try:
            pip("--only-binary=llama-cpp-python", "--extra-index-url", LLAMA_CPU_INDEX, "-c", constraints,
                "llama-cpp-python")
            return True
        except (subprocess.CalledProcessError, OSError):
            say("no prebuilt CPU wheel for this platform/Python (or the index is unreachable); compiling instead.")
        if not has_compiler():
            say("no C++ compiler found (c++, g++ or clang++); install one (Debian/Ubuntu: "
                "'apt install build-essential') and run this script again.")
            return False
        say(f"compiling llama-cpp-python {LLAMA_VERSION} for the CPU (CMAKE_ARGS=\"{LLAMA_CMAKE_ARGS}\"). "
            f"This takes several minutes (about 6 min on 2 idle cores); compiler steps are shown as they run.")
        env = dict(os.environ, CMAKE_ARGS=LLAMA_CMAKE_ARGS)
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        try:
            # -v: pip otherwise shows one spinner line for the whole build
            pip("-v", "-c", constraints, f"llama-cpp-python=={LLAMA_VERSION}", env=env)  # wheel cached for a rerun
            return True
        except (subprocess.CalledProcessError, OSError):
            return False
    finally:
        os.unlink(constraints)


def main() -> None:
    present = [d for d in ORT_FLAVOURS if installed(d)]
    if present:
        say(f"keeping the installed ONNX Runtime ({', '.join(present)})")
    else:
        pip("onnxruntime>=1.18")
    if not installed("nudenet"):
        pip("--no-deps", "nudenet>=3.4.2")
    if installed("llama-cpp-python"):
        return
    if os.environ.get("SAFECUT_BUILD_LLAMA", "").strip().lower() not in ("1", "true", "yes", "on"):
        say("llama-cpp-python is not installed; the Llama Safety Classifier needs it (every other node works "
            "without it). Run this script again with SAFECUT_BUILD_LLAMA=1 to install it (prebuilt CPU wheel, "
            f"else a CPU build of several minutes), or install it yourself: '{WHEEL_CMD}' (prebuilt), "
            f"'{BUILD_CMD}' (compile). README 'Install in ComfyUI' has CUDA wheels too.")
        return
    if install_llama():
        say("llama-cpp-python installed; restart ComfyUI.")
    else:
        say("llama-cpp-python could NOT be installed (see the pip output above). The rest of SafeCut is "
            "installed and works; the Llama Safety Classifier will say it is missing. Install it by hand with "
            f"ComfyUI's Python: {BUILD_CMD}")


if __name__ == "__main__":
    main()
