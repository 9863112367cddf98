"""ComfyUI-Manager install hook (runs once at install time, never at import or run time).

requirements.txt cannot say "install onnxruntime only if no onnxruntime flavour is present", and a
plain `onnxruntime` line overwrites onnxruntime-gpu (the most common complaint about ONNX node packs).
This script installs the CPU build only when no flavour is installed, and NudeNet without its
dependencies (SafeCut uses only its bundled detector weights: no opencv needed).

OpenVINO (BEN2's faster CPU runtime: ~1.2x ONNX Runtime on AVX2, bf16 on AMX; safecut/runtime/sessions.py) is added on a CPU-side install
only: never where a GPU ONNX Runtime or a CUDA/ROCm torch is installed (a GPU install is not disturbed).
SAFECUT_OPENVINO=0 skips it, SAFECUT_OPENVINO=1 installs it anyway. A failure there is reported and SafeCut runs
ONNX Runtime.

llama-cpp-python (the Llama Safety Classifier) has no wheel on PyPI, only an 80 MB source archive that
compiles for minutes, so it is installed only when asked: SAFECUT_BUILD_LLAMA=1. On a CPU with AVX-512 it is
compiled for this machine's AVX-512 extensions (safecut/runtime/cpu.py: ~1.5x faster than the portable build; never
GGML_NATIVE, which crashed on an AMX Xeon); elsewhere the prebuilt CPU wheel from llama-cpp-python's own index
comes first, then a portable build. A failure there is reported with the manual command and never fails the
rest of the install (every other node works without it).
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safecut.runtime import cpu  # noqa: E402  (standard library only: safe before any dependency is installed)

ORT_FLAVOURS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino",
                "onnxruntime-silicon", "onnxruntime-rocm", "onnxruntime-qnn")
# Kept at their installed version by every llama-cpp-python install (ComfyUI owns torch; an ORT flavour
# must never be swapped; numpy is shared with everything).
PROTECTED = ("torch", "torchvision", "torchaudio", "numpy") + ORT_FLAVOURS
LLAMA_VERSION = "0.3.36"   # the version SafeCut is tested with (deploy/Dockerfile.cpu builds the same)
LLAMA_CPU_INDEX = "https://abetlen.github.io/llama-cpp-python/whl/cpu"
# Portable: no -march=native (the build runs on any x86-64/arm64 of its family), no multimodal library.
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
OPENVINO = "openvino>=2025.1"
GPU_ORT = ("onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-rocm")
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


def torch_is_gpu() -> bool:
    """A CUDA or ROCm torch: its version module names a CUDA/HIP version (read, not imported: no torch start-up)."""
    try:
        text = md.distribution("torch").locate_file("torch/version.py").read_text()
    except Exception:
        return False
    return re.search(r"^(cuda|hip)(: Optional\[str\])? = ['\"]", text, re.M) is not None


def want_openvino() -> bool:
    choice = os.environ.get("SAFECUT_OPENVINO", "").strip().lower()
    if choice in ("0", "false", "no", "off"):
        return False
    if choice in ("1", "true", "yes", "on"):
        return True
    return not any(installed(d) for d in GPU_ORT) and not torch_is_gpu()


def install_openvino() -> None:
    constraints = protect_constraints()
    try:
        say(f"installing OpenVINO, the fast CPU runtime for BEN2 on this {cpu.cpu_class()} CPU ({OPENVINO}) ...")
        pip("-c", constraints, OPENVINO)
    except (subprocess.CalledProcessError, OSError):
        say("OpenVINO could not be installed (see the pip output above); BEN2 and NudeNet run on ONNX Runtime.")
    finally:
        os.unlink(constraints)


def install_llama() -> bool:
    """On an AVX-512 CPU: a build for its extensions first. Else the prebuilt CPU wheel if the index has one for
    this platform, then a portable source build."""
    constraints = protect_constraints()
    native_args = " ".join(cpu.llama_cmake_args())
    try:
        if native_args != LLAMA_CMAKE_ARGS and has_compiler() and build_llama(constraints, native_args):
            return True
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
        return build_llama(constraints, LLAMA_CMAKE_ARGS)
    finally:
        os.unlink(constraints)


def build_llama(constraints: str, cmake_args: str) -> bool:
    say(f"compiling llama-cpp-python {LLAMA_VERSION} for this {cpu.cpu_class()} CPU (CMAKE_ARGS=\"{cmake_args}\"). "
        f"This takes several minutes (about 6 min on 2 idle cores); compiler steps are shown as they run.")
    env = dict(os.environ, CMAKE_ARGS=cmake_args)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
    try:
        # -v: pip otherwise shows one spinner line for the whole build; --no-cache-dir: pip's wheel cache is keyed
        # by the source archive only and would hand this CPU's build to a different CPU later
        pip("-v", "--no-cache-dir", "-c", constraints, f"llama-cpp-python=={LLAMA_VERSION}", env=env)
        return True
    except (subprocess.CalledProcessError, OSError):
        say(f"the build with CMAKE_ARGS=\"{cmake_args}\" failed.")
        return False


def main() -> None:
    present = [d for d in ORT_FLAVOURS if installed(d)]
    if present:
        say(f"keeping the installed ONNX Runtime ({', '.join(present)})")
    else:
        pip("onnxruntime>=1.18")
    if not installed("nudenet"):
        pip("--no-deps", "nudenet>=3.4.2")
    if not installed("openvino") and want_openvino():
        install_openvino()
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
