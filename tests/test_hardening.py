"""Hardening (issue 5): missing / broken / wrong / replaced models, devices (no CUDA, out of memory), and the
security rules of the shipped code.

Unit-level cases live elsewhere (test_modelfiles, test_providers, test_guard, test_florence); here every case
goes through an engine and the model cache, and checks the cache is left clean afterwards. Each test gets its
own models folder and its own ModelCache (patched in as the process-wide one), so nothing leaks between tests.
"""
from __future__ import annotations

import ast
import os
import pickle
import re
import shutil
import subprocess
import types

import numpy as np
import pytest

from conftest import ROOT, ort_has_cuda, subject_image, torch_has_cuda
from safecut.engines import ben2, florence, gate, guard, nudenet
from safecut.runtime import cache as cache_mod, providers
from safecut.models import modelfiles
from safecut.runtime.cache import ModelCache
from safecut.errors import (BadInputError, ChecksumError, DeviceOutOfMemoryError, DeviceUnavailableError,
                            ModelNotFoundError, SafeCutError)
from safecut.runtime.providers import DeviceChoice
from safecut.models.registry import REGISTRY, ModelSpec, RemoteFile

FAMILY = "Llama-Guard-3-1B"
NUDENET_BUNDLED = nudenet.bundled_model_path()
needs_nudenet = pytest.mark.skipif(NUDENET_BUNDLED is None, reason="nudenet package (bundled 320n.onnx) missing")


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


needs_llama = pytest.mark.skipif(not (_has("llama_cpp") and _has("gguf")), reason="llama-cpp-python / gguf missing")
needs_torch = pytest.mark.skipif(not (_has("torch") and _has("transformers")), reason="torch / transformers missing")


# ---- tiny models built here -----------------------------------------------------------------------
def mask_model(path, sign: float = 1.0, size: int = 32) -> str:
    """BEN2-shaped ONNX ([N,3,S,S] -> [N,1,S,S]): mask = sigmoid(sign * 10 * (mean(rgb) - 0.5)).
    sign=-1 is the exact inverse of sign=+1 after BEN2's min-max rescale; both files have the same size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(10.0 * sign, np.float32), "k"),
             numpy_helper.from_array(np.array(-5.0 * sign, np.float32), "b")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "k"], ["mk"]), helper.make_node("Add", ["mk", "b"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["output"])]
    graph = helper.make_graph(nodes, "mask", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["N", 3, size, size])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, size, size])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def rank3_model(path) -> str:
    """An ONNX whose input is [N,3,W] (rank 3): not an image model."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "rank3",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """Files built once for this module: the mask model and (when available) a tiny GGUF and tiny Florence-2."""
    d = tmp_path_factory.mktemp("hardening_kit")
    out = {"mask": mask_model(d / "mask.onnx"), "inverse": mask_model(d / "inverse.onnx", -1.0)}
    if _has("llama_cpp") and _has("gguf"):
        from safecut.testkit import tiny_gguf

        out["gguf"] = tiny_gguf.build_tiny_gguf(str(d / "gguf"), "Q4_K_M", cache_dir=str(d / "gguf_cache"))
    return out


@pytest.fixture(scope="module")
def tiny_florence(tmp_path_factory):
    if not (_has("torch") and _has("transformers")):
        pytest.skip("torch / transformers missing")
    from safecut.testkit.tiny_florence import build_tiny_florence

    return build_tiny_florence(str(tmp_path_factory.mktemp("hardening_flo") / "tiny-florence2"))


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Empty model folders, a private cache dir and a fresh process-wide ModelCache."""
    root = tmp_path / "models"
    for d in ("ben2", "ben2_onnx", "nudenet", "LLM", "llm_gguf", "florence2"):
        (root / d).mkdir(parents=True)
    monkeypatch.setenv("SAFECUT_MODELS_DIR", str(root))
    monkeypatch.setenv("SAFECUT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SAFECUT_OOM_FALLBACK", raising=False)
    monkeypatch.setattr(modelfiles, "_folder_provider", None)
    c = ModelCache(max_models=6, max_bytes=0)
    monkeypatch.setattr(cache_mod, "CACHE", c)
    yield types.SimpleNamespace(root=root, cache=c, tmp=tmp_path)
    c.unload()


def assert_cache_clean(c: ModelCache) -> None:
    """No stuck loading entry, nobody holding a lease."""
    assert c._loading == {}, f"loading entries left behind: {list(c._loading)}"
    assert all(m["users"] == 0 for m in c.stats()["models"]), c.stats()["models"]


def img(seed: int = 0, h: int = 40, w: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def put_gguf(kit, env, name: str, folder: str = "LLM") -> str:
    dst = env.root / folder / name
    shutil.copyfile(kit["gguf"], dst)
    return str(dst)


# =====================================================================================================
# Models
# =====================================================================================================
@pytest.mark.parametrize("engine", ["ben2", "nudenet", "guard", "florence"])
def test_missing_model_names_file_folders_and_fetch_command(env, engine):
    if engine == "guard" and not (_has("llama_cpp") and _has("gguf")):
        pytest.skip("llama-cpp-python missing")
    if engine == "florence" and not (_has("torch") and _has("transformers")):
        pytest.skip("torch / transformers missing")
    r = env.root
    cases = {
        "ben2": ("BEN2_Base.onnx", [r / "ben2", r / "ben2_onnx"],
                 lambda: ben2.remove_background([img()], "BEN2_Base.onnx", device="CPU")),
        "nudenet": ("640m.onnx", [r / "nudenet"], lambda: nudenet.detect([img()], model="640m.onnx", device="CPU")),
        "guard": (f"{FAMILY}-Q4_K_M.gguf", [r / "LLM", r / "llm_gguf"],
                  lambda: guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1).resolve()),
        "florence": ("Florence-2-base-ft", [r / "florence2", r / "LLM"],
                     lambda: florence.caption_images([img()], "Florence-2-base-ft", device="CPU")),
    }
    name, folders, call = cases[engine]
    with pytest.raises(ModelNotFoundError) as ei:
        call()
    msg = str(ei.value)
    assert f"'{name}'" in msg
    for f in folders:
        assert str(f) in msg, f"folder {f} not named in: {msg}"
    assert f"python -m safecut models fetch {name}" in msg
    assert env.cache.stats()["loads"] == 0
    assert_cache_clean(env.cache)


@needs_llama
def test_missing_classifier_model_fails_closed_with_the_same_message(env):
    results = guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1).classify(["a cat", "a dog"])
    assert [(r.verdict, r.decided_by) for r in results] == [("UNSAFE", "error")] * 2
    assert "python -m safecut models fetch" in results[0].error and str(env.root / "LLM") in results[0].error


def _broken(good: bytes, kind: str) -> bytes:
    return {"truncated": good[: len(good) // 2], "junk": os.urandom(4096), "empty": b""}[kind]


@pytest.mark.parametrize("kind", ["truncated", "junk", "empty"])
@pytest.mark.parametrize("engine", ["ben2", pytest.param("nudenet", marks=needs_nudenet)])
def test_corrupt_onnx_through_the_engine_is_named_and_recoverable(env, kit, engine, kind):
    good_src = kit["mask"] if engine == "ben2" else NUDENET_BUNDLED
    good = open(good_src, "rb").read()
    path = env.root / engine / "broken.onnx"
    path.write_bytes(_broken(good, kind))

    def call():
        if engine == "ben2":
            return ben2.remove_background([subject_image(32, 40)], "broken.onnx", device="CPU", threads=1)
        return nudenet.detect([img()], model="broken.onnx", device="CPU", threads=1)

    with pytest.raises(SafeCutError) as ei:
        call()
    msg = str(ei.value)
    assert "broken.onnx" in msg and "fetch it again" in msg, msg
    st = env.cache.stats()
    assert st["load_errors"] == 1 and st["resident_models"] == 0
    assert_cache_clean(env.cache)
    # the file is repaired (fetched again): the next call loads it, nothing of the failure is remembered
    tmp = path.with_suffix(".part")
    tmp.write_bytes(good)
    os.replace(tmp, path)
    run = call()
    assert run.device.used == "CPU"
    assert env.cache.stats()["loads"] == 1
    assert_cache_clean(env.cache)


def test_wrong_architecture_onnx_is_refused_clearly(env, kit):
    rank3_model(env.root / "ben2" / "rank3.onnx")
    with pytest.raises(SafeCutError, match=r"'rank3\.onnx' does not look like a BEN2 model.*\[N,3,H,W\]"):
        ben2.remove_background([img()], "rank3.onnx", device="CPU")
    if NUDENET_BUNDLED:
        # a detector has one [N,3,H,W] input too: only its output ([N,22,anchors]) gives it away; it must not
        # run as a background remover and produce a meaningless mask
        shutil.copyfile(NUDENET_BUNDLED, env.root / "ben2" / "detector.onnx")
        with pytest.raises(SafeCutError, match=r"'detector\.onnx' does not look like a BEN2 model.*mask output"):
            ben2.remove_background([img()], "detector.onnx", device="CPU")
        shutil.copyfile(kit["mask"], env.root / "nudenet" / "matting.onnx")
        with pytest.raises(SafeCutError, match=r"'matting\.onnx' does not look like a NudeNet"):
            nudenet.detect([img()], model="matting.onnx", device="CPU")
    assert env.cache.stats()["resident_models"] == 0
    assert_cache_clean(env.cache)


@needs_torch
def test_non_florence_folders_are_refused_clearly(env, tiny_florence, monkeypatch):
    import torch
    from safetensors.torch import save_file

    flo = env.root / "florence2"
    bert = flo / "bert-base"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    save_file({"embeddings.weight": torch.zeros(4, 4)}, str(bert / "model.safetensors"))
    with pytest.raises(SafeCutError, match=r"'bert-base' .* is not a Florence-2 model.*model_type='bert'"):
        florence.caption_images([img()], "bert-base", device="CPU")

    # a Florence-2 config with some other model's weights: transformers would fill them with random values
    foreign = flo / "foreign-weights"
    shutil.copytree(tiny_florence, foreign)
    save_file({"encoder.layer.0.weight": torch.zeros(4, 4)}, str(foreign / "model.safetensors"))
    with pytest.raises(SafeCutError, match=r"do not belong to a Florence-2 model"):
        florence.caption_images([img()], "foreign-weights", device="CPU", max_new_tokens=4, num_beams=1)

    # pickled weights only: refused before anything is unpickled
    pickled = flo / "pickled"
    shutil.copytree(tiny_florence, pickled)
    os.remove(pickled / "model.safetensors")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must never run"))
    with pytest.raises(SafeCutError, match=r"only pickled PyTorch files.*never loads"):
        florence.caption_images([img()], "pickled", device="CPU")
    assert env.cache.stats()["resident_models"] == 0
    assert_cache_clean(env.cache)


def test_registry_file_with_wrong_size_or_sha256_is_refused_by_the_engines(env, kit, monkeypatch):
    # wrong size: a different file placed under the registry's BEN2 / NudeNet names
    shutil.copyfile(kit["mask"], env.root / "ben2" / "BEN2_Base.onnx")
    with pytest.raises(ChecksumError, match=r"BEN2_Base\.onnx.*damaged or not the expected file.*bytes"):
        ben2.remove_background([img()], "BEN2_Base.onnx", device="CPU")
    shutil.copyfile(kit["mask"], env.root / "nudenet" / "320n.onnx")   # a copy in models/ wins over the bundled
    with pytest.raises(ChecksumError, match=r"320n\.onnx.*damaged"):
        nudenet.detect([img()], model="320n.onnx", device="CPU")
    # right size, wrong sha256
    data = open(kit["mask"], "rb").read()
    spec = ModelSpec("pinned.onnx", "ben2", "example/pinned", (RemoteFile("pinned.onnx", len(data), "0" * 64),))
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    shutil.copyfile(kit["mask"], env.root / "ben2" / "pinned.onnx")
    with pytest.raises(ChecksumError, match=r"sha256 .* does not match the registry"):
        ben2.remove_background([img()], "pinned.onnx", device="CPU")
    assert env.cache.stats()["loads"] == 0   # a file that fails its checksum is never loaded
    assert_cache_clean(env.cache)


@needs_llama
def test_pinned_gguf_with_wrong_checksum_fails_closed(env, kit):
    name = "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
    assert REGISTRY[name].files[0].sha256   # a pinned registry entry
    put_gguf(kit, env, name)
    results = guard.SafetyClassifier("TinyLlama-1.1B-Chat", "Q4_K_M", threads=1).classify(["an abstract shape"])
    assert (results[0].verdict, results[0].decided_by) == ("UNSAFE", "error")
    assert "damaged or not the expected file" in results[0].error and name in results[0].error
    assert env.cache.stats()["loads"] == 0


@needs_torch
def test_registry_florence_folder_with_wrong_weights_is_refused(env, tiny_florence):
    shutil.copytree(tiny_florence, env.root / "florence2" / "Florence-2-base-ft")
    with pytest.raises(ChecksumError, match=r"model\.safetensors.*damaged"):
        florence.caption_images([img()], "Florence-2-base-ft", device="CPU")


@pytest.mark.parametrize("keep_mtime", [False, True], ids=["new-mtime", "same-size-and-mtime"])
def test_model_replaced_on_disk_while_cached_is_reloaded(env, kit, keep_mtime):
    """Two different models written to the same path: the second call must use the second model, also when
    the new file has the same size and modification time (a copy made with `cp -p`, rsync -t, an unpack)."""
    path = env.root / "ben2" / "swap.onnx"
    shutil.copyfile(kit["mask"], path)
    image = subject_image(48, 64)
    (mask_a,) = ben2.remove_background([image], "swap.onnx", device="CPU", threads=1).masks
    assert mask_a[24, 32] > 0.9 and mask_a[2, 2] < 0.1           # model A keeps the bright subject
    before = os.stat(path)
    tmp = env.root / "ben2" / ".swap.part"
    shutil.copyfile(kit["inverse"], tmp)
    os.replace(tmp, path)
    after = os.stat(path)
    assert after.st_size == before.st_size                        # same size: only the weights differ
    if keep_mtime:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    else:
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    (mask_b,) = ben2.remove_background([image], "swap.onnx", device="CPU", threads=1).masks
    np.testing.assert_allclose(mask_b, 1.0 - mask_a, atol=1e-4)   # model B's output: the exact inverse
    st = env.cache.stats()
    assert st["reloads_changed_file"] == 1 and st["loads"] == 2 and st["resident_models"] == 1
    assert_cache_clean(env.cache)


@needs_llama
def test_unknown_quantization_lists_the_valid_ones(env, kit, pack):
    put_gguf(kit, env, f"{FAMILY}-Q4_K_M.gguf")
    with pytest.raises(BadInputError) as ei:
        guard.resolve_model(FAMILY, "Q9_X")
    msg = str(ei.value)
    assert "'Q9_X'" in msg and all(q in msg for q in guard.QUANTIZATIONS) and "on disk: Q4_K_M" in msg
    (r,) = guard.SafetyClassifier(FAMILY, "q9_x", threads=1).classify(["an abstract shape"])
    assert (r.verdict, r.decided_by) == ("UNSAFE", "error") and "Q2_K, Q3_K_M, Q4_K_M" in r.error
    node = pack.NODE_CLASS_MAPPINGS["SafeCutLlamaSafetyClassifier"]()
    with pytest.raises(Exception, match=r"quantization 'Q9_X' is not known .*Q8_0"):
        node.run([FAMILY], ["Q9_X"], [0], [1], [1024], [0.5], [""], [True], caption=None)
    # a valid quantization that is not on disk is a different, fetchable, error
    with pytest.raises(ModelNotFoundError, match=r"(?s)Q8_0.*python -m safecut models fetch"):
        guard.resolve_model(FAMILY, "Q8_0", allow_download=False)


# =====================================================================================================
# Devices
# =====================================================================================================
def test_ben2_cuda_request_without_cuda_runs_on_cpu_and_strict_refuses(env, kit):
    if ort_has_cuda():
        pytest.skip("CUDA provider present: no fallback to observe")
    shutil.copyfile(kit["mask"], env.root / "ben2" / "m.onnx")
    with pytest.raises(DeviceUnavailableError, match="strict"):
        ben2.remove_background([img()], "m.onnx", device="CUDA", strict=True)
    run = ben2.remove_background([img()], "m.onnx", device="CUDA")
    assert (run.device.requested, run.device.used) == ("CUDA", "CPU")
    assert run.device.describe() == "CPU · ONNX Runtime fp32 (CUDA unavailable)"
    # the CPU session cached by that non-strict call must not satisfy a strict request
    with pytest.raises(DeviceUnavailableError, match="strict"):
        ben2.remove_background([img()], "m.onnx", device="CUDA", strict=True)
    auto = ben2.remove_background([img()], "m.onnx", device="auto").device   # auto's own CPU runtime, no CUDA note
    assert auto.requested == "auto" and auto.used == "CPU" and "CUDA" not in auto.describe()
    assert_cache_clean(env.cache)


@needs_torch
def test_florence_cuda_request_without_cuda_runs_on_cpu_and_strict_refuses(env, tiny_florence):
    if torch_has_cuda():
        pytest.skip("CUDA present: no fallback to observe")
    shutil.copytree(tiny_florence, env.root / "florence2" / "tiny")
    kw = dict(device="CUDA", max_new_tokens=4, num_beams=1)
    with pytest.raises(DeviceUnavailableError, match="strict"):
        florence.caption_images([img()], "tiny", strict=True, **kw)
    res = florence.caption_images([img()], "tiny", **kw)
    assert (res.device.requested, res.device.used, res.dtype) == ("CUDA", "CPU", "fp32")
    assert res.device.describe() == "CPU (CUDA unavailable)" and len(res.captions) == 1
    with pytest.raises(DeviceUnavailableError, match="strict"):   # also with the CPU model cached
        florence.caption_images([img()], "tiny", strict=True, **kw)
    assert_cache_clean(env.cache)


@needs_llama
def test_guard_gpu_request_without_gpu_runs_on_cpu_and_strict_fails_closed(env, kit):
    if guard._gpu_backend()[0] is not None:
        pytest.skip("this llama-cpp-python build has a usable GPU")
    put_gguf(kit, env, f"{FAMILY}-Q4_K_M.gguf")
    clf = guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1, n_gpu_layers=8)
    (r,) = clf.classify(["an abstract shape"])
    assert r.decided_by == "classifier"
    assert clf.device_description().startswith("CPU · llama.cpp ") and \
        clf.device_description().endswith(" (GPU offload unavailable)")
    strict = guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1, n_gpu_layers=8, strict_device=True)
    results = strict.classify(["an abstract shape", "a red mug"])
    assert [(x.verdict, x.decided_by) for x in results] == [("UNSAFE", "error")] * 2
    assert "strict mode" in results[0].error
    assert_cache_clean(env.cache)


# ---- out of memory ----------------------------------------------------------------------------------
OOM_ORT = ("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node. "
           "Status Message: bfc_arena.cc:376 AllocateRawInternal Failed to allocate memory for requested buffer "
           "of size 268435456; CUDA failure 2: out of memory")


class _OOMSession:
    """A real CPU session that claims to be CUDA and runs out of memory in run()."""

    def __init__(self, sess, calls):
        self._sess, self._calls = sess, calls

    def __getattr__(self, name):
        return getattr(self._sess, name)

    def run(self, *a, **k):
        self._calls.append("cuda-run")
        raise RuntimeError(OOM_ORT)


@pytest.fixture()
def fake_cuda_ort(monkeypatch):
    """Sessions requested for CUDA report CUDA and fail with an onnxruntime CUDA OOM error in run()."""
    real = providers.create_ort_session
    calls: list[str] = []

    def create(model, requested="auto", **kw):
        if providers.normalize(requested) != "CUDA":
            return real(model, requested, **kw)
        sess, _ = real(model, "CPU", **{k: v for k, v in kw.items() if k != "optimized_cache"})
        return _OOMSession(sess, calls), DeviceChoice("CUDA", "CUDA")

    monkeypatch.setattr(providers, "create_ort_session", create)
    return calls


def test_is_out_of_memory_recognises_the_usual_messages():
    assert providers.is_out_of_memory(RuntimeError(OOM_ORT))
    assert providers.is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert providers.is_out_of_memory(MemoryError())
    assert providers.is_out_of_memory(type("OutOfMemoryError", (RuntimeError,), {})("Tried to allocate 2 GiB"))
    assert not providers.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not providers.is_out_of_memory(DeviceOutOfMemoryError("already explained"))


@pytest.mark.parametrize("engine", ["ben2", pytest.param("nudenet", marks=needs_nudenet)])
def test_onnx_engines_cuda_oom_fail_clearly_or_fall_back_to_cpu_when_allowed(env, kit, fake_cuda_ort, monkeypatch,
                                                                               engine):
    shutil.copyfile(kit["mask"], env.root / "ben2" / "m.onnx")
    images = [subject_image(32, 40), img(3)]

    def call(device, **kw):
        if engine == "ben2":
            return ben2.remove_background(images, "m.onnx", device=device, threads=1, **kw)
        return nudenet.detect(images, device=device, threads=1, **kw)

    def outputs(run):
        if engine == "ben2":
            return np.concatenate([m.ravel() for m in run.masks])
        return np.array([r.max_score for r in run.results])

    expected = outputs(call("CPU"))
    name = "BEN2" if engine == "ben2" else "NudeNet"
    with pytest.raises(DeviceOutOfMemoryError) as ei:
        call("CUDA")
    msg = str(ei.value)
    assert f"CUDA out of memory while running {name}: lower batch_size or use CPU" in msg
    assert "SAFECUT_OOM_FALLBACK=1" in msg and "Failed to allocate memory" in msg
    assert fake_cuda_ort == ["cuda-run"]
    assert_cache_clean(env.cache)

    monkeypatch.setenv("SAFECUT_OOM_FALLBACK", "1")
    with pytest.raises(DeviceOutOfMemoryError):           # strict: no silent move to another device
        call("CUDA", strict=True)
    run = call("CUDA")
    assert (run.device.requested, run.device.used) == ("CUDA", "CPU") and "out of memory" in run.device.note
    np.testing.assert_allclose(outputs(run), expected, atol=1e-5)
    assert_cache_clean(env.cache)


def test_non_oom_errors_pass_through_unchanged(env, kit, monkeypatch):
    shutil.copyfile(kit["mask"], env.root / "ben2" / "m.onnx")
    monkeypatch.setenv("SAFECUT_OOM_FALLBACK", "1")

    def boom(*a, **k):
        raise RuntimeError("shape mismatch in node Conv_3")

    monkeypatch.setattr(ben2, "run_model", boom)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        ben2.remove_background([img()], "m.onnx", device="CUDA")
    assert_cache_clean(env.cache)


@needs_torch
def test_florence_cuda_oom_fails_clearly_or_falls_back_to_cpu(env, tiny_florence, monkeypatch):
    import torch

    shutil.copytree(tiny_florence, env.root / "florence2" / "tiny")
    kw = dict(precision="fp32", max_new_tokens=5, num_beams=1)
    images = [img(1), img(2)]
    expected = florence.caption_images(images, "tiny", device="CPU", **kw).captions
    state = {"cuda": False}
    real_device, real_generate = providers.torch_device, florence.generate_captions

    def torch_device(requested="auto", *, strict=False):   # pretend CUDA works (the model still runs on CPU)
        state["cuda"] = providers.normalize(requested) == "CUDA"
        return DeviceChoice("CUDA", "CUDA") if state["cuda"] else real_device(requested, strict=strict)

    def generate(fm, *a, **k):
        if state["cuda"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_generate(fm, *a, **k)

    monkeypatch.setattr(providers, "torch_device", torch_device)
    monkeypatch.setattr(providers, "torch_name", lambda choice: "cpu")
    monkeypatch.setattr(florence, "generate_captions", generate)
    with pytest.raises(DeviceOutOfMemoryError, match="CUDA out of memory while running Florence-2: lower batch_size "
                                                     "or use CPU"):
        florence.caption_images(images, "tiny", device="CUDA", **kw)
    assert_cache_clean(env.cache)
    monkeypatch.setenv("SAFECUT_OOM_FALLBACK", "1")
    res = florence.caption_images(images, "tiny", device="CUDA", **kw)
    assert res.captions == expected
    assert (res.device.requested, res.device.used) == ("CUDA", "CPU") and "out of memory" in res.device.note
    assert_cache_clean(env.cache)


@needs_llama
def test_guard_oom_while_evaluating_fails_closed_then_recovers(env, kit, monkeypatch):
    put_gguf(kit, env, f"{FAMILY}-Q4_K_M.gguf")
    clf = guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1)
    (ok,) = clf.classify(["an abstract shape"])
    import llama_cpp

    real_eval = llama_cpp.Llama.eval

    def oom_eval(self, tokens):
        raise RuntimeError("ggml_cuda_op_mul_mat: CUDA error: out of memory")

    monkeypatch.setattr(llama_cpp.Llama, "eval", oom_eval)
    results = clf.classify(["an abstract shape", "a red mug"])
    assert [(r.verdict, r.decided_by, r.p_unsafe) for r in results] == [("UNSAFE", "error", 1.0)] * 2
    assert "out of memory" in results[0].error
    monkeypatch.setattr(llama_cpp.Llama, "eval", real_eval)
    (back,) = clf.classify(["an abstract shape"])
    assert back.decided_by == "classifier" and back.p_unsafe == pytest.approx(ok.p_unsafe, abs=1e-6)
    assert_cache_clean(env.cache)


# =====================================================================================================
# Security: static rules for the shipped code, and a run that proves nothing is unpickled or spawned
# =====================================================================================================
SHIPPED_DIRS = ("safecut", "nodes")
# nodes/comfy_hooks.py serves one read-only route on ComfyUI's own aiohttp server (the search aliases): no outbound
# network access
SERVER_IMPORTS = {("nodes/comfy_hooks.py", "aiohttp")}
# pinned model downloads; the worker client (its HTTP lives in transport.py only)
NETWORK_ALLOWED = {"safecut/models/modelfiles.py", "safecut/app/client/transport.py"}
# The headless CLI restarts itself once (same interpreter, same arguments) with glibc's huge-page tunable:
# os.execve there only, and only the CLI calls it (test_reexec_only_from_the_cli).
EXEC_ALLOWED = {("safecut/runtime/hugepages.py", "execve")}
# The OpenVINO crash probe runs this same interpreter on safecut.runtime.openvino_session itself, in a child, so
# that a crash in OpenVINO's compile cannot take ComfyUI down (test_the_only_child_process_is_the_openvino_probe).
SUBPROCESS_ALLOWED = {"safecut/runtime/openvino_session.py"}
FORBIDDEN_IMPORTS = {"pickle": "pickle loading", "cPickle": "pickle loading", "dill": "pickle loading",
                     "joblib": "pickle loading", "marshal": "unsafe deserialization", "shelve": "pickle loading",
                     "subprocess": "spawning processes (pip installs belong in install.py)",
                     "pip": "pip at run time", "ensurepip": "pip at run time", "runpy": "running code by name"}
NETWORK_IMPORTS = ("requests", "httpx", "aiohttp", "urllib.request", "http.client", "socket", "huggingface_hub")
NETWORK_NAMES = {"hf_hub_download", "snapshot_download", "urlopen", "urlretrieve"}
FORBIDDEN_CALLS = {("torch", "load"): "torch.load (pickle)", ("pickle", "load"): "pickle.load",
                   ("pickle", "loads"): "pickle.loads", ("os", "system"): "os.system", ("os", "popen"): "os.popen",
                   ("np", "load"): None, ("numpy", "load"): None}   # None: allowed unless allow_pickle=True


def shipped_files() -> list[str]:
    out = [os.path.join(ROOT, "__init__.py")]
    for d in SHIPPED_DIRS:
        for dirpath, _dirs, files in os.walk(os.path.join(ROOT, d)):
            out += [os.path.join(dirpath, f) for f in files if f.endswith(".py")]
    return sorted(out)


def _violations(path: str, root: str = ROOT) -> list[str]:
    rel = os.path.relpath(path, root).replace(os.sep, "/")
    src = open(path, encoding="utf-8").read()
    tree = ast.parse(src, rel)
    bad: list[str] = []

    def add(node, what):
        bad.append(f"{rel}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for n in names:
                top = n.split(".")[0]
                if top in FORBIDDEN_IMPORTS and not (top == "subprocess" and rel in SUBPROCESS_ALLOWED):
                    add(node, f"imports {n}: {FORBIDDEN_IMPORTS[top]} is not allowed in shipped code")
                if rel not in NETWORK_ALLOWED and (rel, n) not in SERVER_IMPORTS and \
                        any(n == m or n.startswith(m + ".") for m in NETWORK_IMPORTS):
                    add(node, f"imports {n}: network access only through safecut/models/modelfiles.py")
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile", "__import__"):
                add(node, f"calls {f.id}(): no eval/exec of dynamic code")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                pair = (f.value.id, f.attr)
                if pair in FORBIDDEN_CALLS and FORBIDDEN_CALLS[pair]:
                    add(node, f"calls {FORBIDDEN_CALLS[pair]}")
                if f.value.id == "os" and f.attr.startswith(("exec", "spawn", "fork")) and \
                        (rel, f.attr) not in EXEC_ALLOWED:
                    add(node, f"calls os.{f.attr}: no spawning processes")
            for kw in node.keywords:
                val = kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
                if kw.arg == "trust_remote_code" and val is not False:
                    add(node, f"passes trust_remote_code={val}: SafeCut never runs remote code")
                if kw.arg == "allow_pickle" and val is not False:
                    add(node, "passes allow_pickle: no pickles")
                if kw.arg == "weights_only" and val is not True:
                    add(node, "passes weights_only != True: no pickles")
            attr = f.attr if isinstance(f, ast.Attribute) else None
            if attr == "from_pretrained" and rel == "safecut/engines/florence.py":
                owner = ast.unparse(f.value)
                if not owner.endswith(("Processor", "Tokenizer")):
                    kws = {k.arg: k.value for k in node.keywords}
                    ok = isinstance(kws.get("use_safetensors"), ast.Constant) and kws["use_safetensors"].value is True
                    ok = ok or any(k.arg is None for k in node.keywords)   # **kwargs: checked below
                    if not ok:
                        add(node, f"{owner}.from_pretrained without use_safetensors=True")
        elif isinstance(node, (ast.Name, ast.Attribute)):
            name = node.id if isinstance(node, ast.Name) else node.attr
            if name in NETWORK_NAMES and rel not in NETWORK_ALLOWED:
                add(node, f"uses {name}: downloads only through safecut/models/modelfiles.py")
    if re.search(r"trust_remote_code['\"]?\s*[:=]\s*True", src):
        add(tree, "sets trust_remote_code to True")
    return bad


def test_shipped_code_has_no_remote_code_pickles_eval_installs_or_stray_downloads():
    files = shipped_files()
    assert os.path.join(ROOT, "safecut", "engines", "florence.py") in files and len(files) > 20
    bad = [v for f in files for v in _violations(f)]
    assert not bad, "security rules broken in shipped code:\n" + "\n".join(bad)


def test_reexec_only_from_the_cli():
    """The one allowed exec restarts `python -m safecut run`; nothing ComfyUI loads may reach it."""
    callers = [os.path.relpath(p, ROOT).replace(os.sep, "/") for p in shipped_files()
               if "reexec_with_huge_pages(" in open(p, encoding="utf-8").read()]
    assert sorted(callers) == ["safecut/app/cli.py", "safecut/runtime/hugepages.py"]


def test_the_scanner_catches_what_it_should(tmp_path):
    """The static rules are only worth something if they fire: feed them a file that breaks each one."""
    pkg = tmp_path / "safecut"
    pkg.mkdir()
    (pkg / "evil.py").write_text(
        "import pickle, subprocess\nimport requests\nfrom huggingface_hub import hf_hub_download\n"
        "x = eval('1')\nexec('y = 2')\nimport torch\nm = torch.load('w.bin')\nimport os\nos.system('pip install x')\n"
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)\nos.execv('/bin/sh', ['sh'])\n"
        "M.from_pretrained('p', trust_remote_code=True)\nhf_hub_download('a', 'b')\n")
    bad = "\n".join(_violations(str(pkg / "evil.py"), str(tmp_path)))
    for what in ("imports pickle", "imports subprocess", "imports requests", "imports huggingface_hub",
                 "uses hf_hub_download", "calls eval()", "calls exec()", "torch.load", "os.system",
                 "allow_pickle", "trust_remote_code=True", "calls os.execv"):
        assert what in bad, f"scanner missed: {what}\n{bad}"


def test_florence_loads_safetensors_only():
    src = open(os.path.join(ROOT, "safecut", "engines", "florence.py"), encoding="utf-8").read()
    assert "use_safetensors=True" in src, "florence.load_model must pass use_safetensors=True to from_pretrained"
    assert florence._WEIGHT_PATTERNS == ("*.safetensors",)


@needs_torch
@needs_llama
@needs_nudenet
def test_a_full_run_never_unpickles_spawns_or_downloads(env, kit, tiny_florence, monkeypatch):
    """Every engine, end to end, with pickle/torch.load/subprocess/network entry points booby-trapped."""
    import torch

    shutil.copyfile(kit["mask"], env.root / "ben2" / "m.onnx")
    shutil.copytree(tiny_florence, env.root / "florence2" / "tiny")
    put_gguf(kit, env, f"{FAMILY}-Q4_K_M.gguf")
    trapped = []

    def trap(name):
        def f(*a, **k):
            trapped.append(name)
            raise AssertionError(f"{name} called during a SafeCut run")
        return f

    for mod, attr in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (os, "system"),
                      (modelfiles, "_hub_download"), (modelfiles, "_url_download")]:
        monkeypatch.setattr(mod, attr, trap(f"{getattr(mod, '__name__', mod)}.{attr}"))
    real_popen = subprocess.Popen

    class Popen(real_popen):  # harmless helpers (platform's `uname -p`) may run; pip/installers may not
        def __init__(self, args, *a, **k):
            if re.search(r"pip|install|conda|uv\b", str(args)):
                trapped.append(f"subprocess {args}")
                raise AssertionError(f"SafeCut tried to run {args}")
            super().__init__(args, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", Popen)
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", trap("urllib.request.urlopen"))
    frames = [subject_image(32, 40), img(5)]
    masks = ben2.remove_background(frames, "m.onnx", device="CPU", threads=1).masks
    caps = florence.caption_images(frames, "tiny", device="CPU", max_new_tokens=5, num_beams=1).captions
    nude = nudenet.detect(frames, device="CPU", threads=1).results
    decisions = gate.KeywordGate().decide_all(caps, [r.is_unsafe for r in nude])
    gate.settle(decisions, guard.SafetyClassifier(FAMILY, "Q4_K_M", threads=1).classify)
    assert len(masks) == 2 and [d.verdict in ("SAFE", "UNSAFE") for d in decisions] == [True, True]
    assert trapped == []


def test_the_only_child_process_is_the_openvino_probe():
    """openvino_session may start one kind of process: this interpreter on its own probe (no pip, no shell)."""
    import sys

    from safecut.runtime import openvino_session

    src = open(os.path.join(ROOT, "safecut", "runtime", "openvino_session.py"), encoding="utf-8").read()
    calls = [n for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "subprocess"]
    assert [c.func.attr for c in calls] == ["run"] and ast.unparse(calls[0].args[0]) == "cmd"
    assert not any(k.arg == "shell" for k in calls[0].keywords)
    assert openvino_session.probe_command("bf16") == [sys.executable, "-m", "safecut.runtime.openvino_session", "--probe", "bf16"]


# ---- optional dependencies ------------------------------------------------------------------------------
def test_missing_dependency_names_the_package_or_its_missing_dependency(tmp_path, monkeypatch):
    from safecut.runtime.deps import require
    from safecut.errors import MissingDependencyError

    (tmp_path / "halfpkg").mkdir()
    (tmp_path / "halfpkg" / "__init__.py").write_text("import safecut_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependencyError, match="it is installed, but importing it failed because its "
                                                     "dependency 'safecut_no_such_dependency' is missing"):
        require("halfpkg")      # seen on a GPU worker: llama_cpp present, its diskcache not
    with pytest.raises(MissingDependencyError, match="'safecut_absent_pkg' for this feature, and it is not installed"):
        require("safecut_absent_pkg")
