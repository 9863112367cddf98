"""Decoding one image file or encoded bytes into float arrays (Pillow, imported lazily).

``Decoded.rgb`` is HxWx3 float32 0..1, ``Decoded.alpha`` HxW float32 0..1 (1 = opaque) or None. EXIF
orientation is applied, animated files give their first frame, 16-bit data is scaled from 65535, and a
truncated file is an error (never a grey-filled image).
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass, field

from ..runtime.lazy import numpy as np

from ..errors import BadInputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Pillow plugins we let open a file (content decides, the extension does not). Keeping this list
# short keeps e.g. EPS (which runs Ghostscript) away from files that merely end in ".png".
# (JPEG also opens multi-picture MPO camera files.)
PIL_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "TIFF", "GIF")
DEFAULT_MAX_PIXELS = 100_000_000
_FIX = "Re-export it as PNG or JPEG, or remove it from the folder."


# ---- Pillow --------------------------------------------------------------------------------------
def _pil():
    from ..runtime.deps import require

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
