"""CPU numerics: every engine's CPU options on this machine (BEN2 on ORT fp32 / OpenVINO f32 / OpenVINO int8 (NNCF) /
OpenVINO bf16, and the quality probe that lets ``auto`` use a lower precision; NudeNet on ORT / OpenVINO; Florence-2
fp32 / bf16; the llama.cpp build's ISA), with what ``auto`` picks here, the difference from f32 and the fraction of
the GEMM peak (fp32 and bf16 measured here). bf16 without AVX512-BF16/AMX is emulated: the product refuses it and
runs f32 (BEN2: one call of what really ran; Florence-2: not timed)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from ..common import Section, measure
from .base import ROOT, Ctx, _fs, _quiet_transformers, _unload_all, make_images
from .ben2 import _fmt_times, probe


def torch_gemm_peak(dtype: str, n: int = 2048, runs: int = 5) -> float:
    """GFLOP/s of an n×n torch matmul in fp32 or bf16 (oneDNN: AMX tiles where the CPU has them, AVX512-BF16 dot
    products or emulation elsewhere): the ceiling bf16 numerics can reach on this CPU."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt)
    with torch.inference_mode():
        best = measure(lambda: torch.mm(a, b), runs, warmup=1)["min"]
    return 2 * n ** 3 / best / 1e9


def _photos() -> list[np.ndarray]:
    from PIL import Image

    d = os.path.join(ROOT, "tests", "data", "photos")
    return [np.asarray(Image.open(os.path.join(d, n)).convert("RGB"), np.float32) / 255.0
            for n in sorted(os.listdir(d)) if n.endswith(".jpg")]


def section_cpu(ctx: Ctx, sec: Section) -> None:
    from safecut.runtime import cpu, openvino_session, sessions

    from ..flops import count_flops

    sec.data["cpu"] = {"class": cpu.cpu_class(), "describe": cpu.describe(), "openvino": openvino_session.version()}
    # bf16 without hardware support is emulated (~100x slower here): a smaller matrix keeps that row short
    n_bf16 = 2048 if cpu.has("avx512_bf16") else 512
    peaks = {"ORT fp32 (section env)": ctx.shared.get("gemm_gflops"), "torch fp32": torch_gemm_peak("fp32"),
             "torch bf16": torch_gemm_peak("bf16", n_bf16, runs=2)}
    sec.data["gemm_gflops"] = peaks
    fp32_peak = max(v for k, v in peaks.items() if v and "bf16" not in k)
    for what, v in peaks.items():
        if v:
            sec.row(table="GEMM peak", what=what, value=f"{v:.1f} GFLOP/s",
                    detail=f"{n_bf16 if 'bf16' in what else 2048}² matmul, best of runs" if what.startswith("torch")
                    else "ORT MatMul sweep")
    _ben2(ctx, sec, cpu, fp32_peak, count_flops)
    _nudenet(ctx, sec)
    _florence(ctx, sec, cpu)
    _llama(sec, cpu)
    sec.notes.append(f"This machine: {cpu.describe()}; OpenVINO {openvino_session.version()}. 'auto' here: BEN2 "
                     f"{sec.data['ben2_auto']} (lower precision candidate on this CPU class: "
                     f"{cpu.ben2_lower_precision() or 'none'}), NudeNet {' '.join(sessions.cpu_plan('nudenet'))}, Florence-2 "
                     f"{cpu.florence_cpu_dtype()}. BEN2 rows: 'asked' is the cpu_runtime given, 'ran' what the engine "
                     f"reports; steady = median of the calls after the first; mask difference vs ONNX Runtime fp32. "
                     f"int8 = the NNCF INT8 model (section builds: its build time and peak RSS). Random weights: the "
                     f"quality probe's verdict here says nothing about real weights.")


def _auto_runtime(path: str) -> str:
    """The BEN2 CPU runtime ``auto`` runs here (the product's own resolution; the probe has run before)."""
    from safecut.engines import ben2
    from safecut.runtime import sessions

    rt = ben2._resolve_auto(path, "CPU", 0, "auto", None)[0]
    plan = sessions.cpu_plan("ben2")
    return rt if rt != "auto" else next(k for k, v in sessions._PLAN.items() if v == plan)


def _quality_probe(ctx, sec, path: str, candidates: list[str]) -> list[dict]:
    """The product's quality probe (engines.ben2_precision) for each lower precision: its verdict and its cost (the
    table rows, for after the BEN2 table)."""
    from safecut.engines import ben2

    sec.data["quality_probe"], rows = {}, []
    for precision in candidates:
        ctx.log(f"    cpu: BEN2 quality probe, {precision} ...")
        t0 = time.perf_counter()
        v = ben2.verify_precision(path, precision)
        cost = time.perf_counter() - t0
        sec.data["quality_probe"][precision] = dict(v, seconds=cost)
        figures = (f"IoU {v['iou']:.4f}, mean |Δ| {v['mean_abs']:.4f}, edge p95 {v['edge_p95']:.3f}; "
                   if "iou" in v else "")
        rows.append(dict(table="BEN2 quality probe (what lets auto use a lower precision; random weights here)",
                         what=f"{precision} vs f32 on the {v.get('images')} shipped probe photos",
                         verdict="passed" if v["passed"] else "failed", cost=f"{cost:.0f} s (4 BEN2 calls + 2 loads)",
                         detail=f"{figures}{v.get('why', '')}; ran as {v.get('ran_as')}, "
                                f"{v.get('s_per_image')} vs f32 {v.get('f32_s_per_image')} s per image"))
    return rows


def _ben2(ctx, sec, cpu, fp32_peak, count_flops) -> None:
    path, int8 = ctx.paths["ben2"], ctx.paths.get("ben2_int8")
    runs = ctx.runs if ctx.quick else ctx.heavy_runs
    gflop = count_flops(path)["total"] / 1e9
    masks = os.path.join(ctx.out, "cpu-masks")
    os.makedirs(masks, exist_ok=True)
    emulated = not cpu.bf16_native()   # the product runs f32 for a bf16 request: one call of that is enough
    configs = [("ort", "ONNX Runtime"), ("ov-f32", "OpenVINO f32")]
    if int8 and os.path.isfile(int8):
        configs.append(("ov-int8", "OpenVINO int8"))
    configs.append(("ov-bf16", "OpenVINO bf16"))
    res = {}
    for key, runtime in configs:
        ctx.log(f"    cpu: BEN2 {runtime} ...")
        res[key] = probe(ctx, "safecut", path, runs, os.path.join(masks, f"{key}.npy"), huge_pages=True,
                         runtime=runtime, one_call=key == "ov-bf16" and emulated)
    candidates = [p for p in ("int8", cpu.ben2_lower_precision()) if p and (p != "int8" or "ov-int8" in res)]
    probe_rows = _quality_probe(ctx, sec, path, list(dict.fromkeys(candidates)))
    auto = _auto_runtime(path)
    ref = np.load(os.path.join(masks, "ort.npy"))
    sec.data["ben2"] = res
    sec.data["ben2_auto"] = auto
    size = ctx.builds.get("ben2", {}).get("size", 1024)
    for key, runtime in configs:
        p = res[key]
        m = np.load(os.path.join(masks, f"{key}.npy"))
        diff = np.abs(m - ref)
        p["mask_mean_abs_vs_fp32"], p["mask_max_abs_vs_fp32"] = float(diff.mean()), float(diff.max())
        gf = gflop / p["steady_s"]
        refused = runtime == "OpenVINO bf16" and emulated
        note = "bf16 emulated: refused, ran f32; one call" if refused else ""
        sec.row(table=f"BEN2 {size}² (fresh process per row{', QUICK reduced build' if ctx.quick else ''})",
                asked=runtime + (" ← auto" if runtime == auto else ""), ran=p["device"] + (f" ({note})" if note else ""),
                steady=_fmt_times(p), first_call=f"{p['first_s']:.2f} s", load=f"{p['load_s']:.2f} s",
                peak_rss=f"{p['peak_mb'] / 1024:.2f} GB", vs_ov_f32=f"×{res['ov-f32']['steady_s'] / p['steady_s']:.2f}",
                mask_vs_f32=f"mean |Δ| {p['mask_mean_abs_vs_fp32']:.4f}, max {p['mask_max_abs_vs_fp32']:.4f}",
                detail=f"{gf:.0f} GFLOP/s{' fp32-equivalent' if key == 'ov-int8' else ''} = {gf / fp32_peak * 100:.0f} % "
                       f"of the fp32 GEMM peak; others took {p['other_share'] * 100:.0f} % CPU")
    for r in probe_rows:
        sec.row(**r)


def _nudenet(ctx, sec) -> None:
    from safecut.engines import nudenet

    imgs = _photos()
    runs = max(3, ctx.runs)
    ref = None
    sec.data["nudenet"] = {}
    for runtime in ("ONNX Runtime", "OpenVINO f32"):
        _unload_all()
        t0 = time.perf_counter()
        first = nudenet.detect(imgs, device="CPU", runtime=runtime, threshold=0.2)
        first_s = time.perf_counter() - t0
        st = measure(lambda: nudenet.detect(imgs, device="CPU", runtime=runtime, threshold=0.2), runs, warmup=1)
        dets = [[(d["label"], d["score"], d["box"]) for d in r.detections] for r in first.results]
        ref = ref or dets
        score = max((abs(a[1] - b[1]) for x, y in zip(ref, dets) for a, b in zip(x, y)), default=0.0)
        box = max((max(abs(p - q) for p, q in zip(a[2], b[2])) for x, y in zip(ref, dets) for a, b in zip(x, y)),
                  default=0)
        same = [[a[0] for a in x] for x in ref] == [[a[0] for a in y] for y in dets]
        sec.data["nudenet"][runtime] = {"stats": st, "first_s": first_s, "device": first.device.describe()}
        sec.row(table=f"NudeNet 320n (the trained detector), {len(imgs)} photos", what=first.device.describe(),
                per_image=f"{st['median'] / len(imgs) * 1000:.0f} ms", batch=_fs(st), first_call=f"{first_s:.2f} s",
                vs_fp32=f"labels {'same' if same else 'DIFFER'}, score Δ ≤ {score:.4f}, box Δ ≤ {box} px")
    _unload_all()


def _florence(ctx, sec, cpu) -> None:
    from safecut.engines import florence

    _quiet_transformers()
    path = ctx.paths.get("florence")
    if not path:
        return
    B, T = 4, 8 if ctx.quick else ctx.florence_tokens
    images = make_images(B, ctx.size, seed=5)
    out, caps = {}, {}
    # emulated bf16 (no AVX512-BF16/AMX): the product refuses it and runs fp32; not timed either (one emulated call of
    # this batch took 590 s on the 2-core AVX2 EPYC, 2026-12-07: most of the section)
    emulated = not cpu.bf16_native()
    dtypes = ("fp32",) if emulated else ("fp32", "bf16")
    for dtype in dtypes:
        fm = florence.load_model(path, "cpu", dtype)   # the dtype as given: no precision resolution
        fm.model.generation_config.min_new_tokens = T
        st = measure(lambda: florence.generate_captions(fm, images, "more detailed caption", max_new_tokens=T,
                                                        num_beams=3, batch_size=B), ctx.heavy_runs, warmup=1)
        caps[dtype] = st["_result"]
        fm.close()
        out[dtype] = st
    sec.data["florence"] = dict(out, bf16_emulated=emulated, bf16_asked_runs=florence.resolve_precision("bf16", "CPU"))
    table = f"Florence-2-base, batch {B}, 3 beams, {T} tokens"
    for dtype in dtypes:
        same = sum(a == b for a, b in zip(caps["fp32"], caps[dtype])) / B
        sec.row(table=table, what=dtype + (" ← auto" if cpu.florence_cpu_dtype() == dtype else ""),
                per_image=f"{out[dtype]['median'] / B:.2f} s",
                vs_fp32=(f"×{out['fp32']['median'] / out[dtype]['median']:.2f}; captions equal in {same * 100:.0f} %"
                         if dtype != "fp32" else ""), detail=f"batch {_fs(out[dtype])}")
    if emulated:
        sec.row(table=table, what="bf16: refused (emulated on this CPU; asked of the product, fp32 runs)",
                per_image="not timed", detail="emulated bf16 is several times slower than fp32 (issue 24)")


def _llama(sec, cpu) -> None:
    try:
        import llama_cpp

        from safecut.engines import guard

        isa = guard.build_isa(llama_cpp.llama_print_system_info().decode())
    except Exception as exc:
        sec.row(table="llama.cpp", what="build", value=f"not checked ({type(exc).__name__})")
        return
    sec.data["llama_build_isa"] = isa
    sec.row(table="llama.cpp", what="installed build", value=isa,
            detail=f"this CPU: {cpu.cpu_class()}; install.py / scripts/setup.sh compile with "
                   f"{' '.join(cpu.llama_cmake_args())} (tokens/s: section llama)")
