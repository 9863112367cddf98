"""Transparent huge pages for the big one-shot BEN2 runs (Linux, glibc).

BEN2 at 1024² mallocs and frees gigabytes per call. Without ORT's memory pattern (its INT8 session) every
call faults those pages in again, 4 KiB at a time: measured on the 1024² stand-in, 2 cores AVX2, INT8 runs
24-28 s a call with 4 KiB pages and 21-23 s with huge pages, same peak (bench rows with and without). When the
kernel's THP mode is ``madvise`` (Debian/Ubuntu default) glibc asks for huge pages only with the tunable below,
which must be set before the process starts: the CLI re-executes itself with it, the worker's start script
exports it, ComfyUI users can start ComfyUI with it. Nothing here imports ComfyUI or a model library.

The same per-tensor mallocs also made a fresh process's first INT8 call ~11 % slower than the next ones: glibc
serves blocks above 128 KiB with mmap (fresh pages each time) until the first big free raises that threshold,
so only later calls reuse heap memory. :func:`pin_mmap_threshold` sets it where glibc would end up, before the
first call (first call +1-3 % instead of +11 %, same peak; bench/ben2_probe.py-style fresh processes).
"""
from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
# glibc's ceiling for its own dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX) and the trim
# threshold it pairs with it (2x); mallopt parameter numbers from malloc.h.
MMAP_THRESHOLD = 32 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_pinned = False
THP_PATH = "/sys/kernel/mm/transparent_hugepage/enabled"
_REEXEC_MARK = "SAFECUT_HUGEPAGES_REEXEC"


def thp_mode(path: str = THP_PATH) -> str:
    """The kernel's THP mode: 'always', 'madvise', 'never' or '' (not Linux / unreadable)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return ""


def _glibc_version() -> tuple[int, int] | None:
    """(major, minor) of glibc; None for musl, macOS, Windows."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
        major, minor = (int(x) for x in version.split(".")[:2])
    except (ValueError, OSError, AttributeError, TypeError):
        return None
    return (major, minor) if name == "glibc" else None


def _glibc_has_tunable() -> bool:
    return (_glibc_version() or (0, 0)) >= (2, 35)


def _other_allocator(environ) -> bool:
    """tcmalloc/jemalloc preloaded (the stock worker image does so when installed): glibc's tunable is moot."""
    return any(lib in environ.get("LD_PRELOAD", "") for lib in ("tcmalloc", "jemalloc", "mimalloc"))


def status(environ=None, path: str = THP_PATH) -> str:
    """'always' (the kernel backs large mappings with huge pages), 'tunable' (madvise mode + glibc tunable set),
    'other-allocator', 'off' (madvise mode without the tunable: the case worth fixing) or 'unavailable'."""
    env = os.environ if environ is None else environ
    mode = thp_mode(path)
    if mode == "always":
        return "always"
    if mode != "madvise":
        return "unavailable"
    if _other_allocator(env):
        return "other-allocator"
    return "tunable" if TUNABLE in env.get("GLIBC_TUNABLES", "") else "off"


def with_tunable(environ=None, path: str = THP_PATH) -> dict:
    """A copy of ``environ`` that gives a child process huge pages (unchanged where it cannot help)."""
    env = dict(os.environ if environ is None else environ)
    if status(env, path) == "off" and _glibc_has_tunable() and env.get("SAFECUT_HUGEPAGES", "1") != "0":
        env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    return env


def reexec_with_huge_pages() -> None:
    """Restart this Python process with the tunable when it would help (no-op otherwise, and at most once).
    ``SAFECUT_HUGEPAGES=0`` turns it off."""
    if not sys.platform.startswith("linux") or os.environ.get(_REEXEC_MARK):
        return
    env = with_tunable()
    if env.get("GLIBC_TUNABLES") == os.environ.get("GLIBC_TUNABLES"):
        return
    env[_REEXEC_MARK] = "1"
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)


def pin_mmap_threshold() -> bool:
    """Let glibc serve blocks up to 32 MiB from its heap from now on (reused, already faulted in) instead of fresh
    mmaps until it learns to; process-wide, done once. False where it does not apply (not glibc)."""
    global _pinned
    if _pinned:
        return True
    if not sys.platform.startswith("linux") or _glibc_version() is None:
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        _pinned = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                       and libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
    return _pinned


def advice() -> str:
    return (f"start the process with GLIBC_TUNABLES={TUNABLE} (e.g. `GLIBC_TUNABLES={TUNABLE} python main.py` "
            "for ComfyUI) or set /sys/kernel/mm/transparent_hugepage/enabled to 'always'")
