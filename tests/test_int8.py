"""BEN2 INT8 on OpenVINO (NNCF) and the quality probe that decides whether ``auto`` may use a lower precision.

Real quantization of small local models (seconds each): a window-attention BEN2-shaped graph whose INT8 keeps the
mask (the probe passes), and a net with one huge-range activation channel whose per-tensor INT8 wipes the channel
that carries the mask (the probe fails and ``auto`` stays f32). The CPU class is faked where ``auto``'s choice
depends on it; the numbers themselves come from this machine's OpenVINO.
"""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest

from safecut.engines import ben2, ben2_precision, mask_quality
from safecut.models import precision_verdicts, quantized_store
from safecut.runtime import openvino_session, providers
from safecut.runtime.cache import get_cache

pytest.importorskip("nncf", reason="nncf is not installed (pip install nncf; requirements-dev.txt)")
pytestmark = pytest.mark.skipif(openvino_session.version() is None, reason="openvino is not installed")

ICE_LAKE = "avx avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512vbmi"   # int8 candidate
AVX2 = "avx avx2 fma f16c bmi2"                                                                # no candidate


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Verdict files of this test's own, nothing remembered in this process, no models left loaded."""
    monkeypatch.setenv("SAFECUT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(openvino_session, "_verdicts", {})
    providers._warned.clear()
    yield
    get_cache().unload()


def _good_model(folder) -> str:
    from safecut.testkit.tiny_swin_ben2 import build_tiny

    return build_tiny(str(folder / "ben2" / "swin-ben2.onnx"))


def _bad_model(folder) -> str:
    """input [1,3,64,64] -> Conv 3->2: channel 0 = 1e4 x red (huge range), channel 1 = green - 0.5 (the mask's
    signal, |x| <= 0.5) -> Conv 2->1 reading channel 1 only -> Sigmoid. Per-tensor INT8 of the activation
    between the convs has a step of ~1e4/127, so channel 1 rounds to 0 and the mask is lost."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1 = np.zeros((2, 3, 1, 1), np.float32)
    w1[0, 0], w1[1, 1] = 1e4, 1.0
    b1 = np.array([0.0, -0.5], np.float32)
    w2 = np.zeros((1, 2, 1, 1), np.float32)
    w2[0, 1] = 20.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w1", "b1"], ["h"]), helper.make_node("Conv", ["h", "w2"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["output"])], "bad_int8",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 64, 64])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    path = folder / "ben2" / "bad-int8.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """Both models and their INT8 IRs, made once by the product's own quantizer (default location)."""
    from safecut.engines.ben2_quantize import quantize_ben2

    d = tmp_path_factory.mktemp("int8")
    good, bad = _good_model(d), _bad_model(d)
    return {"good": good, "bad": bad, "good_ir": quantize_ben2(good), "bad_ir": quantize_ben2(bad)}


# ---- the quantizer ----------------------------------------------------------------------------------
def test_quantizer_writes_an_int8_ir_beside_the_model_keyed_by_sha256(quantized):
    good, ir = quantized["good"], quantized["good_ir"]
    assert ir == quantized_store.int8_path(good)
    assert os.path.dirname(ir) == os.path.join(os.path.dirname(good), "safecut-int8")
    assert os.path.isfile(ir) and os.path.isfile(ir[:-4] + ".bin")
    xml = open(ir, encoding="utf-8").read()
    assert xml.count('type="FakeQuantize"') >= 4        # int8 really inserted (weights and activations)


def test_int8_runs_on_openvino_and_names_itself(quantized):
    images = ben2_precision.probe_photos()
    run = ben2.remove_background(images, quantized["good"], device="CPU", runtime="OpenVINO int8")
    assert run.device.describe() == "CPU · OpenVINO int8"
    ref = ben2.remove_background(images, quantized["good"], device="CPU", runtime="OpenVINO f32")
    assert mask_quality.compare(ref.masks, run.masks)["iou"] >= 0.99


def test_a_missing_int8_model_is_a_clear_error_naming_the_command(tmp_path):
    good = _good_model(tmp_path)
    with pytest.raises(Exception) as e:
        ben2.remove_background(ben2_precision.probe_photos(), good, device="CPU", runtime="OpenVINO int8")
    msg = str(e.value)
    assert "python -m safecut models quantize swin-ben2.onnx" in msg and "safecut-int8" in msg


def test_calibration_folder_must_hold_images(tmp_path, quantized):
    from safecut.engines.ben2_quantize import quantize_ben2
    from safecut.errors import BadInputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="holds no images"):
        quantize_ben2(quantized["good"], str(tmp_path / "x.xml"), calibration=str(tmp_path / "empty"))
    with pytest.raises(BadInputError, match=r"\.xml"):
        quantize_ben2(quantized["good"], str(tmp_path / "x.onnx"))


# ---- the quality probe ------------------------------------------------------------------------------
def _runner(path):
    calls = []

    def run(images, runtime):
        calls.append(runtime)
        return ben2._probe_runner(path, 0)(images, runtime)
    return run, calls


def test_good_int8_passes_the_probe_with_its_figures(quantized):
    run, _ = _runner(quantized["good"])
    v = ben2_precision.verify(quantized["good"], "int8", run)
    assert v["passed"], v
    assert v["iou"] >= mask_quality.LIMITS["iou"] and v["mean_abs"] <= mask_quality.LIMITS["mean_abs"]
    assert v["ran_as"] == "OpenVINO int8" and v["images"] == 2


def test_bad_int8_fails_the_probe_and_auto_stays_f32(quantized, monkeypatch, caplog):
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", ICE_LAKE)   # a class where int8 is auto's candidate
    images = ben2_precision.probe_photos()
    with caplog.at_level(logging.WARNING):
        run = ben2.remove_background(images, quantized["bad"], device="CPU")   # auto: runs the probe once
    v = precision_verdicts.get(quantized["bad"], "int8")
    assert v is not None and not v["passed"] and "IoU" in v["why"], v
    assert run.device.describe() == "CPU · OpenVINO f32 (int8 failed the probe)"
    assert any("failed the quality probe" in r.getMessage() for r in caplog.records)


def test_auto_uses_int8_after_a_pass_and_reuses_the_verdict(quantized, monkeypatch):
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", ICE_LAKE)
    images = ben2_precision.probe_photos()
    probes = []
    real = ben2_precision.verify
    monkeypatch.setattr(ben2_precision, "verify", lambda *a, **k: probes.append(1) or real(*a, **k))
    first = ben2.remove_background(images, quantized["good"], device="CPU")
    assert first.device.runtime.startswith("OpenVINO int8 (verified: IoU ")
    second = ben2.remove_background(images, quantized["good"], device="CPU")
    assert second.device.runtime == first.device.runtime and probes == [1]   # the verdict was reused
    stored = json.load(open(os.path.join(os.environ["SAFECUT_CACHE_DIR"], precision_verdicts.FILE_NAME)))
    assert len(stored) == 1 and next(iter(stored)).startswith(precision_verdicts.key(quantized["good"], "int8")[:64])


def test_a_changed_model_file_invalidates_the_verdict(quantized, tmp_path):
    copy = tmp_path / "ben2" / "copy.onnx"
    copy.parent.mkdir()
    shutil.copy(quantized["good"], copy)
    run, _ = _runner(quantized["good"])
    precision_verdicts.record(str(copy), "int8", True, "recorded for the old bytes")
    assert precision_verdicts.get(str(copy), "int8")["passed"]
    with open(copy, "ab") as f:   # other bytes: another sha256 (mtime and size change too)
        f.write(b"\0")
    assert precision_verdicts.get(str(copy), "int8") is None


def test_auto_without_the_int8_model_or_with_the_probe_off_runs_f32_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", ICE_LAKE)
    good = _good_model(tmp_path)
    images = ben2_precision.probe_photos()[:1]
    run = ben2.remove_background(images, good, device="CPU")
    assert run.device.describe() == "CPU · OpenVINO f32 (int8 not made)"
    from safecut.engines.ben2_quantize import quantize_ben2

    quantize_ben2(good)
    monkeypatch.setenv("SAFECUT_PRECISION_PROBE", "0")
    run = ben2.remove_background(images, good, device="CPU")
    assert run.device.describe() == "CPU · OpenVINO f32 (int8 not verified)"
    assert precision_verdicts.get(good, "int8") is None   # nothing ran, nothing recorded


def test_no_candidate_on_avx2_means_no_probe(quantized, monkeypatch):
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", AVX2)
    monkeypatch.setattr(ben2_precision, "verify", lambda *a, **k: pytest.fail("probe ran without a candidate"))
    run = ben2.remove_background(ben2_precision.probe_photos()[:1], quantized["good"], device="CPU")
    assert run.device.describe() == "CPU · OpenVINO f32"


def test_bf16_that_does_not_really_run_is_never_a_pass(quantized, monkeypatch):
    """On a CPU without native bf16 an 'OpenVINO bf16' request runs f32: the probe records a failure, not a pass
    measured on f32 results."""
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", AVX2)
    run, _ = _runner(quantized["good"])
    v = ben2_precision.verify(quantized["good"], "bf16", run)
    assert not v["passed"] and "ran as OpenVINO f32" in v["why"]


def test_cli_verify_precision_prints_the_verdict_and_exits_by_it(quantized, capsys, monkeypatch):
    from safecut.app.cli import main

    monkeypatch.setenv("SAFECUT_MODELS_DIR", os.path.dirname(os.path.dirname(quantized["good"])))
    assert main(["models", "verify", "swin-ben2.onnx", "--precision", "int8"]) == 0
    assert capsys.readouterr().out.startswith("PASS  swin-ben2.onnx int8: IoU ")
    assert main(["models", "verify", "bad-int8.onnx", "--precision", "int8"]) == 1
    assert "FAIL  bad-int8.onnx int8: IoU " in capsys.readouterr().out


# ---- the figures ------------------------------------------------------------------------------------
def test_mask_figures_and_limits():
    m = np.zeros((40, 40), np.float32)
    m[10:30, 10:30] = 1.0
    same = mask_quality.compare([m], [m])
    assert same["iou"] == 1.0 and same["mean_abs"] == 0.0 and mask_quality.judge(same)[0]
    soft = m.copy()
    soft[10:30, 10] = 0.3                     # one edge column flips side: 4 % of the edge band
    fig = mask_quality.compare([m], [soft])
    assert fig["iou"] == pytest.approx(0.95) and fig["edge_p95"] == 0.0
    soft[10:30, 10:13] = 0.3                  # three columns: 12 % of the band moves by 0.7
    fig = mask_quality.compare([m], [soft])
    assert fig["iou"] == pytest.approx(0.85) and fig["edge_p95"] == pytest.approx(0.7)
    ok, why = mask_quality.judge(fig)
    assert not ok and "IoU 0.8500 < 0.99" in why and "edge p95" in why
    with pytest.raises(ValueError):
        mask_quality.compare([m], [m[:-1]])
