"""Paths typed by users (folders, patterns, upload names, output prefixes) never leave their root.

'..', NUL, control characters, percent-encoded tricks and (on POSIX) backslashes are refused; every folder
and listed file is checked with realpath + commonpath, so a symlink pointing outside is refused too.
"""
from __future__ import annotations

import os
import re
import unicodedata
from typing import Iterable, Sequence

from ..errors import BadInputError


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


# ---- output names ---------------------------------------------------------------------------------
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
