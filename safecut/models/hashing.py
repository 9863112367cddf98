"""sha256 of model files, shared by the download check (modelfiles), the lock (modellock) and every verdict
keyed by a model's content (the OpenVINO INT8 cache, the precision probe)."""
from __future__ import annotations

import hashlib
import os
import threading

_memo: dict[tuple[str, int, int], str] = {}
_memo_lock = threading.Lock()


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
    """sha256 once per (path, mtime, size) per process: a model file is hashed once however often it is checked."""
    st = os.stat(path)
    memo = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    with _memo_lock:
        hit = _memo.get(memo)
    if hit is None:
        hit = sha256_file(path)
        with _memo_lock:
            _memo[memo] = hit
    return hit
