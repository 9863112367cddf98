import os

import numpy as np
import pytest
import torch

from conftest import TINY_BEN2, ort_has_cuda, subject_image
from safecut.engines import ben2
from safecut.runtime.cache import get_cache
from safecut.errors import BadInputError


AUTO_DEVICE = "CUDA" if ort_has_cuda() else "CPU"   # what "auto" runs on this machine (checked on a GPU machine too)


@pytest.fixture()
def ben2_dir(tiny_ben2_path, monkeypatch):
    monkeypatch.setenv("SAFECUT_MODELS_DIR", os.path.dirname(os.path.dirname(tiny_ben2_path)))
    return tiny_ben2_path


def test_session_io_is_read_from_the_model(ben2_dir):
    m = ben2.load_model(ben2_dir, "CPU")
    assert (m.input_name, m.output_name, m.size, m.dynamic_batch) == ("input", "output", (1024, 1024), True)
    assert m.session.get_outputs()[0].type == "tensor(float16)"  # like the published BEN2


def test_preprocessing_is_a_registry_property():
    p = ben2.preprocess_params("/x/BEN2_Base.onnx")
    assert p["size"] == 1024 and tuple(p["mean"]) == (0, 0, 0) and tuple(p["std"]) == (1, 1, 1)


def test_float16_output_is_cast_before_minmax():
    raw = np.array([[[[0.25, 0.5], [0.75, 1.0]]]], np.float16)
    (mask,) = ben2.postprocess(raw, [(2, 2)])
    assert mask.dtype == np.float32
    np.testing.assert_allclose(mask, [[0, 1 / 3], [2 / 3, 1]], atol=1e-3)


def test_mask_follows_the_subject_and_original_size(ben2_dir):
    img = subject_image(96, 128)
    run = ben2.remove_background([img], TINY_BEN2, device="CPU")
    (mask,) = run.masks
    assert mask.shape == (96, 128) and mask.dtype == np.float32
    assert mask[48, 64] > 0.9 and mask[5, 5] < 0.1  # subject kept, background removed
    assert run.device.used == "CPU"


def test_batch_equals_one_by_one_and_mixed_sizes(ben2_dir):
    imgs = [subject_image(96, 128), subject_image(64, 64), np.random.default_rng(0).random((50, 70, 3), np.float32)]
    together = ben2.remove_background(imgs, TINY_BEN2, device="CPU", batch_size=3).masks
    alone = [ben2.remove_background([im], TINY_BEN2, device="CPU").masks[0] for im in imgs]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_progress_is_called_per_image_and_can_interrupt(ben2_dir):
    calls = []

    class Stop(Exception):
        pass

    def progress(n):
        calls.append(n)
        if sum(calls) >= 2:
            raise Stop

    with pytest.raises(Stop):
        ben2.remove_background([subject_image()] * 5, TINY_BEN2, device="CPU", batch_size=1, progress=progress)
    assert calls == [1, 1]  # stopped after the second image, never ran the rest


def test_model_is_loaded_once_and_keep_loaded_false_unloads(ben2_dir):
    cache = get_cache()
    cache.unload()
    cache.reset_stats()
    ben2.remove_background([subject_image()], TINY_BEN2, device="CPU")
    ben2.remove_background([subject_image()], TINY_BEN2, device="CPU")
    assert cache.stats()["loads"] == 1 and cache.stats()["hits"] >= 1
    ben2.remove_background([subject_image()], TINY_BEN2, device="CPU", keep_loaded=False)
    assert not [k for k in cache.keys() if k.kind == "ben2"]


def test_bad_image_shape_is_named(ben2_dir):
    with pytest.raises(BadInputError, match="image 1"):
        ben2.remove_background([subject_image(), np.zeros((4, 4), np.float32)], TINY_BEN2, device="CPU")


def test_composite_backgrounds():
    img = np.full((2, 2, 3), 0.5, np.float32)
    mask = np.array([[1.0, 0.0], [0.5, 0.0]], np.float32)
    rgb, rgba = ben2.composite(img, mask, "white")
    np.testing.assert_allclose(rgb[0, 1], [1, 1, 1]) and np.testing.assert_allclose(rgb[0, 0], [0.5] * 3)
    np.testing.assert_allclose(rgba[..., 3], mask)
    rgb, _ = ben2.composite(img, mask, "custom", "#FF0000")
    np.testing.assert_allclose(rgb[0, 1], [1, 0, 0])
    np.testing.assert_allclose(ben2.parse_color("0,255,0"), (0, 1, 0))
    with pytest.raises(BadInputError, match="color"):
        ben2.parse_color("purple-ish")


def test_refine_foreground_removes_background_bleed():
    h = w = 64
    img = np.zeros((h, w, 3), np.float32)
    img[..., 2] = 1.0                       # blue background
    img[:, : w // 2, 0] = 1.0               # red subject on the left half…
    img[:, : w // 2, 2] = 0.0
    mask = np.zeros((h, w), np.float32)
    mask[:, : w // 2] = 1.0
    mask[:, w // 2 - 1] = 0.5               # soft edge pixel: observed colour is a red/blue mix
    img[:, w // 2 - 1] = (0.5, 0, 0.5)
    fg = ben2.refine_foreground(img, mask)
    assert fg[10, w // 2 - 1, 0] > 0.8 and fg[10, w // 2 - 1, 2] < 0.2   # edge colour recovered as red


def test_node_contract_and_outputs(pack, tiny_ben2_path, monkeypatch):
    monkeypatch.setenv("SAFECUT_MODELS_DIR", os.path.dirname(os.path.dirname(tiny_ben2_path)))
    node_cls = pack.NODE_CLASS_MAPPINGS["SafeCutBEN2RemoveBackground"]
    assert node_cls.INPUT_TYPES()["required"]["model"][0][:2] == [TINY_BEN2, "BEN2_Base.onnx"]
    batch = torch.from_numpy(np.stack([subject_image(), subject_image()]))
    out = node_cls().run(batch, TINY_BEN2, "auto", 0, "white", "#00FF00", True, True)
    image, mask, rgba, info = out["result"]
    assert image.shape == (2, 96, 128, 3) and mask.shape == (2, 96, 128) and rgba.shape == (2, 96, 128, 4)
    assert image.dtype == torch.float32 and float(image.max()) <= 1.0 and float(image.min()) >= 0.0
    assert torch.allclose(rgba[..., 3], mask)
    assert float(image[0, 2, 2].min()) > 0.95      # white background where the mask is 0
    assert AUTO_DEVICE in info and out["ui"]["device"][0].split(" · ")[0] == AUTO_DEVICE and out["ui"]["device"][0] in info


def test_node_cuda_request_reports_what_ran(pack, tiny_ben2_path, monkeypatch):
    monkeypatch.setenv("SAFECUT_MODELS_DIR", os.path.dirname(os.path.dirname(tiny_ben2_path)))
    node = pack.NODE_CLASS_MAPPINGS["SafeCutBEN2RemoveBackground"]()
    out = node.run(torch.from_numpy(subject_image()[None]), TINY_BEN2, "CUDA", 1, "alpha", "", False, False)
    assert out["ui"]["device"][0] == "CUDA" if AUTO_DEVICE == "CUDA" else \
        out["ui"]["device"][0].startswith("CPU · ") and out["ui"]["device"][0].endswith(" (CUDA unavailable)")


def _short_batch_model(path: str) -> str:
    """A BEN2-shaped ONNX (dynamic batch) that returns only the first image's mask: a model bug to catch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["m"], keepdims=1),
             helper.make_node("Slice", ["m", "start", "end", "axes0"], ["first"]),
             helper.make_node("Sigmoid", ["first"], ["s"]),
             helper.make_node("Cast", ["s"], ["output"], to=TensorProto.FLOAT16)]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("axes", [1]), ("start", [0]), ("end", [1]), ("axes0", [0]))]
    g = helper.make_graph(nodes, "short", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT16, [1, 1, 32, 32])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_a_short_model_output_is_an_error_not_a_shorter_batch(tmp_path):
    from safecut.errors import SafeCutError

    path = _short_batch_model(str(tmp_path / "short.onnx"))
    one = ben2.remove_background([subject_image()], path, device="CPU", keep_loaded=False)
    assert len(one.masks) == 1                                   # one image in, one mask out: fine
    with pytest.raises(SafeCutError, match="returned 1 mask\\(s\\) for 2 image\\(s\\)"):
        ben2.remove_background([subject_image()] * 2, path, device="CPU", batch_size=2, keep_loaded=False)


def test_ben2_session_runs_without_the_cpu_arena(ben2_dir):
    """The arena would keep every block it grew (2x the peak of a one-shot 1024² graph, a slow second call);
    the memory pattern stays: one pre-planned block per run was both leaner and faster (ben2.ORT_SESSION)."""
    m = ben2.load_model(ben2_dir, "CPU", runtime="ONNX Runtime")
    from safecut.runtime import providers

    so = providers.session_options(1, **ben2.session_settings())
    assert so.enable_cpu_mem_arena is False and so.enable_mem_pattern is True
    assert providers.session_options(1).enable_cpu_mem_arena is True       # other models keep ORT's default
    got = m.session.get_session_options()
    assert got.enable_cpu_mem_arena is False and got.enable_mem_pattern is True


def test_ben2_session_spins_unless_told_and_skips_the_optimized_graph_cache(ben2_dir, monkeypatch):
    """BEN2 spins (2 threads waking per op cost ~8 % a call); the optimized-graph cache is opt-in (+1 GB peak)."""
    from safecut.runtime import providers

    key = "session.intra_op.allow_spinning"
    monkeypatch.delenv("SAFECUT_ORT_SPINNING", raising=False)
    monkeypatch.delenv("SAFECUT_ORT_OPT_CACHE", raising=False)
    assert providers.session_options(1, **ben2.session_settings()).get_session_config_entry(key) == "1"
    assert providers.session_options(1).get_session_config_entry(key) == "0"          # other models do not
    assert ben2._optimized_cache_path(ben2_dir) is None
    monkeypatch.setenv("SAFECUT_ORT_SPINNING", "0")
    assert providers.session_options(1, **ben2.session_settings()).get_session_config_entry(key) == "0"
    monkeypatch.setenv("SAFECUT_ORT_OPT_CACHE", "1")
    assert ben2._optimized_cache_path(ben2_dir).endswith(".onnx")


def test_cache_charges_ben2_its_activations_then_its_measured_growth(ben2_dir, monkeypatch):
    cache = get_cache()
    cache.unload()
    m = ben2.load_model(ben2_dir, "CPU")
    est = ben2.estimated_bytes(m)
    assert est == os.path.getsize(ben2_dir) + ben2.ACTIVATION_BYTES_PER_PIXEL * 1024 * 1024   # not the file size
    m.measured_bytes = est * 3
    assert ben2.estimated_bytes(m) == est * 3                    # a measured growth above the estimate wins
    # through the engine: the first run re-charges the entry with what the process grew by (faked here)
    peaks = iter([10 << 30, 30 << 30])                           # before the load, after the first run
    monkeypatch.setattr(ben2, "_peak_rss_bytes", lambda: next(peaks, 30 << 30))
    ben2.remove_background([subject_image()], TINY_BEN2, device="CPU")
    entry = next(e for e in cache.stats()["models"] if e["key"].startswith("ben2:"))
    assert entry["bytes"] == 20 << 30


def test_cache_resize_evicts_others_when_over_budget():
    from safecut.runtime.cache import ModelCache, ModelKey

    c = ModelCache(max_models=5, max_bytes=100)
    closed = []
    a, b = ModelKey("x", "a"), ModelKey("x", "b")
    c.get(a, lambda: "A", size=40, closer=closed.append)
    c.get(b, lambda: "B", size=40, closer=closed.append)
    c.resize(b, 90)                                              # B really holds 90: A must go
    assert closed == ["A"] and c.keys() == [b] and c.stats()["resident_bytes"] == 90


def test_quantized_model_without_huge_pages_warns_once_with_the_fix(ben2_dir, tmp_path, monkeypatch, caplog):
    import onnx

    from safecut.runtime import hugepages, providers

    m = onnx.load(ben2_dir)
    m.producer_name = "onnx.quantize"                     # what ORT's quantizer writes
    q = str(tmp_path / "q.onnx")
    onnx.save(m, q)
    monkeypatch.setattr(hugepages, "status", lambda *a, **k: "off")
    monkeypatch.setattr(providers, "_warned", set())
    pins = []
    monkeypatch.setattr(hugepages, "pin_mmap_threshold", lambda: pins.append(1))
    with caplog.at_level("WARNING", logger="safecut.runtime.providers"):
        ben2.load_model(q, "CPU")
        ben2.load_model(q, "CPU")
        ben2.load_model(ben2_dir, "CPU")                  # fp32 keeps the memory pattern: nothing to say
    msgs = [r.getMessage() for r in caplog.records if "huge pages" in r.getMessage()]
    assert len(msgs) == 1 and "q.onnx" in msgs[0] and hugepages.TUNABLE in msgs[0]
    assert len(pins) == 2                                 # each quantized load pins glibc's threshold; fp32 not
    monkeypatch.setattr(hugepages, "status", lambda *a, **k: "tunable")
    monkeypatch.setattr(providers, "_warned", set())
    caplog.clear()
    with caplog.at_level("WARNING", logger="safecut.runtime.providers"):
        ben2.load_model(q, "CPU")
    assert not [r for r in caplog.records if "huge pages" in r.getMessage()]


def test_cuda_sessions_run_without_the_memory_pattern(tiny_ben2_path, monkeypatch):
    """Measured on an H200 (bench/gpu.py): 5.4 instead of 7.5 GB held after BEN2 runs, same speed."""
    from safecut.runtime import providers

    seen = []
    real = providers.create_ort_session

    def spy(*args, **kw):
        seen.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(providers, "create_ort_session", spy)
    ben2.load_model(tiny_ben2_path, "CPU", runtime="ONNX Runtime")
    monkeypatch.setattr(providers, "ort_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    ben2.load_model(tiny_ben2_path, "auto")
    assert seen[0]["mem_pattern"] is True and seen[1]["mem_pattern"] is False
    assert seen[1]["cuda"] == {"cudnn_conv_algo_search": "HEURISTIC"}


def test_preprocess_matches_the_plain_hwc_formula():
    """Channels resized straight into NCHW must give exactly what stacking HWC images and transposing gives."""
    from types import SimpleNamespace

    rng = np.random.default_rng(3)
    mean = np.asarray([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    images = [rng.random((48, 80, 3), np.float32), rng.random((64, 64, 4), np.float32),   # RGBA: alpha ignored
              rng.random((64, 64, 3), np.float32)]                                        # already model-sized
    for dtype in (np.float32, np.float16):
        m = SimpleNamespace(size=(64, 64), mean=mean, std=std, input_dtype=dtype)
        hwc = np.stack([ben2._resize(im[..., :3], m.size) for im in images]).transpose(0, 3, 1, 2)
        want = np.ascontiguousarray((hwc - mean) / std, dtype=dtype)
        got = ben2.preprocess(images, m)
        assert got.dtype == dtype and got.shape == (3, 3, 64, 64) and got.flags.c_contiguous
        assert np.array_equal(got, want)
