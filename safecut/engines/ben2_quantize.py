"""INT8 BEN2 for OpenVINO: ``python -m safecut models quantize BEN2_Base.onnx [--calibration DIR]``.

NNCF post-training quantization (``nncf`` on PyPI, Apache-2.0) of the OpenVINO model converted from the ONNX file:
int8 weights and activations for the convolutions and the weight linears, ``ModelType.TRANSFORMER`` (BEN2's
encoder is a Swin transformer: its attention products and norms keep float), SmoothQuant off (NNCF's own Swin-B
figures: its default alpha cost 1.7 top-1 points, off ~0.1). OpenVINO runs the result with its int8 kernels
(AVX-512 VNNI, AVX2 ``vpmaddubsw``, AMX-INT8), which ONNX Runtime's QDQ files could not reach (README "Which CPU").

Calibration runs BEN2's own preprocessing (engines.ben2) on photos: the ones that ship with the pack
(``safecut/data/photos/calibration``, CC0/public domain), each with a mirror image and crops, or the user's folder.
The result is an OpenVINO IR stored beside the model, keyed by the source file's sha256 (models.quantized_store),
where ``OpenVINO int8`` and ``auto`` find it. Nothing here decides whether INT8 is good enough: the quality probe
(engines.ben2_precision) does, on other photos.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

from .. import DATA_DIR
from ..errors import BadInputError, SafeCutError
from ..models import modelfiles, quantized_store
from ..runtime.deps import require
from ..runtime.lazy import numpy as np
from . import ben2, ben2_precision

log = logging.getLogger("safecut.engines.ben2_quantize")

CALIBRATION_PHOTOS = os.path.join(DATA_DIR, "photos", "calibration")
VIEWS_PER_PHOTO = 4   # the photo, its mirror image and two crops: 12 samples from the 3 shipped photos


def _resolve_input(model_name_or_path: str) -> str:
    name = (model_name_or_path or "").strip()
    if not name:
        raise BadInputError("name a BEN2 model to quantize, e.g. `python -m safecut models quantize BEN2_Base.onnx`")
    if os.path.isfile(name):
        return os.path.abspath(name)
    return modelfiles.resolve("ben2", name)   # a missing one: ModelNotFoundError naming folder and fetch command


def calibration_images(folder: str | None = None, views: int = VIEWS_PER_PHOTO, seed: int = 0) -> list:
    """Calibration photos (float32 HxWx3 0..1) and, per photo, its mirror image and ``views - 2`` random crops of
    60-90 % of each side: a few photos then cover more scales and positions of a subject."""
    photos = ben2_precision.load_photos(folder or CALIBRATION_PHOTOS, "--calibration")
    rng = np.random.default_rng(seed)
    out = []
    for im in photos:
        out += [im, np.ascontiguousarray(im[:, ::-1])]
        h, w = im.shape[:2]
        for _ in range(max(0, views - 2)):
            ch, cw = int(h * rng.uniform(0.6, 0.9)), int(w * rng.uniform(0.6, 0.9))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            out.append(np.ascontiguousarray(im[y:y + ch, x:x + cw]))
    return out


def quantize_ben2(model_name_or_path: str, output: str | None = None, *, calibration: str | None = None,
                  views: int = VIEWS_PER_PHOTO) -> str:
    """Write the OpenVINO INT8 IR of a BEN2 ONNX model (default: where ``OpenVINO int8`` looks for it) and return
    its .xml path. ``calibration``: a folder of photos (default: the shipped ones)."""
    ov = require("openvino")
    nncf = require("nncf")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
    )

    src = _resolve_input(model_name_or_path)
    out = os.path.abspath(output) if output else quantized_store.int8_path(src)
    if not out.endswith(".xml"):
        raise BadInputError(f"--output '{out}' must end in .xml (an OpenVINO IR: .xml + .bin)")
    if os.path.abspath(src) == out:
        raise BadInputError(f"the output {out} would overwrite the input model")
    t0 = time.perf_counter()
    images = calibration_images(calibration, views)
    try:
        model = ov.convert_model(src)
        shape = model.inputs[0].get_partial_shape()
        size = tuple(d.get_length() if d.is_static else ben2.preprocess_params(src)["size"] for d in shape[2:4])
        feeds = ben2.calibration_feeds(src, images, size)
        del images
        quantized = nncf.quantize(
            model, nncf.Dataset(feeds), subset_size=len(feeds), model_type=nncf.ModelType.TRANSFORMER,
            advanced_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)))
        del model, feeds
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".safecut-q-", dir=os.path.dirname(out)) as tmp:
            staged = os.path.join(tmp, os.path.basename(out))
            ov.save_model(quantized, staged, compress_to_fp16=False)   # float parts stay f32 (the default: fp16)
            bin_name = os.path.splitext(os.path.basename(out))[0] + ".bin"
            shutil.move(os.path.join(tmp, bin_name), os.path.join(os.path.dirname(out), bin_name))
            os.replace(staged, out)   # the .xml last: a half-written model is never found
    except SafeCutError:
        raise
    except Exception as exc:
        raise SafeCutError(f"quantizing {os.path.basename(src)} failed ({type(exc).__name__}: {exc})") from exc
    log.info("SafeCut: wrote %s in %.0f s (NNCF %s, OpenVINO %s)", out, time.perf_counter() - t0,
             nncf.__version__, ov.__version__)
    return out
