"""Faults (issue 5): interrupts mid-batch, a full / read-only disk under Save Cutout, every engine on 8 threads at
once, and failures injected into each stage of the safety path (fail closed: never SAFE).

Unit tests of the pieces live elsewhere (atomic writes and the first-write disk-full case in test_loader_nodes,
cache threading in test_cache, settle() in test_gate); these go through the nodes and engines end to end.
"""
from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import sys
import threading
import time
import types

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import subject_image
from safecut.runtime import cache as cache_mod
from safecut.engines import gate
from safecut.models import modelfiles
from safecut.runtime.cache import ModelCache


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


HAS_LLAMA = _has("llama_cpp") and _has("gguf")
HAS_FLORENCE = _has("transformers")
FAMILY = "Llama-Guard-3-1B"


# ---- shared fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A models/ root with a 64 px tiny BEN2 (fast), and a tiny GGUF / Florence-2 when their libraries exist."""
    from safecut.testkit.tiny_ben2 import build_tiny_ben2

    root = tmp_path_factory.mktemp("faults_models")
    build_tiny_ben2(str(root / "ben2" / "t64.onnx"), size=64)
    if HAS_LLAMA:
        from safecut.testkit import tiny_gguf

        tiny_gguf.build_tiny_gguf(str(root / "LLM"), "Q4_K_M", cache_dir=str(root / ".gguf_cache"))
    if HAS_FLORENCE:
        from safecut.testkit.tiny_florence import build_tiny_florence

        build_tiny_florence(str(root / "florence2" / "tiny-florence2"))
    return root


@pytest.fixture()
def models(kit, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFECUT_MODELS_DIR", str(kit))
    monkeypatch.setenv("SAFECUT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(modelfiles, "_folder_provider", None)
    return kit


@pytest.fixture()
def pk(pack, models, tmp_path, monkeypatch):
    """The pack's own engine modules (the nodes use these), a fresh cache, outputs under tmp_path/output."""
    name = pack.__name__
    m = types.SimpleNamespace(**{k.rpartition(".")[2]: importlib.import_module(f"{name}.safecut.{k}")
                                 for k in ("engines.ben2", "runtime.cache", "imaging", "models.modelfiles")})
    monkeypatch.setattr(m.modelfiles, "_folder_provider", None)
    m.c = m.cache.ModelCache(max_models=6, max_bytes=0)
    monkeypatch.setattr(m.cache, "CACHE", m.c)
    out = tmp_path / "output"
    monkeypatch.setenv("SAFECUT_OUTPUT_DIR", str(out))
    monkeypatch.delitem(sys.modules, "folder_paths", raising=False)
    m.out = out
    m.nodes = pack.NODE_CLASS_MAPPINGS
    yield m
    m.c.unload()


class InterruptProcessingException(Exception):
    """Stands in for comfy.model_management.InterruptProcessingException."""


@pytest.fixture()
def comfy_interrupt(monkeypatch):
    """A fake comfy.model_management: the Cancel button is 'pressed' at the ``after``-th interrupt check."""
    state = {"checks": 0, "after": None}
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []        # a package without comfy.utils: Progress runs without a progress bar
    mm = types.ModuleType("comfy.model_management")
    mm.InterruptProcessingException = InterruptProcessingException

    def throw_exception_if_processing_interrupted():
        state["checks"] += 1
        if state["after"] is not None and state["checks"] >= state["after"]:
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    return state


def assert_cache_clean(c) -> None:
    assert c._loading == {}, f"stuck loading entries: {list(c._loading)}"
    assert all(m["users"] == 0 for m in c.stats()["models"]), c.stats()["models"]


def listing(folder) -> list[str]:
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def assert_no_partial_files(folder) -> None:
    """No temp files, and every PNG there is complete (decodes fully)."""
    names = listing(folder)
    assert not [n for n in names if n.endswith(".tmp") or n.startswith(".safecut-")], names
    for n in names:
        if n.endswith(".png"):
            with Image.open(os.path.join(folder, n)) as im:
                im.load()                       # raises on a truncated file
                assert im.mode == "RGBA"


def frames(n: int, h: int = 12, w: int = 16) -> list[torch.Tensor]:
    rng = np.random.default_rng(n)
    return [torch.from_numpy(rng.random((1, h, w, 3), dtype=np.float32)) for _ in range(n)]


def save(node_cls, images, **kw):
    args = dict(filename_prefix=["cut"])
    args.update(kw)
    return getattr(node_cls(), node_cls.FUNCTION)(images, **args)


# =====================================================================================================
# Interrupts
# =====================================================================================================
BEN2_ARGS = dict(model="t64.onnx", provider="CPU", threads=1, background="alpha", custom_color="#00FF00",
                 refine_edges=False, keep_model_loaded=True)


def test_ben2_node_interrupt_stops_within_one_image_and_the_next_run_works(pk, comfy_interrupt, monkeypatch):
    seen = []
    real = pk.ben2.preprocess
    monkeypatch.setattr(pk.ben2, "preprocess", lambda chunk, model: (seen.append(len(chunk)), real(chunk, model))[1])
    node = pk.nodes["SafeCutBEN2RemoveBackground"]()
    batch = torch.from_numpy(np.stack([subject_image(24, 32)] * 6))
    comfy_interrupt["after"] = 2                   # Cancel pressed while the 2nd image runs
    with pytest.raises(InterruptProcessingException):
        node.run(batch, batch_size=1, **BEN2_ARGS)
    assert seen == [1, 1], "the model kept running after the interrupt"
    assert_cache_clean(pk.c)
    assert pk.c.stats()["resident_models"] == 1    # the model stays cached for the next run
    comfy_interrupt["after"] = None
    seen.clear()
    image, mask, rgba, info = node.run(batch, batch_size=1, **BEN2_ARGS)["result"]
    assert seen == [1] * 6 and mask.shape == (6, 24, 32) and float(mask[0, 12, 16]) > 0.9
    assert pk.c.stats()["loads"] == 1 and "model load 0.00s" in info
    assert_cache_clean(pk.c)


def test_ben2_node_interrupt_during_model_load_leaves_no_stuck_entry(pk, comfy_interrupt, monkeypatch):
    class Cancel(BaseException):   # like KeyboardInterrupt: not an Exception
        pass

    real = pk.ben2.load_model
    calls = []

    def load_once_cancelled(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise Cancel()
        return real(*a, **k)

    monkeypatch.setattr(pk.ben2, "load_model", load_once_cancelled)
    node = pk.nodes["SafeCutBEN2RemoveBackground"]()
    batch = torch.from_numpy(np.stack([subject_image(24, 32)] * 2))
    with pytest.raises(Cancel):
        node.run(batch, **BEN2_ARGS)
    assert_cache_clean(pk.c)
    assert pk.c.stats()["resident_models"] == 0 and pk.c.stats()["load_errors"] == 1
    _, mask, _, _ = node.run(batch, **BEN2_ARGS)["result"]
    assert mask.shape == (2, 24, 32) and len(calls) == 2
    assert_cache_clean(pk.c)


def test_save_node_interrupt_between_images_leaves_complete_files_and_the_next_run_continues(pk, comfy_interrupt):
    saver = pk.nodes["SafeCutSaveCutout"]
    comfy_interrupt["after"] = 2                   # Cancel pressed while the 2nd image is written
    with pytest.raises(InterruptProcessingException):
        save(saver, frames(5))
    assert listing(pk.out) == ["cut_00001_.png", "cut_00002_.png"]   # stopped right after the 2nd image
    assert_no_partial_files(pk.out)
    comfy_interrupt["after"] = None
    ui = save(saver, frames(5))["ui"]
    names = [e["filename"] for e in ui["images"]]
    assert names == [f"cut_{i:05}_.png" for i in range(3, 8)] + ["cut_00003_report.json"]   # nothing overwritten
    assert_no_partial_files(pk.out)
    assert json.loads((pk.out / "cut_00003_report.json").read_text())["summary"]["saved"] == 5


class _FailingPngSave:
    """Patches PIL's Image.save: the ``nth`` PNG write puts some bytes in the file, then raises ``exc``."""

    def __init__(self, monkeypatch, nth: int, exc: BaseException):
        self.calls, self.nth, self.exc = 0, nth, exc
        self.real = Image.Image.save
        monkeypatch.setattr(Image.Image, "save", self)

    def __get__(self, obj, objtype=None):
        return lambda *a, **k: self(obj, *a, **k)

    def __call__(self, im, fp, *a, **k):
        self.calls += 1
        if self.calls == self.nth:
            fp.write(b"\x89PNG\r\n\x1a\n half a file")
            raise self.exc
        return self.real(im, fp, *a, **k)


def test_save_node_interrupt_inside_a_png_write_removes_the_temp_file(pk, monkeypatch):
    class Cancel(BaseException):
        pass

    _FailingPngSave(monkeypatch, 2, Cancel())
    with pytest.raises(Cancel):
        save(pk.nodes["SafeCutSaveCutout"], frames(3))
    assert listing(pk.out) == ["cut_00001_.png"]
    assert_no_partial_files(pk.out)


# =====================================================================================================
# Disk full / read-only output through Save Cutout
# =====================================================================================================
def test_disk_full_in_the_middle_of_a_run_is_a_clear_error_and_leaves_no_partial_file(pk, monkeypatch):
    _FailingPngSave(monkeypatch, 2, OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(pk.imaging.SaveError) as ei:
        save(pk.nodes["SafeCutSaveCutout"], frames(3))
    msg = str(ei.value)
    assert "cut_00002_.png" in msg and "the disk is full" in msg and "no partial file" in msg
    assert listing(pk.out) == ["cut_00001_.png"]     # the first image is complete; no report, no temp file
    assert_no_partial_files(pk.out)


def test_disk_full_when_writing_the_report_is_a_clear_error(pk, monkeypatch):
    real = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:                        # 2 PNGs, then the report
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(pk.imaging.SaveError, match=r"cut_00001_report\.json.*the disk is full"):
        save(pk.nodes["SafeCutSaveCutout"], frames(2))
    assert listing(pk.out) == ["cut_00001_.png", "cut_00002_.png"]
    assert_no_partial_files(pk.out)


@pytest.mark.parametrize("code, why", [(errno.EROFS, "the file system is read-only"),
                                       (getattr(errno, "EDQUOT", errno.ENOSPC), "quota|disk is full"),
                                       (errno.EACCES, "permission denied")])
def test_read_only_or_over_quota_output_is_a_clear_error(pk, monkeypatch, code, why):
    """Simulated at the first file creation (test_loader_nodes' chmod test is skipped when running as root)."""
    import tempfile

    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(pk.imaging.SaveError, match=f"cut_00001_.png.*({why})"):
        save(pk.nodes["SafeCutSaveCutout"], frames(2))
    assert listing(pk.out) == []


# =====================================================================================================
# Concurrency: every engine on 8 threads at once
# =====================================================================================================
N_THREADS = 8


def _thread_inputs(i: int):
    img = np.full((40, 56, 3), 0.05, np.float32)             # a bright box at a different place per thread
    img[4 + 3 * i: 18 + 3 * i, 2 + 5 * i: 14 + 5 * i] = 0.95
    noise = np.random.default_rng(100 + i).random((48, 40, 3), dtype=np.float32)
    return img, noise, f"a photo number {i} of an abstract shape", ["a red mug", "a kitchen knife", "a sofa"][i % 3]


def test_eight_threads_on_every_engine_one_load_per_model_no_crossed_results(models, monkeypatch):
    from safecut.engines import ben2, nudenet

    c = ModelCache(max_models=8, max_bytes=0)
    monkeypatch.setattr(cache_mod, "CACHE", c)
    use_nudenet = nudenet.bundled_model_path() is not None
    flo_kw = dict(device="CPU", max_new_tokens=6, num_beams=1)
    inputs = [_thread_inputs(i) for i in range(N_THREADS)]
    keyword_gate = gate.KeywordGate()

    def run(i: int) -> dict:
        img, noise, caption, gate_caption = inputs[i]
        out = {"mask": ben2.remove_background([img], "t64.onnx", device="CPU", threads=1).masks[0],
               "gate": keyword_gate.decide(gate_caption).verdict}
        if use_nudenet:
            r = nudenet.detect([noise], device="CPU", threads=1).results[0]
            out["nude"] = (r.max_score, len(r.detections))
        if HAS_LLAMA:
            from safecut.engines import guard

            (g,) = guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1).classify([caption])
            out["guard"] = (g.decided_by, g.p_unsafe)
        if HAS_FLORENCE:
            from safecut.engines import florence

            out["caption"] = florence.caption_images([noise], "tiny-florence2", **flo_kw).captions[0]
        return out

    expected = [run(i) for i in range(N_THREADS)]               # single-threaded first
    assert len({round(float(e["mask"].sum()), 3) for e in expected}) == N_THREADS   # the inputs are distinct
    if HAS_LLAMA:
        assert len({e["guard"][1] for e in expected}) > 1
    c.unload()
    c.reset_stats()
    loads: dict = {}
    c.add_listener(lambda ev, key: loads.__setitem__(key, loads.get(key, 0) + (ev == "load")))

    barrier = threading.Barrier(N_THREADS)
    results: dict[int, list] = {i: [] for i in range(N_THREADS)}
    errors: list = []

    def worker(i: int):
        try:
            barrier.wait(timeout=30)
            for _ in range(2):
                results[i].append(run(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append((i, repr(exc)))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(N_THREADS)]
    deadline = time.monotonic() + 45
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    assert not [t for t in threads if t.is_alive()], "deadlock: threads still running after 45 s"
    assert errors == []
    for i in range(N_THREADS):
        for got in results[i]:
            np.testing.assert_allclose(got["mask"], expected[i]["mask"], atol=1e-5,
                                       err_msg=f"thread {i} got another image's mask")
            assert got["gate"] == expected[i]["gate"]
            if use_nudenet:
                assert got["nude"][0] == pytest.approx(expected[i]["nude"][0], abs=1e-5) and \
                    got["nude"][1] == expected[i]["nude"][1]
            if HAS_LLAMA:
                assert got["guard"][0] == expected[i]["guard"][0]
                assert got["guard"][1] == pytest.approx(expected[i]["guard"][1], abs=1e-5)
            if HAS_FLORENCE:
                assert got["caption"] == expected[i]["caption"]
    kinds = sorted(k.kind for k in loads)
    assert kinds == sorted(["ben2"] + ["nudenet"] * use_nudenet + ["llama"] * HAS_LLAMA
                           + ["florence2"] * HAS_FLORENCE)
    assert all(n == 1 for n in loads.values()), f"a model was loaded more than once: {loads}"
    st = c.stats()
    assert st["load_errors"] == 0 and st["evictions"] == 0
    assert_cache_clean(c)
    c.unload()


# =====================================================================================================
# Fail closed: failures injected into each stage of the safety path
# =====================================================================================================
GATE_WIDGETS = dict(safe_keywords=[gate.DEFAULT_SAFE_KEYWORDS], unsafe_keywords=[gate.DEFAULT_UNSAFE_KEYWORDS],
                    policy=["review"], block_unsafe=[True])


class RaisingHandle:
    def __init__(self, exc: Exception):
        self.exc, self.calls = exc, 0

    def classify(self, captions):
        self.calls += 1
        raise self.exc

    def device_description(self):
        return "CPU"


@pytest.mark.parametrize("exc", [RuntimeError("llama_decode returned -3"), MemoryError("CUDA out of memory"),
                                 ValueError("Failed to create llama_context")])
def test_gate_node_with_a_failing_classifier_fails_closed_and_nothing_unsafe_is_saved(pk, exc):
    handle = RaisingHandle(exc)
    caps = ["a red mug on a table", "a quokka composition", "a kitchen knife on a board"]
    names = ["mug.png", "abstract.png", "knife.png"]
    imgs = frames(3)
    out = pk.nodes["SafeCutKeywordGate"]().run(captions=caps, images=imgs, classifier=[handle], filenames=names,
                                               **GATE_WIDGETS)
    verdicts, by, safe_images, report = out["result"]
    assert handle.calls == 1
    assert verdicts == ["SAFE", "UNSAFE", "UNSAFE"] and by == ["keywords", "error", "error"]
    assert [isinstance(x, torch.Tensor) for x in safe_images] == [True, False, False]   # blocked
    rows = json.loads(report)["images"]
    assert type(exc).__name__ in rows[1]["reason"] and rows[1]["verdict"] == "UNSAFE"
    ui = save(pk.nodes["SafeCutSaveCutout"], imgs, filenames=[names], report=[report])["ui"]
    assert [e["filename"] for e in ui["images"]] == ["cut_00001_mug.png", "cut_00001_report.json"]


def test_save_node_never_writes_an_image_without_its_own_safe_entry(pk):
    saver = pk.nodes["SafeCutSaveCutout"]
    imgs = frames(2)
    cases = {
        "missing entry": [{"filename": "a.png", "verdict": "SAFE"}],
        "lower-case verdict": [{"filename": "a.png", "verdict": "SAFE"}, {"filename": "b.png", "verdict": "safe"}],
        "verdict not a string": [{"filename": "a.png", "verdict": "SAFE"}, {"filename": "b.png", "verdict": True}],
        "two entries for b": [{"filename": "a.png", "verdict": "SAFE"}, {"filename": "x/b.png", "verdict": "SAFE"},
                              {"filename": "y/b.png", "verdict": "UNSAFE"}],
    }
    for what, entries in cases.items():
        ui = save(saver, imgs, filenames=[["a.png", "b.png"]], report=[json.dumps({"images": entries})],
                  filename_prefix=[what.replace(" ", "_")])["ui"]
        written = [e["filename"] for e in ui["images"] if e["filename"].endswith(".png")]
        assert written == [f"{what.replace(' ', '_')}_00001_a.png"], f"{what}: {written}"
        assert ui["safecut"][0]["saved"] == 1 and ui["safecut"][0]["unsafe"] == 1, what


def test_save_node_duplicate_names_are_matched_by_position_or_fail_closed(pk):
    """Two images with the same file name (e.g. two list runs): names cannot tell their entries apart."""
    saver = pk.nodes["SafeCutSaveCutout"]
    imgs = frames(2)
    report = json.dumps({"images": [{"filename": "x.png", "verdict": "UNSAFE"},
                                    {"filename": "x.png", "verdict": "SAFE"}]})
    ui = save(saver, imgs, filenames=[["x.png", "x.png"]], report=[report], filename_prefix=["dup"])["ui"]
    assert [e["filename"] for e in ui["images"]] == ["dup_00001_x.png", "dup_00001_report.json"]
    doc = json.loads((pk.out / "dup_00001_report.json").read_text())
    assert [(r["verdict"], r["saved"]) for r in doc["images"]] == [("UNSAFE", False), ("SAFE", True)]
    shuffled = json.dumps({"images": [{"filename": "x.png", "verdict": "SAFE"}]})   # 1 entry for 2 images
    ui = save(saver, imgs, filenames=[["x.png", "x.png"]], report=[shuffled], filename_prefix=["dup2"])["ui"]
    assert ui["safecut"][0]["saved"] == 0


def test_gate_node_refuses_nudenet_results_that_do_not_match_the_captions(pk):
    with pytest.raises(ValueError, match="nudenet"):
        pk.nodes["SafeCutKeywordGate"]().run(captions=["a red mug", "a cup"],
                                             nudenet=[[{"is_unsafe": False, "max_score": 0.1}]], **GATE_WIDGETS)


# ---- engine level: the headless pipeline with one stage broken at a time --------------------------
@pytest.fixture()
def pipe(models, tmp_path, monkeypatch):
    from safecut.engines import florence, nudenet
    from safecut.app import pipeline

    c = ModelCache(max_models=6, max_bytes=0)
    monkeypatch.setattr(cache_mod, "CACHE", c)
    inp = tmp_path / "in"
    inp.mkdir()
    for i, name in enumerate(["a.png", "b.png"]):
        Image.fromarray((subject_image(24, 32) * 255).astype(np.uint8)).save(inp / name)
    fake_flo = tmp_path / "models_extra"
    (fake_flo / "florence2" / "fake").mkdir(parents=True)
    (fake_flo / "florence2" / "fake" / "config.json").write_text('{"model_type": "florence2"}')
    monkeypatch.setattr(modelfiles, "_folder_provider", lambda folder: [str(models / folder), str(fake_flo / folder)])
    captions = {"value": ["a red mug on a table", "a sofa in a room"]}
    monkeypatch.setattr(florence, "caption_images", lambda frames, *a, **k: types.SimpleNamespace(
        captions=list(captions["value"][:len(frames)]), device=types.SimpleNamespace(describe=lambda: "CPU"),
        describe=lambda: "CPU, fp32"))
    if nudenet.bundled_model_path() is None:   # the pipeline's NudeNet stage, without the model: all clear
        monkeypatch.setattr(nudenet, "detect", lambda frames, **k: types.SimpleNamespace(
            results=[nudenet.NudeResult(False, 0.0, []) for _ in frames],
            device=types.SimpleNamespace(describe=lambda: "CPU")))
    opts = pipeline.Options(ben2_model="t64.onnx", device="CPU", threads=1, batch_size=2, caption=True,
                            florence_model="fake", nudenet=True, gate=True, classify=True,
                            llm_model="not-needed.gguf")

    def run():
        out = tmp_path / f"out{len(os.listdir(tmp_path))}"
        summary = pipeline.run(str(inp), str(out), opts)
        lines = [json.loads(x) for x in (out / "report.jsonl").read_text().splitlines()]
        saved = {}
        for n in listing(out):
            if n.endswith(".png"):
                with Image.open(out / n) as im:
                    saved[n] = json.loads(im.text["safecut"]).get("verdict")
        return summary, lines, saved

    yield types.SimpleNamespace(run=run, captions=captions)
    c.unload()


def _boom(*a, **k):
    raise RuntimeError("injected failure")


def test_pipeline_baseline_can_say_safe(pipe):
    """The harness is able to produce SAFE: the failure cases below are meaningful."""
    summary, lines, saved = pipe.run()
    assert [(ln["verdict"], ln["decided_by"]) for ln in lines] == [("SAFE", "keywords")] * 2
    assert sorted(saved.values()) == ["SAFE", "SAFE"] and summary.failed == 0


@pytest.mark.parametrize("stage", ["florence", "nudenet", "gate"])
def test_pipeline_stage_failure_fails_the_images_never_safe(pipe, monkeypatch, stage):
    from safecut.engines import florence, nudenet

    target = {"florence": (florence, "caption_images"), "nudenet": (nudenet, "detect"),
              "gate": (gate.KeywordGate, "decide_all")}[stage]
    monkeypatch.setattr(*target, _boom)
    summary, lines, saved = pipe.run()
    assert len(lines) == 2 and summary.failed == 2
    for ln in lines:
        assert ln.get("verdict") != "SAFE" and "injected failure" in ln["error"]
    assert "SAFE" not in saved.values()


@pytest.mark.parametrize("failure", ["raises", "wrong count", "no verdict"])
def test_pipeline_classifier_failure_gives_unsafe_by_error(pipe, monkeypatch, failure):
    from safecut.engines import guard

    pipe.captions["value"] = ["a quokka composition", "a red mug on a table"]   # the 1st needs the classifier
    fake = {"raises": _boom, "wrong count": lambda self, caps, progress=None: [],
            "no verdict": lambda self, caps, progress=None: [types.SimpleNamespace(verdict=None)] * len(caps)}
    monkeypatch.setattr(guard.SafetyClassifier, "classify", fake[failure])
    summary, lines, saved = pipe.run()
    assert (lines[0]["verdict"], lines[0]["decided_by"]) == ("UNSAFE", "error")
    assert (lines[1]["verdict"], lines[1]["decided_by"]) == ("SAFE", "keywords")
    assert sorted(saved.values()) == ["SAFE", "UNSAFE"]   # save_unsafe is on: written, but marked UNSAFE
