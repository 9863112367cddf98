"""INT8 BEN2: ``python -m safecut models quantize BEN2_Base.onnx [--output BEN2_Base.int8.onnx]``.

Dynamic (weight) quantization with ``onnxruntime.quantization.quantize_dynamic``: the weights of every
MatMul/Gemm are stored as int8 (per tensor), activations are quantized on the fly at run time, and ORT
runs the products as integer GEMMs (``DynamicQuantizeMatMul``). Convolutions stay float32: ORT's dynamic
``ConvInteger`` kernel is slower than its float Conv on CPU (bench/README "INT8").

Before quantizing, ``Cast`` nodes that turn float16 initializers into float32 (the published BEN2 ONNX is
mixed fp16/fp32) are folded into float32 initializers, so their MatMuls are quantizable too.

Speed is measured by the bench (``python -m bench --only ben2``). Quality cannot be checked here without
the real weights: compare masks on your own images with
``python -m bench.iou IMAGES_DIR --model BEN2_Base.onnx --int8 BEN2_Base.int8.onnx``.
"""
from __future__ import annotations

import logging
import os
import tempfile

from . import modelfiles
from .deps import require
from .errors import SafeCutError

log = logging.getLogger("safecut.quantize")

METHODS = {
    # name: (op types, per_channel)
    "matmul": (["MatMul", "Gemm"], False),
    "matmul-per-channel": (["MatMul", "Gemm"], True),
    "matmul+conv": (["MatMul", "Gemm", "Conv"], False),
}
DEFAULT_METHOD = "matmul"


def default_output(path: str) -> str:
    stem, _ = os.path.splitext(path)
    return stem + ".int8.onnx"


def _resolve_input(model_name_or_path: str) -> str:
    name = (model_name_or_path or "").strip()
    if not name:
        raise SafeCutError("name a BEN2 model to quantize, e.g. `python -m safecut models quantize BEN2_Base.onnx`")
    if modelfiles.find("ben2", name) is not None:
        return modelfiles.resolve("ben2", name)  # found on disk; registry files are checksum-verified
    if os.path.isfile(name) and name.lower().endswith(".onnx"):
        return os.path.abspath(name)  # a path given on the command line
    return modelfiles.resolve("ben2", name)


def fold_fp16_casts(model) -> int:
    """Replace ``Cast(to=float)`` of float16 initializers by float32 initializers. Returns how many."""
    require("onnx")
    from onnx import TensorProto, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    keep, folded, new_inits = [], 0, []
    for n in g.node:
        src = n.input[0] if n.op_type == "Cast" and n.input else None
        to = next((a.i for a in n.attribute if a.name == "to"), None) if src else None
        if src in inits and to == TensorProto.FLOAT and inits[src].data_type == TensorProto.FLOAT16:
            arr = numpy_helper.to_array(inits[src]).astype("float32")
            new_inits.append(numpy_helper.from_array(arr, n.output[0]))
            consumers[src] -= 1
            folded += 1
            continue
        keep.append(n)
    if folded:
        del g.node[:]
        g.node.extend(keep)
        unused = {k for k, v in consumers.items() if v <= 0 and k in inits}
        remaining = [t for t in g.initializer if t.name not in unused]
        del g.initializer[:]
        g.initializer.extend(remaining + new_inits)
    return folded


def quantize_ben2(model_name_or_path: str, output: str | None = None, *, method: str = DEFAULT_METHOD) -> str:
    """Write an int8 copy of a BEN2 ONNX model and return its path.

    ``model_name_or_path``: a model name in models/ben2 (resolved like the BEN2 node does) or a path.
    ``output``: default ``<input stem>.int8.onnx`` next to the input. ``method``: see :data:`METHODS`.
    """
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if method not in METHODS:
        raise SafeCutError(f"quantization method '{method}' is not one of {', '.join(METHODS)}")
    src = _resolve_input(model_name_or_path)
    out = os.path.abspath(output) if output else default_output(src)
    if os.path.abspath(src) == out:
        raise SafeCutError(f"the output {out} would overwrite the input model")
    op_types, per_channel = METHODS[method]
    model = onnx.load(src)
    folded = fold_fp16_casts(model)
    big = model.ByteSize() > 1_900_000_000  # protobuf's 2 GB limit: keep weights outside
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".safecut-q-", dir=os.path.dirname(out) or ".") as tmpdir:
        staged = os.path.join(tmpdir, "in.onnx")
        onnx.save(model, staged, save_as_external_data=big)
        del model
        tmp_out = os.path.join(tmpdir, "out.onnx")
        try:
            quantize_dynamic(staged, tmp_out, op_types_to_quantize=op_types, per_channel=per_channel,
                             reduce_range=False, weight_type=QuantType.QInt8, use_external_data_format=big,
                             extra_options={"MatMulConstBOnly": True})
        except Exception as exc:
            raise SafeCutError(f"quantizing {os.path.basename(src)} failed ({type(exc).__name__}: {exc})") from exc
        if big:  # re-save next to the output with its weights in one side file
            q = onnx.load(tmp_out)
            onnx.save(q, out, save_as_external_data=True, location=os.path.basename(out) + ".data")
        else:
            os.replace(tmp_out, out)
    log.info("SafeCut: wrote %s (%s, %d fp16 casts folded)", out, method, folded)
    return out
