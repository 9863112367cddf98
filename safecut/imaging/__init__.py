"""Image decoding, safe paths, file selection, the batch loader engine and atomic writes (numpy + Pillow).

One module per concern; this package re-exports their public names, so callers write ``imaging.X``:

* ``decode``:  one file or encoded bytes -> float arrays (EXIF, 16-bit, palettes, strict truncation).
* ``paths``:   user-typed folders, patterns, upload names and output prefixes never leave their root.
* ``listing``: which files a run loads (folder glob/sort/start/limit, worker uploads) + their fingerprint.
* ``batch``:   decode a selection, report bad files, bring a batch to one size.
* ``write``:   atomic PNG/JSON output.

Conventions the nodes rely on: loader masks follow ComfyUI's LoadImage (``mask = 1 - alpha``, zeros
without alpha; batch ``pad`` padding is 1). Pillow is imported inside functions: importing is cheap.
"""
from __future__ import annotations

from .batch import FITS, MODES, ON_ERROR, LoadResult, fit_image, load_batch
from .decode import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, PIL_FORMATS, Decoded, decode_image, max_pixels
from .listing import (SORTS, FileList, file_sha256, fingerprint, list_images, natural_key, rel_name,
                      select_uploads)
from .paths import (allowed_roots_from_env, check_pattern, check_user_path, resolve_dir, resolve_output_prefix,
                    sanitize_filename)
from .write import SaveError, _umask, atomic_write, save_png_atomic, to_uint8, write_text_atomic

__all__ = ["FITS", "MODES", "ON_ERROR", "LoadResult", "fit_image", "load_batch", "DEFAULT_MAX_PIXELS",
           "IMAGE_EXTENSIONS", "PIL_FORMATS", "Decoded", "decode_image", "max_pixels", "SORTS", "FileList",
           "file_sha256", "fingerprint", "list_images", "natural_key", "rel_name", "select_uploads",
           "allowed_roots_from_env", "check_pattern", "check_user_path", "resolve_dir", "resolve_output_prefix",
           "sanitize_filename", "SaveError", "_umask", "atomic_write", "save_png_atomic", "to_uint8",
           "write_text_atomic"]
