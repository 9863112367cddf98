"""SafeCut's own cache folder (never inside the pack): OpenVINO probe verdicts and blobs, ORT's optimized graphs,
build logs, tiny demo/test models. ``SAFECUT_CACHE_DIR`` moves it; default ``~/.cache/safecut``."""
from __future__ import annotations

import os


def cache_dir(*parts: str) -> str:
    base = os.environ.get("SAFECUT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "safecut")
    return os.path.join(base, *parts)
