"""BEN2 background removal on the faithful stand-in: faithfulness vs an upstream export, SafeCut (``auto``) and its
OpenVINO INT8 (NNCF) vs a plain ORT session and the seeds' node, memory and warm-up; every configuration in its own
fresh process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from ..common import Section, cpu_info, cpu_snapshot, foreign_cpu, load_avg
from .base import ROOT, Ctx, page_env

ISSUE_GFLOP = 2151.0          # the upstream export's count on which issue 9 was measured


def probe(ctx: Ctx, mode: str, model: str, runs: int, mask: str = "", huge_pages: bool = False,
          runtime: str = "auto", env: dict | None = None, one_call: bool = False) -> dict:
    """One configuration in a fresh process (bench/ben2_probe.py); adds the CPU share others took meanwhile.
    ``one_call``: load and a single timed call (a configuration far slower than the others: enough said)."""
    h, w = ctx.size
    cmd = [sys.executable, "-m", "bench.ben2_probe", mode, model, "--runs", "0" if one_call else str(runs),
           "--size", f"{h},{w}", "--runtime", runtime]
    if one_call or ctx.quick:
        cmd += ["--max-warmup", "1" if one_call else "2"]
    if mask:
        cmd += ["--save-mask", mask]
    snap, load = cpu_snapshot(), load_avg()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=ROOT,
                       env=dict(page_env(huge_pages), **(env or {})))
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"{mode} probe of {os.path.basename(model)} failed: {r.stderr[-1500:]}")
    res = json.loads(line[6:])
    res["other_share"] = foreign_cpu(snap)["other_share"]
    res["load_before"] = load
    return res


def exporter_of(path: str) -> str:
    """Which torch exporter wrote an ONNX file: TorchScript names nodes by module scope ("/blocks.0/Add"),
    the dynamo exporter ("node_Add_12") does not. The exporter alone changes plain-ORT memory ~2x on BEN_Base
    (bench/RESULTS.md), so the faithfulness target compares exports of the same exporter."""
    import onnx

    g = onnx.load(path, load_external_data=False).graph
    return "TorchScript" if sum(n.name.startswith("/") for n in g.node) > len(g.node) // 2 else "dynamo"


def _split(fl: dict) -> dict:
    return {k: round(v / 1e9, 1) for k, v in sorted(fl.get("by_kind", {}).items())}


def _gflop_row(fl: dict) -> str:
    tot = fl["total"]
    return ", ".join(f"{k} {v / 1e9:.0f} ({v / tot * 100:.0f} %)" for k, v in
                     sorted(fl.get("by_kind", {}).items(), key=lambda kv: -kv[1]))


def _fmt_times(p: dict) -> str:
    t = p["steady_samples_s"]
    rng = f" ({min(t):.2f}–{max(t):.2f}, n={len(t)})" if len(t) > 1 else f" (n={len(t)})"
    return f"{p['steady_s']:.2f} s{rng}"


def section_ben2(ctx: Ctx, sec: Section) -> None:
    from ..flops import count_flops

    path, int8 = ctx.paths["ben2"], ctx.paths.get("ben2_int8")   # int8: the OpenVINO IR made from path
    refs = [r for r in ctx.paths.get("ben2_references", []) if os.path.isfile(r)]
    own = exporter_of(path)
    exporter = {r: exporter_of(r) for r in refs}           # each call parses a ~400 MB graph: once per file
    refs.sort(key=lambda r: exporter[r] != own)             # the same exporter first: that one is the target
    ref = refs[0] if refs and exporter[refs[0]] == own else None
    runs = ctx.runs if ctx.quick else ctx.heavy_runs
    info = ctx.builds.get("ben2", {})
    size = info.get("size", 1024)
    fl = count_flops(path)
    sec.data.update(flops=fl, model={k: info.get(k) for k in ("path", "params", "bytes", "size", "depths", "nodes",
                                                                "exporter", "arch_version")})
    gemm = ctx.shared.get("gemm_gflops")
    cpu = cpu_info()
    simd = ", ".join(cpu.get("simd", [])) or "?"
    # SafeCut rows run as `python -m safecut run` and the worker image run them: glibc asked for huge pages
    # (safecut/runtime/hugepages.py); the "4 KiB pages" rows are a ComfyUI started without the tunable.
    hp = " huge pages (GLIBC_TUNABLES, as the CLI and worker set it)"
    configs = [("plain", "plain ORT session, default options (the stand-in)", path, "auto"),
               ("safecut", f"SafeCut auto (ben2.remove_background; what auto ran: see detail;{hp})", path, "auto"),
               ("safecut-4k", "SafeCut auto, 4 KiB pages (a ComfyUI started without the tunable)", path, "auto")]
    if int8 and os.path.isfile(int8):
        configs.append(("safecut-int8", f"SafeCut OpenVINO int8 (the NNCF INT8 model of the stand-in;{hp})", path,
                        "OpenVINO int8"))
    configs.append(("naive", "the seeds' node (8 intra + 8 inter threads, sequential, torch resize)", path, "auto"))
    for r in refs:
        key = "reference" if r == ref else f"reference-{exporter[r]}"
        configs.append((key, f"plain ORT session, upstream BEN_Base export ({exporter[r]} exporter"
                             f"{', the reference' if r == ref else ''})", r, "auto"))
    masks_dir = os.path.join(ctx.out, "ben2-masks")
    os.makedirs(masks_dir, exist_ok=True)
    res = {}
    for key, label, model, runtime in configs:
        mode = "plain" if key.startswith("reference") else "safecut" if key.startswith("safecut") else key
        ctx.log(f"    ben2: {label} ...")
        res[key] = probe(ctx, mode, model, runs, os.path.join(masks_dir, f"{key}.npy"),
                         huge_pages=key in ("safecut", "safecut-int8"), runtime=runtime)
        res[key]["label"] = label
    if "safecut-int8" in res:
        a, b = (np.load(os.path.join(masks_dir, f"{k}.npy")) for k in ("safecut", "safecut-int8"))
        res["int8_mask_mae_vs_fp32"] = float(np.abs(a - b).mean())
        res["int8_mask_max_vs_fp32"] = float(np.abs(a - b).max())
        res["int8_bytes"] = sum(os.path.getsize(int8[:-4] + ext) for ext in (".xml", ".bin"))
    sec.data["configs"] = res
    ctx.shared["ben2"] = res
    # Count the upstream FLOPs on the export whose shapes ONNX can infer statically: the TorchScript export of
    # upstream's einops reshapes leaves some shapes unknown (those nodes would count 0).
    counted = sorted(((count_flops(r), r) for r in refs), key=lambda fr: fr[0].get("unknown", 0))
    fl_ref, fl_ref_path = counted[0] if counted else (None, None)
    sec.data["flops_reference"] = fl_ref

    # ---- faithfulness -------------------------------------------------------------------------------
    note = "" if size == 1024 else f" (QUICK: reduced build of the same architecture code, {size}², depths " \
                                   f"{info.get('depths')})"
    sec.row(table="faithfulness", what=f"stand-in FLOPs{note}", value=f"{fl['total'] / 1e9:.0f} GFLOP",
            detail=(f"{fl['total'] / 1e9 / ISSUE_GFLOP * 100 - 100:+.1f} % vs issue 9's {ISSUE_GFLOP:.0f}; "
                    if size == 1024 else "") + _gflop_row(fl))
    if fl_ref:
        sec.row(table="faithfulness", what=f"upstream export FLOPs ({exporter[fl_ref_path]} export; "
                                            f"{fl_ref.get('unknown', 0)} nodes of unknown shape)",
                value=f"{fl_ref['total'] / 1e9:.0f} GFLOP",
                detail=f"stand-in/upstream {fl['total'] / fl_ref['total']:.3f}; " + _gflop_row(fl_ref))
    if refs and not ref:
        sec.row(table="faithfulness", what="upstream export by the stand-in's exporter", value="missing",
                detail=f"the stand-in was written by the {own} exporter; no --ben2-reference was")
    if "reference" in res:
        p, r = res["plain"], res["reference"]
        sec.row(table="faithfulness", what="plain ORT steady time, stand-in vs upstream export",
                value=f"{p['steady_s']:.2f} s vs {r['steady_s']:.2f} s",
                detail=f"ratio {p['steady_s'] / r['steady_s']:.3f} (target 0.85–1.15); both written by the {own} "
                       "exporter")
        sec.row(table="faithfulness", what="plain ORT peak RSS, stand-in vs upstream export",
                value=f"{p['peak_mb'] / 1024:.2f} GB vs {r['peak_mb'] / 1024:.2f} GB",
                detail=f"ratio {p['peak_mb'] / r['peak_mb']:.3f} (target 0.85–1.15)")
    for key in (k for k in res if isinstance(res[k], dict) and k.startswith("reference-")):
        p, r = res["plain"], res[key]
        sec.row(table="faithfulness", what=f"plain ORT, stand-in vs upstream {key[10:]} export (another exporter)",
                value=f"{p['steady_s']:.2f} s / {p['peak_mb'] / 1024:.2f} GB vs {r['steady_s']:.2f} s / "
                      f"{r['peak_mb'] / 1024:.2f} GB",
                detail="the same upstream code through another exporter: what the exporter alone changes")
    # ---- speed, memory, warm-up -----------------------------------------------------------------------
    base = res["plain"]["steady_s"]
    for key, *_ in configs:
        p = res[key]
        gf = fl["total"] / p["steady_s"] / 1e9      # the references count the same 2,151 GFLOP (faithfulness)
        frac = f"; {gf / gemm * 100:.0f} % of GEMM peak" if gemm else ""
        extra = ""
        if key == "safecut-int8":
            extra = f"; mask mean |Δ| vs fp32 {res['int8_mask_mae_vs_fp32']:.4f} (max {res['int8_mask_max_vs_fp32']:.3f})"
        sec.row(table="speed", what=p["label"], steady=_fmt_times(p),
                first_call=f"{p['first_s']:.2f} s ({p['first_s'] / p['steady_s'] * 100 - 100:+.0f} %)",
                peak_rss=f"{p['peak_mb'] / 1024:.2f} GB", vs_plain=f"×{base / p['steady_s']:.2f}",
                detail=f"{gf:.0f} GFLOP/s{frac}; load {p['load_s']:.1f} s; warm-ups "
                       f"{', '.join(f'{t:.1f}' for t in p['warmup_s'])} s; others took "
                       f"{p['other_share'] * 100:.0f} % CPU" + (f"; ran: {p['device']}" if p["device"] else "") + extra)
    sec.notes.append(f"Image {ctx.size[1]}×{ctx.size[0]} → {size}² (static batch of 1, as the published file). Each "
                     "row: a fresh process; load, first call, warm-ups until two calls agree within 10 % (≥ 2), "
                     f"then {runs} timed call(s); steady = median (min–max) of every call after the first. Peak RSS = that process's VmHWM (ru_maxrss would carry the bench's own peak over exec). GEMM peak: "
                     f"section env ({gemm} GFLOP/s fp32); CPU SIMD: {simd}. Random weights: speed and memory only.")
