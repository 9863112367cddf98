"""Which files a run loads: folder listing (glob, sort, start/limit), worker-comfyui uploads by name or
prefix, and the content fingerprint ComfyUI's IS_CHANGED compares."""
from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import threading
from collections import OrderedDict
from typing import Iterable, Sequence

from ..errors import BadInputError
from .decode import IMAGE_EXTENSIONS
from .paths import _inside, _real, _real_roots, check_pattern, check_user_path

SORTS = ["natural", "name", "mtime"]


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
        tok = check_user_path(tok, "uploads entry", allow_absolute=False)
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
