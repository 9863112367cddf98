"""The batch loader engine: decode the selected files, report bad ones, bring a batch to one size.

Batch mode brings every image to the FIRST image's size: ``resize`` stretches, ``crop`` scales to cover and
centre-crops, ``pad`` scales to fit (aspect kept), centres the picture and fills the rest with black; the
padding counts as transparent, so its mask is 1 (same meaning as 1 - alpha).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..runtime.lazy import numpy as np

from ..errors import BadInputError
from .decode import _pil, decode_image
from .listing import rel_name

MODES = ["list", "batch"]
FITS = ["pad", "resize", "crop"]
ON_ERROR = ["fail", "skip"]


@dataclass
class LoadResult:
    images: list[np.ndarray]         # HxWx3 float32 0..1 (list mode: native sizes; batch: common size)
    masks: list[np.ndarray]          # HxW float32, 1 - alpha (batch/pad: padding = 1)
    names: list[str]
    errors: list[dict]               # [{"file", "error"}] for every file that was not loaded
    infos: list[dict] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (W, H) common size in batch mode


def load_batch(files: Sequence[str], mode: str = "list", fit: str = "pad", on_error: str = "fail",
               progress: Callable[[int], None] | None = None, base: str | None = None) -> LoadResult:
    """Decode ``files`` in order. ``on_error="fail"`` raises ONE BadInputError listing every bad file;
    ``"skip"`` keeps the good ones and reports the bad in ``errors``. When nothing at all could be loaded
    it raises in both modes. ``files`` may be a FileList: its ``refused`` entries count as bad files."""
    if mode not in MODES:
        raise BadInputError(f"mode '{mode}' is not one of {MODES}.")
    if fit not in FITS:
        raise BadInputError(f"batch_fit '{fit}' is not one of {FITS}.")
    if on_error not in ON_ERROR:
        raise BadInputError(f"on_error '{on_error}' is not one of {ON_ERROR}.")
    if base is None:
        base = getattr(files, "base", None)
    errors: list[dict] = [dict(r) for r in getattr(files, "refused", [])]
    images, masks, names, infos = [], [], [], []
    for path in files:
        name = rel_name(path, base)
        try:
            d = decode_image(path, name=name)
        except BadInputError as exc:
            errors.append({"file": name, "error": str(exc)})
        else:
            images.append(d.rgb)
            masks.append(d.mask)
            names.append(name)
            infos.append(d.info)
        if progress is not None:
            progress(1)
    if errors and (on_error == "fail" or not images):
        raise _bad_files(errors, len(files) + len(getattr(files, "refused", [])), on_error, nothing=not images)
    if not images:
        raise BadInputError("no image files were selected; check the folder, the pattern and start/limit.")
    size = None
    if mode == "batch":
        h, w = images[0].shape[:2]
        size = (w, h)
        for i in range(len(images)):
            images[i], masks[i] = fit_image(images[i], masks[i], (h, w), fit)
    return LoadResult(images, masks, names, errors, infos, size)


def _bad_files(errors: list[dict], total: int, on_error: str, nothing: bool) -> BadInputError:
    lines = "\n".join(f"  - {e['error']}" for e in errors)
    head = (f"None of the {total} selected file(s) could be loaded:" if nothing else
            f"{len(errors)} of {total} selected file(s) could not be loaded:")
    tail = ("Fix or remove these files." if nothing else
            "Fix or remove these files, or set on_error to 'skip' to load the others and report these.")
    err = BadInputError(f"{head}\n{lines}\n{tail}")
    err.errors = errors
    return err


def fit_image(rgb: np.ndarray, mask: np.ndarray, size_hw: tuple[int, int], fit: str) -> tuple[np.ndarray, np.ndarray]:
    """Bring one image and its mask (1 - alpha) to ``size_hw``; see the module docstring for the fits."""
    th, tw = size_hw
    h, w = rgb.shape[:2]
    if (h, w) == (th, tw):
        return rgb, mask
    if fit == "resize":
        return _resize(rgb, (th, tw)), _resize(mask, (th, tw))
    if fit == "crop":
        s = max(tw / w, th / h)
        nw, nh = max(tw, round(w * s)), max(th, round(h * s))
        r, m = _resize(rgb, (nh, nw)), _resize(mask, (nh, nw))
        y, x = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(r[y:y + th, x:x + tw]), np.ascontiguousarray(m[y:y + th, x:x + tw])
    if fit == "pad":
        s = min(tw / w, th / h)
        nw, nh = min(tw, max(1, round(w * s))), min(th, max(1, round(h * s)))
        out = np.zeros((th, tw, 3), np.float32)
        out_m = np.ones((th, tw), np.float32)  # padding = no content = transparent -> mask 1
        y, x = (th - nh) // 2, (tw - nw) // 2
        out[y:y + nh, x:x + nw] = _resize(rgb, (nh, nw))
        out_m[y:y + nh, x:x + nw] = _resize(mask, (nh, nw))
        return out, out_m
    raise BadInputError(f"batch_fit '{fit}' is not one of {FITS}.")


def _resize(arr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Float resize per channel (keeps 16-bit precision); Lanczos for shrinking/enlarging, clipped 0..1."""
    Image, _, _ = _pil()
    th, tw = size_hw
    if arr.shape[:2] == (th, tw):
        return arr.astype(np.float32, copy=False)
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = np.empty((th, tw, chans.shape[-1]), np.float32)
    for c in range(chans.shape[-1]):
        im = Image.fromarray(np.ascontiguousarray(chans[..., c], dtype=np.float32))  # mode "F"
        out[..., c] = np.asarray(im.resize((tw, th), Image.Resampling.LANCZOS), np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out[..., 0] if arr.ndim == 2 else out
