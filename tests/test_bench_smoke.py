"""The bench runs end to end on tiny models (CI smoke test), the NNCF INT8 build of its BEN2 models included; its
report judges targets and merges a partial run into the published RESULTS.md."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

SECTIONS = ["env", "import", "ben2", "cpu", "llama", "quant", "florence", "gate", "pipeline", "coldstart"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    models = tmp_path_factory.mktemp("bench-models")
    env = dict(os.environ, HF_HUB_OFFLINE="1", SAFECUT_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("SAFECUT_MODELS_DIR", None)
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out), "--models-dir", str(models)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)  # a hang guard, not a speed target
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
    builds = secs["builds"]["data"]["builds"]
    for key in ("ben2-int8", "ben2_tiny-int8"):              # the product's NNCF INT8, timed, with its peak RSS
        b = builds[key]
        assert b["path"].endswith(".xml") and "/safecut-int8/" in b["path"] and os.path.isfile(b["path"]), key
        assert b["seconds"] > 0 and b["peak_mb"] > 0 and "NNCF" in b["method"], key
    assert "OpenVINO int8" in c["safecut-int8"]["device"]     # the ben2 section's INT8 row really ran the IR
    cpu = secs["cpu"]["data"]
    assert set(cpu["ben2"]) == {"ort", "ov-f32", "ov-int8", "ov-bf16"}
    assert "OpenVINO int8" in cpu["ben2"]["ov-int8"]["device"]
    assert "int8" in cpu["quality_probe"] and cpu["quality_probe"]["int8"]["seconds"] > 0
    if "avx512_bf16" not in open("/proc/cpuinfo").read():      # refused bf16: one call of the f32 that ran
        assert cpu["ben2"]["ov-bf16"]["device"].startswith("CPU · OpenVINO f32 (bf16 asked")
        assert len(cpu["ben2"]["ov-bf16"]["warmup_s"]) == 1 and not cpu["ben2"]["ov-bf16"]["timed_s"]
    asked = [r["asked"] for r in secs["cpu"]["rows"] if "asked" in r]
    assert sum("← auto" in a for a in asked) == 1, asked
    pipe = secs["pipeline"]["data"]
    assert "OpenVINO int8" in pipe["OpenVINO int8"]["devices"]["ben2"] and pipe["auto"]["per_image"]["median"] > 0
    assert set(secs["quant"]["data"]["quants"]) == {"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M"}
    assert secs["llama"]["data"]["naive_usage"][0][1] > 0
    assert {"cpu-fast | no opt cache", "cpu-full | defaults (no opt cache), mmap GGUF"} <= set(secs["coldstart"]["data"])
    targets = {t["target"]: t for t in res["targets"]}
    for prefix in ("BEN2 warm ≥ 1.5×", "BEN2 INT8 (OpenVINO, NNCF) ≥ 2×", "BEN2 auto peak RSS ≤ 3 GB",
                   "BEN2 first call after load", "BEN2 INT8 (OpenVINO, NNCF) ≥ 1.3× OpenVINO f32",
                   "BEN2 INT8 peak RSS below OpenVINO f32", "repeat call on a cached model", "Llama classification",
                   "Florence batch of 8", "gate on a 60 %", "pack import ≤ 150 ms", "full CPU pipeline"):
        assert any(k.startswith(prefix) for k in targets), prefix
    md = (out / "RESULTS.md").read_text()
    assert "## Targets" in md and "| section | target | measured | met |" in md
    for title in ("BEN2 background removal", "CPU numerics", "Llama quantizations", "Cold start", "Full CPU pipeline"):
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
    r = subprocess.run([sys.executable, "-m", "bench", "--quick", "--publish"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "real-size runs only" in r.stderr


def _section(name, title, started, rows, **data):
    return {"name": name, "title": title, "rows": rows, "data": data, "notes": [], "started": started, "seconds": 1.0,
            "load_before": [0.1], "load_after": [0.2], "other_cpu": {"other_share": 0.25}, "error": None}


def test_publish_replaces_just_the_sections_a_run_made(tmp_path):
    """--publish --only cpu: bench/RESULTS.md keeps the other sections, their targets and the line naming their run;
    the cpu section, its targets and this run's line replace theirs; README's table is read from the result."""
    from bench import report

    def write(out, *secs):
        (out / "sections").mkdir(parents=True)
        for s in secs:
            (out / "sections" / f"{s['name']}.json").write_text(json.dumps(s))

    def cpu_sec(started, f32, q8):
        return _section("cpu", "CPU numerics", started, [{"asked": "OpenVINO f32", "steady": f"{f32} s"}],
                        cpu={"class": "AVX2"}, ben2={"ov-f32": {"steady_s": f32, "peak_mb": 2500},
                                                     "ov-int8": {"steady_s": q8, "peak_mb": 1400}})

    old, new = tmp_path / "old", tmp_path / "new"
    write(old, _section("import", "Pack import", "2026-11-30 16:15", [{"what": "import", "value": "119 ms"}],
                        import_={"median": 0.119, "min": 0.1}), cpu_sec("2026-11-30 16:20", 20.0, 19.0))
    meta_old = {"started": "2026-11-30 16:15", "command": "python -m bench", "runs": 3, "heavy_runs": 1}
    first = report.render(str(old), meta_old, with_plots=False, only=["import", "cpu"])
    write(new, cpu_sec("2026-12-07 14:30", 20.0, 10.0))
    meta = {"started": "2026-12-07 14:30", "command": "python -m bench --only cpu --publish", "runs": 3,
            "heavy_runs": 1, "other_cpu": {"other_share": 0.4}}
    text = report.render(str(new), meta, with_plots=False, previous=first, only=["builds", "cpu"], write=False)
    runs, rows, blocks = report._parse(text)
    assert set(blocks) == {"import", "cpu"}
    assert "_section `import`: 2026-11-30 16:15" in blocks["import"] and "119 ms" in blocks["import"]
    assert "_section `cpu`: 2026-12-07 14:30" in blocks["cpu"] and "2026-11-30 16:20" not in text
    assert len(runs) == 2 and "sections cpu;" in runs[0] and "**40 %**" in runs[0]
    assert "sections import;" in runs[1]                       # the sections still from that run
    got = {(r[0], r[1].split(" (")[0]): r[2] for r in rows}
    assert got[("import", "pack import ≤ 150 ms")].startswith("119 ms")
    assert got[("cpu", "BEN2 INT8")] == "20.00 s → 10.00 s: ×2.00" and len(rows) == 3   # the old cpu rows are gone
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\nrest\n")
    assert report.publish_readme(str(readme), text)
    r = readme.read_text()
    assert "old" not in r and r.startswith("intro\n") and r.endswith("rest\n") and "×2.00" in r and runs[1] in r


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
        return {"pipeline": {"data": {"auto, default options, 4 GiB memory cgroup": r}}}

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
