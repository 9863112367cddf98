"""Which runtime runs an ONNX model (BEN2, NudeNet): ONNX Runtime on CUDA, and on CPU ONNX Runtime fp32 or
OpenVINO f32/bf16, as :mod:`safecut.runtime.cpu` decides for this CPU (``auto``) or the user asks.

The CUDA path is ONNX Runtime as before (an explicit CPU runtime choice does not touch it). On CPU, OpenVINO is
used only when it is installed and passed its crash probe here (:mod:`safecut.runtime.openvino_session`); otherwise ONNX
Runtime runs and the reason is said once and shown on the node. The returned DeviceChoice names what really ran,
e.g. ``CPU · OpenVINO bf16 (AMX)`` or ``CPU · ONNX Runtime fp32``.
"""
from __future__ import annotations

import os
from dataclasses import replace

from . import cpu, openvino_session, providers

# node widget choices (public contract: append only)
CHOICES = ["auto", "ONNX Runtime", "OpenVINO f32", "OpenVINO bf16", "OpenVINO int8"]
_PLAN = {"ONNX Runtime": ("onnxruntime", "f32"), "OpenVINO f32": ("openvino", "f32"),
         "OpenVINO bf16": ("openvino", "bf16"), "OpenVINO int8": ("openvino", "int8")}
ORT_LABEL = "ONNX Runtime fp32"


def normalize(runtime: str | None) -> str:
    r = (runtime or "auto").strip()
    for c in CHOICES:
        if r.lower() == c.lower():
            return c
    raise ValueError(f"cpu_runtime '{runtime}' is not one of: {', '.join(CHOICES)}")


def cpu_plan(engine: str, runtime: str = "auto", quantized: bool = False) -> tuple[str, str]:
    """(runtime, precision) wanted on CPU. ``auto`` keeps an INT8 (QDQ) file on ONNX Runtime: its session settings
    and its speed were measured there only."""
    r = normalize(runtime)
    if r != "auto":
        return _PLAN[r]
    if quantized:
        return "onnxruntime", "f32"
    return cpu.onnx_cpu_runtime(engine)


BF16_EMULATED_SHORT = "×27 slower"


def effective_precision(precision: str) -> str:
    """The OpenVINO precision that really runs for a request: bf16 only where the CPU computes it natively."""
    return "f32" if precision == "bf16" and not cpu.bf16_native() else precision


def _label(precision: str) -> str:
    return f"OpenVINO {precision}" + (" (AMX)" if precision == "bf16" and cpu.has("amx_bf16") else "")


def create_session(path: str, device: str = "auto", *, engine: str, runtime: str = "auto", threads: int = 0,
                   strict: bool = False, quantized: bool = False, ov_model: str | None = None, **ort_kwargs):
    """(session, DeviceChoice). ``ort_kwargs`` go to providers.create_ort_session (memory settings, CUDA options).
    ``ov_model``: the model OpenVINO compiles instead of ``path`` (an INT8 IR made from it); ``path`` stays what
    ONNX Runtime runs when OpenVINO is refused."""
    r = normalize(runtime)
    if "CUDAExecutionProvider" in providers.ort_provider_list(device):   # CUDA: ONNX Runtime, unchanged
        sess, choice = providers.create_ort_session(path, device, threads=threads, strict=strict, **ort_kwargs)
        return sess, (choice if choice.used != "CPU" else replace(choice, runtime=_ort_label(quantized)))
    want, precision = cpu_plan(engine, r, quantized)
    note = ""
    if want == "openvino":
        asked, precision = precision, effective_precision(precision)
        if precision == "int8" and not ov_model:   # no INT8 model given: f32 runs, and the label says so
            providers.warn_once(f"OpenVINO int8 was asked for {engine}, which has no INT8 model: running OpenVINO f32")
            precision = "f32"
        if asked == "bf16" != precision:   # emulated bf16: never run silently (×27 slower for BEN2); f32 runs, and says so
            providers.warn_once(f"OpenVINO bf16 was asked for {engine} on a CPU without AVX512-BF16 or AMX "
                                f"({cpu.describe()}): bf16 is emulated there, {cpu.BF16_EMULATED_BEN2}. Running "
                                f"OpenVINO f32 instead (what auto runs here)")
        elif precision == "bf16" and not cpu.bf16_fast():
            providers.warn_once(f"OpenVINO bf16 was asked for on a CPU without AMX ({cpu.describe()}): bf16 there is "
                                f"slower than f32 (measured: 10.0 s vs 6.6 s f32 for BEN2 1024² on an AVX-512 Xeon "
                                f"with AMX disabled); use auto or OpenVINO f32")
        hint = "f32" if precision == "int8" else precision   # an INT8 IR's own quantized ops run int8; the rest f32
        ok, why = openvino_session.usable(hint)
        if ok:
            try:
                sess = openvino_session.OpenVINOSession(ov_model or path, hint, providers.default_threads(threads))
            except Exception as exc:   # a model OpenVINO cannot compile still runs, on ONNX Runtime
                why = f"OpenVINO could not compile '{os.path.basename(path)}' ({type(exc).__name__}: {str(exc)[:200]})"
            else:
                choice = providers.cpu_choice(device, strict)
                label = "OpenVINO int8" if precision == "int8" else _label(sess.precision)
                if asked == "int8" != precision:
                    label += f" (int8 asked: no INT8 model for {engine})"
                elif asked != precision:
                    label += f" (bf16 asked: emulated on this CPU, {BF16_EMULATED_SHORT})"
                elif sess.precision != hint:
                    label += f", {hint} not supported by this CPU"
                return sess, replace(choice, runtime=label)
        providers.warn_once(f"OpenVINO {precision} not used for {engine}: {why}; running ONNX Runtime fp32")
        note = f"OpenVINO refused: {why}" if r != "auto" else "OpenVINO unavailable"
    sess, choice = providers.create_ort_session(path, device, threads=threads, strict=strict, **ort_kwargs)
    if note:
        choice = replace(choice, note="; ".join(filter(None, [choice.note, note])))
    return sess, replace(choice, runtime=_ort_label(quantized) if choice.used == "CPU" else "")


def _ort_label(quantized: bool) -> str:
    return "ONNX Runtime INT8" if quantized else ORT_LABEL

