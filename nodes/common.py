"""Shared helpers for the node adapters: widgets, tensors, progress/interrupt, UI payloads.

ComfyUI modules are imported inside functions and only where they exist, so nodes can be unit-tested
without ComfyUI.
"""
from __future__ import annotations

import json
import time
from typing import Any

from ..safecut.runtime import sessions
from ..safecut.runtime.lazy import numpy as np

CATEGORY = "SafeCut"

# ---- widget definitions (one source, so every node offers the same choices) ---------------------
DEVICE = (["auto", "CPU", "CUDA"], {"default": "auto", "tooltip":
          "auto: CUDA when it is really usable, else CPU (shown as 'CPU (GPU unused: …)' when a GPU is there but "
          "the installed runtime cannot use it). Asking for CUDA where there is none runs on CPU with a warning. "
          "The device actually used is shown on the node."})
CPU_RUNTIME = (list(sessions.CHOICES), {"default": "auto", "tooltip":
               "What runs the model on CPU (CUDA always runs ONNX Runtime). auto: the path measured fastest for this "
               "CPU (OpenVINO f32 on AVX2/AVX-512 CPUs; bf16 with AMX and INT8 with AVX-512 VNNI only once "
               "SafeCut's quality probe passed on your own weights; see README 'Which CPU'). OpenVINO is used only "
               "after a crash probe passed on this machine, else ONNX Runtime runs and the node says why. OpenVINO "
               "int8 needs its INT8 model, made once by `python -m safecut models quantize <model>`. OpenVINO bf16 "
               "on a CPU without AVX512-BF16/AMX would be emulated (×27 slower): f32 runs instead and the node says "
               "so. The runtime used is shown on the node, e.g. 'CPU · OpenVINO f32'."})
THREADS = ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": "CPU threads; 0 = one per physical core."})
KEEP_LOADED = ("BOOLEAN", {"default": True, "tooltip":
               "Keep the model in SafeCut's cache for the next run (fast). Off frees its memory after this node."})


def combo(options: list[str], default: str | None = None, tooltip: str = "") -> tuple:
    opts = list(options) or [""]
    return (opts, {"default": default if default in opts else opts[0], "tooltip": tooltip})


# ---- tensors ------------------------------------------------------------------------------------
def images_to_numpy(image) -> list[np.ndarray]:
    """ComfyUI IMAGE [B,H,W,C] float 0..1 (torch) -> list of HxWx3 float32 arrays."""
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image, np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"input 'image' must be an IMAGE batch [B,H,W,C]; got shape {tuple(arr.shape)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return [np.ascontiguousarray(a[..., :3], dtype=np.float32) for a in arr]


def to_image_tensor(arrays):
    """list/array of HxWxC float 0..1 -> torch IMAGE [B,H,W,C] float32."""
    import torch

    batch = np.stack(list(arrays)) if isinstance(arrays, (list, tuple)) else np.asarray(arrays)
    return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))


def to_mask_tensor(masks):
    import torch

    batch = np.stack(list(masks)) if isinstance(masks, (list, tuple)) else np.asarray(masks)
    return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))


def flatten(value) -> list:
    """INPUT_IS_LIST inputs arrive as lists whose items may themselves be lists (one per upstream run)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [value]
    out = []
    for v in value:
        out += flatten(v) if isinstance(v, (list, tuple)) else [v]
    return out


def flatten_images(value) -> list:
    """A list of IMAGE tensors [B,H,W,C] (list mode) or one batch -> list of single-image tensors [1,H,W,C]."""
    out = []
    for t in flatten(value):
        if t is None:
            continue
        if getattr(t, "ndim", 0) == 3:
            t = t[None]
        out += [t[i:i + 1] for i in range(t.shape[0])]
    return out


# ---- progress and interrupt ---------------------------------------------------------------------
def check_interrupt() -> None:
    try:
        import comfy.model_management as mm  # type: ignore
    except ImportError:
        return
    mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI progress bar when inside ComfyUI; checks for interrupts at every step."""

    def __init__(self, total: int):
        self.total = max(int(total), 1)
        self.bar = None
        try:
            import comfy.utils  # type: ignore

            self.bar = comfy.utils.ProgressBar(self.total)
        except Exception:
            self.bar = None

    def __call__(self, done: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(done)
        check_interrupt()


def ui_result(result: tuple, **text: Any) -> dict:
    """{"ui": …, "result": …}: ``text`` values go to the js extension (js/safecut.js) as lists."""
    ui = {k: (v if isinstance(v, list) else [v]) for k, v in text.items()}
    return {"ui": ui, "result": result}


def verdict_row(index: int, name: str = "", *, verdict=None, decided_by=None, p_unsafe=None, categories=(),
                reason: str = "") -> dict:
    """One image's line on the canvas (js/safecut.js formats it): what was decided, by whom, P(unsafe), why."""
    row = {"n": index + 1, "name": name, "verdict": verdict, "by": decided_by,
           "p_unsafe": None if p_unsafe is None else round(float(p_unsafe), 4), "categories": list(categories or [])}
    if reason:
        row["reason"] = str(reason)[:400]
    return row


def timer() -> float:
    return time.perf_counter()


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=None, default=str)
