"""``python -m safecut client``: send an API-format workflow to a RunPod worker-comfyui endpoint (or straight
to a ComfyUI server with ``--local``), save the returned files and print SafeCut's verdict for each image.

worker-comfyui returns only the files that output nodes list under ``ui.images`` (as
``{"filename", "type": "base64", "data"}``, or ``"type": "s3_url"`` when the endpoint uploads to a bucket); text
outputs are dropped. SafeCut therefore carries its verdicts in the files themselves: every cutout PNG has the
verdict JSON in a PNG text chunk named ``safecut``, and the save node also returns ``<prefix>_report.json``.

Standard library + PIL only (PIL is needed only to read the PNG metadata). Exit codes: 0 everything done,
1 the job failed or any image errored, 2 usage (bad arguments, unreadable payload, missing API key).
"""
from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
RUNPOD_API = "https://api.runpod.ai/v2/"
LOADER_CLASS = "SafeCutLoadImageBatch"
UPLOADS_INPUT = "uploads"
META_KEY = "safecut"
# RunPod request body limits (research notes, worker-comfyui README): larger bodies are refused.
SIZE_LIMIT = {"run": 10 * 1024 * 1024, "runsync": 20 * 1024 * 1024}
MAX_TRANSIENT_FAILURES = 5  # consecutive poll errors (5xx, 429, network) tolerated before giving up
USER_AGENT = "safecut-client/1"


class ClientError(Exception):
    """An error with a clear one-line message and the exit code it maps to."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class HTTPFailure(ClientError):
    def __init__(self, method: str, url: str, status: int | None, body: str, hint: str = ""):
        shown = body.strip().replace("\n", " ")
        if len(shown) > 2000:
            shown = shown[:2000] + "…"
        what = f"HTTP {status}" if status is not None else "no answer"
        msg = f"{method} {url}: {what}" + (f": {shown}" if shown else "") + (f" ({hint})" if hint else "")
        super().__init__(msg, EXIT_FAILED)
        self.status = status
        self.body = body

    @property
    def transient(self) -> bool:
        return self.status is None or self.status == 429 or self.status >= 500


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- HTTP ---------------------------------------------------------------------------------------
def http_request(method: str, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
                 timeout: float = 60.0) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body). Raises HTTPFailure for HTTP errors and network errors."""
    hdrs = {"User-Agent": USER_AGENT, **(headers or {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (user-given endpoint)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read().decode("utf-8", "replace")
        except Exception:
            body = ""
        hint = {401: "check --api-key / RUNPOD_API_KEY", 403: "the API key may lack access to this endpoint",
                404: "check the endpoint id / URL", 413: "request too large: send fewer or smaller images"}
        raise HTTPFailure(method, url, exc.code, body, hint.get(exc.code, "")) from None
    except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timeout
        reason = getattr(exc, "reason", exc)
        raise HTTPFailure(method, url, None, f"{type(reason).__name__}: {reason}") from None


def http_json(method: str, url: str, payload: Any = None, *, headers: dict[str, str] | None = None,
              timeout: float = 60.0) -> Any:
    data = None
    hdrs = {"Accept": "application/json", **(headers or {})}
    if payload is not None:
        data = json.dumps(payload).encode("utf-8")
        hdrs["Content-Type"] = "application/json"
    status, body = http_request(method, url, data=data, headers=hdrs, timeout=timeout)
    try:
        return json.loads(body.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HTTPFailure(method, url, status, body[:500].decode("utf-8", "replace"),
                          "the answer is not JSON") from None


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """multipart/form-data body and its Content-Type."""
    boundary = "----safecut" + uuid.uuid4().hex
    out = bytearray()
    for name, value in fields.items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                f"{value}\r\n").encode("utf-8")
    for name, (filename, blob, ctype) in files.items():
        safe = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{safe}\"\r\n"
                f"Content-Type: {ctype}\r\n\r\n").encode("utf-8")
        out += blob + b"\r\n"
    out += f"--{boundary}--\r\n".encode("utf-8")
    return bytes(out), f"multipart/form-data; boundary={boundary}"


# ---- payload ------------------------------------------------------------------------------------
def _is_api_workflow(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(v, dict) and "class_type" in v for v in obj.values())


def load_payload(path: str) -> dict:
    """A RunPod payload ({"input": {"workflow": …}}) or a bare API-format workflow, as a payload."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ClientError(f"cannot read payload '{path}': {exc.strerror or exc}", EXIT_USAGE) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClientError(f"payload '{path}' is not valid JSON: {exc}", EXIT_USAGE) from None
    if isinstance(data, dict) and isinstance(data.get("input"), dict):
        payload = data
    elif _is_api_workflow(data):
        payload = {"input": {"workflow": data}}
    else:
        payload = {"input": {"workflow": data}}
    wf = payload["input"].get("workflow")
    if isinstance(wf, dict) and "nodes" in wf and "links" in wf:
        raise ClientError(f"'{path}' holds a UI-format workflow (nodes/links); the API needs the API format: "
                          "in ComfyUI use Workflow > Export (API), or use a file from api_workflows/.", EXIT_USAGE)
    if not _is_api_workflow(wf):
        raise ClientError(f"'{path}' is neither a RunPod payload {{\"input\": {{\"workflow\": …}}}} nor an "
                          "API-format workflow ({\"<id>\": {\"class_type\": …, \"inputs\": …}}).", EXIT_USAGE)
    return payload


def encode_image(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ClientError(f"cannot read image '{path}': {exc.strerror or exc}", EXIT_USAGE) from None
    return {"name": os.path.basename(path), "image": base64.b64encode(blob).decode("ascii")}


def _check_names(names: list[str]) -> None:
    seen: set[str] = set()
    for n in names:
        if not n or n.startswith(".") or any(c in n for c in ",\r\n\t"):
            raise ClientError(f"image name '{n}' cannot be used as an upload: rename the file (no leading dot, "
                              "no commas or line breaks).", EXIT_USAGE)
        if n in seen:
            raise ClientError(f"two images are named '{n}': uploads land in one folder by name, so they would "
                              "overwrite each other. Rename one.", EXIT_USAGE)
        seen.add(n)


def set_uploads(workflow: dict, names: list[str]) -> list[str]:
    """Point every SafeCut Load Image Batch node at the uploaded ``names`` (its ``uploads`` widget).
    Without such a node, a single core LoadImage gets the single image. Returns the node ids changed."""
    changed = []
    for node_id, node in workflow.items():
        if isinstance(node, dict) and node.get("class_type") == LOADER_CLASS:
            node.setdefault("inputs", {})[UPLOADS_INPUT] = ", ".join(names)
            changed.append(str(node_id))
    if not changed:
        core = [k for k, v in workflow.items() if isinstance(v, dict) and v.get("class_type") == "LoadImage"]
        if len(core) == 1 and len(names) == 1:
            workflow[core[0]].setdefault("inputs", {})["image"] = names[0]
            changed.append(str(core[0]))
    return changed


def apply_images(payload: dict, image_paths: list[str]) -> dict:
    """A copy of ``payload`` whose input.images holds the given files (same-name entries replaced, others
    kept) and whose loader nodes select exactly those names."""
    out = copy.deepcopy(payload)
    encoded = [encode_image(p) for p in image_paths]
    names = [e["name"] for e in encoded]
    _check_names(names)
    inp = out.setdefault("input", {})
    kept = [e for e in (inp.get("images") or []) if isinstance(e, dict) and e.get("name") not in names]
    inp["images"] = kept + encoded
    if not set_uploads(inp["workflow"], names):
        _log(f"safecut client: warning: the workflow has no {LOADER_CLASS} node (nor a single LoadImage): the "
             "images are uploaded but no node selects them.")
    return out


def make_payload(workflow: dict, image_paths: list[str]) -> dict:
    """RunPod worker-comfyui payload: ``workflow`` (API format, not modified) with the given local images
    base64-encoded in input.images and SafeCut's Load Image Batch ``uploads`` widget set to their names."""
    if not _is_api_workflow(workflow):
        raise ValueError("make_payload needs an API-format workflow ({'<id>': {'class_type': …, 'inputs': …}})")
    return apply_images({"input": {"workflow": workflow}}, list(image_paths))


def _decode_b64(text: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = re.sub(r"\s+", "", text)
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


# ---- results ------------------------------------------------------------------------------------
@dataclass
class Results:
    """What came back: files (name, bytes), remote files (name, url), and job-level errors."""
    files: list[tuple[str, bytes]] = field(default_factory=list)
    urls: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    job_failed: bool = False


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _error_text(err: Any) -> str:
    """RunPod puts the handler's error dict into a string; unpack {"error", "details"} when it is one."""
    if isinstance(err, str):
        try:
            parsed = json.loads(err)
        except (json.JSONDecodeError, ValueError):
            return err
        err = parsed
    if isinstance(err, dict):
        msg = _as_text(err.get("error") or err.get("message") or err)
        details = err.get("details")
        if details:
            msg += ": " + "; ".join(_as_text(d) for d in (details if isinstance(details, list) else [details]))
        return msg
    return _as_text(err)


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
        res.errors.append(f"unexpected job output: {_as_text(output)[:300]}")
        return res
    if output.get("error"):
        res.errors.append(_error_text({"error": output["error"], "details": output.get("details")}))
        res.job_failed = True
    for e in output.get("errors") or []:
        res.errors.append(_as_text(e))
    images = output.get("images") or []
    if not isinstance(images, list):
        images = [images]
    for i, entry in enumerate(images):
        if isinstance(entry, str):
            entry = {"filename": f"output_{i:03d}.png", "type": "base64", "data": entry}
        if not isinstance(entry, dict):
            res.errors.append(f"image #{i}: unexpected entry {_as_text(entry)[:200]}")
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
            res.files.append((name, _decode_b64(data)))
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
        caption_text = f"error: {_as_text(err)}"
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


# ---- RunPod ----------------------------------------------------------------------------------------
def endpoint_base(endpoint: str) -> str:
    """https://api.runpod.ai/v2/<id> from an id, a base URL, or a /run or /runsync URL."""
    e = endpoint.strip().rstrip("/")
    if not e:
        raise ClientError("--endpoint is empty", EXIT_USAGE)
    if "://" not in e:
        if re.fullmatch(r"[A-Za-z0-9_-]+", e):
            return RUNPOD_API + e
        raise ClientError(f"--endpoint '{endpoint}' is neither an endpoint id nor a URL", EXIT_USAGE)
    parsed = urllib.parse.urlparse(e)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ClientError(f"--endpoint '{endpoint}' is not an http(s) URL", EXIT_USAGE)
    for suffix in ("/runsync", "/run"):
        if e.endswith(suffix):
            e = e[: -len(suffix)]
    return e


@dataclass
class Clock:
    """Time source for the waits (injectable for tests)."""
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.monotonic


def _poll_status(base: str, job_id: str, headers: dict, timeout: float, poll: float, clock: Clock,
                 first: dict | None = None) -> dict:
    deadline = clock.now() + timeout
    last_status = (first or {}).get("status")
    failures = 0
    t0 = clock.now()
    url = f"{base}/status/{urllib.parse.quote(job_id, safe='')}"
    while True:
        remaining = deadline - clock.now()
        if remaining <= 0:
            raise ClientError(f"job {job_id} is still {last_status or 'pending'} after {timeout:g}s; it keeps "
                              f"running on RunPod: check it later with GET {url} or cancel it with "
                              f"POST {base}/cancel/{job_id}", EXIT_FAILED)
        clock.sleep(min(poll, max(remaining, 0.0)))
        try:
            resp = http_json("GET", url, headers=headers, timeout=min(60.0, max(remaining, 5.0)))
            failures = 0
        except HTTPFailure as exc:
            if exc.transient and failures + 1 < MAX_TRANSIENT_FAILURES:
                failures += 1
                _log(f"safecut client: {exc} (retrying {failures}/{MAX_TRANSIENT_FAILURES - 1})")
                continue
            raise
        if not isinstance(resp, dict):
            raise ClientError(f"GET {url}: unexpected answer {_as_text(resp)[:300]}")
        status = str(resp.get("status", "")).upper()
        if status != last_status:
            _log(f"safecut client: job {job_id}: {status or '?'} ({clock.now() - t0:.0f}s)")
            last_status = status
        if status in TERMINAL:
            return resp


def run_runpod(payload: dict, endpoint: str, api_key: str, *, sync: bool = False, timeout: float = 600.0,
               poll: float = 2.0, clock: Clock | None = None) -> Results:
    clock = clock or Clock()
    base = endpoint_base(endpoint)
    headers = {"Authorization": f"Bearer {api_key}"}
    route = "runsync" if sync else "run"
    body = json.dumps(payload).encode("utf-8")
    if len(body) > SIZE_LIMIT[route]:
        _log(f"safecut client: warning: the request is {len(body) / 1e6:.1f} MB; RunPod accepts at most "
             f"{SIZE_LIMIT[route] / 1e6:.0f} MB on /{route}: send fewer images per request.")
    url = f"{base}/{route}"
    _log(f"safecut client: POST {url} ({len(body) / 1e6:.2f} MB, "
         f"{len(payload.get('input', {}).get('images') or [])} image(s))")
    first = http_json("POST", url, payload, headers=headers,
                      timeout=max(30.0, min(timeout, 300.0)) if sync else 60.0)
    if not isinstance(first, dict):
        raise ClientError(f"POST {url}: unexpected answer {_as_text(first)[:300]}")
    job_id = str(first.get("id") or "")
    status = str(first.get("status", "")).upper()
    if status in TERMINAL:
        final = first
    else:
        if not job_id:
            raise ClientError(f"POST {url}: no job id in the answer: {_as_text(first)[:300]}")
        _log(f"safecut client: job {job_id}: {status or 'submitted'}")
        final = _poll_status(base, job_id, headers, timeout, poll, clock, first)
    return results_from_job(final)


def results_from_job(job: dict) -> Results:
    status = str(job.get("status", "")).upper()
    if status == "COMPLETED":
        res = collect_worker_output(job.get("output"))
        if job.get("error"):
            res.errors.insert(0, _error_text(job["error"]))
            res.job_failed = True
        return res
    res = Results(job_failed=True)
    output = job.get("output")
    detail = job.get("error") or (output.get("error") if isinstance(output, dict) else None)
    res.errors.append(f"job {job.get('id', '?')} {status or 'ended'}"
                      + (f": {_error_text(detail)}" if detail else ""))
    if isinstance(job.get("output"), dict) and job["output"].get("images"):
        partial = collect_worker_output(job["output"])  # keep whatever images a failed job still returned
        res.files, res.urls = partial.files, partial.urls
    return res


# ---- local ComfyUI -------------------------------------------------------------------------------
def _history_error(entry: dict) -> str | None:
    status = entry.get("status") or {}
    if status.get("status_str") != "error":
        return None
    for msg in status.get("messages") or []:
        if isinstance(msg, (list, tuple)) and len(msg) == 2 and msg[0] == "execution_error":
            d = msg[1] or {}
            return (f"Workflow execution error: Node Type: {d.get('node_type')}, Node ID: {d.get('node_id')}, "
                    f"Message: {d.get('exception_message', '').strip()}")
    return "Workflow execution error (see the ComfyUI log)"


def _prompt_error(exc: HTTPFailure) -> str:
    try:
        doc = json.loads(exc.body)
    except (json.JSONDecodeError, TypeError):
        return str(exc)
    err = doc.get("error") if isinstance(doc, dict) else None
    parts = []
    if isinstance(err, dict):
        parts.append(f"{err.get('type', 'error')}: {err.get('message', '')}".strip())
        if err.get("details"):
            parts.append(str(err["details"]))
    elif err:
        parts.append(str(err))
    for node_id, ne in ((doc.get("node_errors") or {}) if isinstance(doc, dict) else {}).items():
        for e in (ne or {}).get("errors", []):
            parts.append(f"node {node_id} ({ne.get('class_type', '?')}): {e.get('message', '')}"
                         + (f" - {e.get('details')}" if e.get("details") else ""))
    return f"ComfyUI refused the workflow (HTTP {exc.status}): " + "; ".join(p for p in parts if p)


def run_local(payload: dict, server: str, *, timeout: float = 600.0, poll: float = 2.0,
              clock: Clock | None = None) -> Results:
    """What worker-comfyui does, against a ComfyUI server: upload, queue, wait (polling /history), /view."""
    clock = clock or Clock()
    base = server.strip().rstrip("/")
    if "://" not in base:
        base = "http://" + base
    inp = payload.get("input") or {}
    for img in inp.get("images") or []:
        name = str(img.get("name", ""))
        try:
            blob = _decode_b64(str(img.get("image", "")))
        except (binascii.Error, ValueError) as exc:
            raise ClientError(f"input image '{name}': bad base64: {exc}", EXIT_USAGE) from None
        body, ctype = multipart({"overwrite": "true", "type": "input"}, {"image": (name, blob, "image/png")})
        _, raw = http_request("POST", f"{base}/upload/image", data=body,
                                   headers={"Content-Type": ctype}, timeout=60.0)
        try:
            ans = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            ans = {}
        if isinstance(ans, dict) and ans.get("name") and ans["name"] != name:
            _log(f"safecut client: warning: ComfyUI stored '{name}' as '{ans['name']}'")
        _log(f"safecut client: uploaded {name}")
    client_id = str(uuid.uuid4())
    try:
        queued = http_json("POST", f"{base}/prompt", {"prompt": inp.get("workflow"), "client_id": client_id},
                           timeout=60.0)
    except HTTPFailure as exc:
        if exc.status == 400:
            return Results(errors=[_prompt_error(exc)], job_failed=True)
        raise
    prompt_id = str((queued or {}).get("prompt_id") or "")
    if not prompt_id:
        raise ClientError(f"POST {base}/prompt: no prompt_id in {_as_text(queued)[:300]}")
    _log(f"safecut client: queued prompt {prompt_id}")
    deadline = clock.now() + timeout
    entry: dict | None = None
    failures = 0
    while True:
        try:
            hist = http_json("GET", f"{base}/history/{urllib.parse.quote(prompt_id)}", timeout=30.0)
            failures = 0
        except HTTPFailure as exc:
            if exc.transient and failures + 1 < MAX_TRANSIENT_FAILURES:
                failures += 1
                hist = {}
            else:
                raise
        entry = hist.get(prompt_id) if isinstance(hist, dict) else None
        st = (entry or {}).get("status") or {}
        if entry is not None and (st.get("completed") or st.get("status_str") in ("success", "error")
                                  or (not st and entry.get("outputs"))):
            break
        if clock.now() >= deadline:
            raise ClientError(f"prompt {prompt_id} did not finish within {timeout:g}s; it may still be running "
                              f"in ComfyUI (POST {base}/interrupt to stop it)")
        clock.sleep(poll)
    res = Results()
    err = _history_error(entry)
    if err:
        res.errors.append(err)
    for node_id, node_out in (entry.get("outputs") or {}).items():
        for info in (node_out or {}).get("images") or []:
            if info.get("type") == "temp" or not info.get("filename"):
                continue
            q = urllib.parse.urlencode({"filename": info["filename"], "subfolder": info.get("subfolder", ""),
                                        "type": info.get("type", "output")})
            try:
                _, blob = http_request("GET", f"{base}/view?{q}", timeout=60.0)
            except HTTPFailure as exc:
                res.errors.append(f"{info['filename']}: {exc}")
                continue
            res.files.append((info["filename"], blob))
    if not res.files and not res.errors:
        res.errors.append("the workflow returned no images: does it end in a SafeCut Save Cutout node?")
    if not res.files and err:
        res.job_failed = True
    return res


# ---- command line -------------------------------------------------------------------------------
HEADER = "file\tverdict\tdecided_by\tp_unsafe\tcaption"


def cmd_client(a) -> int:
    try:
        payload = load_payload(a.payload)
        if a.images:
            payload = apply_images(payload, a.images)
        if a.timeout <= 0 or a.poll <= 0:
            raise ClientError("--timeout and --poll must be positive", EXIT_USAGE)
        if a.local:
            res = run_local(payload, a.local, timeout=a.timeout, poll=a.poll)
        else:
            key = a.api_key if a.api_key is not None else os.environ.get("RUNPOD_API_KEY", "")
            if not key:
                raise ClientError("no API key: pass --api-key or set RUNPOD_API_KEY", EXIT_USAGE)
            res = run_runpod(payload, a.endpoint, key, sync=a.sync, timeout=a.timeout, poll=a.poll)
    except ClientError as exc:
        _log(f"safecut client: {exc}")
        return exc.code
    except KeyboardInterrupt:
        _log("safecut client: interrupted (a RunPod job keeps running; see its id above)")
        return EXIT_FAILED
    lines, file_errors = save_and_report(res, a.out)
    if lines:
        print(HEADER)
        for ln in lines:
            print(ln.text())
    sys.stdout.flush()
    for e in res.errors + file_errors:
        _log(f"safecut client: error: {e}")
    saved = sum(1 for _ in res.files)
    _log(f"safecut client: {saved} file(s) saved to {os.path.abspath(a.out)}"
         + (f", {len(res.urls)} on S3" if res.urls else ""))
    failed = res.job_failed or res.errors or file_errors or any(ln.error for ln in lines)
    return EXIT_FAILED if failed else EXIT_OK


def add_cli(subparsers) -> None:
    c = subparsers.add_parser(
        "client", help="send a workflow to a RunPod worker-comfyui endpoint (or a local ComfyUI) and print verdicts",
        description="Submit PAYLOAD (a RunPod payload or an API-format workflow) to a worker-comfyui endpoint, "
                    "wait for it, save the returned files into --out and print one line per image: "
                    "file, verdict, decided_by, p_unsafe, caption (tab-separated). Exit 0: all done; 1: the job "
                    "failed or an image errored; 2: usage.")
    c.add_argument("payload", help="JSON file: {\"input\": {\"workflow\": …, \"images\": …}} or an API workflow")
    where = c.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", help="https://api.runpod.ai/v2/<ENDPOINT_ID> (or just the id)")
    where.add_argument("--local", metavar="URL",
                       help="run against a ComfyUI server instead, e.g. http://127.0.0.1:8188")
    c.add_argument("--images", nargs="+", metavar="IMG",
                   help="local images to send (replace same-name payload images; the Load Image Batch "
                        "'uploads' widget is set to their names)")
    c.add_argument("--api-key", default=None, help="RunPod API key (default: $RUNPOD_API_KEY)")
    c.add_argument("--sync", action="store_true", help="use /runsync (falls back to polling if it is not done)")
    c.add_argument("--out", default="safecut-results", help="folder for the returned files (default: %(default)s)")
    c.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job (default: 600)")
    c.add_argument("--poll", type=float, default=2.0, help="seconds between status polls (default: 2)")
    c.set_defaults(func=cmd_client)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m safecut")
    add_cli(p.add_subparsers(dest="cmd", required=True))
    a = p.parse_args(argv)
    return a.func(a)
