"""NudeNet exposed-content detector on ONNX Runtime (the model file only, not the nudenet package's code).

The model is NudeNet's YOLOv8 export: input ``images [batch,3,height,width]`` (RGB, 0..1, square letterbox),
output ``[batch, 4 + 18, anchors]`` = box centre/size in model pixels, then one sigmoid score per label.
By default the ``320n.onnx`` bundled inside the ``nudenet`` pip package is used (found with
``importlib.util.find_spec``: the package itself is never imported, it needs OpenCV); any other ``.onnx``
(e.g. ``640m.onnx``) is looked up in ``models/nudenet`` through :mod:`safecut.models.modelfiles`.

Preprocessing mirrors NudeNet's own: the image keeps its aspect ratio, is scaled so its long side is the
model size with plain bilinear sampling (OpenCV ``INTER_LINEAR`` geometry, no antialiasing, like the
Ultralytics training pipeline), sits in the top-left corner and is padded with black to the right/bottom.
Colours stay RGB end to end: there is no BGR step anywhere.

Decoding differs from NudeNet's on purpose, to fail towards flagging:
* every (anchor, label) pair whose score reaches the threshold is a candidate (``multi_label``), so an
  exposed label is never hidden behind a higher "covered"/face score of the same box;
* non-maximum suppression (IoU 0.45) runs per label (``agnostic=False``), so a face box never suppresses
  an overlapping exposed-part box.
``multi_label=False, agnostic=True`` reproduces NudeNet's decoding (best label per anchor, class-agnostic NMS).

Boxes are reported as ``[x, y, w, h]`` integers in ORIGINAL image pixels: top-left corner plus size,
rounded outwards (the box covers the whole detected area) and clipped to the image.
"""
from __future__ import annotations

import ast
import importlib.util
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from ..runtime.lazy import numpy as np

from ..models import modelfiles
from ..runtime import providers, sessions
from ..runtime.cache import ModelKey, get_cache
from ..errors import BadInputError, SafeCutError
from ..models.registry import REGISTRY

log = logging.getLogger("safecut.engines.nudenet")

# Label order of the NudeNet 3.4 models (class id = index); checked against the model's own metadata.
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)
DEFAULT_UNSAFE: tuple[str, ...] = ("FEMALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED", "BUTTOCKS_EXPOSED",
                                   "ANUS_EXPOSED", "MALE_GENITALIA_EXPOSED")
DEFAULT_MODEL = "320n.onnx"
# NudeNet's own: nudenet 3.4.2 (_postprocess) keeps anchors whose best score is >= 0.2, then
# cv2.dnn.NMSBoxes(..., score_threshold=0.25, nms_threshold=0.45) drops every box under 0.25, so a
# detection NudeNet reports has a score of at least 0.25. SafeCut flags an image at the same score.
DEFAULT_THRESHOLD = 0.25
BUNDLED_MODEL = "320n.onnx"          # shipped inside the nudenet wheel
CENSOR_MODES = ["none", "blur", "pixelate", "black"]
NMS_IOU = 0.45
MAX_DETECTIONS = 300                 # per image, after NMS
MAX_CANDIDATES = 30000               # per image, before NMS (highest scores kept)
STRIDE = 32                          # YOLOv8's largest stride: input sides must be multiples of it
PAD_VALUE = 0.0                      # black padding, as NudeNet does


# ---- results ------------------------------------------------------------------------------------
@dataclass
class NudeResult:
    is_unsafe: bool                  # some unsafe label scored >= threshold
    max_score: float                 # highest unsafe-label score in the image (even below the threshold)
    detections: list[dict] = field(default_factory=list)   # {"label","score","box":[x,y,w,h],"unsafe"}

    def as_dict(self) -> dict:
        return {"is_unsafe": self.is_unsafe, "max_score": self.max_score, "detections": self.detections}


@dataclass
class NudeNetRun:
    results: list[NudeResult]
    device: providers.DeviceChoice
    seconds: float
    load_seconds: float = 0.0
    model: str = ""                  # path of the model file used
    input_size: int = 0


@dataclass
class NudeNetModel:
    session: object
    input_name: str
    output_name: str
    size: int                        # native square input side (graph, metadata, or file-name default)
    fixed_size: bool                 # the graph has static spatial dims: no other size can be used
    fixed_batch: int                 # 0 = dynamic batch dimension
    labels: tuple[str, ...]
    device: providers.DeviceChoice
    path: str

    def close(self) -> None:
        self.session = None          # ORT frees the session's memory with its last reference


# ---- model files --------------------------------------------------------------------------------
def bundled_model_path() -> str | None:
    """The 320n.onnx inside the installed ``nudenet`` package (found without importing it), or None."""
    try:
        spec = importlib.util.find_spec("nudenet")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        path = os.path.join(loc, BUNDLED_MODEL)
        if os.path.isfile(path):
            return path
    return None


def resolve_model(name: str = DEFAULT_MODEL) -> str:
    """Path of model ``name``: the bundled copy for 320n.onnx when nudenet is installed (a copy placed in
    models/nudenet wins), else models/nudenet via modelfiles (downloaded when allowed)."""
    name = (name or DEFAULT_MODEL).strip()
    if name.endswith(" (bundled)"):
        name = name[: -len(" (bundled)")].strip()
    if name == BUNDLED_MODEL and modelfiles.find("nudenet", name) is None:
        path = bundled_model_path()
        if path is not None:
            return path
    return modelfiles.resolve("nudenet", name)


def _metadata(sess) -> dict:
    try:
        return dict(sess.get_modelmeta().custom_metadata_map or {})
    except Exception:
        return {}


def _labels_from_metadata(meta: dict, n_classes: int) -> tuple[str, ...]:
    names = meta.get("names")
    if names:
        try:
            parsed = ast.literal_eval(names)   # Ultralytics writes a Python dict literal {0: 'A', …}
            if isinstance(parsed, dict) and sorted(parsed) == list(range(n_classes)):
                return tuple(str(parsed[i]) for i in range(n_classes))
        except (ValueError, SyntaxError):
            pass
    if n_classes == len(LABELS):
        return LABELS
    return tuple(f"class_{i}" for i in range(n_classes))


def _size_from_metadata(meta: dict) -> int:
    try:
        v = ast.literal_eval(meta.get("imgsz", ""))
        v = v if isinstance(v, (list, tuple)) else [v]
        return int(max(v)) if v and all(isinstance(x, int) and x > 0 for x in v) else 0
    except (ValueError, SyntaxError, TypeError):
        return 0


def _size_from_name(path: str) -> int:
    spec = REGISTRY.get(os.path.basename(path))
    if spec is not None and spec.param("size"):
        return int(spec.param("size"))
    return 640 if "640" in os.path.basename(path) else 320


def load_model(path: str, device: str = "auto", threads: int = 0, *, strict: bool = False,
               runtime: str = "auto") -> NudeNetModel:
    """``runtime``: the CPU runtime (safecut.runtime.sessions.CHOICES; auto: what safecut.runtime.cpu measured fastest)."""
    sess, choice = sessions.create_session(path, device, engine="nudenet", runtime=runtime, threads=threads,
                                           strict=strict)
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    name = os.path.basename(path)
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or not outputs or len(outputs[0].shape) != 3:
        raise SafeCutError(f"'{name}' does not look like a NudeNet (YOLOv8) model: it needs one input "
                           f"[N,3,H,W] and an output [N,4+classes,anchors]; it has inputs "
                           f"{[(i.name, i.shape) for i in inputs]}, outputs {[(o.name, o.shape) for o in outputs]}.")
    shape = inputs[0].shape
    dims = [d if isinstance(d, int) and d > 0 else 0 for d in shape]
    meta = _metadata(sess)
    channels = outputs[0].shape[1] if isinstance(outputs[0].shape[1], int) else 4 + len(LABELS)
    labels = _labels_from_metadata(meta, channels - 4)
    fixed = bool(dims[2] and dims[3])
    if fixed and dims[2] != dims[3]:
        raise SafeCutError(f"'{name}' takes {dims[2]}x{dims[3]} inputs; NudeNet models are square.")
    size = dims[2] if fixed else (_size_from_metadata(meta) or _size_from_name(path))
    return NudeNetModel(sess, inputs[0].name, outputs[0].name, int(size), fixed, dims[0], labels, choice, path)


# ---- labels -------------------------------------------------------------------------------------
def parse_labels(value: str | Iterable[str] | None, known: Sequence[str] = LABELS) -> tuple[str, ...]:
    """'A, B' / one per line / an iterable -> validated label tuple (case-insensitive; '#' starts a comment).
    An unknown label raises: a typo must not silently switch a safety label off."""
    if value is None:
        return DEFAULT_UNSAFE
    if isinstance(value, str):
        items = []
        for line in value.splitlines():
            items += line.split("#", 1)[0].replace(";", ",").split(",")
    else:
        items = list(value)
    out: list[str] = []
    upper = {k.upper(): k for k in known}
    for item in items:
        t = str(item).strip().upper().replace(" ", "_").replace("-", "_")
        if not t:
            continue
        if t not in upper:
            raise BadInputError(f"unsafe label '{str(item).strip()}' is not a NudeNet label. Valid labels: "
                                f"{', '.join(known)}.")
        if upper[t] not in out:
            out.append(upper[t])
    return tuple(out)


def parse_label_thresholds(value: str | Mapping[str, float] | None,
                           known: Sequence[str] = LABELS) -> dict[str, float]:
    """'LABEL=0.4' lines (or comma separated; '#' comments; case-insensitive) or a mapping -> {label: score}.
    Unknown labels, scores outside (0, 1] and a label given twice raise: a typo must not change a safety label."""
    if not value:
        return {}
    if isinstance(value, str):
        pairs = []
        for line in value.splitlines():
            for item in line.split("#", 1)[0].replace(";", ",").split(","):
                if not item.strip():
                    continue
                label, sep, score = item.partition("=")
                if not sep:
                    raise BadInputError(f"label_thresholds: line '{item.strip()}' is not LABEL=score "
                                        f"(e.g. FEMALE_BREAST_EXPOSED=0.4).")
                pairs.append((label, score))
    else:
        pairs = list(dict(value).items())
    upper = {k.upper(): k for k in known}
    out: dict[str, float] = {}
    for label, score in pairs:
        t = str(label).strip().upper().replace(" ", "_").replace("-", "_")
        if t not in upper:
            raise BadInputError(f"label_thresholds: '{str(label).strip()}' is not a NudeNet label. Valid labels: "
                                f"{', '.join(known)}.")
        try:
            v = float(str(score).strip())
        except ValueError:
            v = float("nan")
        if not 0.0 < v <= 1.0:   # NaN fails this too
            raise BadInputError(f"label_thresholds: score '{str(score).strip()}' for {upper[t]} is out of range: "
                                f"use a number in (0, 1], e.g. {upper[t]}=0.4.")
        if upper[t] in out:
            raise BadInputError(f"label_thresholds: {upper[t]} is given twice; keep one line per label.")
        out[upper[t]] = v
    return out


def label_threshold_vector(labels: Sequence[str], threshold: float, overrides: Mapping[str, float]) -> np.ndarray:
    """One score cutoff per model label: its override, else ``threshold``."""
    return np.array([overrides.get(l, threshold) for l in labels], np.float32)


# ---- preprocessing ------------------------------------------------------------------------------
def _check_image(i: int, im) -> np.ndarray:
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] not in (1, 3, 4):
        raise BadInputError(f"image {i} has shape {a.shape}; NudeNet needs HxWx3 RGB images.")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    a = a[..., :3]   # RGBA: alpha dropped, colours kept
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return np.asarray(a, np.float32)


def _axis_taps(n_src: int, n_dst: int):
    """Source indices and weights of a bilinear resize along one axis (OpenCV INTER_LINEAR geometry:
    pixel centres aligned, borders clamped, no antialiasing)."""
    scale = n_src / n_dst
    pos = (np.arange(n_dst, dtype=np.float64) + 0.5) * scale - 0.5
    pos = np.clip(pos, 0.0, n_src - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def resize_bilinear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """HxWxC float32 -> hxwxC, vectorized. Written as a + t*(b - a): flat colours stay exactly flat."""
    H, W = img.shape[:2]
    if (H, W) == (h, w):
        return img
    y0, y1, wy = _axis_taps(H, h)
    x0, x1, wx = _axis_taps(W, w)
    rows0, rows1 = img[y0], img[y1]                       # [h, W, C]
    wx = wx[None, :, None]
    top = rows0[:, x0] + wx * (rows0[:, x1] - rows0[:, x0])
    bot = rows1[:, x0] + wx * (rows1[:, x1] - rows1[:, x0])
    return top + wy[:, None, None] * (bot - top)


@dataclass(frozen=True)
class Letterbox:
    height: int                      # original image size
    width: int
    sx: float                        # model pixels per original pixel, per axis
    sy: float


def letterbox(images: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, list[Letterbox]]:
    """Images of any sizes -> one batch [B,3,size,size] float32 RGB 0..1 (top-left, black padding)."""
    batch = np.full((len(images), size, size, 3), PAD_VALUE, np.float32)
    boxes = []
    for i, im in enumerate(images):
        a = _check_image(i, im)
        H, W = a.shape[:2]
        s = size / max(H, W)
        h, w = max(1, min(size, round(H * s))), max(1, min(size, round(W * s)))
        batch[i, :h, :w] = np.clip(resize_bilinear(a, h, w), 0.0, 1.0)
        boxes.append(Letterbox(H, W, w / W, h / H))
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2)), boxes


# ---- decoding -----------------------------------------------------------------------------------
def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, max_keep: int = MAX_DETECTIONS) -> np.ndarray:
    """Greedy non-maximum suppression. boxes [N,4] x1,y1,x2,y2; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size and len(keep) < max_keep:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        ov = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        order = rest[ov <= iou]
    return np.asarray(keep, dtype=np.intp)


def decode(raw: np.ndarray, frames: Sequence[Letterbox], *, threshold: float = DEFAULT_THRESHOLD,
           labels: Sequence[str] = LABELS, unsafe_labels: Sequence[str] = DEFAULT_UNSAFE,
           iou: float = NMS_IOU, multi_label: bool = True, agnostic: bool = False,
           label_thresholds: Mapping[str, float] | None = None) -> list[NudeResult]:
    """YOLOv8 output [B, 4+C, anchors] (model pixels) -> one NudeResult per image, boxes in original pixels.
    A label scores a detection from its ``label_thresholds`` entry, else from ``threshold``."""
    out = np.asarray(raw, np.float32)
    n_cls = len(labels)
    if out.ndim != 3:
        raise SafeCutError(f"NudeNet output has shape {out.shape}; expected [batch, {4 + n_cls}, anchors].")
    if out.shape[1] != 4 + n_cls and out.shape[2] == 4 + n_cls:
        out = out.transpose(0, 2, 1)      # [B, anchors, 4+C] exports
    if out.shape[1] != 4 + n_cls:
        raise SafeCutError(f"NudeNet output has {out.shape[1]} channels; expected {4 + n_cls} "
                           f"(4 box + {n_cls} labels).")
    unsafe_idx = np.array([labels.index(l) for l in unsafe_labels if l in labels], dtype=np.intp)
    unsafe_mask = np.zeros(n_cls, bool)
    unsafe_mask[unsafe_idx] = True
    cutoff = label_threshold_vector(labels, threshold, label_thresholds or {})   # [C]
    results = []
    for o, fr in zip(out, frames):
        cx, cy, bw, bh = o[0], o[1], o[2], o[3]
        scores = o[4:].T                                            # [A, C]
        x1 = np.clip((cx - bw / 2) / fr.sx, 0, fr.width)
        y1 = np.clip((cy - bh / 2) / fr.sy, 0, fr.height)
        x2 = np.clip((cx + bw / 2) / fr.sx, 0, fr.width)
        y2 = np.clip((cy + bh / 2) / fr.sy, 0, fr.height)
        valid = (x2 > x1) & (y2 > y1)                               # boxes lying only in the padding are void
        scores = np.where(valid[:, None], scores, 0.0)
        max_score = float(scores[:, unsafe_idx].max()) if unsafe_idx.size and scores.size else 0.0
        if multi_label:
            a_idx, c_idx = np.nonzero(scores >= cutoff[None, :])
            s = scores[a_idx, c_idx]
        else:
            c_all = scores.argmax(1)
            s_all = scores[np.arange(scores.shape[0]), c_all]
            a_idx = np.nonzero(s_all >= cutoff[c_all])[0]
            c_idx, s = c_all[a_idx], s_all[a_idx]
        if s.size > MAX_CANDIDATES:
            top = np.argsort(-s, kind="stable")[:MAX_CANDIDATES]
            a_idx, c_idx, s = a_idx[top], c_idx[top], s[top]
        boxes = np.stack([x1[a_idx], y1[a_idx], x2[a_idx], y2[a_idx]], 1).astype(np.float64)
        if agnostic or not s.size:
            keep = nms(boxes, s, iou)
        else:   # per-label NMS in one pass: shift each label's boxes into its own region
            shift = (c_idx * (max(fr.width, fr.height) + 1.0))[:, None]
            keep = nms(boxes + shift, s, iou)
        dets = []
        for k in keep:
            bx1, by1 = math.floor(boxes[k, 0]), math.floor(boxes[k, 1])
            bx2, by2 = math.ceil(boxes[k, 2]), math.ceil(boxes[k, 3])
            c = int(c_idx[k])
            dets.append({"label": labels[c], "score": float(s[k]),
                         "box": [int(bx1), int(by1), int(bx2 - bx1), int(by2 - by1)],
                         "unsafe": bool(unsafe_mask[c])})
        is_unsafe = any(d["unsafe"] for d in dets)
        results.append(NudeResult(is_unsafe, max_score, dets))
    return results


# ---- running ------------------------------------------------------------------------------------
def _input_size(model: NudeNetModel, override: int) -> int:
    if not override or override <= 0:
        return model.size
    if model.fixed_size:
        if override != model.size:
            providers.warn_once(f"{os.path.basename(model.path)} has a fixed {model.size}px input; "
                                f"input size {override} ignored")
        return model.size
    return max(STRIDE, int(math.ceil(override / STRIDE)) * STRIDE)


def run_model(model: NudeNetModel, images: Sequence[np.ndarray], *, threshold: float = DEFAULT_THRESHOLD,
              unsafe_labels: Sequence[str] = DEFAULT_UNSAFE, batch_size: int = 0, input_size: int = 0,
              multi_label: bool = True, agnostic: bool = False, label_thresholds: Mapping[str, float] | None = None,
              progress: Callable[[int], None] | None = None) -> list[NudeResult]:
    size = _input_size(model, input_size)
    if model.fixed_batch:
        step = model.fixed_batch
    else:
        # auto: 4 per call on CPU (measured: same cost per image as 1 on 2 cores, fewer Python round trips)
        step = max(1, batch_size or (8 if model.device.used == "CUDA" else 4))
    results: list[NudeResult] = []
    for s in range(0, len(images), step):
        chunk = list(images[s:s + step])
        x, frames = letterbox(chunk, size)
        n = len(chunk)
        if model.fixed_batch and n < model.fixed_batch:     # static batch: pad with blank images
            x = np.concatenate([x, np.zeros((model.fixed_batch - n, *x.shape[1:]), np.float32)])
        raw = model.session.run([model.output_name], {model.input_name: x})[0][:n]
        results += decode(raw, frames, threshold=threshold, labels=model.labels, unsafe_labels=unsafe_labels,
                          multi_label=multi_label, agnostic=agnostic, label_thresholds=label_thresholds)
        if progress is not None:
            progress(n)   # also where ComfyUI's interrupt is raised: between chunks
    return results


def detect(images: Sequence[np.ndarray], *, model: str = DEFAULT_MODEL, device: str = "auto",
           threshold: float = DEFAULT_THRESHOLD, unsafe_labels: str | Iterable[str] | None = DEFAULT_UNSAFE, threads: int = 0,
           batch_size: int = 0, input_size: int = 0, keep_loaded: bool = True, strict: bool = False,
           multi_label: bool = True, agnostic: bool = False,
           label_thresholds: str | Mapping[str, float] | None = None,
           progress: Callable[[int], None] | None = None,
           runtime: str = "auto") -> NudeNetRun:
    """Detect NudeNet labels in HxWx3 float32 0..1 RGB images (any sizes, batched together).

    ``is_unsafe`` per image: some label of ``unsafe_labels`` scored >= its threshold (its ``label_thresholds``
    entry, else ``threshold``). ``max_score``: the
    highest unsafe-label score anywhere in the image, reported even below the threshold (to tune it).
    """
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise BadInputError(f"threshold '{threshold}' is not a number between 0 and 1.") from None
    if not 0.0 < threshold <= 1.0:
        raise BadInputError(f"threshold {threshold} is out of range: use a value in (0, 1], e.g. 0.25 (NudeNet's own).")
    unsafe = parse_labels(unsafe_labels)
    overrides = parse_label_thresholds(label_thresholds)
    path = resolve_model(model)
    cache = get_cache()
    loads_before = cache.stats()["load_seconds"]
    t0 = time.perf_counter()

    def attempt(dev: str) -> NudeNetRun:
        key = ModelKey("nudenet", path, providers.normalize(dev), sessions.normalize(runtime),
                       providers.default_threads(threads))
        with cache.use(key, lambda: load_model(path, dev, threads, strict=strict, runtime=runtime), files=[path],
                       keep_loaded=keep_loaded) as m:
            providers.refuse_fallback(m.device, strict)
            unknown = [l for l in unsafe if l not in m.labels]
            if unknown:
                raise BadInputError(f"unsafe labels {unknown} are not labels of {os.path.basename(path)} "
                                    f"({', '.join(m.labels)}).")
            unknown = [l for l in overrides if l not in m.labels]
            if unknown:
                raise BadInputError(f"label_thresholds {unknown} are not labels of {os.path.basename(path)} "
                                    f"({', '.join(m.labels)}).")
            results = run_model(m, images, threshold=threshold, unsafe_labels=unsafe, batch_size=batch_size,
                                input_size=input_size, multi_label=multi_label, agnostic=agnostic,
                                label_thresholds=overrides, progress=progress)
            choice, size = m.device, _input_size(m, input_size)
        return NudeNetRun(results, choice, time.perf_counter() - t0,
                          cache.stats()["load_seconds"] - loads_before, path, size)

    return providers.oom_guard("NudeNet", device, attempt, strict=strict)


# ---- masks and censoring ------------------------------------------------------------------------
def _selected(detections: Iterable[dict], labels: Iterable[str] | None) -> list[dict]:
    if labels is None:
        return [d for d in detections if d.get("unsafe")]
    wanted = set(labels)
    return [d for d in detections if d.get("label") in wanted]


def _clip_box(box, height: int, width: int) -> tuple[int, int, int, int] | None:
    x, y, w, h = (int(round(v)) for v in box)
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(width, x + w), min(height, y + h)
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def mask_from_detections(detections: Iterable[dict], height: int, width: int, *,
                         labels: Iterable[str] | None = None, grow: int = 0) -> np.ndarray:
    """HxW float32 mask, 1 inside the boxes of the flagged detections (``labels=None``: the unsafe ones;
    else those with these labels). ``grow`` widens every box by that many pixels on each side."""
    mask = np.zeros((int(height), int(width)), np.float32)
    for d in _selected(detections, labels):
        x, y, w, h = d["box"]
        b = _clip_box((x - grow, y - grow, w + 2 * grow, h + 2 * grow), height, width)
        if b is not None:
            mask[b[1]:b[3], b[0]:b[2]] = 1.0
    return mask


def _blur_axis(x: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Mean over a 2r+1 window along ``axis`` (cumulative sums, edges clamped)."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis, dtype=np.float64)
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(n), axis=axis)
    return ((hi - lo) / (2 * r + 1)).astype(np.float32)


def _blur(region: np.ndarray, r: int) -> np.ndarray:
    """Three box-blur passes (close to a Gaussian), using only the pixels inside the region."""
    out = region
    for _ in range(3):
        out = _blur_axis(_blur_axis(out, r, 0), r, 1)
    return out


def _pixelate(region: np.ndarray, block: int) -> np.ndarray:
    h, w, c = region.shape
    nby, nbx = -(-h // block), -(-w // block)
    padded = np.pad(region, ((0, nby * block - h), (0, nbx * block - w), (0, 0)), mode="edge")
    means = padded.reshape(nby, block, nbx, block, c).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    return np.repeat(np.repeat(means, block, axis=0), block, axis=1)[:h, :w]


def censor(image: np.ndarray, detections: Iterable[dict], mode: str = "blur", *,
           labels: Iterable[str] | None = None, strength: float = 1.0) -> np.ndarray:
    """Copy of ``image`` (HxWxC float 0..1) with the flagged boxes blurred / pixelated / blacked out.
    Pixels outside the boxes are returned bit-for-bit unchanged."""
    if mode not in CENSOR_MODES:
        raise BadInputError(f"censor mode '{mode}' is not one of: {', '.join(CENSOR_MODES)}.")
    img = np.asarray(image, np.float32)
    out = img.copy()
    if mode == "none":
        return out
    H, W = img.shape[:2]
    for d in _selected(detections, labels):
        b = _clip_box(d["box"], H, W)
        if b is None:
            continue
        x1, y1, x2, y2 = b
        side = max(x2 - x1, y2 - y1)
        if mode == "black":
            out[y1:y2, x1:x2] = 0.0
        elif mode == "pixelate":
            block = max(2, int(round(side / 8 / max(strength, 1e-3))))
            out[y1:y2, x1:x2] = _pixelate(out[y1:y2, x1:x2], block)
        else:
            r = max(2, int(round(side / 6 * strength)))
            out[y1:y2, x1:x2] = _blur(out[y1:y2, x1:x2], r)
    return out
