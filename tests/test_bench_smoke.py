"""The bench runs end to end on tiny models (CI smoke test), and safecut.engines.ben2_quantize makes a working INT8 BEN2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, subject_image

SECTIONS = ["env", "import", "ben2", "llama", "quant", "florence", "gate", "pipeline", "coldstart"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    models = tmp_path_factory.mktemp("bench-models")
    env = dict(os.environ, HF_HUB_OFFLINE="1", SAFECUT_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("SAFECUT_MODELS_DIR", None)
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out), "--models-dir", str(models)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)  # a hang guard, not a speed target
    return r, out


@pytest.mark.slow
def test_quick_bench_writes_json_markdown_and_plots(quick_run):
    r, out = quick_run
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    with open(out / "results.json") as f:
        res = json.load(f)
    assert res["meta"]["quick"] is True
    assert res["meta"]["wall_seconds"] > 0  # speed targets live in bench/, not in tests
    secs = res["sections"]
    for name in SECTIONS + ["builds"]:
        assert name in secs, name
        assert secs[name]["error"] is None, (name, secs[name]["error"])
        assert secs[name]["rows"], name
    d = secs["ben2"]["data"]
    c = d["configs"]
    for key in ("plain", "safecut", "safecut-int8", "naive"):
        assert c[key]["steady_s"] > 0 and c[key]["peak_mb"] > 0, key
        assert len(c[key]["warmup_s"]) >= 2, key                 # warm-ups until stable, at least 2
    assert 0 <= d["configs"]["int8_mask_mae_vs_fp32"] < 1
    assert d["flops"]["total"] > 0 and "attention decoder" in d["flops"]["by_kind"]
    assert d["model"]["size"] == 384 and d["model"]["depths"] == [2, 2, 2, 2]  # the same architecture, reduced
    assert "QUICK" in out.joinpath("RESULTS.md").read_text()
    assert secs["env"]["data"]["gemm_fp32"]["gflops"] > 0
    k8 = secs["env"]["data"]["int8_kernels"]                       # the int8 ceiling the INT8 BEN2 row is read against
    assert set(k8) == {"MatMul const weights", "MatMul two activations", "Conv 3x3 128ch"}
    assert all(v["ratio"] > 0 and v["int8_gops"] > 0 for v in k8.values())
    assert set(secs["quant"]["data"]["quants"]) == {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M"}
    assert secs["llama"]["data"]["naive_usage"][0][1] > 0
    assert {"cpu-fast | no opt cache", "cpu-full | defaults (no opt cache), mmap GGUF"} <= set(secs["coldstart"]["data"])
    targets = {t["target"]: t for t in res["targets"]}
    for prefix in ("BEN2 warm ≥ 1.5×", "BEN2 INT8 ≥ 2×", "BEN2 fp32 peak RSS ≤ 3 GB", "BEN2 first call after load",
                   "BEN2 INT8 peak RSS below fp32", "repeat call on a cached model", "Llama classification",
                   "Florence batch of 8", "gate on a 60 %", "pack import ≤ 150 ms", "full CPU pipeline"):
        assert any(k.startswith(prefix) for k in targets), prefix
    md = (out / "RESULTS.md").read_text()
    assert "## Targets" in md and "| target | measured | met |" in md
    for title in ("BEN2 background removal", "Llama quantizations", "Cold start", "Full CPU pipeline"):
        assert title in md, title
    assert "| Q4_K_M |" in md
    from PIL import Image

    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert {"naive_vs_safecut.png", "quantizations.png", "coldstart.png", "flops.png"} <= set(pngs)
    for name in pngs:
        with Image.open(out / "plots" / name) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_only_rejects_unknown_sections():
    r = subprocess.run([sys.executable, "-m", "bench", "--only", "nope"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "unknown section" in r.stderr


def test_pil_plot_fallback(tmp_path):
    sys.path.insert(0, ROOT)
    from bench import plots
    from PIL import Image

    p = plots._pil(str(tmp_path / "a.png"), "t", ["a", "b"], {"x": [1.0, None], "y": [2.0, 3.0]}, "s", False, False)
    q = plots._pil(str(tmp_path / "b.png"), "t", ["a"], {"x": [1.0], "y": [2.0]}, "s", True, True)
    for f in (p, q):
        with Image.open(f) as im:
            assert im.format == "PNG"


def test_flop_counter_counts_conv_and_matmul(tmp_path):
    sys.path.insert(0, ROOT)
    from bench.flops import count_flops
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.ones((8, 5), np.float32), "b")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Reshape", ["c", "shape"], ["r"]),
         helper.make_node("MatMul", ["r", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w, b, numpy_helper.from_array(np.array([-1, 8], np.int64), "shape")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    r = count_flops(m, {"x": [1, 3, 2, 4]})
    conv = 2 * (1 * 4 * 2 * 4) * (3 * 3 * 3)   # outputs x (Cin k k) MACs
    mm = 2 * (4 * 5 * 8)                        # [4,8] x [8,5]
    assert r["by_op"] == {"Conv": conv, "MatMul": mm} and r["unknown"] == 0


# ---- safecut/engines/ben2_quantize.py ------------------------------------------------------------------------------
def _io(path):
    import onnxruntime as ort

    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return ([(i.name, i.type, i.shape) for i in s.get_inputs()], [(o.name, o.type, o.shape) for o in s.get_outputs()])


def _ops(path):
    import onnx

    return {n.op_type for n in onnx.load(path).graph.node}


@pytest.fixture(scope="module")
def tiny_matmul_ben2(tmp_path_factory):
    """A tiny graph with window attention + MLPs (MatMuls) + a conv decoder, for the quantizer's tests."""
    from safecut.testkit.tiny_swin_ben2 import build_tiny

    return build_tiny(str(tmp_path_factory.mktemp("q") / "ben2" / "tiny-swin-ben2.onnx"))


def test_quantize_ben2_int8_matmuls_same_io_close_mask(tiny_matmul_ben2, tmp_path):
    from safecut.engines import ben2
    from safecut.engines.ben2_quantize import quantize_ben2

    out = quantize_ben2(tiny_matmul_ben2, str(tmp_path / "tiny.int8.onnx"), method="matmul")
    assert os.path.isfile(out) and os.path.getsize(out) < os.path.getsize(tiny_matmul_ben2)
    assert _io(out) == _io(tiny_matmul_ben2)                      # same names, dtypes (float16 output), shapes
    ops = _ops(out)
    assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}, ops
    assert "ConvInteger" not in ops                               # convs stay float (faster on CPU)
    img = subject_image(96, 128)
    a = ben2.remove_background([img], tiny_matmul_ben2, device="CPU", keep_loaded=False).masks[0]
    b = ben2.remove_background([img], out, device="CPU", keep_loaded=False).masks[0]
    assert a.shape == b.shape == (96, 128)
    assert float(np.abs(a - b).mean()) < 0.05


def test_quantize_static_covers_convs_and_weight_linears_not_attention_products(tiny_matmul_ben2, tmp_path):
    """The default (static QDQ) quantizes convs and the constant-weight MatMuls with per-channel weights,
    leaves the activation x activation attention MatMuls fp32 (ORT's uint8 x uint8 kernel is slower than fp32
    on AVX2), keeps the published I/O, and the mask stays close."""
    import onnx
    from onnx import numpy_helper

    from safecut.engines import ben2
    from safecut.engines.ben2_quantize import quantize_ben2

    out = quantize_ben2(tiny_matmul_ben2, str(tmp_path / "tiny.static.onnx"))
    assert _io(out) == _io(tiny_matmul_ben2)
    m = onnx.load(out)
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    producers = {o: n for n in m.graph.node for o in n.output}

    def dq_input(name):
        n = producers.get(name)
        return n is not None and n.op_type == "DequantizeLinear"

    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert convs and all(dq_input(n.input[0]) and dq_input(n.input[1]) for n in convs)
    w_dq = producers[convs[0].input[1]]
    assert inits[w_dq.input[1]].size == inits[w_dq.input[0]].shape[0] > 1      # one scale per output channel
    const = lambda i: i in inits or (producers.get(i) is not None and producers[i].input[0] in inits)  # noqa: E731
    mms = [n for n in m.graph.node if n.op_type == "MatMul"]
    weight_mm = [n for n in mms if any(const(i) for i in n.input)]
    act_mm = [n for n in mms if not any(const(i) for i in n.input)]
    assert weight_mm and all(dq_input(i) for n in weight_mm for i in n.input)  # weight linears: int8
    assert act_mm and not any(dq_input(i) for n in act_mm for i in n.input)   # attention products: fp32
    img = subject_image(96, 128)
    a = ben2.remove_background([img], tiny_matmul_ben2, device="CPU", keep_loaded=False).masks[0]
    b = ben2.remove_background([img], out, device="CPU", keep_loaded=False).masks[0]
    assert float(np.abs(a - b).mean()) < 0.05


def test_quantize_testkit_ben2_default_path_and_conv_method(tiny_ben2_path, models_dir):
    """The testkit's conv-only tiny BEN2: resolved by name from models/ben2, written next to it by default."""
    import shutil

    from safecut.engines import ben2
    from safecut.engines.ben2_quantize import quantize_ben2

    d = models_dir / "ben2"
    d.mkdir()
    shutil.copy(tiny_ben2_path, d / "tiny-ben2.onnx")
    out = quantize_ben2("tiny-ben2.onnx")
    assert out == str(d / "tiny-ben2.int8.onnx")
    assert _io(out) == _io(str(d / "tiny-ben2.onnx"))
    conv = quantize_ben2("tiny-ben2.onnx", str(models_dir / "conv.onnx"), method="matmul+conv")
    assert "ConvInteger" in _ops(conv)
    # ORT's quantizer output is recognised from the file's first bytes and gets the quantized session settings
    import onnxruntime as ort

    assert ben2.is_quantized(out) and ben2.is_quantized(conv) and not ben2.is_quantized(str(d / "tiny-ben2.onnx"))
    so = ben2.load_model(out, "CPU", runtime="ONNX Runtime").session.get_session_options()
    assert so.enable_mem_pattern is False and so.enable_cpu_mem_arena is False
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so = ben2.load_model(str(d / "tiny-ben2.onnx"), "CPU", runtime="ONNX Runtime").session.get_session_options()
    assert so.enable_mem_pattern is True and so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    img = subject_image()
    ref = ben2.remove_background([img], "tiny-ben2.onnx", device="CPU", keep_loaded=False).masks[0]
    for path in (out, conv):
        m = ben2.remove_background([img], path, device="CPU", keep_loaded=False).masks[0]
        assert float(np.abs(m - ref).mean()) < 0.05
        assert m[48, 64] > 0.8 and m[2, 2] < 0.2                  # still cuts the bright subject out


def test_quantize_cli_and_errors(tiny_matmul_ben2, tmp_path):
    from safecut.app.cli import main
    from safecut.errors import SafeCutError
    from safecut.engines.ben2_quantize import quantize_ben2

    out = tmp_path / "cli.int8.onnx"
    assert main(["models", "quantize", tiny_matmul_ben2, "--output", str(out)]) == 0
    assert out.is_file()
    with pytest.raises(SafeCutError):
        quantize_ben2(tiny_matmul_ben2, tiny_matmul_ben2)        # never overwrite the input
    with pytest.raises(SafeCutError):
        quantize_ben2(tiny_matmul_ben2, str(tmp_path / "x.onnx"), method="nope")
    with pytest.raises(Exception):
        quantize_ben2("does-not-exist.onnx")


def test_fold_fp16_casts_makes_mixed_precision_matmuls_quantizable(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from safecut.engines.ben2_quantize import fold_fp16_casts, quantize_ben2

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float16), "w16")
    g = helper.make_graph(
        [helper.make_node("Cast", ["w16"], ["w32"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["x", "w32"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    src = str(tmp_path / "mixed.onnx")
    onnx.save(m, src)
    m2 = onnx.load(src)
    assert fold_fp16_casts(m2) == 1
    assert [n.op_type for n in m2.graph.node] == ["MatMul"]
    assert [t.name for t in m2.graph.initializer] == ["w32"] and m2.graph.initializer[0].data_type == TensorProto.FLOAT
    out = quantize_ben2(src, str(tmp_path / "mixed.int8.onnx"), method="matmul")
    assert _ops(out) & {"MatMulInteger", "DynamicQuantizeMatMul"}


def test_static_calibration_in_small_passes_gives_the_same_ranges(tiny_matmul_ben2, tmp_path, monkeypatch):
    """Memory-bounded calibration (one pass per group of activations) measures the same ranges as one pass."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    from safecut.engines import ben2_quantize

    imgs = ben2_quantize.synthetic_images(1, (64, 64))
    one = ben2_quantize._calibrate_in_groups(tiny_matmul_ben2, ["Conv", "MatMul"], imgs, str(tmp_path),
                                        str(tmp_path / "one.json"))
    monkeypatch.setattr(ben2_quantize, "CALIBRATION_GROUP_BYTES", 1)       # every activation in its own pass
    many = ben2_quantize._calibrate_in_groups(tiny_matmul_ben2, ["Conv", "MatMul"], imgs, str(tmp_path),
                                         str(tmp_path / "many.json"))
    assert one == 1 and many > 5
    a, b = (load_tensors_data(str(tmp_path / f)).data for f in ("one.json", "many.json"))
    assert a.keys() == b.keys() and len(a) > 5
    for k in a:
        assert np.allclose(a[k].range_value, b[k].range_value, atol=1e-5), k


def test_quantize_static_calibrates_in_bounded_passes_same_model(tiny_matmul_ben2, tmp_path, monkeypatch):
    """quantize_ben2 measures ranges in memory-bounded passes (one pass at BEN2's size peaked ~23 GB): one
    activation per pass writes the same int8 model as one pass."""
    import inspect

    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import quantize_static

    from safecut.engines import ben2_quantize

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        pytest.skip("this onnxruntime cannot reuse calibration ranges: quantize_ben2 calibrates in one pass")
    passes = []
    real = ben2_quantize._calibrate_in_groups
    monkeypatch.setattr(ben2_quantize, "_calibrate_in_groups", lambda *a: passes.append(real(*a)) or passes[-1])
    one = ben2_quantize.quantize_ben2(tiny_matmul_ben2, str(tmp_path / "one.onnx"))
    monkeypatch.setattr(ben2_quantize, "CALIBRATION_GROUP_BYTES", 1)
    many = ben2_quantize.quantize_ben2(tiny_matmul_ben2, str(tmp_path / "many.onnx"))
    assert passes[0] == 1 and passes[1] > 5
    a, b = ({t.name: numpy_helper.to_array(t) for t in onnx.load(p).graph.initializer} for p in (one, many))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)



def test_exporter_of_tells_torchscript_from_dynamo_exports(tmp_path):
    """The faithfulness target compares exports of the same exporter (the exporter alone changes memory ~2x)."""
    import onnx
    from onnx import TensorProto, helper

    from bench.sections.ben2 import exporter_of

    def model(names):
        nodes = [helper.make_node("Relu", [f"x{i}"], [f"x{i + 1}"], name=nm) for i, nm in enumerate(names)]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info(f"x{len(names)}", TensorProto.FLOAT, [1])])
        p = str(tmp_path / f"{len(list(tmp_path.iterdir()))}.onnx")
        onnx.save(helper.make_model(g), p)
        return p

    assert exporter_of(model(["/backbone/Relu", "/decoder/Relu_1", "Relu_2"])) == "TorchScript"
    assert exporter_of(model(["node_Relu_0", "node_Relu_1", "/x/Relu"])) == "dynamo"


def test_report_judges_the_4_gb_worker_rows_on_what_happened():
    """A cgroup row is met only when the run finished, nobody was OOM-killed and the RSS stayed ≤ 4 GB; a row the
    machine could not measure is no target at all."""
    from bench.report import targets

    def row(**r):
        return {"pipeline": {"data": {"int8, default options, 4 GiB memory cgroup": r}}}

    ok = dict(per_image={"median": 40.0}, peak_mb=2900, low_memory=True, oom_kills=0)
    (t,) = targets(row(**ok))
    assert t["met"] and "4 GB worker" in t["target"] and "40.00 s/img" in t["measured"]
    assert not targets(row(**dict(ok, peak_mb=4200)))[0]["met"]
    (t,) = targets(row(error="pipeline failed (exit -9)", oom_kills=1))
    assert not t["met"] and "OOM kills 1" in t["measured"]
    assert targets(row(unmeasured="no writable memory cgroup")) == []


def test_gpu_check_runs_anywhere_and_reports_what_ran(tmp_path, tiny_ben2_path):
    """bench.gpu on this CPU-only machine: every engine says it ran on CPU; the table renders from the JSON; the
    sweep's worker measures one fresh process; ORT's arena errors become a readable cell."""
    from bench import gpu

    out = tmp_path / "gpu"
    assert gpu.main(["--only", "nudenet,florence,llama", "--florence", "tiny", "--runs", "1",
                     "--models", str(tmp_path / "models"), "--out", str(out)]) == 0
    res = json.loads((out / "gpu.json").read_text())
    assert res["models"]["nudenet"]["device"] == "CPU · ONNX Runtime fp32" and res["models"]["nudenet"]["same_verdicts_and_counts"]
    assert res["models"]["florence"]["dtype"] == "fp32" and res["models"]["llama"]["device"].startswith("CPU")
    assert gpu.to_markdown(res) == (out / "gpu.md").read_text()
    r = subprocess.run([sys.executable, "-m", "bench.gpu", "--probe-one", tiny_ben2_path, "--probe-device", "CPU",
                        "--runs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    row = json.loads(r.stdout.strip().splitlines()[-1])
    assert r.returncode == 0 and row["steady_s"] > 0 and 0 < row["out_mean"] < 1
    err = ("Non-zero status code returned while running Conv node. Name:'/up/Conv' Status Message: bfc_arena.cc:360 "
           "Available memory of 433810176 is smaller than requested bytes of 1080623872")
    assert gpu._explain(err) == "out of arena memory at Conv `/up/Conv` (asked 1030 MiB, 413 MiB left)"
