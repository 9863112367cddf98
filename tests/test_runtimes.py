"""CPU numerics: what safecut.runtime.cpu decides per CPU class, the OpenVINO crash probe and every fallback to ONNX
Runtime, and OpenVINO's results against ONNX Runtime fp32 (a BEN2-shaped graph, NudeNet's trained detector)."""
from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest
from PIL import Image

from safecut.engines import ben2, nudenet
from safecut.runtime import cpu, openvino_session, providers, sessions
from safecut.runtime.cache import get_cache

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTOS = os.path.join(HERE, "data", "photos")
needs_ov = pytest.mark.skipif(openvino_session.version() is None, reason="openvino is not installed (pip install openvino)")

AMX_XEON = "avx avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ZEN4 = "avx avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512vbmi avx512_bf16"
AVX2 = "avx avx2 fma f16c bmi2"
ICE_LAKE = "avx avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512vbmi"   # no bf16 at all


@pytest.fixture()
def flags(monkeypatch):
    def use(text):
        monkeypatch.setenv("SAFECUT_CPU_FLAGS", text)
    yield use


@pytest.fixture()
def fresh_probe(tmp_path, monkeypatch):
    """A probe verdict store of this test's own, and no verdicts remembered in this process."""
    monkeypatch.setenv("SAFECUT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(openvino_session, "_verdicts", {})
    providers._warned.clear()
    return tmp_path / "cache" / "openvino-probe.json"


def crash_with(code: str):
    return lambda precision: [sys.executable, "-c", code]


# ---- what the CPU class decides -------------------------------------------------------------------
@pytest.mark.parametrize("text, cls, ben2_rt, lower, florence, native", [
    (AMX_XEON, "AMX", ("openvino", "f32"), "bf16", "bf16", True),
    (ZEN4, "AVX-512", ("openvino", "f32"), "int8", "fp32", True),
    (ICE_LAKE, "AVX-512", ("openvino", "f32"), "int8", "fp32", False),
    (AVX2, "AVX2", ("openvino", "f32"), None, "fp32", False),
    ("sse4_2", "baseline", ("onnxruntime", "f32"), None, "fp32", False),
])
def test_cpu_class_decides_the_auto_numerics(flags, text, cls, ben2_rt, lower, florence, native):
    flags(text)
    assert cpu.cpu_class() == cls
    assert cpu.ben2_lower_precision() == lower   # only ever run after the quality probe passed (ben2_precision)
    assert cpu.bf16_native() == native   # AVX512-BF16 or AMX: bf16 is computed, not emulated
    assert sessions.effective_precision("bf16") == ("bf16" if native else "f32")
    assert cpu.florence_cpu_dtype() == florence
    assert cpu.bf16_fast() == (cls == "AMX")   # avx512_bf16 alone (Zen 4) is not enough
    if ben2_rt is not None:
        assert cpu.onnx_cpu_runtime("ben2") == ben2_rt
    assert sessions.cpu_plan("ben2", "auto", quantized=True) == ("onnxruntime", "f32")   # INT8 never moves to OV
    assert sessions.cpu_plan("ben2", "OpenVINO bf16") == ("openvino", "bf16")             # explicit is honoured
    assert sessions.cpu_plan("nudenet", "ONNX Runtime") == ("onnxruntime", "f32")
    assert sessions.cpu_plan("nudenet") == ("onnxruntime", "f32")   # measured as fast and 4x quicker to load


def test_llama_build_flags_follow_the_cpu_and_never_go_native(flags):
    flags(AVX2)
    assert cpu.llama_cmake_args() == ["-DGGML_NATIVE=OFF", "-DLLAVA_BUILD=OFF"] and cpu.llama_isa_tag() == "avx2"
    flags(ZEN4)
    args = cpu.llama_cmake_args()
    assert "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_BF16=ON" in args and "-DGGML_AVX512_VBMI=ON" in args
    assert "-DGGML_AVX_VNNI=ON" not in args            # Zen 4 has no AVX-VNNI: that build would SIGILL
    assert cpu.llama_isa_tag() == "avx512-vnni-vbmi-bf16"
    flags(AMX_XEON)
    assert "-DGGML_AVX512_VBMI=ON" not in cpu.llama_cmake_args() and cpu.llama_isa_tag() == "avx512-vnni-bf16"
    assert all("NATIVE=ON" not in a and "AMX" not in a for a in cpu.llama_cmake_args())


def test_cpu_module_runs_before_any_dependency_exists():
    import subprocess

    out = subprocess.run([sys.executable, "-S", "-m", "safecut.runtime.cpu", "--llama-cmake-args"], capture_output=True,
                         text=True, cwd=os.path.dirname(HERE), env={"SAFECUT_CPU_FLAGS": ZEN4, "PATH": os.environ["PATH"]})
    assert out.returncode == 0 and "-DGGML_AVX512=ON" in out.stdout, out.stderr


def test_unknown_runtime_is_a_clear_error():
    with pytest.raises(ValueError, match="cpu_runtime 'TensorFlow' is not one of: auto, ONNX Runtime"):
        sessions.normalize("TensorFlow")


# ---- the probe ----------------------------------------------------------------------------------
@needs_ov
def test_real_probe_passes_and_its_verdict_is_kept_per_cpu_and_version(fresh_probe, monkeypatch):
    assert openvino_session.usable("f32") == (True, "")
    stored = fresh_probe.read_text()
    assert cpu.model_name() in stored and openvino_session.version() in stored and "|f32" in stored
    # a second process reads the verdict: the probe does not run again (it would crash here)
    monkeypatch.setattr(openvino_session, "_verdicts", {})
    monkeypatch.setattr(openvino_session, "probe_command", crash_with("import os, signal; os.kill(os.getpid(), signal.SIGFPE)"))
    assert openvino_session.usable("f32") == (True, "")


@needs_ov
def test_crashing_probe_means_onnx_runtime_said_once(fresh_probe, monkeypatch, tiny_ben2_path, caplog):
    monkeypatch.setattr(openvino_session, "probe_command", crash_with("import os, signal; os.kill(os.getpid(), signal.SIGFPE)"))
    ok, why = openvino_session.usable("f32")
    assert not ok and "SIGFPE" in why and "crashed" in why
    with caplog.at_level(logging.WARNING):
        sess, choice = sessions.create_session(tiny_ben2_path, "CPU", engine="ben2", runtime="OpenVINO f32")
        sessions.create_session(tiny_ben2_path, "CPU", engine="ben2", runtime="OpenVINO f32")
    assert not isinstance(sess, openvino_session.OpenVINOSession)
    assert choice.describe().startswith("CPU · ONNX Runtime fp32 (OpenVINO refused: OpenVINO f32 crashed")
    assert caplog.text.count("SIGFPE") == 1            # said once, not per load
    assert '"ok": false' in fresh_probe.read_text()    # and not probed again in the next process


@needs_ov
@pytest.mark.parametrize("code, timeout, expect", [
    ("print('PROBE WRONG max abs error 3.1 > 0.02')", None, "wrong results"),
    ("import sys; sys.exit(3)", None, "exit 3"),
    ("import time; time.sleep(30)", 1.0, "did not finish within 1 s"),
])
def test_wrong_failing_or_hanging_probe_refuses_openvino(fresh_probe, monkeypatch, code, timeout, expect):
    monkeypatch.setattr(openvino_session, "probe_command", crash_with(code))
    if timeout:
        monkeypatch.setattr(openvino_session, "PROBE_TIMEOUT_S", timeout)
    ok, why = openvino_session.usable("bf16")
    assert not ok and expect in why


def test_missing_openvino_runs_onnx_runtime_with_a_note(fresh_probe, monkeypatch, tiny_ben2_path, flags):
    flags(ZEN4)   # auto wants OpenVINO f32 here
    monkeypatch.setattr(openvino_session, "version", lambda: None)
    sess, choice = sessions.create_session(tiny_ben2_path, "auto", engine="ben2")
    assert choice.used == "CPU" and choice.runtime == "ONNX Runtime fp32" and choice.note == "OpenVINO unavailable"
    assert "not installed" in str(providers._warned)


def test_openvino_off_by_environment(fresh_probe, monkeypatch):
    monkeypatch.setenv("SAFECUT_OPENVINO", "0")
    assert openvino_session.usable("f32") == (False, "SAFECUT_OPENVINO=0")


@needs_ov
def test_failing_compile_falls_back_to_onnx_runtime(fresh_probe, monkeypatch, tiny_ben2_path):
    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("Exception from src/plugins/intel_cpu: unsupported op")

    monkeypatch.setattr(openvino_session, "usable", lambda p: (True, ""))
    monkeypatch.setattr(openvino_session, "OpenVINOSession", Broken)
    sess, choice = sessions.create_session(tiny_ben2_path, "CPU", engine="ben2", runtime="OpenVINO f32")
    assert choice.runtime == "ONNX Runtime fp32" and "could not compile" in choice.note and "unsupported op" in choice.note
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_cuda_path_stays_onnx_runtime(monkeypatch, tiny_ben2_path, flags):
    """Where ORT offers CUDA, the CPU runtime choice is not consulted (the GPU path is untouched)."""
    flags(AMX_XEON)
    calls = []
    monkeypatch.setattr(providers, "ort_provider_list", lambda d: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(providers, "create_ort_session",
                        lambda path, device, **kw: calls.append(kw) or ("ort", providers.DeviceChoice("auto", "CUDA")))
    monkeypatch.setattr(openvino_session, "usable", lambda p: pytest.fail("OpenVINO consulted on the CUDA path"))
    sess, choice = sessions.create_session(tiny_ben2_path, "auto", engine="ben2", runtime="OpenVINO bf16")
    assert sess == "ort" and choice.describe() == "CUDA" and len(calls) == 1


# ---- OpenVINO against ONNX Runtime --------------------------------------------------------------
@pytest.fixture(scope="module")
def swin_ben2(tmp_path_factory):
    """A BEN2-I/O graph with window attention, MLP MatMuls and convs (the ops BEN2 spends its time in)."""
    from safecut.testkit.tiny_swin_ben2 import build_tiny

    return build_tiny(str(tmp_path_factory.mktemp("swin") / "swin-ben2.onnx"))


def _masks(path, runtime, images):
    get_cache().unload()
    run = ben2.remove_background(images, path, device="CPU", runtime=runtime, keep_loaded=False)
    return run, np.stack(run.masks)


def _photos(size=None):
    out = []
    for n in sorted(os.listdir(PHOTOS)):
        if n.endswith(".jpg"):
            im = Image.open(os.path.join(PHOTOS, n)).convert("RGB")
            out.append(np.asarray(im.resize(size) if size else im, np.float32) / 255.0)
    return out


def _bf16_here() -> str:
    """What an 'OpenVINO bf16' request runs on THIS CPU, for the tests below (they run on every CPU class)."""
    return "bf16" if cpu.bf16_native() else "f32 (bf16 would be emulated)"


@needs_ov
def test_openvino_masks_equal_onnx_runtime_fp32(fresh_probe, swin_ben2):
    images = _photos((160, 120))
    ref_run, ref = _masks(swin_ben2, "ONNX Runtime", images)
    f32_run, f32 = _masks(swin_ben2, "OpenVINO f32", images)
    assert ref_run.device.describe() == "CPU · ONNX Runtime fp32"
    assert f32_run.device.describe() == "CPU · OpenVINO f32"
    assert np.abs(f32 - ref).max() <= 1e-3
    bf_run, bf = _masks(swin_ben2, "OpenVINO bf16", images)
    print(f"CPU class {cpu.describe()}: OpenVINO bf16 request ran {_bf16_here()}: {bf_run.device.describe()}")
    if cpu.bf16_native():   # real bf16 (AMX, AVX512-BF16): close to f32, not equal
        assert bf_run.device.runtime.startswith("OpenVINO")
        assert np.abs(bf - ref).mean() <= 0.01
    else:                   # no native bf16: f32 ran, said on the node, results are f32's
        assert bf_run.device.runtime.startswith("OpenVINO f32 (bf16 asked: emulated")
        assert np.abs(bf - f32).max() <= 1e-5


def _match(a: dict, candidates: list[dict], box_px: float, score: float) -> bool:
    return any(c["label"] == a["label"] and abs(c["score"] - a["score"]) <= score
               and max(abs(p - q) for p, q in zip(a["box"], c["box"])) <= box_px for c in candidates)


@needs_ov
def test_nudenet_trained_detector_agrees_on_openvino(fresh_probe):
    """NudeNet's trained 320n on real photos, checked for what must hold on the CPU it runs on: f32 agrees with ONNX
    Runtime everywhere; bf16, where the CPU computes it (AMX, AVX512-BF16), keeps every clear detection; a bf16
    request on a CPU without native bf16 runs f32 (emulation is ×27 slower), says so, and agrees as f32 does."""
    images = _photos()
    ref = nudenet.detect(images, device="CPU", runtime="ONNX Runtime", threshold=0.2)
    seen = 0
    for runtime in ("OpenVINO f32", "OpenVINO bf16"):
        get_cache().unload()
        got = nudenet.detect(images, device="CPU", runtime=runtime, threshold=0.2)
        ran_bf16 = runtime.endswith("bf16") and cpu.bf16_native()
        print(f"CPU class {cpu.describe()}: {runtime} ran as {got.device.runtime}")
        assert got.device.runtime.startswith("OpenVINO")
        if runtime.endswith("bf16") and not ran_bf16:
            assert "bf16 asked: emulated" in got.device.runtime
        for a, b in zip(ref.results, got.results):
            if ran_bf16:   # bf16 keeps ~3 significant digits: each clear detection (score >= 0.35, well above the
                # 0.2 threshold) is found by both, same label, box within 8 px, score within 0.1
                for x in (x for x in a.detections if x["score"] >= 0.35):
                    assert _match(x, b.detections, 8, 0.1), (x, b.detections)
                for y in (y for y in b.detections if y["score"] >= 0.35):
                    assert _match(y, a.detections, 8, 0.1), (y, a.detections)
                seen += sum(1 for x in a.detections if x["score"] >= 0.35)
                continue
            da = sorted(a.detections, key=lambda d: d["label"])
            db = sorted(b.detections, key=lambda d: d["label"])
            assert [d["label"] for d in da] == [d["label"] for d in db]
            for x, y in zip(da, db):
                assert abs(x["score"] - y["score"]) <= 0.02
                assert max(abs(p - q) for p, q in zip(x["box"], y["box"])) <= 3
            seen += len(da)
    assert seen >= 2 * 3   # the photos really give detections (faces), so the comparison compares something


@needs_ov
def test_bf16_request_without_native_bf16_runs_f32_and_says_so(fresh_probe, flags, tiny_ben2_path, caplog):
    """The ×27 trap: on a CPU without AVX512-BF16/AMX (Ice Lake faked here) 'OpenVINO bf16' compiles f32, the node
    text says bf16 was asked and emulated, and one warning names the measured cost and what auto runs."""
    flags(ICE_LAKE)
    with caplog.at_level(logging.WARNING, logger="safecut.runtime.providers"):
        sess, choice = sessions.create_session(tiny_ben2_path, "CPU", engine="ben2", runtime="OpenVINO bf16")
    assert sess.precision == "f32"
    assert choice.describe() == "CPU · OpenVINO f32 (bf16 asked: emulated on this CPU, ×27 slower)"
    assert any("259.8 vs 9.8 s" in r.getMessage() and "OpenVINO f32 instead" in r.getMessage()
               for r in caplog.records)


@needs_ov
def test_openvino_model_is_cached_charged_and_unloaded(fresh_probe, swin_ben2):
    cache = get_cache()
    cache.unload()
    run = ben2.remove_background(_photos((160, 120))[:1], swin_ben2, device="CPU", runtime="OpenVINO f32")
    assert run.device.runtime == "OpenVINO f32"
    entries = [k for k in cache.keys() if k.kind == "ben2" and k.precision == "OpenVINO f32"]
    assert len(entries) == 1
    assert cache.stats()["resident_bytes"] >= os.path.getsize(swin_ben2)   # at least the weights, measured after the run
    model = cache.get(entries[0], lambda: pytest.fail("reloaded"))
    assert isinstance(model.session, openvino_session.OpenVINOSession)
    assert cache.unload("ben2") == 1 and model.session is None   # /free and Unload Models reach it


# ---- llama.cpp build ---------------------------------------------------------------------------------
@pytest.mark.parametrize("info, isa", [
    ("CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | ", "AVX2"),
    ("CPU : AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | ", "AVX-512 (VNNI, BF16)"),
    ("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 0 | ", "AVX"),
    ("CPU : NEON = 1 | ARM_FMA = 1 | ", "NEON"),
])
def test_llama_build_isa_is_read_from_system_info(info, isa):
    from safecut.engines import guard

    assert guard.build_isa(info) == isa


def test_llama_build_below_the_cpu_warns_once_and_shows_on_the_node(flags, caplog):
    llama_cpp = pytest.importorskip("llama_cpp")
    from safecut.engines import guard

    built = guard.build_isa(llama_cpp.llama_print_system_info().decode())
    providers._warned.clear()
    flags(ZEN4)   # this CPU "has" AVX-512
    with caplog.at_level(logging.WARNING):
        assert guard._check_build_isa(llama_cpp) == built
        guard._check_build_isa(llama_cpp)
    if built.startswith("AVX-512"):
        assert "AVX-512" not in caplog.text
    else:
        assert caplog.text.count(f"llama-cpp-python was built for {built} but this CPU has AVX-512") == 1
        assert "--llama-cmake-args" in caplog.text
    providers._warned.clear()
    caplog.clear()
    flags(AVX2)
    with caplog.at_level(logging.WARNING):
        guard._check_build_isa(llama_cpp)
    assert "AVX-512" not in caplog.text


@needs_ov
def test_int8_without_an_int8_model_runs_f32_and_never_claims_int8(fresh_probe, tiny_ben2_path):
    """NudeNet has no INT8 model (through NNCF its trained weights lost an unsafe detection): the CLI's one
    --cpu-runtime 'OpenVINO int8' reaches it too, and it must say f32 ran."""
    sess, choice = sessions.create_session(tiny_ben2_path, "CPU", engine="nudenet", runtime="OpenVINO int8")
    assert sess.precision == "f32"
    assert choice.describe() == "CPU · OpenVINO f32 (int8 asked: no INT8 model for nudenet)"
