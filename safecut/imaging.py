"""Image decoding, safe folder listing and the batch loader engine (pure Python: numpy + Pillow).

Conventions (the nodes rely on them):

* ``Decoded.rgb`` is HxWx3 float32 0..1; ``Decoded.alpha`` is HxW float32 0..1 (1 = opaque) or None.
* Loader masks follow ComfyUI's LoadImage: ``mask = 1 - alpha``, all zeros when the file has no alpha.
* EXIF orientation is applied; animated files give their first frame; 16-bit data is scaled from
  65535 (never clipped at 255); files are decoded strictly: a truncated file is an error, never a
  grey-filled image.
* Batch mode brings every image to the FIRST image's size (after sorting and start/limit):
  ``resize`` stretches, ``crop`` scales to cover and centre-crops, ``pad`` scales to fit (aspect kept),
  centres the picture and fills the rest with black; the padding counts as transparent, so its mask
  is 1 (same meaning as 1 - alpha).
* Paths typed by users (folders, patterns, upload names, output prefixes) never leave their root:
  '..', NUL, percent-encoded tricks and (on POSIX) backslashes are refused; every folder and every
  listed file is checked with realpath + commonpath, so a symlink pointing outside is refused too.

PIL is imported inside functions: importing this module is cheap.
"""
from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import json
import os
import re
import threading
import unicodedata
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .errors import BadInputError, SafeCutError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Pillow plugins we let open a file (content decides, the extension does not). Keeping this list
# short keeps e.g. EPS (which runs Ghostscript) away from files that merely end in ".png".
# (JPEG also opens multi-picture MPO camera files.)
PIL_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "TIFF", "GIF")
SORTS = ["natural", "name", "mtime"]
MODES = ["list", "batch"]
FITS = ["pad", "resize", "crop"]
ON_ERROR = ["fail", "skip"]
DEFAULT_MAX_PIXELS = 100_000_000
_FIX = "Re-export it as PNG or JPEG, or remove it from the folder."


class SaveError(SafeCutError, OSError):
    """Writing an output file failed (read-only folder, disk full…); no partial file is left behind."""


# ---- Pillow --------------------------------------------------------------------------------------
def _pil():
    from .deps import require

    require("PIL")
    from PIL import Image, ImageFile, ImageOps

    return Image, ImageFile, ImageOps


_TRUNCATION_LOCK = threading.RLock()


@contextlib.contextmanager
def _strict_decoding():
    """Pillow's LOAD_TRUNCATED_IMAGES is process-wide (ComfyUI itself flips it on briefly): force it off
    while we decode, so a cut-off file raises instead of coming back grey-filled."""
    _, ImageFile, _ = _pil()
    with _TRUNCATION_LOCK:
        prev = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = prev


def max_pixels() -> int:
    """SAFECUT_MAX_PIXELS (width*height), default 100 megapixels; 0 or less turns SafeCut's limit off
    (Pillow's own decompression-bomb limit, about 179 megapixels, still applies)."""
    raw = os.environ.get("SAFECUT_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(raw))
    except ValueError:
        raise BadInputError(f"SAFECUT_MAX_PIXELS='{raw}' is not a number; set it to a pixel count such as "
                            f"100000000 (or unset it).") from None


# ---- decoding ------------------------------------------------------------------------------------
@dataclass
class Decoded:
    rgb: np.ndarray                  # HxWx3 float32 0..1
    alpha: np.ndarray | None         # HxW float32 0..1, 1 = opaque; None when the file has no alpha
    info: dict = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        """ComfyUI LoadImage convention: 1 - alpha, zeros without alpha."""
        if self.alpha is None:
            return np.zeros(self.rgb.shape[:2], np.float32)
        return (1.0 - self.alpha).astype(np.float32)


def decode_image(src: str | os.PathLike | bytes | bytearray | memoryview, name: str | None = None) -> Decoded:
    """Decode one image file (path) or encoded bytes. Every failure is a BadInputError naming the file."""
    Image, _, ImageOps = _pil()
    is_bytes = isinstance(src, (bytes, bytearray, memoryview))
    if name is None:
        name = "<bytes>" if is_bytes else os.path.basename(os.fspath(src))
    if not is_bytes:
        path = os.fspath(src)
        ext = os.path.splitext(path)[1].lower()
        if ext not in IMAGE_EXTENSIONS:
            raise BadInputError(f"'{name}' is not a supported image file (extension '{ext or 'none'}'; SafeCut "
                                f"reads {', '.join(IMAGE_EXTENSIONS)}). {_FIX}")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise BadInputError(f"Image '{name}' was not found (it may have been moved or deleted while "
                                f"loading). Check the folder and run again.") from None
        except IsADirectoryError:
            raise BadInputError(f"'{name}' is a folder, not an image file. Rename or move it.") from None
        except PermissionError:
            raise BadInputError(f"Image '{name}' cannot be read (permission denied). Fix its permissions "
                                f"or remove it from the folder.") from None
        except OSError as exc:
            raise BadInputError(f"Image '{name}' cannot be read ({exc.strerror or exc}). {_FIX}") from None
    else:
        data = bytes(src)
    if not data:
        raise BadInputError(f"Image '{name}' is empty (0 bytes): the upload or copy did not finish. {_FIX}")

    import io

    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.init()
            im = Image.open(io.BytesIO(data), formats=[f for f in PIL_FORMATS if f in Image.OPEN])
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"Image '{name}' is too large to load safely ({exc}). Downscale it, or raise "
                            f"SAFECUT_MAX_PIXELS and Pillow's Image.MAX_IMAGE_PIXELS if it is trusted.") from None
    except Exception as exc:  # UnidentifiedImageError, SyntaxError from broken headers, …
        raise BadInputError(f"'{name}' is not a readable image: its content is not PNG, JPEG, WebP, BMP, TIFF "
                            f"or GIF data ({type(exc).__name__}). {_FIX}") from None
    with im:
        w, h = im.size
        if limit > 0 and w * h > limit:
            raise BadInputError(f"Image '{name}' is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} "
                                f"(SAFECUT_MAX_PIXELS; protects against decompression bombs). Downscale it, or "
                                f"raise SAFECUT_MAX_PIXELS if the file is trusted.")
        if w < 1 or h < 1:
            raise BadInputError(f"Image '{name}' has no pixels ({w}x{h}). {_FIX}")
        frames = int(getattr(im, "n_frames", 1) or 1)
        fmt = im.format
        try:
            with _strict_decoding():
                if frames > 1:
                    im.seek(0)
                im.load()
        except MemoryError:
            raise BadInputError(f"Image '{name}' ({w}x{h}) does not fit in memory. Downscale it.") from None
        except Exception as exc:
            raise BadInputError(f"Image '{name}' is truncated or damaged ({exc}). {_FIX}") from None
        orientation = 1
        exif_error = None
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
            out = ImageOps.exif_transpose(im) if orientation != 1 else im
        except Exception as exc:  # broken EXIF: keep the pixels as stored, say so in info
            exif_error = f"{type(exc).__name__}: {exc}"
            out = im
        try:
            rgb, alpha = _to_arrays(out)
        except BadInputError:
            raise
        except Exception as exc:
            raise BadInputError(f"Image '{name}' uses colour mode '{out.mode}' that SafeCut cannot convert "
                                f"({exc}). Re-export it as 8-bit RGB/RGBA PNG or JPEG.") from None
        mode = im.mode
    ext = os.path.splitext(name)[1].lower()
    info = {"name": name, "size": (rgb.shape[1], rgb.shape[0]), "stored_size": (w, h), "mode": mode,
            "format": fmt, "frames": frames, "animated": frames > 1, "orientation": orientation,
            "exif_rotated": orientation != 1 and exif_error is None, "has_alpha": alpha is not None}
    if exif_error:
        info["exif_error"] = exif_error
    if ext and fmt and not _ext_matches(ext, fmt):
        info["extension_mismatch"] = f"'{ext}' file holds {fmt} data"
    return Decoded(rgb, alpha, info)


def _ext_matches(ext: str, fmt: str) -> bool:
    return ext in {"PNG": (".png",), "JPEG": (".jpg", ".jpeg"), "MPO": (".jpg", ".jpeg"), "WEBP": (".webp",),
                   "BMP": (".bmp",), "DIB": (".bmp",), "TIFF": (".tif", ".tiff"), "GIF": (".gif",)}.get(fmt, ())


def _to_arrays(im) -> tuple[np.ndarray, np.ndarray | None]:
    """PIL image (any mode) -> (HxWx3 float32 0..1, HxW alpha or None)."""
    mode = im.mode
    has_trns = "transparency" in im.info
    if mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.float32)
        alpha = None
        if has_trns and isinstance(im.info["transparency"], int):
            alpha = (arr != float(im.info["transparency"])).astype(np.float32)
        return _gray(arr / 65535.0), alpha
    if mode == "I":
        # 32-bit int: Pillow's container for 16-bit sources; scale from 65535, larger ranges by their max
        arr = np.asarray(im).astype(np.float64)
        top = max(65535.0, float(arr.max(initial=0)))
        return _gray(np.clip(arr / top, 0, 1).astype(np.float32)), None
    if mode == "F":
        arr = np.asarray(im).astype(np.float32)
        arr = np.nan_to_num(arr, nan=0.0, posinf=1.0, neginf=0.0)
        top = float(arr.max(initial=0))
        if top > 1.0:  # not 0..1 data: scale the positive range
            arr = arr / top
        return _gray(np.clip(arr, 0, 1).astype(np.float32)), None
    if mode == "1":
        return _gray(np.asarray(im.convert("L"), np.float32) / 255.0), None
    if mode == "L" and not has_trns:
        return _gray(np.asarray(im, np.float32) / 255.0), None
    if mode == "LA":
        arr = np.asarray(im, np.float32) / 255.0
        return _gray(arr[..., 0]), np.ascontiguousarray(arr[..., 1])
    if mode == "RGB" and not has_trns:
        return np.ascontiguousarray(np.asarray(im, np.float32) / 255.0), None
    if mode == "RGBA":
        arr = np.asarray(im, np.float32) / 255.0
        return np.ascontiguousarray(arr[..., :3]), np.ascontiguousarray(arr[..., 3])
    if mode == "RGBX":
        return np.ascontiguousarray(np.asarray(im, np.float32)[..., :3] / 255.0), None
    if mode in ("P", "PA", "L", "RGB", "La", "RGBa") and (has_trns or mode in ("PA", "La", "RGBa")):
        return _to_arrays(im.convert("RGBA"))  # palette/colour-key transparency becomes real alpha
    if mode in ("P", "CMYK", "YCbCr", "HSV"):
        return _to_arrays(im.convert("RGB"))   # CMYK: Pillow handles Adobe's inverted JPEG CMYK
    if "A" in im.getbands():
        return _to_arrays(im.convert("RGBA"))
    return _to_arrays(im.convert("RGB"))


def _gray(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(arr.astype(np.float32)[..., None], 3, axis=-1))


# ---- user-typed paths ----------------------------------------------------------------------------
def _parts(text: str) -> list[str]:
    return re.split(r"[\\/]", text)


def check_user_path(text: str, what: str, allow_absolute: bool = True) -> str:
    """Refuse NUL, '..' components, percent-encoded traversal and (on POSIX) backslashes. Returns the
    stripped text. The real containment check is done on the resolved path (``_inside``)."""
    if not isinstance(text, str):
        raise BadInputError(f"{what} must be text; got {type(text).__name__}.")
    text = text.strip()
    if "\x00" in text:
        raise BadInputError(f"{what} contains a NUL byte; type a plain path.")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise BadInputError(f"{what} contains control characters; type a plain path.")
    if os.sep == "/" and "\\" in text:
        raise BadInputError(f"{what} '{text}' contains a backslash; use '/' to separate folders.")
    from urllib.parse import unquote

    decoded, prev = text, None
    for _ in range(5):  # %252e%252e and friends: decode to a fixed point, then check that too
        if decoded == prev:
            break
        prev, decoded = decoded, unquote(decoded)
    for form in {text, decoded}:
        if "\x00" in form or (os.sep == "/" and form != text and "\\" in form):
            raise BadInputError(f"{what} '{text}' hides a NUL byte or backslash in %-encoding; type a plain path.")
        for comp in _parts(form):
            bare = comp.strip()
            if bare == ".." or (os.name == "nt" and bare and set(bare) <= {".", " "} and bare.count(".") >= 2):
                how = "" if form == text else " (%-encoded)"
                raise BadInputError(f"{what} '{text}' contains '..'{how}; paths must stay inside their root "
                                    f"folder. Use a path relative to it without '..'.")
    if not allow_absolute and (os.path.isabs(text) or text.startswith(("/", "\\")) or os.path.splitdrive(text)[0]):
        raise BadInputError(f"{what} '{text}' is an absolute path; give a path relative to its root folder.")
    return text


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def _inside(real_path: str, real_roots: Iterable[str]) -> bool:
    for root in real_roots:
        try:
            if os.path.commonpath([real_path, root]) == root:
                return True
        except ValueError:  # different drives on Windows
            continue
    return False


def allowed_roots_from_env() -> list[str]:
    """SAFECUT_ALLOWED_ROOTS: extra folders (os.pathsep-separated) that absolute paths may point into."""
    raw = os.environ.get("SAFECUT_ALLOWED_ROOTS", "")
    return [p.strip() for p in raw.split(os.pathsep) if p.strip()]


def _real_roots(input_root: str, allowed_roots: Sequence[str] | None) -> list[str]:
    roots = [input_root] + [r for r in (allowed_roots or []) if r]
    out: list[str] = []
    for r in roots:
        rr = _real(os.path.abspath(os.path.expanduser(r)))
        if rr not in out:
            out.append(rr)
    return out


def resolve_dir(directory: str, input_root: str, allowed_roots: Sequence[str] | None = None,
                must_exist: bool = True) -> str:
    """Resolve a user-typed folder. Relative paths are relative to ``input_root``; absolute ones must lie in
    ``input_root`` or one of ``allowed_roots``. Returns the real path (symlinks resolved)."""
    if directory is None:
        directory = ""
    text = check_user_path(directory, "folder")
    roots = _real_roots(input_root, allowed_roots)
    candidate = text if os.path.isabs(text) else os.path.join(input_root, text)
    real = _real(os.path.abspath(candidate))
    if not _inside(real, roots):
        shown = ", ".join(roots)
        if os.path.isabs(text):
            raise BadInputError(f"folder '{text}' is outside the folders SafeCut may read ({shown}). Use a "
                                f"folder inside ComfyUI's input folder, or add its parent to "
                                f"SAFECUT_ALLOWED_ROOTS ({os.pathsep}-separated).")
        raise BadInputError(f"folder '{text}' leads outside the allowed folders ({shown}) through a symbolic "
                            f"link; copy the images into the input folder instead.")
    if must_exist and not os.path.isdir(real):
        what = "is a file, not a folder" if os.path.exists(real) else "does not exist"
        raise BadInputError(f"folder '{text or '.'}' {what} (looked at {real}). Relative folders are inside "
                            f"ComfyUI's input folder ({input_root}).")
    return real


def check_pattern(pattern: str) -> str:
    pattern = (pattern or "").strip() or "*"
    if "\x00" in pattern or "/" in pattern or "\\" in pattern or ".." in pattern:
        raise BadInputError(f"pattern '{pattern}' may not contain '/', '\\', '..' or NUL: it matches file names "
                            f"inside the folder (e.g. '*.png', 'shot_*'). Put sub-folders in 'directory'.")
    return pattern


# ---- listing -------------------------------------------------------------------------------------
class FileList(list):
    """A list of absolute file paths that also carries ``base`` (for relative names) and ``refused``:
    ``[{"file", "error"}]`` for selected entries that cannot be used (symlink escapes, missing uploads)."""

    def __init__(self, files: Iterable[str] = (), base: str = "", refused: list[dict] | None = None):
        super().__init__(files)
        self.base = base
        self.refused = list(refused or [])

    def name(self, path: str) -> str:
        return rel_name(path, self.base)


def rel_name(path: str, base: str | None) -> str:
    if base:
        try:
            rel = os.path.relpath(path, base)
            if not rel.startswith(".."):
                return rel.replace(os.sep, "/")
        except ValueError:
            pass
    return os.path.basename(path)


def natural_key(text: str) -> tuple:
    parts = re.split(r"(\d+)", text.casefold())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), text


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not name.startswith(".")


def list_images(directory: str, pattern: str = "*", sort: str = "natural", start: int = 0, limit: int = 0,
                recursive: bool = False, roots: Sequence[str] | None = None) -> FileList:
    """Image files in ``directory`` (already resolved with resolve_dir) whose name matches ``pattern``
    (case-insensitive glob on the file name). Hidden files (".name") and other extensions are ignored.
    ``roots``: real folders that symlinked files may point into (default: ``directory`` itself); links
    leading elsewhere are refused and reported in ``.refused``. Sorting, then ``start``/``limit``
    (0 = all), apply to the full selection, refused entries included, so indices stay stable."""
    pattern = check_pattern(pattern).lower()
    if sort not in SORTS:
        raise BadInputError(f"sort '{sort}' is not one of {SORTS}.")
    base = os.path.realpath(directory)
    real_roots = [_real(r) for r in (roots or [base])]
    entries: list[tuple[str, str]] = []  # (relative name, path)
    if recursive:
        for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in filenames:
                if _is_image_name(fn) and fnmatch.fnmatchcase(fn.lower(), pattern):
                    p = os.path.join(dirpath, fn)
                    entries.append((rel_name(p, base), p))
    else:
        try:
            with os.scandir(base) as it:
                for e in it:
                    if _is_image_name(e.name) and fnmatch.fnmatchcase(e.name.lower(), pattern):
                        if e.is_dir():
                            continue
                        entries.append((e.name, e.path))
        except OSError as exc:
            raise BadInputError(f"folder '{directory}' cannot be listed ({exc.strerror or exc}).") from None
    if sort == "natural":
        entries.sort(key=lambda t: natural_key(t[0]))
    elif sort == "name":
        entries.sort(key=lambda t: t[0])
    else:
        def mtime(t):
            try:
                return os.stat(t[1]).st_mtime_ns
            except OSError:
                return 0
        entries.sort(key=lambda t: (mtime(t), natural_key(t[0])))
    start = max(int(start or 0), 0)
    entries = entries[start:start + int(limit)] if limit and int(limit) > 0 else entries[start:]
    out = FileList(base=base)
    for rel, p in entries:
        problem = _file_problem(p, real_roots)
        if problem:
            out.refused.append({"file": rel, "error": f"'{rel}' {problem}"})
        else:
            out.append(p)
    return out


def _file_problem(path: str, real_roots: Sequence[str]) -> str | None:
    real = _real(path)
    if not _inside(real, real_roots):
        return ("is a symbolic link to a file outside the allowed folders; refused. Copy the file into "
                "the folder instead.")
    if not os.path.exists(real):
        return "is a broken symbolic link (its target does not exist); remove it or fix the link."
    if os.path.isdir(real):
        return "is a folder with an image extension; rename or remove it."
    return None


def select_uploads(input_root: str, names_or_prefix: str, allowed_roots: Sequence[str] | None = None) -> FileList:
    """Files in ComfyUI's input folder picked the way worker-comfyui uploads a request's images.

    ``names_or_prefix`` is split on commas and newlines. A token with an image extension is an exact file
    name (``a.png``, ``req42/b.jpg``); missing ones are reported in ``.refused`` (a failed upload must not
    go unnoticed). Any other token (or one ending in ``*``) is a name prefix: every image whose name starts
    with it, in natural order (``req42_`` or ``req42/`` for a subfolder). A prefix matching nothing is an
    error. Order follows the tokens; duplicates are dropped."""
    tokens = [t.strip() for t in re.split(r"[,\n\r]+", names_or_prefix or "") if t.strip()]
    if not tokens:
        raise BadInputError("uploads is empty; give image names (a.png, b.png) or a name prefix.")
    root = os.path.realpath(input_root)
    roots = _real_roots(input_root, allowed_roots)
    out = FileList(base=root)
    seen: set[str] = set()
    unmatched: list[str] = []
    for tok in tokens:
        tok = check_user_path(tok, "upload name", allow_absolute=False)
        is_prefix = tok.endswith("*") or os.path.splitext(tok)[1].lower() not in IMAGE_EXTENSIONS
        tok = tok.rstrip("*")
        if not is_prefix:
            path = os.path.join(root, tok)
            rel = rel_name(path, root)
            if rel in seen:
                continue
            seen.add(rel)
            if not os.path.lexists(path):
                out.refused.append({"file": rel, "error": f"'{rel}' was not found in the input folder: the upload "
                                    f"did not arrive or the name is wrong. Send it with the request's images."})
                continue
            problem = _file_problem(path, roots)
            if problem:
                out.refused.append({"file": rel, "error": f"'{rel}' {problem}"})
            else:
                out.append(os.path.normpath(path))
            continue
        sub, _, prefix = tok.rpartition("/")
        folder = os.path.join(root, sub) if sub else root
        if not os.path.isdir(folder) or not _inside(_real(folder), roots):
            unmatched.append(tok + "*")
            continue
        found = list_images(folder, check_pattern(_glob_escape(prefix) + "*"), "natural", roots=roots)
        hits = [p for p in found if os.path.basename(p).lower().startswith(prefix.lower())]
        refused = [r for r in found.refused if os.path.basename(r["file"]).lower().startswith(prefix.lower())]
        if not hits and not refused:
            unmatched.append(tok + "*")
        for p in hits:
            rel = rel_name(p, root)
            if rel not in seen:
                seen.add(rel)
                out.append(p)
        for r in refused:
            rel = rel_name(os.path.join(folder, r["file"]), root)
            if rel not in seen:
                seen.add(rel)
                out.refused.append({"file": rel, "error": r["error"]})
    if unmatched:
        raise BadInputError(f"no uploaded image matches {', '.join(repr(u) for u in unmatched)} in the input folder "
                            f"({root}). Upload the images with the request or fix the prefix.")
    return out


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", text)


# ---- batch loading -------------------------------------------------------------------------------
@dataclass
class LoadResult:
    images: list[np.ndarray]         # HxWx3 float32 0..1 (list mode: native sizes; batch: common size)
    masks: list[np.ndarray]          # HxW float32, 1 - alpha (batch/pad: padding = 1)
    names: list[str]
    errors: list[dict]               # [{"file", "error"}] for every file that was not loaded
    infos: list[dict] = field(default_factory=list)
    size: tuple[int, int] | None = None  # (W, H) common size in batch mode


def load_batch(files: Sequence[str], mode: str = "list", fit: str = "pad", on_error: str = "fail",
               progress: Callable[[int], None] | None = None, base: str | None = None) -> LoadResult:
    """Decode ``files`` in order. ``on_error="fail"`` raises ONE BadInputError listing every bad file;
    ``"skip"`` keeps the good ones and reports the bad in ``errors``. When nothing at all could be loaded
    it raises in both modes. ``files`` may be a FileList: its ``refused`` entries count as bad files."""
    if mode not in MODES:
        raise BadInputError(f"mode '{mode}' is not one of {MODES}.")
    if fit not in FITS:
        raise BadInputError(f"batch_fit '{fit}' is not one of {FITS}.")
    if on_error not in ON_ERROR:
        raise BadInputError(f"on_error '{on_error}' is not one of {ON_ERROR}.")
    if base is None:
        base = getattr(files, "base", None)
    errors: list[dict] = [dict(r) for r in getattr(files, "refused", [])]
    images, masks, names, infos = [], [], [], []
    for path in files:
        name = rel_name(path, base)
        try:
            d = decode_image(path, name=name)
        except BadInputError as exc:
            errors.append({"file": name, "error": str(exc)})
        else:
            images.append(d.rgb)
            masks.append(d.mask)
            names.append(name)
            infos.append(d.info)
        if progress is not None:
            progress(1)
    if errors and (on_error == "fail" or not images):
        raise _bad_files(errors, len(files) + len(getattr(files, "refused", [])), on_error, nothing=not images)
    if not images:
        raise BadInputError("no image files were selected; check the folder, the pattern and start/limit.")
    size = None
    if mode == "batch":
        h, w = images[0].shape[:2]
        size = (w, h)
        for i in range(len(images)):
            images[i], masks[i] = fit_image(images[i], masks[i], (h, w), fit)
    return LoadResult(images, masks, names, errors, infos, size)


def _bad_files(errors: list[dict], total: int, on_error: str, nothing: bool) -> BadInputError:
    lines = "\n".join(f"  - {e['error']}" for e in errors)
    head = (f"None of the {total} selected file(s) could be loaded:" if nothing else
            f"{len(errors)} of {total} selected file(s) could not be loaded:")
    tail = ("Fix or remove these files." if nothing else
            "Fix or remove these files, or set on_error to 'skip' to load the others and report these.")
    err = BadInputError(f"{head}\n{lines}\n{tail}")
    err.errors = errors
    return err


def fit_image(rgb: np.ndarray, mask: np.ndarray, size_hw: tuple[int, int], fit: str) -> tuple[np.ndarray, np.ndarray]:
    """Bring one image and its mask (1 - alpha) to ``size_hw``; see the module docstring for the fits."""
    th, tw = size_hw
    h, w = rgb.shape[:2]
    if (h, w) == (th, tw):
        return rgb, mask
    if fit == "resize":
        return _resize(rgb, (th, tw)), _resize(mask, (th, tw))
    if fit == "crop":
        s = max(tw / w, th / h)
        nw, nh = max(tw, round(w * s)), max(th, round(h * s))
        r, m = _resize(rgb, (nh, nw)), _resize(mask, (nh, nw))
        y, x = (nh - th) // 2, (nw - tw) // 2
        return np.ascontiguousarray(r[y:y + th, x:x + tw]), np.ascontiguousarray(m[y:y + th, x:x + tw])
    if fit == "pad":
        s = min(tw / w, th / h)
        nw, nh = min(tw, max(1, round(w * s))), min(th, max(1, round(h * s)))
        out = np.zeros((th, tw, 3), np.float32)
        out_m = np.ones((th, tw), np.float32)  # padding = no content = transparent -> mask 1
        y, x = (th - nh) // 2, (tw - nw) // 2
        out[y:y + nh, x:x + nw] = _resize(rgb, (nh, nw))
        out_m[y:y + nh, x:x + nw] = _resize(mask, (nh, nw))
        return out, out_m
    raise BadInputError(f"batch_fit '{fit}' is not one of {FITS}.")


def _resize(arr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Float resize per channel (keeps 16-bit precision); Lanczos for shrinking/enlarging, clipped 0..1."""
    Image, _, _ = _pil()
    th, tw = size_hw
    if arr.shape[:2] == (th, tw):
        return arr.astype(np.float32, copy=False)
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = np.empty((th, tw, chans.shape[-1]), np.float32)
    for c in range(chans.shape[-1]):
        im = Image.fromarray(np.ascontiguousarray(chans[..., c], dtype=np.float32))  # mode "F"
        out[..., c] = np.asarray(im.resize((tw, th), Image.Resampling.LANCZOS), np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out[..., 0] if arr.ndim == 2 else out


# ---- fingerprint (IS_CHANGED) --------------------------------------------------------------------
_HASH_CACHE: "OrderedDict[tuple, str]" = OrderedDict()
_HASH_LOCK = threading.Lock()
_HASH_CACHE_MAX = 20000


def file_sha256(path: str) -> tuple[str, os.stat_result]:
    """sha256 of the content, cached by (real path, size, mtime_ns, ctime_ns, inode). ctime cannot be set
    back by tools that restore mtime, so an in-place edit of the same size is still noticed."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _HASH_LOCK:
        hit = _HASH_CACHE.get(key)
        if hit is not None:
            _HASH_CACHE.move_to_end(key)
            return hit, st
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _HASH_LOCK:
        _HASH_CACHE[key] = digest
        while len(_HASH_CACHE) > _HASH_CACHE_MAX:
            _HASH_CACHE.popitem(last=False)
    return digest, st


def fingerprint(files: Sequence[str], base: str | None = None) -> str:
    """sha256 over (relative name, size, mtime_ns, content sha256) of every file, in order, plus refused
    entries of a FileList: changes when a file is added, removed, renamed, reordered or modified."""
    if base is None:
        base = getattr(files, "base", None)
    h = hashlib.sha256(b"safecut-fingerprint-1\n")
    for path in files:
        name = rel_name(path, base)
        try:
            digest, st = file_sha256(path)
            line = f"{name}\t{st.st_size}\t{st.st_mtime_ns}\t{digest}\n"
        except OSError as exc:
            line = f"{name}\tunreadable\t{exc.errno}\n"
        h.update(line.encode("utf-8", "surrogatepass"))
    for r in getattr(files, "refused", []):
        h.update(f"refused\t{r.get('file')}\t{r.get('error')}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# ---- writing -------------------------------------------------------------------------------------
_WIN_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def sanitize_filename(name: str, max_len: int = 100, fallback: str = "image") -> str:
    """One safe file-name component: no separators, no '..', no control or Windows-reserved characters,
    no leading/trailing dots or spaces, at most ``max_len`` characters and 200 UTF-8 bytes."""
    name = unicodedata.normalize("NFC", str(name or ""))
    name = "".join("_" if (unicodedata.category(c) in ("Cc", "Cf", "Cs") or c in '/\\<>:"|?*') else c for c in name)
    name = re.sub(r"\.{2,}", ".", name)
    name = re.sub(r"\s+", " ", name).strip(" .")
    if not name:
        name = fallback
    if name.split(".")[0].upper() in _WIN_RESERVED:
        name = "_" + name
    name = name[:max_len]
    while len(name.encode("utf-8")) > 200:
        name = name[:-1]
    return name.strip(" .") or fallback


def resolve_output_prefix(output_dir: str, prefix: str, default: str = "safecut/cutout") -> tuple[str, str, str]:
    """``filename_prefix`` -> (absolute folder, subfolder as ComfyUI's /view wants it, file prefix).
    Sub-folders are allowed; '..', absolute paths and links leading outside ``output_dir`` are refused."""
    text = check_user_path(prefix or "", "filename_prefix", allow_absolute=False) or default
    comps = [c for c in re.split(r"[\\/]", text) if c.strip() not in ("", ".")]
    if not comps:
        comps = default.split("/")
    if text.endswith(("/", "\\")):
        comps.append(default.rsplit("/", 1)[-1])
    comps = [sanitize_filename(c, 80, "cutout") for c in comps]
    sub, base = "/".join(comps[:-1]), comps[-1]
    folder = os.path.join(output_dir, *comps[:-1])
    root_real = _real(os.path.abspath(output_dir))
    if not _inside(_real(os.path.abspath(folder)), [root_real]):
        raise BadInputError(f"filename_prefix '{prefix}' leads outside the output folder through a symbolic link; "
                            f"choose another sub-folder.")
    return folder, sub, base


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
