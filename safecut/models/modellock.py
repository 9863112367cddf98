"""Trust on first use for model files the registry cannot pin.

Files with a registry sha256 are *pinned* (public sources publish the hash; see registry.py). For every
other file of a known model (the default Llama-Guard-3-1B GGUFs, Florence-2-large-ft, the small config
files of the Florence folders) the first download records repository, resolved commit, size and sha256
in ``safecut-models.lock.json`` next to the model; a file already on disk that SafeCut never downloaded
is recorded at its first load (source "disk"). Every later fetch and load checks the file against that
record: a changed file is refused (:class:`LockMismatchError`), never loaded. Delete the file and its
lock entry to accept a new version on purpose.

The lock is as trustworthy as the folder it sits in: it protects against a changed upstream, a
damaged or swapped file, not against someone who can also rewrite the lock.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import threading

from ..errors import SafeCutError
from .hashing import sha256_file

LOCK_NAME = "safecut-models.lock.json"
PINNED, LOCKED, UNVERIFIED = "pinned", "locked", "unverified"

_lock = threading.Lock()
_verified: dict[tuple, str] = {}


class LockMismatchError(SafeCutError):
    def __init__(self, path: str, lock: str, detail: str):
        super().__init__(f"Model file '{path}' is not the file SafeCut recorded at its first download ({lock}): "
                         f"{detail}. It was changed or replaced: delete it and its entry in the lock file, then "
                         f"fetch it again.")


def lock_path(model_path: str) -> str:
    """The lock file next to ``model_path`` (a file or a model folder)."""
    return os.path.join(os.path.dirname(os.path.abspath(model_path.rstrip("/\\"))), LOCK_NAME)


def _read(lock: str) -> dict:
    try:
        with open(lock, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SafeCutError(f"The model lock file '{lock}' cannot be read ({exc}); fix or delete it.") from exc
    return data if isinstance(data, dict) else {}


def _write(lock: str, data: dict) -> None:
    tmp = lock + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, lock)


def unpinned(spec) -> list:
    return [rf for rf in spec.files if not rf.sha256]


def _file(spec, model_path: str, rf) -> str:
    return os.path.join(model_path, *rf.path.split("/")) if spec.is_dir else model_path


def _hub_commit(download_dir: str, rel: str) -> str | None:
    """The commit huggingface_hub resolved, from the metadata it keeps next to a ``local_dir`` download."""
    meta = os.path.join(download_dir, ".cache", "huggingface", "download", *(rel + ".metadata").split("/"))
    try:
        with open(meta, encoding="utf-8") as f:
            first = f.readline().strip()
    except OSError:
        return None
    return first if re.fullmatch(r"[0-9a-f]{40}", first) else None


def _entry(spec, model_path: str, source: str, commit: str | None) -> dict:
    files = {}
    for rf in unpinned(spec):
        f = _file(spec, model_path, rf)
        if os.path.isfile(f):
            files[rf.path] = {"size": os.path.getsize(f), "sha256": sha256_file(f)}
    return {"repo": spec.repo_id, "revision": commit or spec.revision, "source": source, "files": files,
            "locked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def entry_from_download(spec, download_dir: str) -> dict | None:
    """Hook for modelfiles.download, called while the verified files are still in ``download_dir``
    (laid out as they will be under the model's name)."""
    if not unpinned(spec):
        return None
    commit = next((c for c in (_hub_commit(download_dir, rf.path) for rf in spec.files) if c), None)
    root = download_dir if spec.is_dir else os.path.join(download_dir, spec.files[0].path)
    return _entry(spec, root, "download", commit)


def record(spec, model_path: str, entry: dict | None) -> None:
    """Hook for modelfiles.download: store ``entry`` for the model now at ``model_path``."""
    if entry is None:
        return
    lock = lock_path(model_path)
    with _lock:
        data = _read(lock)
        data[spec.name] = entry
        _write(lock, data)


def verify(spec, model_path: str) -> None:
    """Hook for modelfiles.check_files: check the unpinned files of ``spec`` against the lock; record them
    when the lock has no entry yet (trust on first use). sha256 once per (file, mtime, size) per process."""
    todo = unpinned(spec)
    if not todo:
        return
    lock = lock_path(model_path)
    with _lock:
        data = _read(lock)
        entry = data.get(spec.name)
        if entry is None:
            data[spec.name] = _entry(spec, model_path, "disk", None)
            _write(lock, data)
            return
    for rf in todo:
        f = _file(spec, model_path, rf)
        want = entry.get("files", {}).get(rf.path)
        if not os.path.isfile(f):
            continue  # a missing file is reported by check_files / the loader
        if want is None:
            raise LockMismatchError(f, lock, "the lock has no record of this file")
        st = os.stat(f)
        if st.st_size != want.get("size"):
            raise LockMismatchError(f, lock, f"it has {st.st_size} bytes, the lock says {want.get('size')}")
        memo = (f, st.st_mtime_ns, st.st_size)
        if _verified.get(memo) != want.get("sha256"):
            actual = sha256_file(f)
            if actual != want.get("sha256"):
                raise LockMismatchError(f, lock, f"sha256 {actual[:16]}… is not the locked {str(want.get('sha256'))[:16]}…")
            _verified[memo] = actual


def status(spec, model_path: str) -> list[tuple[str, str]]:
    """(file, pinned / locked / unverified) for each file of ``spec`` present on disk; nothing is written.
    ``spec`` None (a file the registry does not know): the whole file is unverified."""
    if spec is None:
        return [(os.path.basename(model_path), UNVERIFIED)]
    entry = _read(lock_path(model_path)).get(spec.name) or {}
    out = []
    for rf in spec.files:
        if not os.path.isfile(_file(spec, model_path, rf)):
            continue
        state = PINNED if rf.sha256 else (LOCKED if rf.path in entry.get("files", {}) else UNVERIFIED)
        out.append((rf.path, state))
    return out
