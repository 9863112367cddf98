"""How much memory this process may use: the smallest of its cgroup's limit (v2 ``memory.max``, v1
``memory.limit_in_bytes``) and the machine's RAM. Serverless workers (RunPod, Cloud Run…) set the cgroup;
``/proc/meminfo`` reports the host's RAM, which is not what the process gets. Linux only; elsewhere 0 (unknown).
"""
from __future__ import annotations

import os

_NO_LIMIT = 1 << 60   # cgroup v1 writes "no limit" as a page-rounded 2^63; v2 writes "max"


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() and 0 < int(text) < _NO_LIMIT else 0


def cgroup_paths(root: str = "/") -> dict:
    """This process's cgroup path per hierarchy: {"v2": unified path, "v1": memory controller path}."""
    paths = {"v2": "/", "v1": "/"}
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    paths["v2"] = path
                elif "memory" in controllers.split(","):
                    paths["v1"] = path
    except (OSError, ValueError):
        pass
    return paths


def _cgroup_files(root: str) -> list[str]:
    """The limit files of this process's cgroup, under a namespaced mount (path "/") or the host's view."""
    paths = cgroup_paths(root)
    base = os.path.join(root, "sys/fs/cgroup")
    files = []
    for mount, name, key in ((base, "memory.max", "v2"), (os.path.join(base, "memory"), "memory.limit_in_bytes", "v1")):
        files += [os.path.join(mount, paths[key].lstrip("/"), name), os.path.join(mount, name)]
    return files


def ram_bytes(root: str = "/") -> int:
    try:
        with open(os.path.join(root, "proc/meminfo")) as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def limit_bytes(root: str = "/") -> int:
    """The memory this process can have, in bytes; 0 when unknown."""
    known = [n for n in (*(_read_int(p) for p in _cgroup_files(root)), ram_bytes(root)) if n]
    return min(known) if known else 0
