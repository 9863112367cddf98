"""The headless command line, run as users run it: python -m safecut run …"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, TINY_BEN2


def safecut(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "safecut", *args], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, **(env or {})), timeout=timeout)


@pytest.fixture()
def inputs(tmp_path):
    d = tmp_path / "in"
    shutil.copytree(os.path.join(ROOT, "examples", "images"), d)
    return d


def _models(tiny_ben2_path):
    return os.path.dirname(os.path.dirname(tiny_ben2_path))


def test_run_writes_cutouts_and_report(inputs, tmp_path, tiny_ben2_path):
    out = tmp_path / "out"
    r = safecut("run", str(inputs), "--out", str(out), "--models", _models(tiny_ben2_path),
                "--ben2-model", TINY_BEN2, "--device", "CPU")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()]
    assert sorted(l["file"] for l in lines) == ["bottle.png", "mug.jpg", "sticker.png"]
    for l in lines:
        assert "error" not in l and l["devices"]["ben2"].startswith("CPU · ") and l["timings"]["ben2"] > 0
        png = Image.open(out / l["output"])
        assert png.mode == "RGBA" and list(png.size) == l["size"]
        assert json.loads(png.text["safecut"])["file"] == l["file"]
    assert "3/3 image(s) done, 0 failed" in r.stdout
    assert "3/3" in r.stderr  # progress bar


def test_broken_file_is_reported_and_exit_code_is_nonzero(inputs, tmp_path, tiny_ben2_path):
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = tmp_path / "out"
    r = safecut("run", str(inputs), "--out", str(out), "--models", _models(tiny_ben2_path),
                "--ben2-model", TINY_BEN2, "--quiet")
    assert r.returncode == 1
    lines = {json.loads(l)["file"]: json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()}
    assert "broken.png" in lines[ "broken.png"]["error"] and "output" not in lines["broken.png"]
    assert all("error" not in v for k, v in lines.items() if k != "broken.png")  # the rest still processed
    assert "1 failed" in r.stdout


def test_missing_model_offline_is_one_clear_line(inputs, tmp_path):
    r = safecut("run", str(inputs), "--out", str(tmp_path / "o"), "--models", str(tmp_path / "none"), "--offline")
    assert r.returncode == 2
    assert "BEN2_Base.onnx" in r.stderr and "python -m safecut models fetch BEN2_Base.onnx" in r.stderr
    assert "Traceback" not in r.stderr


def test_models_list_and_verify(tiny_ben2_path):
    r = safecut("models", "list", "--models", _models(tiny_ben2_path))
    assert r.returncode == 0 and "[on disk] tiny-ben2.onnx" in r.stdout and "[fetchable] BEN2_Base.onnx" in r.stdout
    r = safecut("models", "verify", "--models", _models(tiny_ben2_path))
    assert r.returncode == 0 and "ok  ben2/tiny-ben2.onnx" in r.stdout


def test_fetch_unknown_model_is_usage_error():
    r = safecut("models", "fetch", "nope.onnx")
    assert r.returncode == 2 and "unknown model" in r.stderr


def test_full_pipeline_with_tiny_models_writes_captions_and_verdicts(inputs, tmp_path):
    out = tmp_path / "out"
    r = safecut("run", str(inputs), "--out", str(out), "--models", str(tmp_path / "tiny"), "--tiny-models",
                "--caption", "--nudenet", "--classify", "--device", "CPU", "--threads", "1")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in (out / "report.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    for l in lines:
        assert isinstance(l["caption"], str) and l["caption"]
        assert l["verdict"] in ("SAFE", "UNSAFE") and l["decided_by"] in ("keywords", "classifier", "nudenet")
        assert l["nudenet"]["is_unsafe"] is False and l["nudenet"]["detections"] == []
        assert set(l["devices"]) == {"ben2", "florence2", "nudenet", "llama"} or l["decided_by"] != "classifier"
        if l["decided_by"] == "classifier":
            assert 0.0 <= l["p_unsafe"] <= 1.0
        png = Image.open(out / l["output"])
        assert json.loads(png.text["safecut"])["verdict"] == l["verdict"]
    assert "tiny random-weight models" in r.stderr



@pytest.mark.parametrize("captions,llama_loads", [(["a red mug", "a green bottle", "a sticker of a cat"], 0),
                                                   (["a red mug", "a kitchen knife", "a cat"], 1)])
def test_pipeline_loads_the_classifier_only_for_undecided(inputs, tmp_path, monkeypatch, captions, llama_loads):
    from safecut.engines import florence
    from safecut.app import pipeline
    from safecut.runtime.cache import get_cache
    from safecut.testkit import demo

    tiny = demo.prepare(str(tmp_path / "tiny"), florence=False, llm=True)
    monkeypatch.setenv("SAFECUT_MODELS_DIR", tiny["models_dir"])
    fixed = iter(captions)
    monkeypatch.setattr(florence, "caption_images", lambda frames, *a, **k: florence.CaptionResult(
        [next(fixed) for _ in frames], pipeline.ben2.providers.DeviceChoice("auto", "CPU"), "float32", 0.0))
    monkeypatch.setattr(pipeline, "preflight", lambda opts: None)
    cache = get_cache()
    cache.unload()
    loads = []
    cache.add_listener(lambda ev, key: loads.append(key.kind) if ev == "load" else None)
    summary = pipeline.run(str(inputs), str(tmp_path / "out"), pipeline.Options(
        ben2_model=tiny["ben2_model"], caption=True, classify=True, llm_model=tiny["llm_model"], threads=1))
    assert summary.failed == 0 and summary.images == 3
    assert loads.count("llama") == llama_loads
    lines = [json.loads(l) for l in open(summary.report)]
    by = {l["caption"]: l["decided_by"] for l in lines}
    assert by["a red mug"] == "keywords"
    if llama_loads:
        assert by["a kitchen knife"] == "classifier"


def test_low_memory_releases_each_model_after_its_stage_same_results(inputs, tmp_path, monkeypatch):
    """--low-memory: every model is loaded per chunk and gone after its stage; the results do not change."""
    from safecut.app import pipeline
    from safecut.runtime.cache import get_cache
    from safecut.testkit import demo

    tiny = demo.prepare(str(tmp_path / "tiny"), florence=True, llm=True)
    monkeypatch.setenv("SAFECUT_MODELS_DIR", tiny["models_dir"])
    cache = get_cache()
    monkeypatch.setattr(cache, "_listeners", [])
    try:
        reports = {}
        for low in (False, True):
            cache.unload()
            events = []
            cache.add_listener(lambda ev, key, events=events: events.append((ev, key.kind)))
            opts = pipeline.Options(ben2_model=tiny["ben2_model"], florence_model=tiny["florence_model"],
                                    llm_model=tiny["llm_model"], caption=True, nudenet=True, classify=True,
                                    threads=1, batch_size=2, low_memory=low, device="CPU")
            summary = pipeline.run(str(inputs), str(tmp_path / f"out-{low}"), opts)
            assert summary.failed == 0 and summary.images == 3
            loads = [k for ev, k in events if ev == "load"]
            if low:   # 2 chunks: each stage loads its model per chunk and nothing stays resident
                assert loads.count("ben2") == 2 and loads.count("florence2") == 2 and loads.count("nudenet") == 2
                assert cache.stats()["resident_models"] == 0
            else:     # loaded once, kept for the next chunk
                assert loads.count("ben2") == 1 and loads.count("florence2") == 1 and loads.count("nudenet") == 1
                assert {k.kind for k in cache.keys()} >= {"ben2", "florence2", "nudenet"}
            reports[low] = [{k: v for k, v in json.loads(l).items() if k not in ("timings",)}
                            for l in open(summary.report)]
            cache._listeners.remove(cache._listeners[-1])
        assert reports[True] == reports[False]
        for l in reports[True]:
            a = np.asarray(Image.open(tmp_path / "out-True" / l["output"]))
            b = np.asarray(Image.open(tmp_path / "out-False" / l["output"]))
            assert np.array_equal(a, b)
    finally:
        cache.unload()
