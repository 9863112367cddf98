"""Building the worker-comfyui payload: an API-format workflow plus the local images, base64-encoded."""
from __future__ import annotations

import base64
import copy
import json
import os
from typing import Any

from .common import EXIT_USAGE, LOADER_CLASS, UPLOADS_INPUT, ClientError, log


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
        log(f"safecut client: warning: the workflow has no {LOADER_CLASS} node (nor a single LoadImage): the "
             "images are uploaded but no node selects them.")
    return out


def make_payload(workflow: dict, image_paths: list[str]) -> dict:
    """RunPod worker-comfyui payload: ``workflow`` (API format, not modified) with the given local images
    base64-encoded in input.images and SafeCut's Load Image Batch ``uploads`` widget set to their names."""
    if not _is_api_workflow(workflow):
        raise ValueError("make_payload needs an API-format workflow ({'<id>': {'class_type': …, 'inputs': …}})")
    return apply_images({"input": {"workflow": workflow}}, list(image_paths))
