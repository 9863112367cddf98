"""Atomic output files: PNGs with text metadata and JSON reports, never left half-written."""
from __future__ import annotations

import errno
import json
import os
from typing import Any, Callable

from ..runtime.lazy import numpy as np

from ..errors import BadInputError, SafeCutError
from .decode import _pil


class SaveError(SafeCutError, OSError):
    """Writing an output file failed (read-only folder, disk full…); no partial file is left behind."""


def _write_error(path: str, exc: OSError) -> SaveError:
    why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission denied", errno.EPERM: "permission denied",
           getattr(errno, "EDQUOT", -1): "the disk quota is exceeded"}.get(exc.errno, exc.strerror or str(exc))
    msg = (f"Could not write '{path}': {why}. Free space or fix the folder's permissions (or point "
           f"ComfyUI's output folder elsewhere); no partial file was left behind.")
    err = SaveError(msg)
    err.message = msg
    err.errno = exc.errno
    return err


def atomic_write(path: str, write: Callable[[Any], None], overwrite: bool = True) -> str:
    """Write through ``write(fileobj)`` into a temp file next to ``path``, fsync, then move it into place
    (os.replace; with ``overwrite=False`` a hard link that fails if ``path`` exists -> FileExistsError).
    On any failure the temp file is removed and a SaveError explains what to do."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".safecut-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; give the usual 0666 & ~umask instead
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError:  # file systems without hard links: check, then replace
                if os.path.lexists(path):
                    raise FileExistsError(errno.EEXIST, "exists", path) from None
                os.replace(tmp, path)
            else:
                _remove_quietly(tmp)
    except FileExistsError:
        _remove_quietly(tmp)
        raise
    except OSError as exc:
        _remove_quietly(tmp)
        raise _write_error(path, exc) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    return path


_UMASK: list[int] = []


def _umask() -> int:
    if not _UMASK:  # read once: os.umask can only be read by setting it
        current = os.umask(0o022)
        os.umask(current)
        _UMASK.append(current)
    return _UMASK[0]


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def to_uint8(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a
    return (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def save_png_atomic(path: str, image: np.ndarray, metadata: dict[str, str] | None = None,
                    overwrite: bool = True, compress_level: int = 4) -> str:
    """Save HxWx4 (RGBA) / HxWx3 / HxW uint8 (or float 0..1) as PNG with text chunks, atomically.
    Latin-1 values become tEXt (zTXt when long), others iTXt (UTF-8)."""
    Image, _, _ = _pil()
    from PIL.PngImagePlugin import PngInfo

    arr = to_uint8(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise BadInputError(f"cannot save an image of shape {arr.shape}; expected HxW, HxWx3 or HxWx4.")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.shape[-1] if arr.ndim == 3 else 2]
    im = Image.fromarray(np.ascontiguousarray(arr))
    assert im.mode == mode, (im.mode, mode)
    info = PngInfo()
    for key, value in (metadata or {}).items():
        key = str(key)[:79] or "comment"
        value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        try:
            value.encode("latin-1")
            info.add_text(key, value, zip=len(value) > 2048)
        except UnicodeEncodeError:
            info.add_itxt(key, value, zip=len(value) > 2048)

    def write(fh):
        im.save(fh, format="PNG", pnginfo=info, compress_level=compress_level)

    return atomic_write(path, write, overwrite=overwrite)


def write_text_atomic(path: str, text: str, overwrite: bool = True) -> str:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), overwrite=overwrite)
