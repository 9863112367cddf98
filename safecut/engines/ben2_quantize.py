"""INT8 BEN2 (experimental): ``python -m safecut models quantize BEN2_Base.onnx [--output X] [--method M]
[--calibration IMAGES_DIR]``.

Default method ``static``: static, calibrated QDQ quantization (``onnxruntime.quantization.quantize_static``)
of every Conv and every MatMul with a constant operand: int8 weights per output channel, uint8 activations
with ranges calibrated (min-max) on a few images. ORT fuses the Q/DQ pairs into integer kernels
(QLinearConv, QLinearMatMul), so the full-resolution convolutions and the weight linears (80 % of BEN2's
FLOPs) run in int8. The attention products (two activations) stay fp32: ORT's uint8 x uint8 kernels were
slower than fp32 there (see :func:`activation_matmuls`). Calibrate on your own images (``--calibration``) for
real weights; without it, synthetic photo-like images are used. Experimental until checked on the real
weights. On AVX2 CPUs int8 kernels are at most ~2x fp32 (bench section env), so expect well under 2x overall.

The older ``matmul*`` methods are dynamic (weight-only) quantization with ``quantize_dynamic``: only the
weight linears (42 % of the FLOPs) run in int8.

Before quantizing, ``Cast`` nodes that turn float16 initializers into float32 (the published BEN2 ONNX is
mixed fp16/fp32) are folded into float32 initializers, so their MatMuls are quantizable too.

Speed is measured by the bench (``python -m bench --only ben2``). Quality cannot be checked here without
the real weights: compare masks on your own images with
``python -m bench.iou IMAGES_DIR --model BEN2_Base.onnx --int8 BEN2_Base.int8.onnx``.
"""
from __future__ import annotations

import gc
import inspect
import logging
import os
import tempfile
from contextlib import contextmanager

from ..models import modelfiles
from ..runtime.deps import require
from ..errors import SafeCutError

log = logging.getLogger("safecut.engines.ben2_quantize")

METHODS = {
    # name: (op types, per_channel); "static" is calibrated QDQ, the others quantize_dynamic
    "static": (["Conv", "MatMul", "Gemm"], True),
    "matmul": (["MatMul", "Gemm"], False),
    "matmul-per-channel": (["MatMul", "Gemm"], True),
    "matmul+conv": (["MatMul", "Gemm", "Conv"], False),
}
DEFAULT_METHOD = "static"
RECIPE = 2                # bump when what "static" writes changes (2: attention products left fp32)
CALIBRATION_SAMPLES = 1   # generated images: one full BEN2 run per calibration pass (min-max ranges)


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


def synthetic_images(n: int, hw: tuple[int, int] = (768, 1024), seed: int = 0) -> list:
    """Photo-like calibration images (gradient background, a bright ellipse 'subject', noise), float32 0..1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        bg = np.stack([0.2 + 0.3 * xx / w, 0.25 + 0.2 * yy / h, np.full_like(xx, 0.3 + 0.05 * i)], -1)
        cy, cx, ry, rx = h * (0.4 + 0.2 * rng.random()), w * (0.4 + 0.2 * rng.random()), h * 0.25, w * 0.2
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        img = np.where(inside[..., None], rng.random(3).astype(np.float32) * 0.5 + 0.5, bg)
        out.append(np.clip(img + rng.normal(0, 0.02, (h, w, 3)).astype(np.float32), 0, 1).astype(np.float32))
    return out


def _load_images(folder: str, n: int) -> list:
    import numpy as np
    from PIL import Image

    names = sorted(f for f in os.listdir(folder) if f.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))
    if not names:
        raise SafeCutError(f"--calibration {folder} holds no .png/.jpg/.webp images; point it at a few photos")
    return [np.asarray(Image.open(os.path.join(folder, f)).convert("RGB"), np.float32) / 255.0 for f in names[:n]]


def _reduce_right_after_producers(model) -> None:
    """Move the calibrator's range nodes (ReduceMin/ReduceMax -> ``*_Reshape`` -> Reshape -> graph output,
    appended after the graph's nodes) right behind the node that produces their input. ORT runs ready nodes in list order, so appended reductions ran at the very end
    and kept every activation of the graph alive until then (3.6 GB instead of 0.8 GB at 512², killed for
    memory at 1024²)."""
    outputs = {o.name for o in model.graph.output}

    def is_range(n) -> bool:
        if n.op_type in ("ReduceMin", "ReduceMax"):
            return n.output[0].endswith("_Reshape")
        return n.op_type == "Reshape" and n.input[0].endswith("_Reshape") and n.output[0] in outputs

    nodes = list(model.graph.node)
    original, extra = [n for n in nodes if not is_range(n)], [n for n in nodes if is_range(n)]
    after: dict[str, list] = {}
    for n in extra:
        after.setdefault(n.input[0] if n.input else "", []).append(n)
    ordered = []

    def emit(node):
        ordered.append(node)
        for o in node.output:
            for nxt in after.pop(o, []):
                emit(nxt)

    for name in [i.name for i in model.graph.input] + [t.name for t in model.graph.initializer]:
        for nxt in after.pop(name, []):
            emit(nxt)
    for node in original:
        emit(node)
    for rest in after.values():      # anything left (unknown inputs): keep it, at the end as before
        ordered += rest
    del model.graph.node[:]
    model.graph.node.extend(ordered)


@contextmanager
def _lean_calibration_sessions():
    """ORT's calibrator appends a ReduceMin/ReduceMax per activation and runs that graph with the CPU arena on;
    at BEN2's size (0.5 GB full-resolution tensors) that was killed for memory on a 24 GB machine. Here: range
    nodes right after their producers, arena and memory pattern off."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import calibrate

    original = calibrate.CalibraterBase.create_inference_session

    def create_inference_session(self):
        aug = onnx.load(self.augmented_model_path)
        _reduce_right_after_producers(aug)
        big = aug.ByteSize() > 1_900_000_000
        onnx.save(aug, self.augmented_model_path, save_as_external_data=big)
        del aug
        so = onnxruntime.SessionOptions()
        so.enable_cpu_mem_arena = False
        so.enable_mem_pattern = False
        self.infer_session = onnxruntime.InferenceSession(self.augmented_model_path, sess_options=so,
                                                          providers=self.execution_providers)

    calibrate.CalibraterBase.create_inference_session = create_inference_session
    try:
        yield
    finally:
        calibrate.CalibraterBase.create_inference_session = original


CALIBRATION_GROUP_BYTES = 3 << 30   # activations whose ranges one calibration pass collects (see below)


def _calibrate_in_groups(model_path: str, op_types, images: list, tmpdir: str, cache: str) -> int:
    """Min-max ranges of every activation to quantize, written as ORT's calibration cache (JSON).

    Why not ORT's one-pass calibrator: it keeps the activations it measures alive until their range nodes run,
    which at BEN2's size (0.5 GB full-resolution tensors) was killed for memory on a 24 GB machine. Here the
    tensors are split into groups of at most CALIBRATION_GROUP_BYTES and each group is one pass of the same
    calibrator over the images. Returns the number of passes."""
    import numpy as np
    from onnxruntime.quantization.calibrate import (CalibrationMethod, MinMaxCalibrater, TensorsData,
                                                    save_tensors_data)

    aug = os.path.join(tmpdir, "augmented.onnx")
    probe = MinMaxCalibrater(model_path, op_types, augmented_model_path=aug, use_external_data_format=True)
    tensors, infos = probe.select_tensors_to_calibrate(probe.model)
    order = {}
    for i, n in enumerate(probe.model.graph.node):
        for o in n.output:
            order[o] = i
    del probe

    def nbytes(name: str) -> int:
        dims = [d.dim_value for d in infos[name].type.tensor_type.shape.dim] if name in infos else []
        return int(np.prod(dims)) * 4 if dims and all(d > 0 for d in dims) else 64 << 20

    groups, cur, size = [], [], 0
    for name in sorted(tensors, key=lambda t: order.get(t, -1)):
        if cur and size + nbytes(name) > CALIBRATION_GROUP_BYTES:
            groups.append(cur)
            cur, size = [], 0
        cur.append(name)
        size += nbytes(name)
    if cur:
        groups.append(cur)
    ranges = {}
    with _lean_calibration_sessions():
        for group in groups:
            cal = MinMaxCalibrater(model_path, op_types, augmented_model_path=aug, use_external_data_format=True)
            select, keep = cal.select_tensors_to_calibrate, set(group)
            cal.select_tensors_to_calibrate = lambda m, select=select, keep=keep: (
                {t for t in select(m)[0] if t in keep}, select(m)[1])
            cal.augment_graph()
            cal.create_inference_session()
            cal.collect_data(_Calibration(model_path, images))
            ranges.update(cal.compute_data().data)
            cal.infer_session = cal.model = None     # free this pass's session and graph before the next
            del cal
            gc.collect()
    save_tensors_data(TensorsData(CalibrationMethod.MinMax, ranges), cache)
    return len(groups)


class _Calibration:
    """onnxruntime CalibrationDataReader over images preprocessed exactly as the BEN2 engine does."""

    def __init__(self, model_path: str, images: list):
        import numpy as np
        import onnx

        from . import ben2

        inp = onnx.load(model_path, load_external_data=False).graph.input[0]
        dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        h, w = (d if d > 0 else 1024 for d in dims[2:4])
        pre = ben2.preprocess_params(model_path)
        model = ben2.Ben2Model(None, inp.name, "", np.float32, (h, w), False,
                               np.asarray(pre["mean"], np.float32).reshape(1, 3, 1, 1),
                               np.asarray(pre["std"], np.float32).reshape(1, 3, 1, 1), None, model_path)
        self.items = iter([{inp.name: ben2.preprocess([im], model)} for im in images])

    def get_next(self):
        return next(self.items, None)

    def rewind(self):  # pragma: no cover - not used by MinMax
        pass


def activation_matmuls(model) -> list[str]:
    """Names of the MatMuls whose two operands are both activations (attention products). Static QDQ leaves
    them fp32: ORT's uint8 x uint8 QLinearMatMul ran BEN2's decoder attention slower than fp32 here
    (profile at 1024²: 4.6 s int8 vs 4.3 s fp32, plus a QLinearSoftmax 3x slower than Softmax)."""
    for i, n in enumerate(model.graph.node):   # ORT excludes nodes by name: unnamed ones would all match ""
        n.name = n.name or f"safecut_{n.op_type}_{i}"
    consts = {t.name for t in model.graph.initializer}
    consts |= {n.output[0] for n in model.graph.node if n.op_type in ("Constant", "DequantizeLinear")
               and all(i in consts for i in n.input)}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in consts for i in n.input)]


def fold_identity_initializers(model) -> int:
    """Replace ``Identity`` nodes of initializers (the exporter's de-duplicated equal constants, e.g. zero
    biases) by initializer copies: ORT fuses Q/DQ around a Conv into QLinearConv only when its bias is a
    constant. Returns how many."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    keep, new = [], []
    for n in g.node:
        if n.op_type == "Identity" and n.input and n.input[0] in inits:
            t = type(inits[n.input[0]])()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            new.append(t)
            continue
        keep.append(n)
    if new:
        del g.node[:]
        g.node.extend(keep)
        g.initializer.extend(new)
    return len(new)


def quantize_ben2(model_name_or_path: str, output: str | None = None, *, method: str = DEFAULT_METHOD,
                  calibration: str | None = None, samples: int = CALIBRATION_SAMPLES) -> str:
    """Write an int8 copy of a BEN2 ONNX model and return its path.

    ``model_name_or_path``: a model name in models/ben2 (resolved like the BEN2 node does) or a path.
    ``output``: default ``<input stem>.int8.onnx`` next to the input. ``method``: see :data:`METHODS`.
    ``calibration`` (static only): a folder of images; default ``samples`` synthetic images.
    """
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method not in METHODS:
        raise SafeCutError(f"quantization method '{method}' is not one of {', '.join(METHODS)}")
    src = _resolve_input(model_name_or_path)
    out = os.path.abspath(output) if output else default_output(src)
    if os.path.abspath(src) == out:
        raise SafeCutError(f"the output {out} would overwrite the input model")
    op_types, per_channel = METHODS[method]
    model = onnx.load(src)
    folded = fold_fp16_casts(model)
    exclude = []
    if method == "static":
        fold_identity_initializers(model)
        exclude = activation_matmuls(model)
    big = model.ByteSize() > 1_900_000_000  # protobuf's 2 GB limit: keep weights outside
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".safecut-q-", dir=os.path.dirname(out) or ".") as tmpdir:
        staged = os.path.join(tmpdir, "in.onnx")
        onnx.save(model, staged, save_as_external_data=big)
        del model
        tmp_out = os.path.join(tmpdir, "out.onnx")
        try:
            if method == "static":
                images = _load_images(calibration, samples) if calibration else synthetic_images(samples)
                reader, cached = None, {}
                if "calibration_cache_path" in inspect.signature(quantize_static).parameters:  # newer ORT
                    cached["calibration_cache_path"] = os.path.join(tmpdir, "ranges.json")
                    passes = _calibrate_in_groups(staged, op_types, images, tmpdir, cached["calibration_cache_path"])
                    log.info("SafeCut: calibrated in %d memory-bounded passes", passes)
                else:   # older ORT reads no ranges file: one pass over the images
                    reader = _Calibration(staged, images)
                with _lean_calibration_sessions():
                    quantize_static(staged, tmp_out, reader, quant_format=QuantFormat.QDQ, **cached,
                                    op_types_to_quantize=op_types, per_channel=per_channel, reduce_range=False,
                                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                    use_external_data_format=big, nodes_to_exclude=exclude,
                                    extra_options={"ActivationSymmetric": False,
                                                   "WeightSymmetric": True})
            else:
                quantize_dynamic(staged, tmp_out, op_types_to_quantize=op_types, per_channel=per_channel,
                                 reduce_range=False, weight_type=QuantType.QInt8, use_external_data_format=big,
                                 extra_options={"MatMulConstBOnly": True})
        except SafeCutError:
            raise
        except Exception as exc:
            raise SafeCutError(f"quantizing {os.path.basename(src)} failed ({type(exc).__name__}: {exc})") from exc
        if big:  # re-save next to the output with its weights in one side file
            q = onnx.load(tmp_out)
            onnx.save(q, out, save_as_external_data=True, location=os.path.basename(out) + ".data")
        else:
            os.replace(tmp_out, out)
    log.info("SafeCut: wrote %s (%s, %d fp16 casts folded)", out, method, folded)
    return out
