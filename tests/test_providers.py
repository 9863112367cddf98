import logging

import pytest

from conftest import ort_has_cuda, torch_has_cuda
from safecut.runtime import providers
from safecut.errors import DeviceUnavailableError


needs_no_cuda_ep = pytest.mark.skipif(ort_has_cuda(), reason="onnxruntime has a CUDA provider here: no fallback to see")


def _cpu_only_ort(monkeypatch, driver):
    monkeypatch.setattr(providers, "ort_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(providers, "gpu_driver", lambda: driver)
    monkeypatch.setattr(providers, "_warned", set())


def test_auto_without_a_gpu_is_quietly_cpu(tiny_ben2_path, monkeypatch, caplog):
    _cpu_only_ort(monkeypatch, None)
    with caplog.at_level(logging.WARNING, logger="safecut.runtime.providers"):
        sess, choice = providers.create_ort_session(tiny_ben2_path, "auto")
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    assert choice == providers.DeviceChoice("auto", "CPU") and not caplog.records


def test_auto_beside_a_gpu_that_cpu_only_onnxruntime_cannot_use_says_so(tiny_ben2_path, monkeypatch, caplog):
    _cpu_only_ort(monkeypatch, "CUDA")
    with caplog.at_level(logging.WARNING, logger="safecut.runtime.providers"):
        for _ in range(2):
            sess, choice = providers.create_ort_session(tiny_ben2_path, "auto", strict=True)  # auto allows CPU
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    assert choice.describe() == "CPU (GPU unused: onnxruntime is CPU-only)"
    providers.refuse_fallback(choice, strict=True)          # auto + strict: CPU is allowed, the note only informs
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "pip install onnxruntime-gpu" in warnings[0]


@needs_no_cuda_ep
def test_auto_when_the_cuda_provider_fails_to_load_says_so(tiny_ben2_path, monkeypatch, caplog):
    # the provider is listed (onnxruntime-gpu installed) but the session cannot get it: the classic silent fallback
    monkeypatch.setattr(providers, "ort_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(providers, "_warned", set())
    monkeypatch.setattr(providers, "gpu_driver", lambda: None)     # onnxruntime-gpu on a machine without a GPU
    with caplog.at_level(logging.WARNING, logger="safecut.runtime.providers"):
        sess, choice = providers.create_ort_session(tiny_ben2_path, "auto")
    assert choice == providers.DeviceChoice("auto", "CPU") and not caplog.records   # CPU is right there: quiet
    monkeypatch.setattr(providers, "gpu_driver", lambda: "CUDA")
    with caplog.at_level(logging.WARNING, logger="safecut.runtime.providers"):
        sess, choice = providers.create_ort_session(tiny_ben2_path, "auto")
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    assert choice.describe() == "CPU (GPU unused: CUDA provider failed)"
    assert "cuDNN" in caplog.text


@pytest.mark.skipif(not ort_has_cuda(), reason="needs onnxruntime-gpu and a GPU (run on a GPU machine)")
def test_auto_uses_cuda_when_it_is_usable(tiny_ben2_path):
    sess, choice = providers.create_ort_session(tiny_ben2_path, "auto")
    assert sess.get_providers()[0] == "CUDAExecutionProvider"
    assert choice == providers.DeviceChoice("auto", "CUDA")


def test_gpu_driver_probe(monkeypatch):
    import ctypes

    loaded = []

    def fake_cdll(name):
        loaded.append(name)
        if name != "libcuda.so.1":
            raise OSError(name)

    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(providers, "_driver_probe", False)
    assert providers.gpu_driver() == "CUDA" and providers.gpu_driver() == "CUDA" and loaded == ["libcuda.so.1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")       # GPUs hidden on purpose: nothing to report
    monkeypatch.setattr(providers, "_driver_probe", False)
    assert providers.gpu_driver() is None and loaded == ["libcuda.so.1"]


@needs_no_cuda_ep
def test_cuda_requested_without_cuda_falls_back_with_one_warning(tiny_ben2_path, caplog):
    providers._warned.clear()
    with caplog.at_level(logging.WARNING, logger="safecut.runtime.providers"):
        _, c1 = providers.create_ort_session(tiny_ben2_path, "CUDA")
        _, c2 = providers.create_ort_session(tiny_ben2_path, "cuda")
    assert c1.used == "CPU" and "unavailable" in c1.note and c1.describe() == "CPU (CUDA unavailable)"
    assert c2.used == "CPU"
    assert len([r for r in caplog.records if "CUDA was requested" in r.getMessage()]) == 1


@needs_no_cuda_ep
def test_strict_refuses_fallback(tiny_ben2_path):
    with pytest.raises(DeviceUnavailableError, match="strict"):
        providers.create_ort_session(tiny_ben2_path, "CUDA", strict=True)


def test_provider_list_always_ends_with_cpu():
    assert providers.ort_provider_list("CPU") == ["CPUExecutionProvider"]
    assert providers.ort_provider_list("CUDA") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert providers.ort_provider_list("auto")[-1] == "CPUExecutionProvider"


def test_unknown_provider_is_a_clear_error():
    with pytest.raises(ValueError, match="not one of"):
        providers.normalize("TPU")


def test_session_options_follow_the_guide():
    import onnxruntime as ort

    so = providers.session_options(3)
    assert so.intra_op_num_threads == 3 and so.inter_op_num_threads == 1
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert providers.session_options(0).intra_op_num_threads == providers.physical_cores()


def test_threads_env_override(monkeypatch):
    monkeypatch.setenv("SAFECUT_THREADS", "5")
    assert providers.default_threads(0) == 5 and providers.default_threads(2) == 2


def test_optimized_graph_is_saved_then_reused(tiny_ben2_path, tmp_path):
    opt = str(tmp_path / "opt.onnx")
    providers.create_ort_session(tiny_ben2_path, "CPU", optimized_cache=opt)
    assert (tmp_path / "opt.onnx").stat().st_size > 0
    sess, choice = providers.create_ort_session(tiny_ben2_path, "CPU", optimized_cache=opt)
    assert choice.used == "CPU" and sess.get_inputs()[0].name == "input"


def test_broken_optimized_cache_falls_back_to_model(tiny_ben2_path, tmp_path):
    opt = tmp_path / "opt.onnx"
    opt.write_bytes(b"garbage")
    import os
    import time

    later = time.time() + 10
    os.utime(opt, (later, later))
    sess, _ = providers.create_ort_session(tiny_ben2_path, "CPU", optimized_cache=str(opt))
    assert sess.get_inputs()[0].name == "input"


def test_corrupt_onnx_names_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01not really onnx")
    with pytest.raises(Exception, match="broken.onnx.*fetch it again"):
        providers.create_ort_session(str(bad), "CPU")


@pytest.mark.skipif(torch_has_cuda(), reason="torch sees a GPU here: no fallback to see")
def test_torch_device_auto_is_cpu_without_cuda():
    c = providers.torch_device("auto")
    assert c.used == "CPU"
    c2 = providers.torch_device("CUDA")
    assert c2.used == "CPU" and c2.note
    with pytest.raises(DeviceUnavailableError):
        providers.torch_device("CUDA", strict=True)


@pytest.mark.skipif(not torch_has_cuda(), reason="needs a CUDA build of torch and a GPU (run on a GPU machine)")
def test_torch_device_auto_is_cuda_with_cuda():
    assert providers.torch_device("auto") == providers.DeviceChoice("auto", "CUDA")
    assert providers.torch_device("CUDA", strict=True) == providers.DeviceChoice("CUDA", "CUDA")


def test_torch_device_auto_beside_a_gpu_with_cpu_only_torch_says_so(monkeypatch, caplog):
    import torch

    monkeypatch.setattr(providers, "cuda_usable", lambda: False)
    monkeypatch.setattr(providers, "gpu_driver", lambda: "CUDA")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(providers, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="safecut.runtime.providers"):
        c = providers.torch_device("auto", strict=True)
    assert c.describe() == "CPU (GPU unused: torch is CPU-only)" and "CPU-only" in caplog.text
    monkeypatch.setattr(providers, "gpu_driver", lambda: None)   # no GPU at all: quietly CPU
    assert providers.torch_device("auto") == providers.DeviceChoice("auto", "CPU")


def test_cuda_options_env(monkeypatch):
    monkeypatch.setattr(providers, "CUDA_OPTIONS", {"arena_extend_strategy": "kSameAsRequested"})
    monkeypatch.setenv("SAFECUT_ORT_CUDA_OPTIONS", '{"cudnn_conv_algo_search": "HEURISTIC", "device_id": 0}')
    assert providers.cuda_options() == {"arena_extend_strategy": "kSameAsRequested",
                                        "cudnn_conv_algo_search": "HEURISTIC", "device_id": "0"}
    model = {"cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": "0"}      # a model's own, under the user's
    assert providers.cuda_options(model) == {"arena_extend_strategy": "kSameAsRequested", "use_tf32": "0",
                                             "cudnn_conv_algo_search": "HEURISTIC", "device_id": "0"}
    monkeypatch.delenv("SAFECUT_ORT_CUDA_OPTIONS")
    assert providers.cuda_options(model)["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    for bad in ("HEURISTIC", "[1]"):
        monkeypatch.setenv("SAFECUT_ORT_CUDA_OPTIONS", bad)
        with pytest.raises(ValueError, match="SAFECUT_ORT_CUDA_OPTIONS must be a JSON object"):
            providers.cuda_options()
