"""Huge pages for BEN2's per-call allocations: detection, the child environment, the CLI's one re-exec."""
import os
import subprocess
import sys

import pytest

from safecut.runtime import hugepages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def thp(tmp_path, text):
    p = tmp_path / "enabled"
    p.write_text(text)
    return str(p)


def test_thp_mode_reads_the_bracketed_word(tmp_path):
    assert hugepages.thp_mode(thp(tmp_path, "always [madvise] never\n")) == "madvise"
    assert hugepages.thp_mode(thp(tmp_path, "[always] madvise never\n")) == "always"
    assert hugepages.thp_mode(str(tmp_path / "missing")) == ""


def test_status_and_child_environment(tmp_path, monkeypatch):
    madvise = thp(tmp_path, "always [madvise] never")
    monkeypatch.setattr(hugepages, "_glibc_has_tunable", lambda: True)
    assert hugepages.status({}, madvise) == "off"
    env = hugepages.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, madvise)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:" + hugepages.TUNABLE   # keeps what was there
    assert hugepages.status(env, madvise) == "tunable"
    assert hugepages.with_tunable(env, madvise) == env                                # set once, not twice
    assert "GLIBC_TUNABLES" not in hugepages.with_tunable({"SAFECUT_HUGEPAGES": "0"}, madvise)
    preload = {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}
    assert hugepages.status(preload, madvise) == "other-allocator"
    assert "GLIBC_TUNABLES" not in hugepages.with_tunable(preload, madvise)
    always = thp(tmp_path, "[always] madvise never")
    assert hugepages.status({}, always) == "always" and "GLIBC_TUNABLES" not in hugepages.with_tunable({}, always)
    assert hugepages.status({}, thp(tmp_path, "always madvise [never]")) == "unavailable"


CHILD = ("import os, sys; from safecut.runtime import hugepages; print('before', os.environ.get('GLIBC_TUNABLES', '-'), "
         "flush=True); hugepages.reexec_with_huge_pages(); print('after', os.environ.get('GLIBC_TUNABLES', '-'), "
         "sys.argv[1:])")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge pages are a Linux feature")
def test_reexec_sets_the_tunable_once_and_keeps_the_arguments():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SAFECUT_HUGEPAGES_REEXEC",
                                                             "LD_PRELOAD", "SAFECUT_HUGEPAGES")}
    r = subprocess.run([sys.executable, "-c", CHILD, "x", "--flag"], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    if hugepages.status(env) == "off" and hugepages._glibc_has_tunable():
        # restarted once: the first 'before' is without, then the new process runs from the top with it
        assert lines == ["before -", f"before {hugepages.TUNABLE}", f"after {hugepages.TUNABLE} ['x', '--flag']"]
    else:  # THP 'always', unavailable, or an old glibc: nothing to gain, no restart
        assert lines == ["before -", "after - ['x', '--flag']"]


_HEAP_PROBE = r"""
import ctypes, sys
from safecut.runtime import hugepages
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p

def in_heap(addr):
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False

before = in_heap(libc.malloc(4 << 20))           # glibc's default: a 4 MiB block is a fresh mmap
pinned = hugepages.pin_mmap_threshold()
after = in_heap(libc.malloc(4 << 20))            # pinned: served from the heap (reused across calls)
big = in_heap(libc.malloc(64 << 20))             # above the ceiling: still its own mapping
print(before, pinned, after, big, hugepages.pin_mmap_threshold())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or hugepages._glibc_version() is None, reason="glibc on Linux only")
def test_pinned_mmap_threshold_serves_mid_sized_blocks_from_the_heap():
    """What the quantized BEN2 session relies on for a fast first call: blocks up to 32 MiB come from the heap
    at once, not only after glibc's first big free; larger blocks keep their own mapping (peak unchanged)."""
    out = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env=dict(os.environ, GLIBC_TUNABLES=""))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True", "False", "True"]
