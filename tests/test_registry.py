"""Registry packaging: the icon [tool.comfy] names is in the repo, requires-comfyui is the ComfyUI CI tests in,
.comfyignore leaves tests, bench and screenshots out and keeps what ComfyUI loads. With $SAFECUT_NODE_ZIP (set by
scripts/registry_check.sh, which runs comfy-cli's `comfy node validate` and `comfy node pack`) the real archive is
checked too."""
from __future__ import annotations

import os
import re
import struct
import subprocess
import tomllib
import zipfile
from pathlib import Path

import pytest

import comfyui_harness as H

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COMFY = PYPROJECT["tool"]["comfy"]
# What ComfyUI (and ComfyUI-Manager's install) reads from the archive.
NEEDED = ["__init__.py", "install.py", "requirements.txt", "pyproject.toml", "LICENSE", "README.md",
          "nodes/__init__.py", "safecut/contract.json", "safecut/data/", "js/safecut.js", "js/icon.png",
          "js/docs/SafeCutBEN2RemoveBackground.md", "example_workflows/safecut_cpu_full.json"]
LEFT_OUT = ["tests/", "bench/", "docs/screenshots/", ".ci/", "deploy/", "scripts/"]


def tracked() -> list[str]:
    return subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                          check=True).stdout.split()


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".comfyignore").read_text().splitlines()
    return [l.strip() for l in lines if l.strip() and not l.lstrip().startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """gitwildmatch for the only form .comfyignore uses: '/dir/' or '/file', anchored at the repo root."""
    return any(path.startswith(p[1:]) if p.endswith("/") else path == p[1:] for p in patterns)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_icon_named_in_tool_comfy_is_in_the_repo_square_and_small():
    m = re.fullmatch(r"https://raw\.githubusercontent\.com/([^/]+/[^/]+)/main/(.+)", COMFY["Icon"])
    assert m, f"Icon should point at a file on main: {COMFY['Icon']}"
    assert m.group(1) in PYPROJECT["project"]["urls"]["Repository"]
    icon = ROOT / m.group(2)
    assert icon.is_file() and m.group(2) in tracked(), f"{m.group(2)} is not committed"
    w, h = png_size(icon)
    assert w == h and 64 <= w <= 400, (w, h)   # the Registry asks for a square icon of at most 400 px


def test_requires_comfyui_is_the_comfyui_ci_runs():
    spec = COMFY["requires-comfyui"]
    m = re.fullmatch(r">=(\d+\.\d+\.\d+)", spec)
    assert m, f"requires-comfyui '{spec}' should be '>=X.Y.Z' (major.minor.patch, as comfy-cli requires)"
    ci = (ROOT / "scripts" / "ci_comfyui.sh").read_text()
    shared = re.search(r"ComfyUI (\d+\.\d+\.\d+)", ci)
    assert shared and shared.group(1) == m.group(1), "requires-comfyui must be the oldest ComfyUI CI tests in"
    versions = [H.comfyui_version(d) for d in H.comfyui_dirs()]   # the real checkouts the integration tests use
    if versions:
        oldest = min(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
        assert oldest == m.group(1), (versions, spec)


def test_comfyignore_leaves_out_tests_bench_and_screenshots_and_keeps_what_comfyui_loads():
    patterns = ignore_patterns()
    assert all(re.fullmatch(r"/[A-Za-z0-9._/-]+", p) for p in patterns), "keep patterns anchored and plain"
    files = tracked()
    shipped = [f for f in files if not ignored(f, patterns)]
    for need in NEEDED:
        assert any(f == need or need.endswith("/") and f.startswith(need) for f in shipped), f"{need} not shipped"
    for gone in LEFT_OUT:
        assert any(f.startswith(gone) for f in files), f"{gone} no longer exists: update LEFT_OUT"
        assert not any(f.startswith(gone) for f in shipped), f"{gone} would be published"
    assert not any(f.endswith((".png", ".jpg")) and f.startswith("docs/") for f in shipped)


@pytest.mark.skipif(not os.environ.get("SAFECUT_NODE_ZIP") and os.environ.get("CI") != "true",
                    reason="set SAFECUT_NODE_ZIP: eval \"$(bash scripts/registry_check.sh)\" (CI does)")
def test_the_archive_comfy_cli_packs_is_the_tracked_files_minus_comfyignore():
    path = os.environ.get("SAFECUT_NODE_ZIP")
    assert path and os.path.isfile(path), "CI must run scripts/registry_check.sh first (SAFECUT_NODE_ZIP)"
    with zipfile.ZipFile(path) as z:
        members = sorted(n for n in z.namelist() if not n.endswith("/"))
    expected = sorted(f for f in tracked() if not ignored(f, ignore_patterns()))
    assert members == expected
