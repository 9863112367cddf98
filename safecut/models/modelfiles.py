"""Where model files live, how they are found, and how they are fetched (checksum-verified: against the
registry's sha256 where public sources pin one, else against the lock written at the first download, see
:mod:`safecut.models.modellock`).

Inside ComfyUI the adapter layer registers SafeCut's folders with ``folder_paths`` and installs a
folder provider here (``set_folder_provider``), so ``extra_model_paths.yaml`` works. Outside ComfyUI
(CLI, tests) the root is ``SAFECUT_MODELS_DIR`` (default ``./models``).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from typing import Callable

from . import modellock
from .hashing import sha256_file
from ..errors import ChecksumError, ModelNotFoundError, SafeCutError
from .registry import REGISTRY, ModelSpec, RemoteFile

log = logging.getLogger("safecut.models")

# kind -> ComfyUI model-folder names; downloads go to the first one.
FOLDERS: dict[str, list[str]] = {
    "ben2": ["ben2", "ben2_onnx"],
    "florence2": ["florence2", "LLM"],
    "llm": ["LLM", "llm_gguf"],
    "nudenet": ["nudenet"],
}
EXTENSIONS: dict[str, tuple[str, ...]] = {"ben2": (".onnx",), "llm": (".gguf",), "nudenet": (".onnx",)}
# florence2 models are directories holding config.json (the HF layout)

_folder_provider: Callable[[str], list[str]] | None = None
_verified: dict[tuple, bool] = {}
_download_lock = threading.Lock()


def set_folder_provider(fn: Callable[[str], list[str]] | None) -> None:
    """fn(folder_name) -> list of directories (ComfyUI: folder_paths.get_folder_paths)."""
    global _folder_provider
    _folder_provider = fn


def models_root() -> str:
    return os.path.abspath(os.environ.get("SAFECUT_MODELS_DIR") or os.path.join(os.getcwd(), "models"))


def search_dirs(kind: str) -> list[str]:
    dirs: list[str] = []
    for folder in FOLDERS[kind]:
        found = None
        if _folder_provider is not None:
            try:
                found = list(_folder_provider(folder))
            except Exception:
                found = None
        if found is None:
            found = [os.path.join(models_root(), folder)]
        for d in found:
            d = os.path.abspath(d)
            if d not in dirs:
                dirs.append(d)
    return dirs


def _is_model(kind: str, path: str) -> bool:
    if kind == "florence2":
        return os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json"))
    return os.path.isfile(path) and path.lower().endswith(EXTENSIONS[kind])


def list_models(kind: str) -> list[str]:
    """Names (relative to their folder, '/'-separated) of the models of ``kind`` found on disk."""
    names: list[str] = []
    for root in search_dirs(kind):
        if not os.path.isdir(root):
            continue
        if kind == "florence2":
            for name in sorted(os.listdir(root)):
                if _is_model(kind, os.path.join(root, name)) and name not in names:
                    names.append(name)
            continue
        for dirpath, _dirs, files in os.walk(root, followlinks=True):
            for f in sorted(files):
                full = os.path.join(dirpath, f)
                if _is_model(kind, full):
                    rel = os.path.relpath(full, root).replace(os.sep, "/")
                    if rel not in names:
                        names.append(rel)
    return sorted(names)


def choices(kind: str) -> list[str]:
    """Dropdown entries: what is on disk, then registry models that can still be fetched."""
    on_disk = list_models(kind)
    known = [s.name for s in REGISTRY.values() if s.kind == kind and s.name not in on_disk]
    return on_disk + known


def find(kind: str, name: str) -> str | None:
    if not name or "\x00" in name:
        return None
    rel = name.replace("\\", "/")
    if os.path.isabs(rel) or ".." in rel.split("/"):
        # absolute or parent paths are only honoured outside ComfyUI (CLI/tests pass real paths)
        return os.path.abspath(rel) if _folder_provider is None and _is_model(kind, rel) else None
    for root in search_dirs(kind):
        full = os.path.join(root, *rel.split("/"))
        if _is_model(kind, full):
            return full
    return None


def downloads_allowed() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if os.environ.get("SAFECUT_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    return os.environ.get("SAFECUT_ALLOW_DOWNLOAD", "1").lower() not in ("0", "false", "no")


def fetch_command(name: str) -> str:
    return f"python -m safecut models fetch {name}"


def resolve(kind: str, name: str, *, allow_download: bool | None = None) -> str:
    """Path of model ``name`` of ``kind``: found on disk, else fetched (when allowed), else a clear error."""
    path = find(kind, name)
    spec = REGISTRY.get(name)
    if path is not None:
        if spec is not None:
            check_files(spec, path)
        return path
    if spec is None or spec.kind != kind:
        raise ModelNotFoundError(name, search_dirs(kind), None,
                                 hint=f"'{name}' is not a model SafeCut knows how to download.")
    allowed = downloads_allowed() if allow_download is None else allow_download
    if not allowed:
        raise ModelNotFoundError(name, search_dirs(kind), fetch_command(name),
                                 hint="Downloads are off (HF_HUB_OFFLINE / SAFECUT_OFFLINE / the pack setting).")
    return download(spec)


# ---- checksums -----------------------------------------------------------------------------------
def verify_file(path: str, rf: RemoteFile) -> None:
    """Size always (cheap, catches truncation); sha256 once per (path, mtime, size) per process."""
    st = os.stat(path)
    if rf.size is not None and st.st_size != rf.size:
        raise ChecksumError(path, str(rf.size), str(st.st_size), what="size")
    if rf.sha256:
        memo = (path, st.st_mtime_ns, st.st_size)
        if memo not in _verified:
            actual = sha256_file(path)
            if actual != rf.sha256:
                raise ChecksumError(path, rf.sha256, actual)
            _verified[memo] = True


def check_files(spec: ModelSpec, path: str) -> None:
    if os.path.isdir(path):
        for rf in spec.files:
            if rf.size is None and not rf.sha256:
                continue  # small config files: no published checksum; transformers reports what is missing
            f = os.path.join(path, *rf.path.split("/"))
            if not os.path.isfile(f):
                raise SafeCutError(f"Model folder '{path}' has no '{rf.path}'. Fetch it again with: "
                                   f"{fetch_command(spec.name)}")
            verify_file(f, rf)
    elif len(spec.files) == 1:
        verify_file(path, spec.files[0])
    modellock.verify(spec, path)  # files without a registry sha256: checked against the lock (trust on first use)


# ---- download -----------------------------------------------------------------------------------
class HostNotFound(OSError):
    """The download host's name does not resolve: offline, or DNS is down."""

    def __init__(self, host: str, reason: object):
        super().__init__(f"{host} cannot be resolved ({reason})")
        self.host = host


def _check_resolvable(host: str | None) -> None:
    """Fail at once when ``host`` does not resolve: huggingface_hub would retry for ~24 s (5 retries with
    backoff) and log every attempt. Skipped behind an HTTPS proxy, which resolves names itself."""
    import socket
    import urllib.request

    if not host:
        return
    proxies = urllib.request.getproxies()
    if ("https" in proxies or "all" in proxies) and not urllib.request.proxy_bypass(host):
        return
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise HostNotFound(host, exc.strerror or exc) from exc


def _hub_host() -> str | None:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname


class _HubLogsOnce:
    """huggingface_hub's logger has its own stderr handler AND propagates to the root logger, so in
    ComfyUI (whose root logger has a handler) each of its warnings is printed twice. While SafeCut calls
    the hub, its records stay with its own handler."""

    def __enter__(self):
        self.logger = logging.getLogger("huggingface_hub")
        self.prev = self.logger.propagate
        if self.logger.handlers:
            self.logger.propagate = False

    def __exit__(self, *exc):
        self.logger.propagate = self.prev


def _hub_download(repo_id: str, filename: str, revision: str | None, dest_dir: str) -> str:
    """The one network call (mocked in tests). Returns the downloaded file's path."""
    from ..runtime.deps import require

    hub = require("huggingface_hub")
    _check_resolvable(_hub_host())
    with _HubLogsOnce():
        return hub.hf_hub_download(repo_id=repo_id, filename=filename, revision=revision, local_dir=dest_dir)


def _url_download(url: str, filename: str, dest_dir: str) -> str:
    """Plain HTTPS download for files hosted outside the hub (mocked in tests)."""
    import urllib.request
    from urllib.parse import urlparse

    _check_resolvable(urlparse(url).hostname)
    out = os.path.join(dest_dir, filename)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as resp, open(out, "wb") as f:  # noqa: S310 (pinned URL)
        shutil.copyfileobj(resp, f, 4 << 20)
    return out


def _unresolved_host(exc: BaseException) -> str | None:
    """The host whose name did not resolve somewhere in ``exc``'s chain (HostNotFound, socket.gaierror,
    urllib3's NameResolutionError inside requests' ConnectionError, httpx's ConnectError…), else None."""
    import socket

    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        if isinstance(e, HostNotFound):
            return e.host
        if isinstance(e, socket.gaierror) or type(e).__name__ == "NameResolutionError":
            return getattr(e, "_host", None) or "the download host"
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
    return None


def _download_error(spec: ModelSpec, root: str, exc: Exception) -> SafeCutError:
    by_hand = f"place the file(s) by hand in {root} (on a machine with internet: {fetch_command(spec.name)})"
    host = _unresolved_host(exc)
    if host is not None:
        return SafeCutError(f"Cannot download '{spec.name}': {host} cannot be resolved, so this machine looks "
                            f"offline (or its DNS is down). Connect it and run again, or {by_hand}.")
    reason = str(exc).strip().rstrip(".") or type(exc).__name__
    return SafeCutError(f"Downloading '{spec.name}' from {spec.repo_id} failed: {reason}. Check the network, "
                        f"or {by_hand}.")


def download(spec: ModelSpec, dest_root: str | None = None) -> str:
    """Fetch ``spec`` into its first model folder. Files land under a temp name, are verified,
    then renamed: an interrupted or corrupt download never sits under the real name."""
    root = dest_root or search_dirs(spec.kind)[0]
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, spec.name)
    with _download_lock:
        if os.path.exists(final):
            check_files(spec, final)
            return final
        tmp = tempfile.mkdtemp(prefix=".safecut-dl-", dir=root)
        try:
            for rf in spec.files:
                log.warning("SafeCut: downloading %s/%s (%s) …", spec.repo_id, rf.path,
                            f"{rf.size / 1e6:.0f} MB" if rf.size else "size unknown")
                if rf.url:
                    got = _url_download(rf.url, rf.path, tmp)
                else:
                    got = _hub_download(spec.repo_id, rf.path, spec.revision, tmp)
                verify_file(got, rf)
            lock_entry = modellock.entry_from_download(spec, tmp)
            if spec.is_dir:
                shutil.rmtree(os.path.join(tmp, ".cache"), ignore_errors=True)  # hub bookkeeping
                os.replace(tmp, final)
            else:
                os.replace(os.path.join(tmp, spec.files[0].path), final)
        except SafeCutError:  # checksum errors and the like already say what to do
            raise
        except Exception as exc:
            raise _download_error(spec, root, exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        modellock.record(spec, final, lock_entry)
    log.warning("SafeCut: %s saved to %s", spec.name, final)
    return final
