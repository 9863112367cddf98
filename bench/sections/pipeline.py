"""Full CPU pipeline (headline) and cold start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from ..common import Section, cpu_snapshot, foreign_cpu, quiet_fds, stats
from .base import ROOT, Ctx, _fs, _quiet_transformers, make_images, page_env


# ---- full pipeline ---------------------------------------------------------------------------------------
def _models_root(ctx: Ctx) -> str:
    """A SAFECUT_MODELS_DIR whose folders hold the bench models (symlinks; BEN2's INT8 IR where the product looks
    for it, ``safecut-int8/`` beside the model)."""
    root = os.path.join(ctx.out, "models-view")
    key = _ben2_key(ctx)
    int8 = ctx.paths.get(key + "_int8")
    links = [("ben2", ctx.paths.get(key)), ("florence2", ctx.paths.get("florence")),
             ("LLM", ctx.paths.get("llama_Q4_K_M"))]
    if int8 and os.path.isfile(int8):
        links += [(os.path.join("ben2", os.path.basename(os.path.dirname(int8))), int8[:-4] + ext)
                  for ext in (".xml", ".bin")]
    for kind, src in links:
        if not src:
            continue
        d = os.path.join(root, kind)
        os.makedirs(d, exist_ok=True)
        dst = os.path.join(d, os.path.basename(src))
        if not os.path.lexists(dst):
            os.symlink(src, dst)
    return root


def _ben2_key(ctx: Ctx) -> str:
    """The BEN2 the pipeline and cold-start sections use: the stand-in; in quick mode the test kit's tiny BEN2
    (the quick BEN2 section already times the reduced stand-in; CI time is short)."""
    return "ben2_tiny" if ctx.quick and ctx.paths.get("ben2_tiny") else "ben2"


def _write_images(ctx: Ctx, n: int, name: str) -> str:
    from PIL import Image

    d = os.path.join(ctx.out, name)
    os.makedirs(d, exist_ok=True)
    for i, im in enumerate(make_images(n, ctx.size, seed=11)):
        p = os.path.join(d, f"img{i:02d}.png")
        if not os.path.exists(p):
            Image.fromarray((im * 255).astype(np.uint8)).save(p)
    return d


def run_variant(a: dict) -> dict:
    """In a fresh process (``python -m bench.sections.pipeline JSON``): one pipeline variant, warm-up on one
    image, then ``runs`` runs over the image folder; per-image times, stage times and the process's peak RSS."""
    from safecut.app import pipeline

    from ..ben2_probe import peak_mb

    _quiet_transformers()
    os.environ["SAFECUT_MODELS_DIR"] = a["root"]
    opts = pipeline.Options(**a["opts"])
    with quiet_fds():
        t0 = time.perf_counter()
        pipeline.run(a["warm_src"], a["out"] + "-warm", opts)
        cold = time.perf_counter() - t0
    samples, reports = [], []
    for _ in range(a["runs"]):
        with quiet_fds():
            t0 = time.perf_counter()
            s = pipeline.run(a["src"], a["out"], opts)
            samples.append((time.perf_counter() - t0) / a["n"])
        with open(s.report) as f:
            reports = [json.loads(ln) for ln in f]
        if s.failed:
            raise RuntimeError(f"pipeline failed: {[r.get('error') for r in reports if r.get('error')]}")
    timings = {}
    for r in reports:
        for k, v in (r.get("timings") or {}).items():
            timings[k] = timings.get(k, 0.0) + v / len(reports)
    return {"per_image": stats(samples), "first_run_1_image": cold, "stage_per_image": timings,
            "devices": reports[0].get("devices") if reports else {},
            "verdicts": [r.get("verdict") for r in reports], "decided_by": [r.get("decided_by") for r in reports],
            "peak_mb": peak_mb(), "low_memory": opts.low_memory}


def section_pipeline(ctx: Ctx, sec: Section) -> None:
    root = _models_root(ctx)
    N = 2 if ctx.quick else ctx.pipeline_images
    src = _write_images(ctx, N, "pipeline-in")
    warm_src = _write_images(ctx, 1, "pipeline-warm")
    T = 8 if ctx.quick else ctx.florence_tokens
    ben2_model = os.path.basename(ctx.paths[_ben2_key(ctx)])
    int8 = ctx.paths.get(_ben2_key(ctx) + "_int8")
    # (label, cpu_runtime, low_memory): the headline is `auto`; --low-memory releases each model after its stage
    variants = [("auto", "auto", False)]
    if int8 and os.path.isfile(int8):
        variants.append(("OpenVINO int8", "OpenVINO int8", False))
    variants.append(("auto low-memory", "auto", True))
    runs = 1 if ctx.quick else max(1, min(ctx.heavy_runs, 2))
    gemm = ctx.shared.get("gemm_gflops")
    res = {}
    for label, runtime, low_memory in variants:
        opts = dict(ben2_model=ben2_model, cpu_runtime=runtime, device="CPU", batch_size=N, caption=True,
                    low_memory=low_memory, florence_model=os.path.basename(ctx.paths["florence"]),
                    task="more detailed caption", max_new_tokens=T, num_beams=3, nudenet=bool(ctx.paths.get("nudenet")),
                    gate=True, classify=True, llm_model=os.path.basename(ctx.paths["llama_Q4_K_M"]))
        args = dict(root=root, opts=opts, warm_src=warm_src, src=src, n=N, runs=runs,
                    out=os.path.join(ctx.out, f"pipeline-out-{label.replace(' ', '-')}"))
        res[label] = _probe(label, args)
        sec.row(what=f"cpu-full pipeline per image, warm, cpu_runtime {label} (python -m safecut run: BEN2 + "
                     f"Florence-2 caption + NudeNet + gate + Llama), {N} images/run",
                value=_fs(res[label]["per_image"]), peak_rss=f"{res[label]['peak_mb'] / 1024:.2f} GB",
                ran=_ran(res[label]), detail=_stages(res[label]))
    # The 4 GB worker itself: a hard 4 GiB limit, default options (low-memory by itself) and models kept
    opts = dict(opts, cpu_runtime="auto")
    for mode, low in (("default options", "auto"), ("models kept", False)) if not ctx.quick else ():
        label = f"auto, {mode}, 4 GiB memory cgroup"
        args = dict(args, opts=dict(opts, low_memory=low), out=os.path.join(ctx.out, f"pipeline-out-cgroup-{low}"))
        res[label] = r = _limited(label, args, 4 << 30)
        if r.get("unmeasured"):
            sec.notes.append(f"{label}: not measured ({r['unmeasured']}).")
            continue
        sec.row(what=f"cpu-full pipeline per image, warm, cpu_runtime {label} (python -m safecut run), {N} images/run",
                value=_fs(r["per_image"]) if "per_image" in r else r["error"],
                peak_rss=f"{r['peak_mb'] / 1024:.2f} GB" if "peak_mb" in r else "", ran=_ran(r),
                detail=f"{_stages(r)}; low-memory: {r.get('low_memory')}; cgroup peak {r['cgroup_peak'] / 2**30:.2f} GiB (its page "
                       f"cache included; model files the bench cached before count in RSS, not here); OOM kills "
                       f"{r['oom_kills']}")
    ctx.shared["pipeline"] = res
    sec.data.update(res)
    from safecut.runtime import cpu

    sec.data["cpu_class"] = cpu.cpu_class()
    sec.notes.append("Each variant in a fresh process (peak RSS = its VmHWM: every model of the pipeline loaded "
                     "in one process, as in ComfyUI — the low-memory rows release each after its stage and reload it per run; "
                     "huge pages asked of glibc, as `python -m safecut run` does). Random-weight captions contain no gate keyword, so every "
                     "image goes to the classifier (worst case for the gate). Stage times are the report's "
                     "per-image averages." + (f" GEMM peak of this machine: {gemm} GFLOP/s fp32." if gemm else ""))


def _ran(r: dict) -> str:
    """What ran BEN2 and NudeNet (the report's device names), e.g. 'BEN2 CPU · OpenVINO f32; NudeNet CPU · ...'."""
    d = r.get("devices") or {}
    return "; ".join(f"{name} {d[k]}" for k, name in (("ben2", "BEN2"), ("nudenet", "NudeNet")) if d.get(k))


def _stages(r: dict) -> str:
    """Per-image stage times, the first run (loads included) and the CPU share others took meanwhile."""
    parts = [", ".join(f"{k} {v:.2f} s" for k, v in r.get("stage_per_image", {}).items())]
    if "first_run_1_image" in r:
        parts.append(f"first run (1 image, loads included) {r['first_run_1_image']:.1f} s")
    return "; ".join(filter(None, parts + [f"others took {r.get('other_share', 0) * 100:.0f} % CPU"]))


def _probe(label: str, args: dict, preexec=None) -> dict:
    """One variant in a fresh process; adds the CPU share other processes took meanwhile (the noise of that row)."""
    snap = cpu_snapshot()
    r = subprocess.run([sys.executable, "-m", "bench.sections.pipeline", json.dumps(args)], capture_output=True,
                       text=True, timeout=3600, cwd=ROOT, env=page_env(True),   # as `python -m safecut run`
                       preexec_fn=preexec)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("PROBE ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"pipeline {label} failed (exit {r.returncode}): {r.stderr[-1500:]}")
    return dict(json.loads(line[6:]), other_share=foreign_cpu(snap)["other_share"])


def _limited(label: str, args: dict, limit: int) -> dict:
    """One variant in a memory cgroup of ``limit`` bytes; an OOM kill is a result, not a bench failure."""
    from ..cgroup import MemoryCgroup

    cg = MemoryCgroup.create(limit)
    if cg is None:
        return {"unmeasured": "no writable memory cgroup on this machine"}
    try:
        try:
            out = _probe(label, args, preexec=cg.join)
        except subprocess.SubprocessError as exc:   # the child could not join the group
            return {"unmeasured": f"could not move a process into the memory cgroup ({exc})"}
        except RuntimeError as exc:                 # it ran and failed (an OOM kill among others): a result
            out = {"error": str(exc)[:300]}
        out.update(cgroup_peak=cg.peak_bytes(), oom_kills=cg.oom_kills(), limit=limit)
        return out
    finally:
        cg.remove()


# ---- cold start ------------------------------------------------------------------------------------------
def _cold(ctx: Ctx, profile: str, env: dict, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "bench.coldstart", "--profile", profile] + args
    e = dict(os.environ, **env)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, env=e)
    wall = time.time() - t0
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["spawn_to_result"] = out["t_result"] - t0
    out["process_wall"] = wall
    out["interpreter"] = out["t_main"] - t0
    return out


def section_coldstart(ctx: Ctx, sec: Section) -> None:
    args = ["--ben2", ctx.paths[_ben2_key(ctx)], "--florence", ctx.paths["florence"], "--llama", ctx.paths["llama_Q4_K_M"],
            "--tokens", str(8 if ctx.quick else ctx.florence_tokens), "--size", f"{ctx.size[0]}x{ctx.size[1]}"]
    cache_dir = os.path.join(ctx.out, "ort-cache")
    import shutil

    shutil.rmtree(cache_dir, ignore_errors=True)
    res = {}
    plan = [("cpu-fast", "no opt cache", {"SAFECUT_ORT_OPT_CACHE": "0"}),
            ("cpu-fast", "opt cache: first (writes it)", {"SAFECUT_ORT_OPT_CACHE": "1"}),
            ("cpu-fast", "opt cache: next start (reads it)", {"SAFECUT_ORT_OPT_CACHE": "1"}),
            ("cpu-full", "defaults (no opt cache), mmap GGUF", {"SAFECUT_ORT_OPT_CACHE": "0"})]
    for profile, label, env in plan:
        env = dict(env, SAFECUT_CACHE_DIR=cache_dir)
        r = _cold(ctx, profile, env, args)
        res[f"{profile} | {label}"] = r
        load = sum(v for k, v in r["load"].items())
        first = sum(v for k, v in r["first"].items())
        sec.row(profile=profile, variant=label, total=f"{r['spawn_to_result']:.2f} s",
                interpreter=f"{r['interpreter']:.2f} s", imports=f"{r['import']:.2f} s",
                load=f"{load:.2f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in r["load"].items()) + ")",
                first=f"{first:.2f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in r["first"].items()) + ")")
    # GGUF: mmap vs read, fresh process each (page cache warm)
    mm = {}
    for use_mmap in (True, False):
        samples = []
        for _ in range(2 if ctx.quick else 3):
            code = (f"import time,sys; sys.path.insert(0,{ROOT!r})\nfrom bench.common import quiet_fds\n"
                    f"with quiet_fds():\n    import llama_cpp\n    t=time.perf_counter()\n"
                    f"    l=llama_cpp.Llama(model_path={ctx.paths['llama_Q4_K_M']!r}, n_ctx=1024, use_mmap={use_mmap}, "
                    f"verbose=False)\n    dt=time.perf_counter()-t\nprint(dt)")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
            samples.append(float(r.stdout.strip().splitlines()[-1]))
        mm["mmap" if use_mmap else "read"] = stats(samples)
    res["gguf_load"] = mm
    sec.data.update(res)
    ctx.shared["coldstart"] = res
    sec.notes.append(f"GGUF load (Q4_K_M, fresh process, page cache warm): use_mmap=True {_fs(mm['mmap'])}, "
                     f"use_mmap=False {_fs(mm['read'])}.")
    sec.notes.append("total = process spawn → first result; interpreter = spawn → the bench's main() starts; "
                     "imports = onnxruntime/torch/transformers/llama_cpp + SafeCut engines; load and first = per "
                     "engine, through the engines' public calls.")


if __name__ == "__main__":
    print("PROBE " + json.dumps(run_variant(json.loads(sys.argv[1])), default=str), flush=True)
