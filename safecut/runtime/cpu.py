"""What this CPU can do, read once, and the numerics each engine runs with on it: the one place for that.

The CPU class decides what ``auto`` runs on CPU (measured; bench section ``cpu`` and README "Which CPU"):

* ``AMX`` (Xeon Sapphire Rapids and later: amx_bf16): BEN2 on OpenVINO bf16 once the quality probe passed on the
  user's weights, Florence-2 in bf16.
* ``AVX-512`` (AVX-512F, with or without AVX512-BF16, no AMX: Zen 4/5, Ice Lake, Cascade Lake): BEN2 on OpenVINO
  int8 with VNNI once its INT8 model is made and passed the quality probe, else OpenVINO f32; f32 everywhere else: bf16 there runs on AVX512-BF16 dot products or is emulated, slower than f32 (measured), and
  OpenVINO's own default would pick it: SafeCut always sends an explicit precision hint.
* ``AVX2``: BEN2 on OpenVINO f32 (measured faster than ONNX Runtime fp32 there), the rest f32.
* ``baseline`` (no AVX2): ONNX Runtime f32.

Pure Python, no imports beyond the standard library: install.py and scripts/setup.sh use it too, before any
dependency exists (``python -m safecut.runtime.cpu --llama-cmake-args``). ``SAFECUT_CPU_FLAGS`` (space-separated
/proc/cpuinfo flags) replaces what the CPU reports, for tests and for checking a choice for another machine.
"""
from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

# /proc/cpuinfo flag names SafeCut decides on
AMX_FLAGS = ("amx_bf16", "amx_tile")
AVX512_CORE = ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")   # what llama.cpp's GGML_AVX512 compiles for


@lru_cache(maxsize=None)
def _read_flags(override: str | None) -> frozenset[str]:
    if override is not None:
        return frozenset(override.split())
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()   # not Linux, or unreadable: treated as baseline (f32 on ONNX Runtime, the safe path)


def flags() -> frozenset[str]:
    return _read_flags(os.environ.get("SAFECUT_CPU_FLAGS"))


def has(*names: str) -> bool:
    f = flags()
    return all(n in f for n in names)


def cpu_class() -> str:
    """'AMX', 'AVX-512', 'AVX2' or 'baseline'."""
    if has("avx512_bf16", *AMX_FLAGS):
        return "AMX"
    if has(*AVX512_CORE):
        return "AVX-512"
    if has("avx2", "fma"):
        return "AVX2"
    return "baseline"


@lru_cache(maxsize=None)
def model_name() -> str:
    """The CPU's model name (part of the OpenVINO probe's cache key: a verdict holds for one CPU model)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe() -> str:
    """e.g. 'AMD EPYC (AVX-512, avx512_bf16, avx512_vnni)' for logs, the bench and the report."""
    extras = [n for n in ("avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "avx_vnni") if has(n)]
    return f"{model_name()} ({', '.join([cpu_class(), *extras])})"


# ---- what auto runs -----------------------------------------------------------------------------
def bf16_fast() -> bool:
    """bf16 matrix work beats f32 only with AMX tiles (measured: OpenVINO BEN2 1.85 vs 6.6 s f32 with AMX; 10.0 vs
    6.6 s with AVX512-BF16 alone; Florence-2 bf16 x2.26 with AMX, ~4x slower than fp32 without AVX512-BF16)."""
    return cpu_class() == "AMX"


def bf16_native() -> bool:
    """The CPU computes bf16 itself (AVX512-BF16 dot products or AMX tiles). Without either, OpenVINO and oneDNN
    emulate bf16 through f32 conversions: ×27 slower than f32 for BEN2 on an Ice Lake Xeon (259.8 vs 9.8 s per
    1024² image, 2026-12-07), ×4 for Florence-2 on an AVX2 EPYC; SafeCut then runs f32 and says so."""
    return has("avx512_bf16") or has("amx_bf16")


# measured cost of emulated bf16, named where a bf16 request is turned into f32 (node, CLI, log, help pages)
BF16_EMULATED_BEN2 = ("×27 slower than f32 where the CPU has no AVX512-BF16/AMX (BEN2 1024²: 259.8 vs 9.8 s per "
                      "image on a 2-core Ice Lake Xeon, 2026-12-07)")


def onnx_cpu_runtime(engine: str) -> tuple[str, str]:
    """(runtime, precision) that ``auto`` uses for an ONNX engine ('ben2', 'nudenet') on CPU: ('openvino', 'bf16'
    | 'f32') or ('onnxruntime', 'f32'). Only the preference: whether OpenVINO is installed and passed its crash
    probe on this machine is decided where the session is made (safecut.runtime.sessions).

    BEN2 (1024² stand-in, fresh process per run, paired A/B): OpenVINO f32 17.5 vs ORT fp32 21.1 s per image on a
    2-core AVX2 EPYC (2026-12-04), 6.6 vs 9.5 s on a 2-core AMX Xeon, where bf16 took 1.85 s. NudeNet 320n: ORT
    49 vs OpenVINO 52 ms per image on the AVX2 EPYC, and 4x faster to load: ORT. NudeNet never runs INT8: through
    NNCF its trained 320n lost an unsafe detection on a test photo in every setting tried (2026-12-07)."""
    cls = cpu_class()
    if engine == "ben2":   # f32: a lower precision only after the quality probe (ben2_lower_precision)
        if cls in ("AMX", "AVX-512", "AVX2"):
            return "openvino", "f32"
    return "onnxruntime", "f32"        # NudeNet everywhere; BEN2 on pre-AVX2 CPUs (not measured there)


def ben2_lower_precision() -> str | None:
    """The precision below f32 that ``auto`` may run BEN2 in on this CPU class, where it measured faster: bf16 on
    AMX (1.85 vs 6.6 s f32 per 1024² image), OpenVINO int8 (NNCF) on AVX-512 with VNNI (5.64 vs 11.90 s, ×2.11,
    2-core Ice Lake Xeon, issue #24's check 2026-12-07). Used only after the quality probe passed on the user's own
    weights (engines.ben2_precision); None: f32."""
    cls = cpu_class()
    if cls == "AMX":
        return "bf16"
    if cls == "AVX-512" and has("avx512_vnni"):
        return "int8"
    return None


def florence_cpu_dtype() -> str:
    return "bf16" if bf16_fast() else "fp32"


# ---- llama.cpp build flags --------------------------------------------------------------------------
_LLAMA_PORTABLE = ["-DGGML_NATIVE=OFF", "-DLLAVA_BUILD=OFF"]   # SSE4.2/AVX/AVX2/FMA/F16C/BMI2 with NATIVE off


def llama_cmake_args() -> list[str]:
    """CMAKE_ARGS for compiling llama-cpp-python on THIS machine: the portable AVX2 set, plus each AVX-512
    extension this CPU really has. Never GGML_NATIVE=ON (it adds AMX_INT8, which segfaulted at the first decode
    on an AMX Xeon) and never an extension the CPU lacks (AVX-VNNI is absent on AVX-512 Zen 4: SIGILL)."""
    args = list(_LLAMA_PORTABLE)
    if cpu_class() in ("AMX", "AVX-512"):
        args.append("-DGGML_AVX512=ON")
        for flag, opt in (("avx512_vnni", "GGML_AVX512_VNNI"), ("avx512vbmi", "GGML_AVX512_VBMI"),
                          ("avx512_bf16", "GGML_AVX512_BF16"), ("avx_vnni", "GGML_AVX_VNNI")):
            if has(flag):
                args.append(f"-D{opt}=ON")
    return args


def llama_isa_tag() -> str:
    """'avx2', or 'avx512' plus each extension compiled in (e.g. 'avx512-vnni-vbmi-bf16'): names a build, so a wheel
    cached for one CPU is never installed on a CPU that lacks one of its instructions."""
    args = llama_cmake_args()
    if "-DGGML_AVX512=ON" not in args:
        return "avx2"
    ext = {"GGML_AVX512_VNNI": "vnni", "GGML_AVX512_VBMI": "vbmi", "GGML_AVX512_BF16": "bf16", "GGML_AVX_VNNI": "avxvnni"}
    return "-".join(["avx512", *(tag for opt, tag in ext.items() if f"-D{opt}=ON" in args)])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--llama-cmake-args"]:
        print(" ".join(llama_cmake_args()))
    elif argv[:1] == ["--llama-isa"]:
        print(llama_isa_tag())
    else:
        print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
