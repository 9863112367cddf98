"""Recorded verdicts of the precision probe: may these weights run in a lower precision on this CPU?

One verdict per model file content (sha256), precision (``int8``, ``bf16``), CPU (model name and class) and OpenVINO
version, beside the crash probe's verdicts in ``$SAFECUT_CACHE_DIR`` (default ``~/.cache/safecut``). A changed file
(another sha256), another CPU or another OpenVINO finds no verdict, so the probe runs again there.
"""
from __future__ import annotations

import json
import os
import threading
import time

from .. import imaging, userdirs
from ..runtime import cpu, openvino_session
from .hashing import file_sha256

FILE_NAME = "precision-verdicts.json"
_lock = threading.Lock()


def _path() -> str:
    return userdirs.cache_dir(FILE_NAME)


def key(model_path: str, precision: str) -> str:
    return (f"{file_sha256(model_path)}|{precision}|{cpu.model_name()}|{cpu.cpu_class()}"
            f"|openvino {openvino_session.version()}")


def _read() -> dict:
    try:
        with open(_path(), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}   # no file yet, or a damaged one: no verdicts (the probe runs again; never a pass by default)


def get(model_path: str, precision: str) -> dict | None:
    """The recorded verdict ({"passed": bool, "why": str, "figures": {...}, ...}) or None."""
    with _lock:
        v = _read().get(key(model_path, precision))
    return v if isinstance(v, dict) and isinstance(v.get("passed"), bool) else None


def record(model_path: str, precision: str, passed: bool, why: str, **figures) -> dict:
    verdict = {"passed": passed, "why": why, "model": os.path.basename(model_path), "when": time.strftime("%F %T"),
               **figures}
    with _lock:
        data = _read()
        data[key(model_path, precision)] = verdict
        os.makedirs(os.path.dirname(_path()), exist_ok=True)
        imaging.write_text_atomic(_path(), json.dumps(data, indent=1, sort_keys=True))
    return verdict
