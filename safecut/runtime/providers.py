"""Device / execution-provider policy for every model: one place, no silent fallback.

``auto`` picks CUDA only when it is really usable (onnxruntime: the session actually got the CUDA
provider; torch: ``torch.cuda.is_available()`` and a tiny allocation works). Asking for CUDA where
there is none falls back to CPU with one warning, or raises when ``strict`` is set. Every call
returns a :class:`DeviceChoice` saying what was asked and what is really used.
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, replace
from typing import Callable, TypeVar

from .deps import require
from ..errors import DeviceOutOfMemoryError, DeviceUnavailableError

T = TypeVar("T")

log = logging.getLogger("safecut.runtime.providers")

DEVICE_CHOICES = ["auto", "CPU", "CUDA"]
_ORT_NAMES = {
    "CPU": "CPUExecutionProvider",
    "CUDA": "CUDAExecutionProvider",
    "TensorRT": "TensorrtExecutionProvider",
    "DirectML": "DmlExecutionProvider",
    "CoreML": "CoreMLExecutionProvider",
    "ROCm": "ROCMExecutionProvider",
    "OpenVINO": "OpenVINOExecutionProvider",
}
_SHORT = {v: k for k, v in _ORT_NAMES.items()}
_warned: set[str] = set()


@dataclass(frozen=True)
class DeviceChoice:
    requested: str
    used: str            # "CPU", "CUDA", … what actually runs the model
    note: str = ""       # why it differs from the request, if it does
    runtime: str = ""    # CPU runtime and numerics of an ONNX model, e.g. "OpenVINO bf16 (AMX)" (safecut.runtime.sessions)

    def describe(self) -> str:
        return self.used + (f" · {self.runtime}" if self.runtime else "") + (f" ({self.note})" if self.note else "")


def warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        log.warning("SafeCut: %s", msg)


def physical_cores() -> int:
    """Cores this process may use (affinity-aware); SMT siblings are not counted when visible."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    try:
        siblings = open("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read().strip()
        per_core = len([p for p in siblings.replace("-", ",").split(",") if p]) if "," in siblings else (
            int(siblings.split("-")[1]) - int(siblings.split("-")[0]) + 1 if "-" in siblings else 1)
        n = max(1, n // max(per_core, 1))
    except (OSError, ValueError, IndexError):
        pass
    return max(1, n)


def default_threads(requested: int = 0) -> int:
    if requested and requested > 0:
        return int(requested)
    env = os.environ.get("SAFECUT_THREADS")
    return int(env) if env else physical_cores()


def normalize(requested: str) -> str:
    r = (requested or "auto").strip()
    for name in ["auto", *_ORT_NAMES]:
        if r.lower() == name.lower():
            return name
    raise ValueError(f"device/provider '{requested}' is not one of: auto, {', '.join(_ORT_NAMES)}")


# ---- onnxruntime -------------------------------------------------------------------------------
def ort_available_providers() -> list[str]:
    ort = require("onnxruntime")
    return list(ort.get_available_providers())


def ort_provider_list(requested: str) -> list[str]:
    """Providers to ask onnxruntime for, best first, always ending with CPU."""
    req = normalize(requested)
    avail = ort_available_providers()
    if req == "auto":
        wanted = [p for p in ("CUDAExecutionProvider",) if p in avail]
    elif req == "CPU":
        wanted = []
    else:
        wanted = [_ORT_NAMES[req]]
    return wanted + ["CPUExecutionProvider"]


# onnxruntime's CUDA provider options for every CUDA session. The BFC arena grows by what is asked, not to the next
# power of two: BEN2 at 1024² held 7.5 instead of 7.9 GB on an H200, at the same speed (bench/gpu.py sweep).
# A model adds its own (``create_ort_session(cuda=...)``); SAFECUT_ORT_CUDA_OPTIONS (a JSON object) adds to or
# overrides both, e.g. '{"cudnn_conv_algo_search": "EXHAUSTIVE"}'.
CUDA_OPTIONS: dict[str, str] = {"arena_extend_strategy": "kSameAsRequested"}


def cuda_options(model_options: dict[str, str] | None = None) -> dict[str, str]:
    opts = dict(CUDA_OPTIONS, **(model_options or {}))
    text = os.environ.get("SAFECUT_ORT_CUDA_OPTIONS", "").strip()
    if text:
        try:
            extra = json.loads(text)
            if not isinstance(extra, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise ValueError(f"SAFECUT_ORT_CUDA_OPTIONS must be a JSON object of onnxruntime CUDA provider "
                             f"options, e.g. '{{\"cudnn_conv_algo_search\": \"HEURISTIC\"}}' ({exc})") from None
        opts.update({str(k): str(v) for k, v in extra.items()})
    return opts


_preloaded = False


def _preload_cuda(ort) -> None:
    """onnxruntime-gpu >= 1.21 can load the CUDA/cuDNN libraries PyTorch already ships, instead of
    needing a system CUDA toolkit (the usual cause of a silent CPU fallback). Once per process."""
    global _preloaded
    if _preloaded or not hasattr(ort, "preload_dlls"):
        return
    _preloaded = True
    try:
        ort.preload_dlls()
    except Exception as exc:  # the session creation below still reports what it really got
        warn_once(f"onnxruntime could not preload CUDA libraries ({exc})")


def session_options(threads: int = 0, *, spinning: bool | None = None, optimized_path: str | None = None,
                    cpu_arena: bool = True, mem_pattern: bool = True, optimization: str = "all"):
    """``cpu_arena=False``: tensors are malloc'ed and freed per run instead of kept in ORT's growing CPU arena
    (for big one-shot graphs like BEN2 at 1024², the arena doubles peak memory and slows the second call
    while it grows). ``mem_pattern=False``: no pre-planned block per input shape either. ``optimization``:
    ORT's graph level, 'all' (with CPU layout rewrites) or 'extended' (without)."""
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    so.enable_cpu_mem_arena = cpu_arena
    so.enable_mem_pattern = mem_pattern
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[optimization]
    so.log_severity_level = 3  # errors only: SafeCut reports provider fallbacks itself, once
    so.intra_op_num_threads = default_threads(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if spinning is None:  # spinning burns idle cores between calls; off unless asked (serverless bills CPU)
        spinning = os.environ.get("SAFECUT_ORT_SPINNING", "0") == "1"
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    return so


def create_ort_session(model, requested: str = "auto", *, threads: int = 0, strict: bool = False,
                       optimized_cache: str | None = None, cuda: dict[str, str] | None = None, **memory):
    """Create an InferenceSession and report the provider it really got.

    ``model`` is a path or serialized bytes. ``optimized_cache`` is a path where ORT's optimized
    graph is saved (CPU only: NCHWc layouts are CPU-specific) and loaded from on the next cold start.
    ``cuda``: this model's CUDA provider options, over CUDA_OPTIONS.
    """
    ort = require("onnxruntime")
    req = normalize(requested)
    providers = ort_provider_list(req)
    if "CUDAExecutionProvider" in providers:
        _preload_cuda(ort)
    source = model
    opt_path = None
    if optimized_cache and isinstance(model, str) and providers == ["CPUExecutionProvider"]:
        if _fresh(optimized_cache, model):
            source = optimized_cache
        else:
            opt_path = optimized_cache
    so = session_options(threads, optimized_path=opt_path, **memory)
    asked = [(p, cuda_options(cuda)) if p == "CUDAExecutionProvider" else p for p in providers]
    try:
        with warnings.catch_warnings():  # ORT's own "provider not available" warning: we report it ourselves
            warnings.simplefilter("ignore", UserWarning)
            sess = ort.InferenceSession(source, sess_options=so, providers=asked)
    except Exception as exc:
        if source is not model:  # a stale/broken optimized graph must not block loading the real model
            sess = ort.InferenceSession(model, sess_options=session_options(threads, **memory), providers=asked)
        else:
            raise _explain_onnx_error(model, exc) from exc
    got = sess.get_providers()[0]
    used = _SHORT.get(got, got)
    if req == "auto" and used == "CPU" and gpu_driver() == "CUDA":   # an NVIDIA GPU is there (auto asks ORT for CUDA
        # only; onnxruntime-gpu installed on a machine without a GPU is no fallback to report)
        if "CUDAExecutionProvider" in providers:   # asked for and available, yet the session did not get it
            return sess, _unused_gpu("onnxruntime's CUDA provider failed to load (CUDA 12/13 or cuDNN 9 libraries "
                                     "missing or mismatched; see README 'GPU install')", "CUDA provider failed")
        return sess, _unused_gpu(*_ORT_CPU_ONLY)
    return sess, _report(req, used, strict)


_ORT_CPU_ONLY = ("the installed onnxruntime is CPU-only: pip uninstall -y onnxruntime && pip install onnxruntime-gpu "
                 "(see README 'GPU install')", "onnxruntime is CPU-only")


def cpu_choice(requested: str, strict: bool = False) -> DeviceChoice:
    """What a CPU-only session (OpenVINO) reports for ``requested``, with the same notes as an ORT CPU session."""
    req = normalize(requested)
    if req == "auto" and gpu_driver() == "CUDA":
        return _unused_gpu(*_ORT_CPU_ONLY)
    return _report(req, "CPU", strict)


def _fresh(cache_path: str, model_path: str) -> bool:
    try:
        return os.path.getmtime(cache_path) >= os.path.getmtime(model_path) and os.path.getsize(cache_path) > 0
    except OSError:
        return False


def _explain_onnx_error(model, exc: Exception) -> Exception:
    from ..errors import SafeCutError

    name = model if isinstance(model, str) else "<in-memory model>"
    return SafeCutError(f"ONNX model '{name}' could not be loaded ({type(exc).__name__}: {exc}). "
                        f"The file is probably truncated or not an ONNX model: delete it and fetch it again.")


def _report(requested: str, used: str, strict: bool) -> DeviceChoice:
    if requested in ("auto", used):
        return DeviceChoice(requested, used)
    msg = f"{requested} was requested but is not usable here; running on {used}"
    if strict:
        raise DeviceUnavailableError(msg + " (strict mode: refusing to fall back).")
    warn_once(msg)
    return DeviceChoice(requested, used, note=f"{requested} unavailable")


def _unused_gpu(why: str, short: str) -> DeviceChoice:
    """``auto`` on a machine with a GPU that this runtime cannot use: CPU is allowed, but never silently."""
    warn_once(f"a GPU is present but {why}; running on CPU")
    return DeviceChoice("auto", "CPU", note=f"GPU unused: {short}")


_driver_probe: str | None | bool = False   # False: not probed yet


def gpu_driver() -> str | None:
    """'CUDA' or 'ROCm' when this process can load a GPU driver library (a dlopen: no GPU context, cheap), else
    None; also None when CUDA_VISIBLE_DEVICES hides every GPU (the user's choice, not a fallback to report)."""
    global _driver_probe
    if _driver_probe is False:
        _driver_probe = None
        if os.environ.get("CUDA_VISIBLE_DEVICES", None) not in ("", "-1"):
            import ctypes

            libs = [("nvcuda.dll", "CUDA")] if os.name == "nt" else [("libcuda.so.1", "CUDA"), ("libcuda.so", "CUDA"),
                                                                      ("libamdhip64.so", "ROCm")]
            for lib, name in libs:
                try:
                    ctypes.CDLL(lib)
                    _driver_probe = name
                    break
                except OSError:
                    continue
    return _driver_probe


def refuse_fallback(choice: DeviceChoice, strict: bool) -> None:
    """A model cached by an earlier, non-strict call may run on a fallback device: strict callers refuse it
    (``auto`` allows CPU, so its notes never refuse)."""
    if strict and choice.note and choice.requested != "auto":
        raise DeviceUnavailableError(f"{choice.requested} was requested but is not usable here "
                                     f"(strict mode: refusing to run on {choice.used}).")


# ---- torch -------------------------------------------------------------------------------------
def torch_device(requested: str = "auto", *, strict: bool = False) -> DeviceChoice:
    """'cuda' when usable (is_available and a tiny allocation works), else 'cpu'."""
    req = normalize(requested)
    if req not in ("auto", "CPU", "CUDA"):
        raise ValueError(f"device '{requested}' is not supported for torch models: use auto, CPU or CUDA")
    if req == "CPU":
        return DeviceChoice(req, "CPU")
    usable = cuda_usable()
    if req == "auto" and not usable and gpu_driver() == "CUDA" and require("torch").version.cuda is None:
        return _unused_gpu("the installed torch is CPU-only (reinstall ComfyUI's CUDA build of torch)",
                           "torch is CPU-only")
    return _report(req, "CUDA" if usable else "CPU", strict)


def cuda_usable() -> bool:
    torch = require("torch")
    try:
        if not torch.cuda.is_available():
            return False
        torch.zeros(1, device="cuda")
        return True
    except Exception as exc:
        warn_once(f"CUDA is present but unusable ({exc}); using CPU")
        return False


def torch_name(choice: DeviceChoice) -> str:
    return "cuda" if choice.used == "CUDA" else "cpu"


# ---- out of memory -----------------------------------------------------------------------------
_OOM_MARKERS = ("out of memory", "failed to allocate memory", "cudaerrormemoryallocation", "cuda_error_out_of_memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError, MemoryError, or an onnxruntime/CUDA error whose text says so."""
    if isinstance(exc, DeviceOutOfMemoryError):
        return False  # already explained
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    return any(m in text for m in _OOM_MARKERS)


def oom_guard(what: str, requested: str, attempt: Callable[[str], T], *, strict: bool = False) -> T:
    """Run ``attempt(requested)`` (one engine call: load + run). An out-of-memory error becomes a
    DeviceOutOfMemoryError that says what to do; with ``SAFECUT_OOM_FALLBACK=1`` (and not ``strict``) a
    non-CPU request is first retried once with ``attempt("CPU")``, and the result's ``device`` says so."""
    try:
        return attempt(requested)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        gpu = normalize(requested) != "CPU"
        label = "CUDA" if gpu and ("cuda" in str(exc).lower() or normalize(requested) == "CUDA"
                                   or type(exc).__name__ == "OutOfMemoryError") else ("Device" if gpu else "CPU")
        msg = (f"{label} out of memory while running {what}: lower batch_size"
               + (" or use CPU" if gpu else " or the image size") + f" ({type(exc).__name__}: {str(exc)[:300]})")
        if gpu and not strict and os.environ.get("SAFECUT_OOM_FALLBACK", "0") == "1":
            warn_once(f"{label} out of memory while running {what}; retrying once on CPU (SAFECUT_OOM_FALLBACK=1)")
            try:
                result = attempt("CPU")
            except Exception as exc2:
                if is_out_of_memory(exc2):
                    raise DeviceOutOfMemoryError(msg + "; the CPU retry ran out of memory too") from exc2
                raise
            device = getattr(result, "device", None)
            if isinstance(device, DeviceChoice):
                result.device = replace(device, requested=requested, note=f"{label} out of memory, retried on CPU")
            return result
        if gpu:
            msg += ". Set SAFECUT_OOM_FALLBACK=1 to retry on CPU automatically"
        raise DeviceOutOfMemoryError(msg + ".") from exc
