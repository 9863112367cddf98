"""Quiet runs: a fresh `python -m safecut run … --tiny-models` prints only SafeCut's own lines; what llama.cpp,
transformers and the model builders print goes to the build log (safecut/runtime/quiet.py)."""
from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT as _ROOT
from safecut.runtime import quiet

ROOT = Path(_ROOT)
# SafeCut's own terminal lines: its messages ("SafeCut: …", errors "safecut: …", and log records of SafeCut's
# loggers, which say "SafeCut: …" after the level) and the CLI's progress bar "[####......] 2/3 1.20s/img  name".
OWN = re.compile(r"^((DEBUG|INFO|WARNING|ERROR) )?(SafeCut|safecut): |^\[[#.]{30}\] \d+/\d+ ")


def foreign_lines(text: str) -> list[str]:
    lines = [l.strip() for l in re.split(r"[\r\n]", text)]
    return [l for l in lines if l and not OWN.match(l)]


def test_own_line_rule_is_not_vacuous():
    assert foreign_lines("SafeCut: 3/3 image(s) done\nsafecut: no input dir\n[" + "#" * 10 + "." * 20 + "] 1/3 x") == []
    assert foreign_lines("llama_model_quantize_impl: model size = 6.34 MiB\nLoading weights: 100%|") == [
        "llama_model_quantize_impl: model size = 6.34 MiB", "Loading weights: 100%|"]


def test_output_to_log_takes_fd_level_writes_and_gives_the_fds_back(tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("SAFECUT_CACHE_DIR", str(tmp_path))
    caplog.set_level(logging.DEBUG, logger="safecut.runtime.quiet")
    with quiet.output_to_log("a C library") as path:
        os.write(1, b"from C on stdout\n")                 # what printf/fprintf in a C library does
        os.write(2, b"from C on stderr\n")
        ctypes.CDLL(None).printf(b"buffered by C stdio\n")  # flushed into the log, not later to the terminal
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert out == "" and err == "after\n"
    text = open(path).read()
    assert "from C on stdout" in text and "from C on stderr" in text and "buffered by C stdio" in text
    assert path == os.path.join(str(tmp_path), "logs", "build.log")
    assert any(path in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_output_to_log_names_the_log_when_the_call_fails(tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("SAFECUT_CACHE_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="boom"):
        with quiet.output_to_log("quantize") as path:
            os.write(2, b"why it failed\n")
            raise RuntimeError("boom")
    os.write(1, b"fds are back\n")
    assert capfd.readouterr().out == "fds are back\n"
    assert "why it failed" in open(path).read()
    assert any(r.levelno == logging.WARNING and path in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_fresh_tiny_models_run_prints_only_safecuts_own_lines(tmp_path):
    """A fresh cache: every tiny model is built (llama.cpp quantize included) during the run. One image keeps it
    short; the full README command differs only in the number of images."""
    pytest.importorskip("llama_cpp")
    cache = tmp_path / "cache"
    env = dict(os.environ, SAFECUT_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    env.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
    env.pop("TRANSFORMERS_VERBOSITY", None)
    cmd = [sys.executable, "-m", "safecut", "run", str(ROOT / "examples" / "images"), "--out", str(tmp_path / "out"),
           "--caption", "--nudenet", "--classify", "--tiny-models", "--pattern", "bottle.png"]
    p = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    assert foreign_lines(p.stdout + "\n" + p.stderr) == [], p.stdout + p.stderr
    assert "1/1 image(s) done" in p.stdout
    log = (cache / "logs" / "build.log").read_text()
    assert "llama_model_quantize" in log, "the quantize log went nowhere instead of into the build log"
