"""The memory limit the pipeline sizes itself to (cgroup v2/v1 or RAM) and the CLI's low-memory choice."""
import os

import pytest

from safecut.app import cli, pipeline
from safecut.runtime import memlimit

GIB = 1 << 30


def fake_root(tmp_path, *, cgroup="0::/\n", files=None, ram_kib=24 * 1024 * 1024):
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(cgroup)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal:       {ram_kib} kB\nMemFree:  1 kB\n")
    for rel, text in (files or {}).items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(tmp_path)


def test_cgroup_v2_limit_wins_over_the_hosts_ram(tmp_path):
    root = fake_root(tmp_path, cgroup="0::/worker\n", files={"sys/fs/cgroup/worker/memory.max": f"{4 * GIB}\n"})
    assert memlimit.limit_bytes(root) == 4 * GIB


def test_unlimited_cgroups_fall_back_to_ram(tmp_path):
    root = fake_root(tmp_path, files={"sys/fs/cgroup/memory.max": "max\n",
                                      "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"})
    assert memlimit.limit_bytes(root) == 24 * GIB


def test_cgroup_v1_limit_of_this_process_group_is_found_under_the_hosts_view(tmp_path):
    root = fake_root(tmp_path, cgroup="4:memory:/pod/abc\n0::/\n",
                     files={"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                            "sys/fs/cgroup/memory/pod/abc/memory.limit_in_bytes": f"{3 * GIB}\n"})
    assert memlimit.limit_bytes(root) == 3 * GIB


def test_nothing_readable_is_unknown(tmp_path):
    assert memlimit.limit_bytes(str(tmp_path)) == 0


def test_auto_low_memory_turns_on_below_6_gib_only():
    assert pipeline.resolve_low_memory("auto", limit=4 * GIB) is True
    assert pipeline.resolve_low_memory("auto", limit=16 * GIB) is False
    assert pipeline.resolve_low_memory("auto", limit=0) is False          # unknown: keep models (the old default)
    assert pipeline.resolve_low_memory(True, limit=16 * GIB) is True      # explicit choices are kept
    assert pipeline.resolve_low_memory(False, limit=1 * GIB) is False


@pytest.mark.parametrize("flags,limit,want,says", [
    ([], 4 * GIB, True, True), ([], 16 * GIB, False, False),
    (["--low-memory"], 16 * GIB, True, False), (["--keep-models"], 4 * GIB, False, False)])
def test_cli_low_memory_default_follows_the_limit(tmp_path, monkeypatch, capsys, flags, limit, want, says):
    seen = {}

    def fake_run(input_dir, out, opts, progress=None):
        seen["low"] = opts.low_memory
        return pipeline.Summary(images=0, report=os.path.join(out, "report.jsonl"))

    monkeypatch.setattr(memlimit, "limit_bytes", lambda root="/": limit)
    monkeypatch.setattr(pipeline, "run", fake_run)
    assert cli.main(["run", str(tmp_path), "--out", str(tmp_path / "out"), *flags]) == 0
    assert seen["low"] is want
    assert ("less than 6 GiB" in capsys.readouterr().err) is says


def test_cli_refuses_both_memory_flags(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["run", str(tmp_path), "--low-memory", "--keep-models"])


def _real_cgroup(limit):
    """A real memory cgroup (bench.cgroup, as the bench's 4 GB-worker row uses); needs a writable cgroupfs."""
    import sys

    sys.path.insert(0, ROOT)
    from bench.cgroup import MemoryCgroup

    cg = MemoryCgroup.create(limit, name="safecut-test")
    if cg is None:
        pytest.skip("no writable memory cgroup on this machine (root with a cgroupfs mounted read-write)")
    return cg


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_real_memory_cgroup_is_seen_by_the_child_and_enforced():
    import subprocess
    import sys

    cg = _real_cgroup(256 << 20)
    try:
        code = "from safecut.runtime import memlimit; from safecut.app import pipeline; print(memlimit.limit_bytes(), pipeline.resolve_low_memory('auto'))"
        try:
            r = subprocess.run([sys.executable, "-c", code], preexec_fn=cg.join, capture_output=True, text=True,
                               cwd=ROOT, timeout=120)
        except subprocess.SubprocessError as exc:
            pytest.skip(f"this machine does not let a process join the memory cgroup ({exc})")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [str(256 << 20), "True"]
        hog = "b = bytearray(512 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"   # touch 512 MiB
        r = subprocess.run([sys.executable, "-c", hog], preexec_fn=cg.join, capture_output=True, timeout=120)
        assert r.returncode == -9 and cg.oom_kills() >= 1            # the limit is real: over it, the kernel kills
        assert cg.peak_bytes() >= 200 << 20
    finally:
        cg.remove()
