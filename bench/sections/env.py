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


def gemm_peak(threads: int, sizes, runs: int, int8: bool = False, tmpdir: str | None = None) -> dict:
    """Best fp32 (or dynamic-int8) GEMM FLOP/s of ORT MatMul over ``sizes`` (square), ``threads`` threads."""
    import tempfile

    import onnxruntime as ort

    res = {}
    for n in sizes:
        model = _matmul_model(n, n, n)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")
        if int8:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with tempfile.TemporaryDirectory(dir=tmpdir) as td:
                src, dst = os.path.join(td, "a.onnx"), os.path.join(td, "b.onnx")
                onnx.save(model, src)
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
                sess = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
        else:
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


def _one_node_session(op: str, inputs: list, consts: dict, threads: int, **attrs):
    """(ORT session of one node, its feed); ``inputs``: (name, numpy array) fed at run time, ``consts``:
    initializers."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    names = [n for n, _ in inputs]
    node = helper.make_node(op, [n if n in names or n in consts else "" for n in attrs.pop("order")], ["Y"], **attrs)
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)) for n, a in inputs]
    out = helper.make_tensor_value_info("Y", 2 if op.startswith("QLinear") else 1, None)   # uint8 / float
    g = helper.make_graph([node], op, vi, [out],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]), dict(inputs)


def int8_kernels(threads: int, n: int, hw: int, runs: int) -> dict:
    """GOP/s of ORT's static int8 kernels vs their fp32 counterparts, on BEN2's shapes: the ceiling of any
    INT8 BEN2 on this CPU (no quantize/dequantize inside the timed op). QLinearMatMul with int8 constant
    weights (the linears), with two uint8 activations (attention products), QLinearConv 3x3 128->128 with
    per-channel weights (BEN2's full-resolution convs) vs Conv."""
    rng = np.random.default_rng(0)
    u8 = lambda *sh: rng.integers(0, 255, sh).astype(np.uint8)          # noqa: E731
    i8 = lambda *sh: rng.integers(-127, 127, sh).astype(np.int8)        # noqa: E731
    f32 = lambda *sh: rng.standard_normal(sh).astype(np.float32)        # noqa: E731
    qmm = ["A", "as", "az", "B", "bs", "bz", "ys", "yz"]
    qp = {"as": np.float32(0.01), "az": np.uint8(128), "ys": np.float32(0.5), "yz": np.uint8(128)}
    cases = {
        "MatMul const weights": (2.0 * n ** 3,
                                 _one_node_session("MatMul", [("A", f32(n, n))], {"B": f32(n, n)}, threads, order=["A", "B"]),
                                 _one_node_session("QLinearMatMul", [("A", u8(n, n))], dict(qp, B=i8(n, n), bs=np.float32(0.01),
                                                   bz=np.int8(0)), threads, order=qmm)),
        "MatMul two activations": (2.0 * n ** 3,
                                   _one_node_session("MatMul", [("A", f32(n, n)), ("B", f32(n, n))], {}, threads, order=["A", "B"]),
                                   _one_node_session("QLinearMatMul", [("A", u8(n, n)), ("B", u8(n, n))],
                                                     dict(qp, bs=np.float32(0.01), bz=np.uint8(128)), threads, order=qmm)),
        "Conv 3x3 128ch": (2.0 * 128 * 128 * 9 * hw * hw,
                           _one_node_session("Conv", [("X", f32(1, 128, hw, hw))], {"W": f32(128, 128, 3, 3)}, threads,
                                             order=["X", "W"], pads=[1, 1, 1, 1]),
                           _one_node_session("QLinearConv", [("X", u8(1, 128, hw, hw))],
                                             {"xs": np.float32(0.01), "xz": np.uint8(128), "W": i8(128, 128, 3, 3),
                                              "ws": np.full(128, 0.01, np.float32), "wz": np.zeros(128, np.int8),
                                              "ys": np.float32(0.5), "yz": np.uint8(128)}, threads,
                                             order=["X", "xs", "xz", "W", "ws", "wz", "ys", "yz"], pads=[1, 1, 1, 1])),
    }
    out = {}
    for name, (ops, (fp, fp_feed), (q, q_feed)) in cases.items():
        tf = measure(lambda: fp.run(None, fp_feed), runs, warmup=1)["min"]
        tq = measure(lambda: q.run(None, q_feed), runs, warmup=1)["min"]
        out[name] = {"fp32_gflops": round(ops / tf / 1e9, 1), "int8_gops": round(ops / tq / 1e9, 1),
                     "ratio": round(tf / tq, 2)}
    return out


def section_env(ctx: Ctx, sec: Section) -> None:
    from ..common import cpu_info, versions

    sec.data["cpu"] = cpu_info()
    sec.data["versions"] = versions()
    sizes = [256, 512] if ctx.quick else [1024, 2048, 3072]
    threads = os.cpu_count() or 1
    fp32 = gemm_peak(threads, sizes, max(3, ctx.runs))
    int8 = gemm_peak(threads, sizes[-1:], max(3, ctx.runs), int8=True, tmpdir=ctx.out)
    one = gemm_peak(1, sizes[-1:], max(3, ctx.runs))
    ctx.shared["gemm_gflops"] = fp32["gflops"]
    ctx.shared["gemm_int8_gflops"] = int8["gflops"]
    sec.data.update(gemm_fp32=fp32, gemm_int8_dynamic=int8, gemm_fp32_1thread=one)
    sec.row(what=f"ORT MatMul fp32, {threads} threads (best of sizes {sizes})", value=f"{fp32['gflops']:.1f} GFLOP/s",
            detail=", ".join(f"{k}²: {v['gflops']} GFLOP/s" for k, v in fp32["by_size"].items()))
    sec.row(what="ORT MatMul fp32, 1 thread", value=f"{one['gflops']:.1f} GFLOP/s",
            detail=f"{threads}-thread scaling ×{fp32['gflops'] / max(one['gflops'], 1e-9):.2f}")
    sec.row(what=f"ORT MatMul dynamic int8 (quantize_dynamic), {threads} threads", value=f"{int8['gflops']:.1f} GOP/s",
            detail=f"×{int8['gflops'] / max(fp32['gflops'], 1e-9):.2f} vs fp32")
    k8 = int8_kernels(threads, 512 if ctx.quick else 2048, 64 if ctx.quick else 512, max(3, ctx.runs))
    sec.data["int8_kernels"] = k8
    for name, v in k8.items():
        sec.row(what=f"ORT static int8 kernel vs fp32: {name}", value=f"×{v['ratio']:.2f}",
                detail=f"{v['int8_gops']} GOP/s int8 vs {v['fp32_gflops']} GFLOP/s fp32 (best of {max(3, ctx.runs)})")
    cpu = sec.data["cpu"]
    sec.notes.append("The int8 rows are the ceiling of any INT8 BEN2 here: BEN2's matrix and conv work can run at "
                     "most that much faster in int8, before the quantize/dequantize steps and the fp32 ops between.")
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
