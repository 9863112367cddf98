"""One process-wide model cache for every SafeCut model (ONNX sessions, torch modules, llama.cpp).

* Keyed by everything that makes a loaded model different (kind, file, device, precision, threads…).
* Thread-safe: N threads asking for the same key at once cause exactly one load; the others wait.
* LRU with a budget (model count and estimated bytes, env ``SAFECUT_CACHE_MAX_MODELS`` /
  ``SAFECUT_CACHE_MAX_MB``). Eviction really releases the model (``close()`` or a given closer).
* A model in use (``with cache.use(...)``) is never closed under its user: its close is deferred.
* A model file replaced on disk (mtime/size/inode change) is detected on the next request and reloaded.
"""
from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

log = logging.getLogger("safecut.runtime.cache")


@dataclass(frozen=True)
class ModelKey:
    kind: str                 # "ben2", "florence2", "llama", "nudenet", …
    path: str                 # model file or directory
    device: str = "cpu"       # provider/device actually requested
    precision: str = ""
    threads: int = 0
    extra: tuple = ()         # anything else that changes the loaded object

    def short(self) -> str:
        return f"{self.kind}:{os.path.basename(self.path.rstrip('/'))}@{self.device}"


def _file_signature(files: Iterable[str]) -> tuple:
    sig = []
    for f in files:
        try:
            st = os.stat(f)  # the inode too: a file replaced by rename with the same size and mtime is new
            sig.append((f, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            sig.append((f, None, None, None))
    return tuple(sig)


@dataclass
class _Entry:
    key: ModelKey
    model: Any
    size: int
    closer: Callable[[Any], None] | None
    load_seconds: float
    files: tuple
    signature: tuple
    users: int = 0
    evicted: bool = False     # removed from the cache while in use: close when the last user leaves


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


def _default_max_bytes() -> int:
    env = os.environ.get("SAFECUT_CACHE_MAX_MB")
    if env:
        return int(float(env) * 1024 * 1024)
    try:  # 75 % of physical memory: room for ComfyUI's own models
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.75)
    except (ValueError, OSError, AttributeError):
        return 0  # unknown: count budget only


def _weak(model: Any):
    try:
        return weakref.ref(model)
    except TypeError:  # not weak-referenceable: cannot tell whether it is gone
        return None


def _release(model: Any, closer: Callable[[Any], None] | None) -> None:
    try:
        if closer is not None:
            closer(model)
        elif hasattr(model, "close"):
            model.close()
    except Exception as exc:  # a failing close must not break the caller
        log.warning("SafeCut: closing a cached model failed: %s", exc)


def on_gpu(model: Any) -> bool:
    """True for a loaded model that holds GPU memory: its DeviceChoice (ORT sessions, llama.cpp) says it runs on a
    GPU, or its torch device (Florence-2) is CUDA."""
    used = getattr(getattr(model, "device", None), "used", None)
    if used is not None:
        return used != "CPU"
    return getattr(model, "torch_device", "cpu") != "cpu"


class ModelCache:
    def __init__(self, max_models: int | None = None, max_bytes: int | None = None):
        self._lock = threading.RLock()
        self._entries: "OrderedDict[ModelKey, _Entry]" = OrderedDict()
        self._loading: dict[ModelKey, _Pending] = {}
        self.max_models = max_models if max_models is not None else int(os.environ.get("SAFECUT_CACHE_MAX_MODELS", "6"))
        self.max_bytes = max_bytes if max_bytes is not None else _default_max_bytes()
        self._stats = {"hits": 0, "misses": 0, "loads": 0, "load_errors": 0, "evictions": 0,
                       "reloads_changed_file": 0, "load_seconds": 0.0}
        self._listeners: list[Callable[[str, ModelKey], None]] = []

    # ---- public API -------------------------------------------------------------------------
    def get(self, key: ModelKey, loader: Callable[[], Any], *, size: int | Callable[[Any], int] | None = None,
            closer: Callable[[Any], None] | None = None, files: Iterable[str] = ()) -> Any:
        """Return the cached model for ``key``, loading it once with ``loader()`` if needed."""
        entry = self._acquire(key, loader, size, closer, tuple(files), lease=False)
        return entry.model

    @contextmanager
    def use(self, key: ModelKey, loader: Callable[[], Any], *, size=None, closer=None, files: Iterable[str] = (),
            keep_loaded: bool = True):
        """Lease a model: it stays open while the ``with`` block runs, even if evicted meanwhile.
        With ``keep_loaded=False`` it is unloaded when the block ends (the node's toggle)."""
        entry = self._acquire(key, loader, size, closer, tuple(files), lease=True)
        try:
            yield entry.model
        finally:
            self._leave(entry)
            if not keep_loaded:
                self.discard(key)

    def resize(self, key: ModelKey, nbytes: int) -> None:
        """Charge a loaded model a new size (e.g. measured after its first run) and evict others if now over
        budget. The model itself is protected: it is in use by whoever measured it."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.size = int(nbytes)
            to_close = self._evict_over_budget(protect=key)
        self._close_all(to_close)

    def discard(self, key: ModelKey) -> bool:
        with self._lock:
            entry = self._entries.pop(key, None)
            to_close = self._retire(entry) if entry else []
        self._close_all(to_close)
        return entry is not None

    def unload(self, kind: str | None = None, where: Callable[[Any], bool] | None = None) -> int:
        """Unload every model (or every model of ``kind``, or every model ``where(model)`` holds true for, e.g.
        :func:`on_gpu`). Returns how many were removed. Models in use stay open until their users finish."""
        with self._lock:
            keys = [k for k, e in self._entries.items()
                    if (kind is None or k.kind == kind) and (where is None or where(e.model))]
            to_close = []
            for k in keys:
                to_close += self._retire(self._entries.pop(k))
        self._close_all(to_close)
        if keys:
            log.info("SafeCut: unloaded %d model(s)%s", len(keys), f" of kind {kind}" if kind else "")
        return len(keys)

    def stats(self) -> dict:
        with self._lock:
            return dict(self._stats, resident_models=len(self._entries),
                        resident_bytes=sum(e.size for e in self._entries.values()),
                        max_models=self.max_models, max_bytes=self.max_bytes,
                        models=[{"key": e.key.short(), "bytes": e.size, "users": e.users,
                                 "load_seconds": round(e.load_seconds, 3)} for e in self._entries.values()])

    def contains(self, key: ModelKey) -> bool:
        with self._lock:
            return key in self._entries

    def keys(self) -> list[ModelKey]:
        with self._lock:
            return list(self._entries)

    def set_budget(self, max_models: int | None = None, max_bytes: int | None = None) -> None:
        with self._lock:
            if max_models is not None:
                self.max_models = max_models
            if max_bytes is not None:
                self.max_bytes = max_bytes
            to_close = self._evict_over_budget(protect=None)
        self._close_all(to_close)

    def reset_stats(self) -> None:
        with self._lock:
            for k in self._stats:
                self._stats[k] = 0.0 if k == "load_seconds" else 0

    def add_listener(self, fn: Callable[[str, ModelKey], None]) -> None:
        """``fn(event, key)`` for events 'load' and 'evict' (used by tests and the UI)."""
        self._listeners.append(fn)

    # ---- internals ----------------------------------------------------------------------------
    def _acquire(self, key, loader, size, closer, files, lease: bool) -> _Entry:
        while True:
            stale = []
            with self._lock:
                entry = self._entries.get(key)
                if entry is not None and files and _file_signature(files) != entry.signature:
                    log.warning("SafeCut: model file changed on disk, reloading %s", key.short())
                    self._stats["reloads_changed_file"] += 1
                    stale = self._retire(self._entries.pop(key))
                    entry = None
                if entry is not None:
                    self._stats["hits"] += 1
                    self._entries.move_to_end(key)
                    if lease:
                        entry.users += 1
                    return entry
                pending = self._loading.get(key)
                owner = pending is None
                if owner:
                    pending = self._loading[key] = _Pending()
                    self._stats["misses"] += 1
            self._close_all(stale)
            if not owner:
                pending.done.wait()
                if pending.error is not None:
                    raise pending.error
                continue  # the owner finished: take the entry under the lock
            return self._load(key, loader, size, closer, files, lease, pending)

    def _load(self, key, loader, size, closer, files, lease, pending) -> _Entry:
        signature = _file_signature(files)
        t0 = time.perf_counter()
        model = None
        try:
            model = loader()
            nbytes = size(model) if callable(size) else size
        except BaseException as exc:  # waiters must wake and see the error, or they would wait forever
            with self._lock:
                self._stats["load_errors"] += 1
                self._loading.pop(key, None)
            pending.error = exc
            pending.done.set()
            if model is not None:
                _release(model, closer)
            raise
        seconds = time.perf_counter() - t0
        if nbytes is None:
            nbytes = sum(s for (_, _, s, _) in signature if s)
        entry = _Entry(key, model, int(nbytes), closer, seconds, files, signature, users=1 if lease else 0)
        with self._lock:
            self._entries[key] = entry
            self._stats["loads"] += 1
            self._stats["load_seconds"] += seconds
            self._loading.pop(key, None)
            to_close = self._evict_over_budget(protect=key)
        pending.done.set()
        self._close_all(to_close)
        log.info("SafeCut: loaded %s in %.2fs", key.short(), seconds)
        self._emit("load", key)
        return entry

    def _evict_over_budget(self, protect) -> list[_Entry]:
        to_close = []

        def over() -> bool:
            n = len(self._entries)
            b = sum(e.size for e in self._entries.values())
            return n > max(self.max_models, 1) or (self.max_bytes > 0 and b > self.max_bytes and n > 1)

        for k in list(self._entries):  # oldest first
            if not over():
                break
            if k == protect:
                continue
            self._stats["evictions"] += 1
            to_close += self._retire(self._entries.pop(k))
        return to_close

    def _retire(self, entry: _Entry) -> list[_Entry]:
        """Entry has left the map: close now, or when its last user leaves."""
        if entry.users > 0:
            entry.evicted = True
            return []
        return [entry]

    def _leave(self, entry: _Entry) -> None:
        with self._lock:
            entry.users -= 1
            close_now = entry.evicted and entry.users == 0
        if close_now:
            self._close_all([entry])

    def _close_all(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        lingering = False
        for e in entries:
            ref = _weak(e.model)
            _release(e.model, e.closer)
            e.model = None
            self._emit("evict", e.key)
            lingering = lingering or ref is None or ref() is not None
        if lingering:  # a cycle (torch modules) or an outside reference: a full collection (~0.1 s) frees it
            gc.collect()
        torch = sys.modules.get("torch")  # only if torch is already in use: never import it here
        if torch is not None and getattr(torch, "cuda", None) is not None:
            try:
                if torch.cuda.is_initialized():
                    torch.cuda.empty_cache()
            except Exception:
                pass

    def _emit(self, event: str, key: ModelKey) -> None:
        for fn in list(self._listeners):
            try:
                fn(event, key)
            except Exception:
                pass


CACHE = ModelCache()
# Close models while their libraries are still importable (llama.cpp's own __del__ at interpreter
# shutdown fails noisily once its modules are torn down).
atexit.register(CACHE.unload)


def get_cache() -> ModelCache:
    return CACHE
