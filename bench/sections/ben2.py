"""BEN2 background removal: SafeCut vs the naive reference."""
from __future__ import annotations

import os
import time

import numpy as np

from ..common import Section, measure
from .base import Ctx, _fs, _unload_all, make_images


# ---- BEN2 ----------------------------------------------------------------------------------------------
def section_ben2(ctx: Ctx, sec: Section) -> None:
    from safecut import ben2
    from safecut.cache import get_cache

    from ..flops import count_flops
    from ..naive import NaiveBEN2

    path, int8 = ctx.paths["ben2"], ctx.paths.get("ben2_int8")
    img = make_images(1, ctx.size, seed=3)[0]
    runs = ctx.runs if ctx.quick else ctx.heavy_runs
    fl = count_flops(path, {"input": [1, 3, 1024, 1024]})
    sec.data["flops"] = fl
    info = ctx.builds.get("ben2", {})
    sec.data["model"] = {k: info.get(k) for k in ("path", "params", "bytes", "real", "description")}

    # naive
    naive = NaiveBEN2(path)
    n = measure(lambda: naive(img), runs)
    n["load"] = naive.load_seconds
    del naive
    # ours fp32 (the engine, through the cache)
    _unload_all()
    t0 = time.perf_counter()
    first = ben2.remove_background([img], path, device="CPU")
    cold_call = time.perf_counter() - t0
    ours = measure(lambda: ben2.remove_background([img], path, device="CPU"), runs, warmup=1)
    rep = ours["_result"]
    # what a repeat call pays besides the model run: the cache's load time (0 on a hit) + the lookup itself
    # (model file resolution + cache hit with its file-signature check), timed over 200 lookups
    from safecut import modelfiles

    cache = get_cache()
    key = next(k for k in cache.keys() if k.kind == "ben2")
    t0 = time.perf_counter()
    for _ in range(200):
        p = modelfiles.resolve("ben2", path)
        with cache.use(key, lambda: None, files=[p]):
            pass
    overhead = (time.perf_counter() - t0) / 200
    res = {"naive": n, "ours": ours, "ours_first_call": cold_call, "ours_load": first.load_seconds,
           "repeat_load_seconds": rep.load_seconds, "repeat_overhead_seconds": overhead}
    if int8 and os.path.isfile(int8):
        _unload_all()
        t0 = time.perf_counter()
        fi = ben2.remove_background([img], int8, device="CPU")
        res["int8_first_call"] = time.perf_counter() - t0
        res["int8_load"] = fi.load_seconds
        res["int8"] = measure(lambda: ben2.remove_background([img], int8, device="CPU"), runs, warmup=1)
        a = np.asarray(first.masks[0])
        b = np.asarray(res["int8"]["_result"].masks[0])
        res["int8_mask_mae_vs_fp32"] = float(np.abs(a - b).mean())
        res["int8_bytes"] = os.path.getsize(int8)
    _unload_all()
    sec.data.update(res)
    ctx.shared["ben2"] = res
    gemm = ctx.shared.get("gemm_gflops")
    achieved = fl["total"] / ours["median"] / 1e9
    ctx.shared["ben2_gflops"] = achieved
    sp = n["median"] / ours["median"]
    sec.row(what="naive (seed node: 8 intra + 2 inter threads, ORT_PARALLEL, spinning, PIL pre/post)",
            value=_fs(n), detail=f"session load {n['load']:.2f} s")
    sec.row(what="SafeCut fp32 (ben2.remove_background, cached session, threads = cores, no spinning)",
            value=_fs(ours), detail=f"×{sp:.2f} vs naive; first call {cold_call:.2f} s (load {first.load_seconds:.2f} s)")
    if "int8" in res:
        sp8 = n["median"] / res["int8"]["median"]
        sec.row(what="SafeCut int8 (safecut.quantize.quantize_ben2: dynamic int8 MatMul weights)", value=_fs(res["int8"]),
                detail=f"×{sp8:.2f} vs naive, ×{ours['median'] / res['int8']['median']:.2f} vs fp32; "
                       f"{res['int8_bytes'] / 1e6:.0f} MB; mask MAE vs fp32 {res['int8_mask_mae_vs_fp32']:.4f} (random weights)")
    frac = (rep.load_seconds + overhead) / ours["median"]
    sec.row(what="repeat call on the cached model: loading + lookup",
            value=f"{(rep.load_seconds + overhead) * 1000:.2f} ms ({frac * 100:.3f} % of the call)",
            detail=f"cache load_seconds on repeat = {rep.load_seconds:.3f} s; resolve + cache hit "
                   f"{overhead * 1e6:.0f} µs")
    sec.row(what=f"graph FLOPs (Conv/MatMul, bench.flops) → achieved", value=f"{achieved:.1f} GFLOP/s",
            detail=f"{fl['total'] / 1e9:.0f} GFLOP per image" + (f"; {achieved / gemm * 100:.0f} % of this machine's "
                                                                 f"ORT fp32 GEMM ({gemm:.0f} GFLOP/s)" if gemm else ""))
