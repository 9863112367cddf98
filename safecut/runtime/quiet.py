"""Keeps other libraries' chatter out of the user's terminal.

* :func:`output_to_log` sends everything written to file descriptors 1 and 2 meanwhile (C libraries such as
  llama.cpp print there directly, past ``sys.stdout``) to a log file; a debug log line says where.
* :func:`library_defaults` sets the environment switches that silence transformers' and huggingface_hub's
  progress bars and warnings, for the CLI (``-v`` keeps them).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import time

from ..userdirs import cache_dir

log = logging.getLogger("safecut.runtime.quiet")


def log_dir() -> str:
    return cache_dir("logs")


@contextlib.contextmanager
def output_to_log(what: str, name: str = "build.log"):
    """Inside: fds 1 and 2 append to ``<log_dir>/<name>``. Yields the log path. On an error the warning
    that follows names the log, so its lines are one look away."""
    path = os.path.join(log_dir(), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log.debug("SafeCut: %s: its output goes to %s", what, path)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as f:
            f.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {what} (pid {os.getpid()})\n".encode())
            f.flush()
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            try:
                yield path
            finally:
                _restore(saved)
    except Exception:
        log.warning("SafeCut: %s failed; its output is in %s", what, path)
        raise
    finally:
        for fd in saved:
            os.close(fd)


def _restore(saved: list[int]) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):  # C stdio buffers too, or their tail reaches the terminal later
        ctypes.CDLL(None).fflush(None)
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)


def library_defaults() -> None:
    """No transformers / huggingface_hub progress bars or warnings (unless the environment says otherwise):
    the CLI shows its own progress bar and errors. Must run before transformers is imported."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
