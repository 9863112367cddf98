"""Machine facts and the GEMM limit; pack import time."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from ..common import Section, measure, stats
from .base import ROOT, Ctx


# ---- env: machine + GEMM limit ------------------------------------------------------------------------
def _matmul_model(n: int, k: int, m: int, dtype=np.float32):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((k, m), dtype=np.float32), "B")
    node = helper.make_node("MatMul", ["A", "B"], ["Y"])
    g = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, k])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [n, m])], [b])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def gemm_peak(threads: int, sizes, runs: int) -> dict:
    """Best fp32 GEMM FLOP/s of ORT MatMul over ``sizes`` (square), ``threads`` threads."""
    import onnxruntime as ort

    res = {}
    for n in sizes:
        model = _matmul_model(n, n, n)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        a = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
        st = measure(lambda: sess.run(None, {"A": a}), runs, warmup=2)
        st["gflops"] = 2.0 * n ** 3 / st["median"] / 1e9
        st["gflops_best"] = 2.0 * n ** 3 / st["min"] / 1e9
        res[n] = st
    best = max(res.values(), key=lambda s: s["gflops"])
    return {"by_size": {str(k): {"median_s": v["median"], "gflops": round(v["gflops"], 1),
                                 "gflops_best": round(v["gflops_best"], 1)} for k, v in res.items()},
            "gflops": round(best["gflops"], 1), "gflops_best": round(max(v["gflops_best"] for v in res.values()), 1)}


def section_env(ctx: Ctx, sec: Section) -> None:
    from ..common import cpu_info, versions

    sec.data["cpu"] = cpu_info()
    sec.data["versions"] = versions()
    sizes = [256, 512] if ctx.quick else [1024, 2048, 3072]
    threads = os.cpu_count() or 1
    fp32 = gemm_peak(threads, sizes, max(3, ctx.runs))
    one = gemm_peak(1, sizes[-1:], max(3, ctx.runs))
    ctx.shared["gemm_gflops"] = fp32["gflops"]
    sec.data.update(gemm_fp32=fp32, gemm_fp32_1thread=one)
    sec.row(what=f"ORT MatMul fp32, {threads} threads (best of sizes {sizes})", value=f"{fp32['gflops']:.1f} GFLOP/s",
            detail=", ".join(f"{k}²: {v['gflops']} GFLOP/s" for k, v in fp32["by_size"].items()))
    sec.row(what="ORT MatMul fp32, 1 thread", value=f"{one['gflops']:.1f} GFLOP/s",
            detail=f"{threads}-thread scaling ×{fp32['gflops'] / max(one['gflops'], 1e-9):.2f}")
    cpu = sec.data["cpu"]
    sec.notes.append("INT8: SafeCut's INT8 BEN2 runs on OpenVINO (NNCF): its speed on this CPU is in section cpu.")
    sec.notes.append(f"CPU: {cpu.get('cpu', '?')}, {cpu.get('cores')} cores, SIMD {', '.join(cpu.get('simd', []))}, "
                     f"{cpu.get('mem_gb')} GB. Versions: " + ", ".join(f"{k} {v}" for k, v in sec.data["versions"].items()
                                                                     if v))


# ---- pack import -------------------------------------------------------------------------------------
_IMPORT_CODE = """
import importlib.util, json, sys, time
path = {path!r}
t = time.perf_counter()
spec = importlib.util.spec_from_file_location("safecut_pack_bench", path + "/__init__.py", submodule_search_locations=[path])
mod = importlib.util.module_from_spec(spec); sys.modules["safecut_pack_bench"] = mod; spec.loader.exec_module(mod)
dt = time.perf_counter() - t
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ("torch", "onnxruntime", "transformers", "llama_cpp", "numpy"))
print(json.dumps(dict(dt=dt, nodes=len(mod.NODE_CLASS_MAPPINGS), heavy=heavy)))
"""


def section_import(ctx: Ctx, sec: Section) -> None:
    code = _IMPORT_CODE.format(path=ROOT)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="")   # like a ComfyUI install: .pyc files written and reused
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)  # compile .pyc
    samples, last = [], {}
    for _ in range(max(ctx.runs, 3)):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        last = json.loads(r.stdout.strip().splitlines()[-1])
        samples.append(last["dt"])
    st = stats(samples)
    sec.data.update(import_=st, nodes=last.get("nodes"), heavy=last.get("heavy"))
    ctx.shared["import"] = st
    sec.row(what="pack import (ComfyUI-style, by path; fresh process, nothing preloaded; .pyc cached)", value=f"{st['median'] * 1000:.0f} ms",
            detail=f"min {st['min'] * 1000:.0f} ms, max {st['max'] * 1000:.0f} ms, n={st['n']}; {last.get('nodes')} nodes; "
                   f"heavy modules imported: {last.get('heavy') or 'none'}")
