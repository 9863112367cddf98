"""Shared bench helpers: timing statistics, machine facts, quiet C-level output."""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return [-1.0, -1.0, -1.0]


def cpu_snapshot() -> tuple[float, float, float]:
    """(machine busy CPU-seconds, this process + its waited children's CPU-seconds, wall time)."""
    import resource

    busy = 0.0
    try:
        with open("/proc/stat") as f:
            v = [float(x) for x in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(v[:8]) - v[3] - v[4]) / hz        # all but idle and iowait
    except (OSError, ValueError, IndexError):
        pass
    own = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        own += r.ru_utime + r.ru_stime
    return busy, own, time.time()


def foreign_cpu(start: tuple[float, float, float]) -> dict:
    """CPU used by *other* processes on this machine since ``start``: the noise indicator of a timing."""
    busy, own, t = cpu_snapshot()
    wall = max(t - start[2], 1e-9)
    other = max(0.0, (busy - start[0]) - (own - start[1]))
    cores = os.cpu_count() or 1
    return {"other_cpu_seconds": round(other, 1), "wall": round(wall, 1),
            "other_share": round(other / (wall * cores), 3)}


def stats(samples: list[float]) -> dict:
    s = [float(x) for x in samples]
    if not s:
        return {"n": 0, "median": None, "min": None, "max": None, "samples": []}
    return {"n": len(s), "median": statistics.median(s), "min": min(s), "max": max(s),
            "samples": [round(x, 6) for x in s]}


def measure(fn: Callable[[], Any], runs: int, warmup: int = 1, *, before: Callable[[], Any] | None = None) -> dict:
    """Time ``fn()`` ``runs`` times after ``warmup`` untimed calls. Returns stats + the last result."""
    last = None
    for _ in range(warmup):
        if before:
            before()
        last = fn()
    times, noise = [], []
    for _ in range(runs):
        if before:
            before()
        gc.collect()
        snap = cpu_snapshot()
        t0 = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - t0)
        noise.append(foreign_cpu(snap)["other_share"])
    out = stats(times)
    out["load_during"] = load_avg()
    out["other_share"] = noise   # CPU share other processes took during each sample (0 = quiet machine)
    out["_result"] = last
    return out


def strip_private(d):
    if isinstance(d, dict):
        return {k: strip_private(v) for k, v in d.items() if not str(k).startswith("_")}
    if isinstance(d, list):
        return [strip_private(v) for v in d]
    return d


@contextlib.contextmanager
def quiet_fds(log_path: str | None = None):
    """Send C-level stdout/stderr (llama.cpp, ORT) to ``log_path`` (or /dev/null) while inside."""
    sys.stdout.flush()
    sys.stderr.flush()
    target = open(log_path, "ab") if log_path else open(os.devnull, "wb")
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(target.fileno(), 1)
        os.dup2(target.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        target.close()


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
        for line in txt.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln.split(":", 1)[1].split() for ln in txt.splitlines() if ln.startswith("flags")), [])
        info["simd"] = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
                                        "amx_tile")
                        if f in flags]
    except OSError:
        pass
    try:
        info["mem_gb"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("numpy", "onnxruntime", "onnx", "torch", "transformers", "llama-cpp-python", "gguf", "pillow",
                 "matplotlib"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class Section:
    name: str
    title: str
    rows: list[dict] = field(default_factory=list)      # table rows (what RESULTS.md shows)
    data: dict = field(default_factory=dict)            # everything else (JSON only)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: float = 0.0
    load_before: list[float] = field(default_factory=load_avg)
    load_after: list[float] = field(default_factory=list)
    error: str | None = None
    cpu_start: tuple = field(default_factory=cpu_snapshot)
    other_cpu: dict = field(default_factory=dict)

    def finish(self, seconds: float) -> None:
        self.seconds = seconds
        self.load_after = load_avg()
        self.other_cpu = foreign_cpu(self.cpu_start)

    def row(self, **kw) -> dict:
        self.rows.append(kw)
        return kw

    def as_dict(self) -> dict:
        return strip_private({"name": self.name, "title": self.title, "rows": self.rows, "data": self.data,
                              "notes": self.notes, "started": time.strftime("%Y-%m-%d %H:%M:%S",
                                                                            time.localtime(self.started)),
                              "seconds": round(self.seconds, 1), "load_before": self.load_before,
                              "load_after": self.load_after, "other_cpu": self.other_cpu, "error": self.error})


def fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:.0f} s"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 0.001:
        return f"{x * 1000:.1f} ms"
    return f"{x * 1e6:.0f} µs"


def fmt_stat(st: dict | None) -> str:
    """'1.23 s (1.20–1.31, n=5)'."""
    if not st or st.get("median") is None:
        return "–"
    busy = max(st.get("other_share") or [0.0])
    tail = f"; other procs ≤{busy * 100:.0f} %" if busy >= 0.1 else ""
    if st["n"] == 1:
        return f"{fmt_s(st['median'])} (n=1{tail})"
    return f"{fmt_s(st['median'])} ({fmt_s(st['min'])}–{fmt_s(st['max'])}, n={st['n']}{tail})"
