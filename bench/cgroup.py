"""A memory-limited cgroup for one bench child: the pipeline as a 4 GiB serverless worker runs it.

Linux cgroup v1 (``memory.limit_in_bytes``) or v2 (``memory.max``), created under this process's own group;
needs write access there (root in most containers). ``None`` where that is not possible: the bench then says
the row was not measured.
"""
from __future__ import annotations

import os

from safecut.runtime.memlimit import cgroup_paths

_V1 = "/sys/fs/cgroup/memory"
_V2 = "/sys/fs/cgroup"


class MemoryCgroup:
    def __init__(self, path: str, v1: bool):
        self.path, self.v1 = path, v1

    @classmethod
    def create(cls, limit_bytes: int, name: str = "safecut-bench") -> "MemoryCgroup | None":
        for v1, base, limit_file in ((True, _V1, "memory.limit_in_bytes"), (False, _V2, "memory.max")):
            try:
                if not os.path.exists(os.path.join(base, limit_file if v1 else "cgroup.controllers")):
                    continue
                path = os.path.join(base, cgroup_paths()["v1" if v1 else "v2"].lstrip("/"), f"{name}-{os.getpid()}")
                os.makedirs(path, exist_ok=True)
            except (OSError, ValueError):
                continue
            group = cls(path, v1)
            try:   # v2 without the memory controller delegated has no memory.max: not usable
                with open(os.path.join(path, limit_file), "r+") as f:
                    f.write(str(limit_bytes))
                return group
            except OSError:
                group.remove()
        return None

    def join(self) -> None:
        """For subprocess's ``preexec_fn``: moves the child into the group before it execs."""
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))

    def _read(self, name: str) -> str:
        try:
            with open(os.path.join(self.path, name)) as f:
                return f.read()
        except OSError:
            return ""

    def peak_bytes(self) -> int:
        """The group's peak charge: anonymous memory plus the page cache it read (reclaimable)."""
        text = self._read("memory.max_usage_in_bytes" if self.v1 else "memory.peak").strip()
        return int(text) if text.isdigit() else 0

    def oom_kills(self) -> int:
        for line in self._read("memory.oom_control" if self.v1 else "memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self) -> None:
        try:
            os.rmdir(self.path)
        except OSError:
            pass
