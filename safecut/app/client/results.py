"""Decoding what the worker returned: files, S3 links, errors, and SafeCut's verdict in each PNG."""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .common import META_KEY


def decode_b64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = re.sub(r"\s+", "", text)
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@dataclass
class Results:
    """What came back: files (name, bytes), remote files (name, url), and job-level errors."""
    files: list[tuple[str, bytes]] = field(default_factory=list)
    urls: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    job_failed: bool = False


def as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def error_text(err: Any) -> str:
    """RunPod puts the handler's error dict into a string; unpack {"error", "details"} when it is one."""
    if isinstance(err, str):
        try:
            parsed = json.loads(err)
        except (json.JSONDecodeError, ValueError):
            return err
        err = parsed
    if isinstance(err, dict):
        msg = as_text(err.get("error") or err.get("message") or err)
        details = err.get("details")
        if details:
            msg += ": " + "; ".join(as_text(d) for d in (details if isinstance(details, list) else [details]))
        return msg
    return as_text(err)


def collect_worker_output(output: Any) -> Results:
    """Files and errors of a worker-comfyui result (5.x: {"images": [{"filename","type","data"}], "errors"?};
    {"error", "details"?} on failure; older workers: base64 strings)."""
    res = Results()
    if output is None:
        res.errors.append("the job returned no output")
        return res
    if isinstance(output, str):
        output = {"images": [output]}
    if not isinstance(output, dict):
        res.errors.append(f"unexpected job output: {as_text(output)[:300]}")
        return res
    if output.get("error"):
        res.errors.append(error_text({"error": output["error"], "details": output.get("details")}))
        res.job_failed = True
    for e in output.get("errors") or []:
        res.errors.append(as_text(e))
    images = output.get("images") or []
    if not isinstance(images, list):
        images = [images]
    for i, entry in enumerate(images):
        if isinstance(entry, str):
            entry = {"filename": f"output_{i:03d}.png", "type": "base64", "data": entry}
        if not isinstance(entry, dict):
            res.errors.append(f"image #{i}: unexpected entry {as_text(entry)[:200]}")
            continue
        name = str(entry.get("filename") or entry.get("name") or f"output_{i:03d}.png")
        kind = entry.get("type", "base64")
        data = entry.get("data", entry.get("image"))
        if kind == "s3_url" or (isinstance(data, str) and data.startswith(("http://", "https://"))):
            res.urls.append((name, str(data)))
            continue
        if not isinstance(data, str) or not data:
            res.errors.append(f"{name}: no data in the result (keys: {sorted(entry)})")
            continue
        try:
            res.files.append((name, decode_b64(data)))
        except (binascii.Error, ValueError) as exc:
            res.errors.append(f"{name}: bad base64 data: {exc}")
    if not images and not res.errors and not output.get("error"):
        res.errors.append("the workflow returned no images: does it end in a SafeCut Save Cutout node (or any "
                          "node listing files under ui.images)?" + (f" (status: {output.get('status')})"
                                                                   if output.get("status") else ""))
    return res


def safe_filename(name: str, taken: set[str]) -> str:
    """A plain file name (never a path) that is not in ``taken``."""
    base = os.path.basename(name.replace("\\", "/")).strip().lstrip(".") or "output"
    base = re.sub(r"[^\w.\- ()+@=,]", "_", base)[:180]
    stem, ext = os.path.splitext(base)
    cand, n = base, 1
    while cand in taken:
        cand = f"{stem}_{n}{ext}"
        n += 1
    taken.add(cand)
    return cand


def read_png_verdict(path: str) -> tuple[dict | None, str | None]:
    """(the "safecut" metadata as a dict, None) or (None, why not)."""
    try:
        from PIL import Image
    except ImportError:
        return None, "Pillow is not installed: cannot read the PNG metadata"
    try:
        with Image.open(path) as im:
            im.load()  # text chunks after the image data are read only once the image is loaded
            text = dict(getattr(im, "text", {}) or {})
            text.update({k: v for k, v in im.info.items() if isinstance(v, str)})
    except Exception as exc:
        return None, f"cannot read image: {type(exc).__name__}: {exc}"
    raw = text.get(META_KEY)
    if raw is None:
        return None, "no safecut metadata"
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        return None, f"bad safecut metadata: {exc}"
    return (meta, None) if isinstance(meta, dict) else (None, "bad safecut metadata (not an object)")


_OUTPUT_KEYS = ("output", "filename", "cutout", "saved", "png", "image")
_INPUT_KEYS = ("file", "source", "input", "name")


def report_entries(doc: Any) -> list[dict]:
    """Per-image entries of a SafeCut report: a list, {"images"|"results"|…: [...]}, or {name: entry}."""
    items: Any = []
    if isinstance(doc, list):
        items = doc
    elif isinstance(doc, dict):
        for key in ("images", "results", "items", "entries", "files"):
            if isinstance(doc.get(key), list):
                items = doc[key]
                break
        else:
            if "verdict" in doc or "error" in doc:
                items = [doc]
            elif doc and all(isinstance(v, dict) for v in doc.values()):
                items = [{"file": k, **v} for k, v in doc.items()]
    return [i for i in items if isinstance(i, dict)]


def _entry_output(entry: dict) -> str | None:
    for k in _OUTPUT_KEYS:
        v = entry.get(k)
        if isinstance(v, str) and v:
            return os.path.basename(v.replace("\\", "/"))
    return None


def _entry_input(entry: dict) -> str:
    for k in _INPUT_KEYS:
        v = entry.get(k)
        if isinstance(v, str) and v:
            return v
    return "?"


@dataclass
class Line:
    file: str
    verdict: str = "-"
    decided_by: str = "-"
    p_unsafe: str = "-"
    caption: str = "-"
    error: bool = False

    def text(self) -> str:
        cells = [self.file, self.verdict, self.decided_by, self.p_unsafe, self.caption]
        return "\t".join(re.sub(r"[\t\r\n]+", " ", c) for c in cells)


def _fmt_p(v: Any) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{float(v):.3f}"
    return "-" if v in (None, "") else str(v)


def line_from(file: str, meta: dict | None, note: str | None = None) -> Line:
    if not meta:
        return Line(file, caption=note or "-")
    err = meta.get("error")
    verdict = str(meta.get("verdict") or ("ERROR" if err else "-"))
    decided = str(meta.get("decided_by") or "-")
    caption = meta.get("caption")
    caption_text = "-" if caption in (None, "") else str(caption)
    if err:
        caption_text = f"error: {as_text(err)}"
    return Line(file, verdict, decided, _fmt_p(meta.get("p_unsafe")), caption_text,
                error=bool(err) or decided == "error")


def save_and_report(res: Results, out_dir: str) -> tuple[list[Line], list[str]]:
    """Save the files into out_dir; return the verdict lines and any per-file errors."""
    if res.files:
        os.makedirs(out_dir, exist_ok=True)
    taken: set[str] = set()  # names used by this run; a rerun overwrites its own earlier files
    saved: list[tuple[str, str]] = []  # (original name, path)
    errors: list[str] = []
    for name, blob in res.files:
        path = os.path.join(out_dir, safe_filename(name, taken))
        try:
            with open(path, "wb") as f:
                f.write(blob)
        except OSError as exc:
            errors.append(f"{name}: cannot save to {path}: {exc.strerror or exc}")
            continue
        saved.append((name, path))
    reports: list[dict] = []
    for name, path in saved:
        if name.lower().endswith(".json"):
            try:
                with open(path, encoding="utf-8") as f:
                    reports.extend(report_entries(json.load(f)))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                errors.append(f"{name}: unreadable report: {exc}")
    by_output: dict[str, dict] = {}
    for e in reports:
        out = _entry_output(e)
        if out:
            by_output.setdefault(out, e)
    used: set[int] = set()
    lines: list[Line] = []
    for name, path in saved:
        if name.lower().endswith(".json"):
            continue
        base = os.path.basename(name.replace("\\", "/"))
        entry = by_output.get(base)
        if entry is not None:
            used.add(id(entry))
        meta, note = (read_png_verdict(path) if base.lower().endswith(".png") else (None, "not a PNG"))
        if meta is None and entry is not None:
            meta, note = entry, None
        line = line_from(path, meta, note)
        if note and note.startswith(("cannot read image", "bad safecut")):
            line.error = True
        lines.append(line)
    # report entries without a returned image: failed inputs, UNSAFE images that were not saved, …
    for e in reports:
        if id(e) in used:
            continue
        line = line_from(_entry_input(e), e)
        if e.get("saved") is False and not line.error:
            line.file += " (not saved)"
        lines.append(line)
    for name, url in res.urls:
        lines.append(Line(name, caption=f"s3_url {url}"))
    return lines, errors
