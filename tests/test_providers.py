import logging

import pytest

from safecut import providers
from safecut.errors import DeviceUnavailableError


def test_auto_uses_cpu_here_and_reports_it(tiny_ben2_path):
    sess, choice = providers.create_ort_session(tiny_ben2_path, "auto")
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    assert choice.requested == "auto" and choice.used == "CPU" and choice.note == ""


def test_cuda_requested_without_cuda_falls_back_with_one_warning(tiny_ben2_path, caplog):
    providers._warned.clear()
    with caplog.at_level(logging.WARNING, logger="safecut.providers"):
        _, c1 = providers.create_ort_session(tiny_ben2_path, "CUDA")
        _, c2 = providers.create_ort_session(tiny_ben2_path, "cuda")
    assert c1.used == "CPU" and "unavailable" in c1.note and c1.describe() == "CPU (CUDA unavailable)"
    assert c2.used == "CPU"
    assert len([r for r in caplog.records if "CUDA was requested" in r.getMessage()]) == 1


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


def test_torch_device_auto_is_cpu_without_cuda():
    c = providers.torch_device("auto")
    assert c.used == "CPU"
    c2 = providers.torch_device("CUDA")
    assert c2.used == "CPU" and c2.note
    with pytest.raises(DeviceUnavailableError):
        providers.torch_device("CUDA", strict=True)
