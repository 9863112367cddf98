"""Lower precision for BEN2 only where it is proven on the user's own weights: the quality probe and ``auto``.

The crash probe (runtime.openvino_session) proves OpenVINO does not crash here; this one proves a lower precision
keeps the mask. For one model file (sha256) and one precision (``bf16`` on AMX, ``int8`` where it measured
faster) it runs f32 and the candidate on the probe photos that ship with the pack (``safecut/data/photos/probe``,
never the calibration ones) or on a folder the user names, compares the masks (engines.mask_quality: IoU, mean |Δ|,
edge p95) and records pass or fail with the figures (models.precision_verdicts: per sha256 + CPU + OpenVINO).

``auto`` runs the candidate only on a recorded pass. Without a verdict it runs the probe once, at the first load of
that model on this CPU (one log line, the caller's progress bar; about 2 f32 + 2 candidate calls), unless
``SAFECUT_PRECISION_PROBE=0``: then f32 runs and says why, once. The engine passes its own runner in
(``run(images, runtime) -> (masks, seconds, runtime label)``), so this module never imports the engine.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

from .. import DATA_DIR, imaging
from ..errors import BadInputError
from ..models import precision_verdicts, quantized_store
from ..runtime import cpu, providers
from . import mask_quality

log = logging.getLogger("safecut.engines.ben2_precision")

PHOTOS = os.path.join(DATA_DIR, "photos")
RUNTIME_OF = {"bf16": "OpenVINO bf16", "int8": "OpenVINO int8"}
Runner = Callable[[list, str], tuple[list, float, str]]


def load_photos(folder: str, option: str) -> list:
    """Every image in ``folder`` (float32 HxWx3 0..1, sorted by name); errors name the ``option`` to fix."""
    try:
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(tuple(imaging.IMAGE_EXTENSIONS)))
    except OSError as exc:
        raise BadInputError(f"{option} '{folder}' cannot be read ({exc}): name a folder of a few photos") from None
    if not names:
        raise BadInputError(f"{option} '{folder}' holds no images: name a folder of a few photos")
    return [imaging.decode_image(os.path.join(folder, n)).rgb for n in names]


def probe_photos(folder: str | None = None) -> list:
    """The probe images: the shipped CC0/public-domain photos, or every image in ``folder``."""
    return load_photos(folder or os.path.join(PHOTOS, "probe"), "--photos")


def verify(model_path: str, precision: str, run: Runner, *, folder: str | None = None,
           progress: Callable[[int], None] | None = None) -> dict:
    """Run f32 and ``precision`` on the probe photos, judge the masks, record and return the verdict."""
    images = probe_photos(folder)
    ref, t_ref, _ = run(images, "OpenVINO f32")
    if progress:
        progress(1)
    cand, t_cand, label = run(images, RUNTIME_OF[precision])
    if progress:
        progress(1)
    speed = {"f32_s_per_image": round(t_ref / len(images), 3), "s_per_image": round(t_cand / len(images), 3),
             "images": len(images), "ran_as": label}
    if not label.startswith(RUNTIME_OF[precision]):   # the candidate did not really run (e.g. bf16 compiled as f32): nothing proven
        return precision_verdicts.record(model_path, precision, False, f"{RUNTIME_OF[precision]} ran as {label}",
                                         **speed)
    fig = mask_quality.compare(ref, cand)
    passed, why = mask_quality.judge(fig)
    return precision_verdicts.record(model_path, precision, passed, why, iou=round(fig["iou"], 5),
                                     mean_abs=round(fig["mean_abs"], 5), edge_p95=round(fig["edge_p95"], 4),
                                     **speed)


def auto_probe_enabled() -> bool:
    return os.environ.get("SAFECUT_PRECISION_PROBE", "1").strip() != "0"


def resolve_auto(model_path: str, run: Runner,
                 progress_factory: Callable[[int], Callable[[int], None]] | None = None) -> tuple[str, str]:
    """(runtime, note) that ``auto`` runs BEN2 with on this CPU: the class's lower precision where this model
    passed the probe, else ``auto`` (OpenVINO f32 / ONNX Runtime fp32) with the reason in ``note``."""
    precision = cpu.ben2_lower_precision()
    if precision is None:
        return "auto", ""
    if precision == "int8" and not os.path.isfile(quantized_store.int8_path(model_path)):
        note = (f"OpenVINO int8 is faster on this CPU but '{os.path.basename(model_path)}' has no INT8 model yet: "
                f"{quantized_store.make_command(model_path)}")
        providers.warn_once(note)
        return "auto", "int8 not made"
    verdict = precision_verdicts.get(model_path, precision)
    if verdict is None and auto_probe_enabled():
        log.warning("SafeCut: checking BEN2 %s on '%s' against f32 on %d probe photos, once for this model and CPU "
                    "(about 4 BEN2 calls; SAFECUT_PRECISION_PROBE=0 skips it and runs f32)", precision,
                    os.path.basename(model_path), len(probe_photos()))
        verdict = verify(model_path, precision, run, progress=progress_factory(2) if progress_factory else None)
        log.warning("SafeCut: BEN2 %s on '%s': %s (%s)", precision, os.path.basename(model_path),
                    "passed" if verdict["passed"] else "failed, f32 runs", verdict["why"])
    if verdict is None:
        providers.warn_once(f"BEN2 {precision} is not verified for '{os.path.basename(model_path)}' on this CPU "
                            f"(SAFECUT_PRECISION_PROBE=0): running f32; `python -m safecut models verify "
                            f"--precision {precision}` checks it")
        return "auto", f"{precision} not verified"
    if not verdict["passed"]:
        providers.warn_once(f"BEN2 {precision} failed the quality probe for '{os.path.basename(model_path)}' "
                            f"({verdict['why']}): running f32")
        return "auto", f"{precision} failed the probe"
    return RUNTIME_OF[precision], f"verified: IoU {verdict.get('iou', 0):.3f}"
