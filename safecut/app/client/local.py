"""The same request straight to a ComfyUI server (``--local``): upload, queue, poll /history, /view."""
from __future__ import annotations

import binascii
import json
import urllib.parse
import uuid

from .common import EXIT_USAGE, MAX_TRANSIENT_FAILURES, ClientError, log
from .results import Results, as_text, decode_b64
from .transport import Clock, HTTPFailure, http_json, http_request, multipart


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
            blob = decode_b64(str(img.get("image", "")))
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
            log(f"safecut client: warning: ComfyUI stored '{name}' as '{ans['name']}'")
        log(f"safecut client: uploaded {name}")
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
        raise ClientError(f"POST {base}/prompt: no prompt_id in {as_text(queued)[:300]}")
    log(f"safecut client: queued prompt {prompt_id}")
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
