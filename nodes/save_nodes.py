"""SafeCut Save Cutout: RGBA PNGs with the verdict in their metadata, plus one JSON report per run.

* INPUT_IS_LIST: the node runs once and sees every image of a list or batch run (widget values arrive as
  one-element lists). Images are flattened in order: list items, then the frames of each batch.
* Alpha: ``mask`` is used AS alpha (1 = subject = opaque), i.e. BEN2's MASK output, not core LoadImage's
  1 - alpha. Without a mask, a 4-channel IMAGE (BEN2's 'rgba') keeps its own alpha; otherwise the PNG
  is fully opaque.
* ``report`` (the Keyword Gate's JSON): each image's entry goes into its PNG under the text key
  "safecut". When a report is connected only images whose verdict is exactly "SAFE" are written; all
  others (UNSAFE, missing or unreadable entries: fail closed) are listed in the report but not written
  unless save_unsafe is on. Without a report every image is written.
* Files go to ComfyUI's output folder as ``<prefix>_<counter:05>_<original name>.png`` (the counter never
  reuses a number, no overwrite; written atomically). The run's report is ``<prefix>_<counter>_report.json``
  and is listed under ui.images too: stock worker-comfyui returns only ui.images files to API callers.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re

from ..safecut.runtime.lazy import numpy as np

from ..safecut import imaging
from ..safecut.errors import BadInputError
from .common import CATEGORY, Progress, dumps, flatten

SAFE, UNSAFE = "SAFE", "UNSAFE"


def output_root() -> str:
    """ComfyUI's output folder; outside ComfyUI SAFECUT_OUTPUT_DIR or ./output."""
    try:
        import folder_paths  # type: ignore

        return os.path.abspath(folder_paths.get_output_directory())
    except ImportError:
        return os.path.abspath(os.environ.get("SAFECUT_OUTPUT_DIR") or os.path.join(os.getcwd(), "output"))


def _first(value, default=None):
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return default if value is None else value


def _frames(items, what: str) -> list[np.ndarray]:
    """List of IMAGE/MASK tensors (each a batch or a single frame) -> list of numpy frames."""
    out: list[np.ndarray] = []
    for t in flatten(items):
        if t is None:
            continue
        arr = t.detach().cpu().float().numpy() if hasattr(t, "detach") else np.asarray(t, np.float32)
        if what == "image":
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
                raise BadInputError(f"input 'image' must be IMAGE [B,H,W,C]; got shape {tuple(arr.shape)}")
        else:
            if arr.ndim == 2:
                arr = arr[None]
            if arr.ndim == 4 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim != 3:
                raise BadInputError(f"input 'mask' must be MASK [B,H,W]; got shape {tuple(arr.shape)}")
        out.extend(np.ascontiguousarray(a, dtype=np.float32) for a in arr)
    return out


def _names(filenames) -> list[str]:
    out: list[str] = []
    for f in flatten(filenames):
        if f is not None:  # a newline-joined string (e.g. typed by hand) counts as several names
            out.extend(s.strip() for s in str(f).splitlines() if s.strip())
    return out


def parse_report(reports, count: int, names: list[str]) -> list[dict] | None:
    """The gate's JSON (one string per upstream run) -> one entry per image, or None when no report is
    connected. Accepts a list of entries, {"images"|"entries"|"results"|"items": [...]}, or one entry.
    Entries are matched by file name when every entry names one, else by position. Anything that does not
    give exactly one entry per image yields fail-closed UNSAFE entries (decided_by "error")."""
    texts = [r for r in flatten(reports) if r is not None and str(r).strip()]
    if not texts:
        return None
    entries: list = []
    try:
        for text in texts:
            data = json.loads(text) if isinstance(text, str) else text
            if isinstance(data, dict):
                for key in ("images", "entries", "results", "items"):
                    if isinstance(data.get(key), list):
                        data = data[key]
                        break
                else:
                    data = [data]
            if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
                raise ValueError("expected a JSON list of objects")
            entries.extend(data)
    except (ValueError, TypeError) as exc:
        return [_failed(f"report is not valid JSON from the Keyword Gate ({exc})") for _ in range(count)]

    def key(e):
        v = e.get("file", e.get("filename", e.get("name")))
        return str(v) if v is not None else None

    if names and entries and all(key(e) for e in entries):
        if len(set(names)) != len(names):  # the same name twice: names cannot tell these images apart
            same_order = len(entries) == count and all(
                key(e) == n or os.path.basename(key(e)) == os.path.basename(n) for e, n in zip(entries, names))
            if same_order:
                return [dict(e) for e in entries]
            return [_failed(f"file name '{n}' occurs more than once and the report's entries are not in the "
                            f"images' order; cannot tell which entry is this image's") for n in names]
        exact: dict[str, list] = {}
        base: dict[str, list] = {}
        for e in entries:
            exact.setdefault(key(e), []).append(e)
            base.setdefault(os.path.basename(key(e)), []).append(e)

        def match(n: str) -> dict:  # an ambiguous name (two entries) fails closed: never a guess
            found = exact.get(n) or base.get(os.path.basename(n))
            if not found:
                return _failed(f"report has no entry for '{n}'")
            if len(found) > 1:
                return _failed(f"report has {len(found)} entries for '{n}'; cannot tell which is this image's")
            return dict(found[0])

        return [match(n) for n in names]
    if len(entries) != count:
        return [_failed(f"report has {len(entries)} entries for {count} image(s); connect the gate to the "
                        f"same images") for _ in range(count)]
    return [dict(e) for e in entries]


def _failed(reason: str) -> dict:
    return {"verdict": UNSAFE, "decided_by": "error", "reason": reason}


class SafeCutSaveCutout:
    DESCRIPTION = ("Writes the cutouts as RGBA PNGs (mask = alpha, 1 = subject) with each image's verdict, caption "
                   "and scores in the PNG metadata (key 'safecut'), plus <prefix>_<n>_report.json for the run. "
                   "Images judged UNSAFE are not written unless save_unsafe is on; they are listed in the report.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["save cutout", "save png", "save rgba", "save transparent png", "export", "save image"]
    FUNCTION = "save"
    OUTPUT_NODE = True
    INPUT_IS_LIST = True
    RETURN_TYPES = ()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Cutouts to save (list or batch). A 4-channel IMAGE keeps its alpha "
                                "when no mask is connected."}),
            "filename_prefix": ("STRING", {"default": "safecut/cutout", "tooltip":
                                "Output file prefix; may include sub-folders inside ComfyUI's output folder "
                                "('..' and absolute paths are refused)."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Alpha to write, used as is: 1 = subject (opaque), 0 = background. "
                              "Connect BEN2's 'mask'. (Core Load Image's MASK is 1 - alpha: invert it first.)"}),
            "filenames": ("STRING", {"forceInput": True, "tooltip":
                          "Original file names (Load Image Batch 'filenames'): added to each saved name and to "
                          "the metadata."}),
            "report": ("STRING", {"forceInput": True, "tooltip":
                       "Keyword Gate report (JSON). Each image's entry is embedded in its PNG; only SAFE images "
                       "are written unless save_unsafe is on."}),
            "save_unsafe": ("BOOLEAN", {"default": False, "tooltip":
                            "Also write images whose verdict is not SAFE (they are always listed in the report)."}),
        }}

    def save(self, image, filename_prefix=("safecut/cutout",), mask=None, filenames=None, report=None,
             save_unsafe=(False,)):
        prefix = _first(filename_prefix, "safecut/cutout")
        save_unsafe = bool(_first(save_unsafe, False))
        frames = _frames(image, "image")
        if not frames:
            raise BadInputError("input 'image' is empty: nothing to save.")
        masks = _frames(mask, "mask") if mask is not None else []
        if masks and len(masks) != len(frames):
            raise BadInputError(f"input 'mask' has {len(masks)} mask(s) for {len(frames)} image(s); connect the "
                                f"mask from the same node as the image.")
        names = _names(filenames)
        if names and len(names) != len(frames):
            raise BadInputError(f"input 'filenames' has {len(names)} name(s) for {len(frames)} image(s); connect "
                                f"the filenames of the loader that produced these images.")
        entries = parse_report(report, len(frames), names)

        root = output_root()
        folder, sub, base = imaging.resolve_output_prefix(root, prefix)
        counter = _next_counter(folder, base)
        run_counter = counter
        progress = Progress(len(frames))
        ui_images, rows = [], []
        report_name = f"{base}_{run_counter:05}_report.json"
        for i, rgb in enumerate(frames):
            entry = dict(entries[i]) if entries is not None else {}
            # original name: the filenames input, else the one the gate recorded ("filename" becomes the saved name)
            src = names[i] if names else str(entry.get("filename") or entry.get("file") or "")
            verdict = entry.get("verdict") if entries is not None else None
            row = {"index": i, "source": src or None, "verdict": verdict, **{k: v for k, v in entry.items()
                                                                             if k not in ("index", "source")}}
            allowed = entries is None or verdict == SAFE or save_unsafe
            if not allowed:
                row.update(saved=False, filename=None, subfolder=sub,
                           skipped_reason=f"verdict {verdict or 'missing'}: not written (save_unsafe is off)")
                rows.append(row)
                progress(1)
                continue
            alpha = masks[i] if masks else None
            if alpha is not None and alpha.shape != rgb.shape[:2]:
                raise BadInputError(f"mask {i} is {alpha.shape[1]}x{alpha.shape[0]} but image {i} is "
                                    f"{rgb.shape[1]}x{rgb.shape[0]}; connect the mask made for these images.")
            rgba = _rgba(rgb, alpha)
            meta = {"safecut": dumps({k: v for k, v in row.items() if k not in ("saved", "filename", "subfolder")}),
                    "Software": "SafeCut"}
            if src:
                meta["source_filename"] = src
            stem = imaging.sanitize_filename(os.path.splitext(src.replace("/", "_"))[0], 60, "") if src else ""
            while True:
                fname = f"{base}_{counter:05}_{stem}.png" if stem else f"{base}_{counter:05}_.png"
                try:
                    imaging.save_png_atomic(os.path.join(folder, fname), rgba, meta, overwrite=False)
                    break
                except FileExistsError:
                    counter += 1
            counter += 1
            row.update(saved=True, filename=fname, subfolder=sub)
            rows.append(row)
            ui_images.append({"filename": fname, "subfolder": sub, "type": "output"})
            progress(1)

        summary = {"images": len(frames), "saved": sum(r["saved"] for r in rows),
                   "not_saved": sum(not r["saved"] for r in rows),
                   "unsafe": sum(r.get("verdict") != SAFE for r in rows) if entries is not None else None,
                   "report": "/".join(p for p in (sub, report_name) if p)}
        doc = {"safecut_report": 1, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "prefix": prefix, "save_unsafe": save_unsafe, "summary": summary, "images": rows}
        text = json.dumps(doc, ensure_ascii=False, indent=2, default=str)
        while True:
            try:
                imaging.write_text_atomic(os.path.join(folder, report_name), text, overwrite=False)
                break
            except FileExistsError:  # someone else took this number meanwhile
                run_counter = max(run_counter, counter) + 1
                report_name = f"{base}_{run_counter:05}_report.json"
                summary["report"] = "/".join(p for p in (sub, report_name) if p)
                text = json.dumps(doc, ensure_ascii=False, indent=2, default=str)
        ui_images.append({"filename": report_name, "subfolder": sub, "type": "output"})
        return {"ui": {"images": ui_images, "safecut": [summary]}, "result": ()}


def _rgba(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    if alpha is None:
        alpha = rgb[..., 3] if rgb.shape[-1] == 4 else np.ones(rgb.shape[:2], np.float32)
    out = np.concatenate([rgb[..., :3], alpha[..., None]], axis=-1)
    return imaging.to_uint8(out)


def _next_counter(folder: str, base: str) -> int:
    """1 + the highest counter used by any '<base>_<n>_…' file in the folder (like core SaveImage)."""
    pat = re.compile(re.escape(base) + r"_(\d{5,})_")
    best = 0
    try:
        for name in os.listdir(folder):
            m = pat.match(name)
            if m:
                best = max(best, int(m.group(1)))
    except OSError:
        pass
    return best + 1


NODE_CLASS_MAPPINGS = {"SafeCutSaveCutout": SafeCutSaveCutout}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutSaveCutout": "SafeCut Save Cutout"}
