"""sha256 of model files, shared by the download check (modelfiles), the lock (modellock) and every verdict
keyed by a model's content (the OpenVINO INT8 cache, the precision probe)."""
from __future__ import annotations

import hashlib

from .. import imaging


def sha256_file(path: str, chunk: int = 4 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def file_sha256(path: str) -> str:
    """sha256 once per file version per process: the loader's content cache (imaging.file_sha256), so a model file
    is hashed once however often it is checked."""
    return imaging.file_sha256(path)[0]
