"""Memory (issue 5): 200 pipeline-equivalent runs (BEN2 -> NudeNet -> keyword gate -> Llama classifier) on tiny
models with a cache budget of ONE model, so every run evicts and reloads every model (600 loads).

* RSS (from /proc/self/statm) stays flat after warm-up: growth < 5 %.
* Evictions really free: every evicted ONNX Runtime session object is gone (weakref dead) and every evicted
  llama.cpp model is closed (native model and context handles freed, the Llama object collected).
"""
from __future__ import annotations

import ctypes
import gc
import importlib.util
import os
import statistics
import sys
import time
import weakref

import numpy as np
import pytest

from safecut.engines import ben2, gate, nudenet
from safecut.runtime import cache as cache_mod
from safecut.models import modelfiles
from safecut.runtime.cache import ModelCache

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm (Linux)")

RUNS = 200
WARMUP = 30
FAMILY = "Llama-Guard-3-1B"
HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("gguf") is not None
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def settled_rss() -> int:
    """RSS after a full collection and, on glibc, after returning free heap pages to the system (so the
    number measures live memory, not allocator slack)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
    return rss_bytes()


def build_tiny_nudenet(path) -> str:
    """A NudeNet-shaped (YOLOv8 I/O) ONNX: images [N,3,32,32] -> output0 [N,4+18,16]; loads in milliseconds
    (the real 320n takes ~70 ms per load, x200 loads; its own behaviour is tested in test_nudenet)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(1).normal(0, 0.05, (22, 3, 8, 8)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0, 22, 16], np.int64), "shape")]
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], strides=[8, 8]),
             helper.make_node("Reshape", ["c", "shape"], ["output0"])]
    graph = helper.make_graph(nodes, "tiny_nudenet",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 22, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    from safecut.testkit.tiny_ben2 import build_tiny_ben2

    root = tmp_path / "models"
    build_tiny_ben2(str(root / "ben2" / "t64.onnx"), size=64)
    build_tiny_nudenet(root / "nudenet" / "tiny-nudenet.onnx")
    if HAS_LLAMA:
        from safecut.testkit import tiny_gguf

        tiny_gguf.build_tiny_gguf(str(root / "LLM"), "Q4_K_M", cache_dir=str(tmp_path / "gguf_cache"))
    monkeypatch.setenv("SAFECUT_MODELS_DIR", str(root))
    monkeypatch.setenv("SAFECUT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(modelfiles, "_folder_provider", None)
    c = ModelCache(max_models=1, max_bytes=0)        # budget: one model -> every stage evicts the previous one
    monkeypatch.setattr(cache_mod, "CACHE", c)
    yield c
    c.unload()


def test_200_runs_with_constant_eviction_keep_rss_flat_and_free_every_model(tiny, monkeypatch):
    c = tiny
    ort_sessions: list[tuple[str, weakref.ref]] = []    # (kind, weakref to the InferenceSession)
    llamas: list[tuple] = []                            # (runtime, weakref to Llama, its native model/ctx wrappers)

    def recording(module, kind):
        real = module.load_model

        def load(*a, **k):
            m = real(*a, **k)
            ort_sessions.append((kind, weakref.ref(m.session)))
            return m
        monkeypatch.setattr(module, "load_model", load)

    recording(ben2, "ben2")
    recording(nudenet, "nudenet")
    classify = None
    if HAS_LLAMA:
        from safecut.engines import guard

        real_runtime = guard.load_runtime

        def load_runtime(*a, **k):
            rt = real_runtime(*a, **k)
            llamas.append((weakref.ref(rt), weakref.ref(rt.llm), rt.llm._model, rt.llm._ctx))
            return rt
        monkeypatch.setattr(guard, "load_runtime", load_runtime)
        classify = guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1).classify

    keyword_gate = gate.KeywordGate()
    rng = np.random.default_rng(0)
    samples: dict[int, int] = {}
    t0 = time.perf_counter()
    for i in range(RUNS):
        img = rng.random((24, 32, 3), dtype=np.float32)
        (mask,) = ben2.remove_background([img], "t64.onnx", device="CPU", threads=1).masks
        assert mask.shape == (24, 32)
        nude = nudenet.detect([img], model="tiny-nudenet.onnx", device="CPU", threads=1)
        assert nude.input_size == 32 and len(nude.results) == 1
        decisions = keyword_gate.decide_all([f"an abstract composition, variant {i}"],
                                            [r.is_unsafe for r in nude.results])
        gate.settle(decisions, classify)
        assert decisions[0].decided_by == ("classifier" if HAS_LLAMA else "error")
        # every model evicted so far is really released, right away (the cache closes and collects)
        assert [k for k, ref in ort_sessions if ref() is not None] == ([] if HAS_LLAMA else ["nudenet"])
        for rt_ref, llm_ref, native_model, native_ctx in llamas[:-1]:
            assert rt_ref() is None or rt_ref().llm is None
            assert llm_ref() is None, "an evicted Llama object is still alive"
            assert native_model.model is None and native_ctx.ctx is None, "llama.cpp handles not freed"
        if i + 1 >= WARMUP and (i + 1 - WARMUP) % 10 == 0 or i + 1 == RUNS:
            samples[i + 1] = settled_rss()
    seconds = time.perf_counter() - t0

    stages = 2 + HAS_LLAMA
    st = c.stats()
    assert st["loads"] == stages * RUNS, st                # every stage reloaded its model every run
    assert st["evictions"] == stages * RUNS - 1 and st["resident_models"] == 1 and st["load_errors"] == 0
    assert len(ort_sessions) == 2 * RUNS and len(llamas) == HAS_LLAMA * RUNS

    base = statistics.median([samples[k] for k in sorted(samples)[:3]])
    end = statistics.median([samples[k] for k in sorted(samples)[-3:]])
    growth = (end - base) / base
    print(f"\n{RUNS} runs in {seconds:.1f}s, {st['loads']} loads; RSS after warm-up {base / 2**20:.1f} MiB, "
          f"at the end {end / 2**20:.1f} MiB ({growth:+.2%})")
    assert growth < 0.05, f"RSS grew {growth:.1%} over {RUNS - WARMUP} runs: {samples}"

    c.unload()                                           # the last resident model is released too
    assert all(ref() is None for _, ref in ort_sessions)
    for rt_ref, llm_ref, native_model, native_ctx in llamas:
        assert llm_ref() is None and native_model.model is None and native_ctx.ctx is None
