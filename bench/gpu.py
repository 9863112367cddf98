"""GPU check: the product's own engines on a CUDA machine, through `device="auto"`.

  python -m bench.gpu [--out DIR] [--models DIR] [--runs 10] [--florence base|tiny|none]

What it shows, per model: the device `auto` really chose (and why, when it is not CUDA), load time, first call,
steady calls (median), the GPU memory the process holds afterwards (nvidia-smi), and how far the CUDA result is
from the CPU result of the same engine. BEN2 runs the faithful 1024² stand-in (bench/ben2_arch.py, built here and
cached); NudeNet its bundled detector; Florence-2 the base-shaped random model (bench/models.py) or the tiny one.
Writes OUT/gpu.json and OUT/gpu.md. Needs onnxruntime-gpu (BEN2, NudeNet) and a CUDA torch (Florence-2); what is
missing is reported as such, not skipped silently.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from .common import stats


def _gpu_memory_mib() -> int:
    """Memory in use on GPU 0 (whole device; this process is the only user while the check runs)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=20).stdout
        return int(out.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return -1


def environment() -> dict:
    env: dict = {"python": sys.version.split()[0]}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20).stdout.strip()
        env["gpu"] = q
    except (OSError, subprocess.SubprocessError) as exc:
        env["gpu"] = f"nvidia-smi failed: {exc}"
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["ort_providers"] = ort.get_available_providers()
    except ImportError as exc:
        env["onnxruntime"] = f"missing ({exc})"
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["torch_sees_gpu"] = torch.cuda.is_available()
    except ImportError as exc:
        env["torch"] = f"missing ({exc})"
    env["cpu_count"] = os.cpu_count()
    return env


def _images(n: int, h: int = 768, w: int = 1024, seed: int = 0) -> list[np.ndarray]:
    """Smooth random scenes (a bright blob on a gradient), not noise: closer to what the models see."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * h
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        bg = np.stack([xx / w, yy / h, 1 - xx / w], -1) * rng.uniform(0.3, 0.8, 3)
        fg = rng.uniform(0.5, 1.0, 3)
        out.append(np.clip(bg * (1 - blob) + fg * blob, 0, 1).astype(np.float32))
    return out


def _timed(fn, runs: int) -> dict:
    """First call, then ``runs`` more (bench.common.stats of their wall times), and the GPU memory this process
    holds afterwards beyond what it held before (None without nvidia-smi)."""
    mem0 = _gpu_memory_mib()
    t = time.perf_counter()
    first = fn()
    first_s = time.perf_counter() - t
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - t)
    mem1 = _gpu_memory_mib()
    st = stats(times)
    return {"first": first, "first_s": round(first_s, 4), "last": last, "steady_s": round(st["median"], 4),
            "min_s": round(st["min"], 4), "max_s": round(st["max"], 4), "runs": runs,
            "gpu_mib": mem1 - mem0 if mem0 >= 0 and mem1 >= 0 else None}


def _row(r: dict) -> dict:
    """The columns every engine row shares; the engine's result says what load and the whole first call took."""
    first = r["first"]
    return {"device": first.device.describe(), "load_s": round(first.load_seconds, 2),
            "first_call_s": round(first.seconds - first.load_seconds, 3),
            **{k: r[k] for k in ("steady_s", "min_s", "max_s", "runs", "gpu_mib")}}


def _standin(models: str) -> tuple[str, str]:
    """The full-size BEN2 stand-in where `python -m bench` keeps it (built here when missing): (path, how)."""
    from . import ben2_arch
    from .models import BEN2_STEM

    path = os.path.join(models, "ben2", f"{BEN2_STEM}-v{ben2_arch.ARCH_VERSION}.onnx")
    if os.path.exists(path):
        return path, "cached"
    t = time.perf_counter()
    ben2_arch.build(path)
    return path, f"built in {time.perf_counter() - t:.0f} s"


def check_ben2(models: str, runs: int) -> dict:
    from safecut.engines import ben2, mask_quality
    from safecut.runtime.cache import get_cache

    path, built = _standin(models)
    img = _images(1)
    r = _timed(lambda: ben2.remove_background(img, path, device="auto"), runs)
    row = {"model": os.path.basename(path), "built": built, **_row(r)}
    get_cache().unload()
    cpu = ben2.remove_background(img, path, device="CPU", keep_loaded=False)
    a, b = r["last"].masks[0], cpu.masks[0]
    row["cpu_s"] = round(cpu.seconds - cpu.load_seconds, 2)
    row["mask_mean_abs_diff_vs_cpu"] = round(float(np.abs(a - b).mean()), 5)
    row["mask_iou_vs_cpu"] = round(mask_quality.compare_one(b, a)["iou"], 5)
    return row


# ORT CUDA provider options and session memory settings worth knowing for a big one-shot graph: how the BFC
# arena grows, the cuDNN workspace and conv algorithm search, TF32, the memory pattern, and a hard arena limit
# (does the graph run inside it: its real need).
_SAME = {"arena_extend_strategy": "kSameAsRequested"}          # ORT's default is kNextPowerOfTwo
_HEUR = dict(_SAME, cudnn_conv_algo_search="HEURISTIC")        # ORT's default is EXHAUSTIVE
_ORT = {"arena_extend_strategy": "kNextPowerOfTwo", "cudnn_conv_algo_search": "EXHAUSTIVE"}
_PATTERN = {"mem_pattern": True}
SWEEP = {   # name: (CUDA provider options, session settings over ben2.session_settings(cuda=True))
    "ORT defaults": (_ORT, _PATTERN),
    "arena kSameAsRequested": (dict(_ORT, **_SAME), _PATTERN),
    "+ HEURISTIC conv search": (_HEUR, _PATTERN),
    "+ cuDNN workspace off": (dict(_HEUR, cudnn_conv_use_max_workspace="0"), _PATTERN),
    "+ memory pattern off (SafeCut's default)": (_HEUR, {"mem_pattern": False}),
    "+ memory pattern off, arena limit 4 GiB": (dict(_HEUR, gpu_mem_limit=str(4 << 30)), {"mem_pattern": False}),
    "+ memory pattern off, arena limit 3 GiB": (dict(_HEUR, gpu_mem_limit=str(3 << 30)), {"mem_pattern": False}),
    "+ memory pattern off, arena limit 2 GiB": (dict(_HEUR, gpu_mem_limit=str(2 << 30)), {"mem_pattern": False}),
    "TF32 off": (dict(_ORT, **_SAME, use_tf32="0"), _PATTERN),
}


def probe_one(path: str, runs: int, device: str = "CUDA") -> dict:
    """One fresh process: the BEN2 ONNX on ``device`` (strict) with SAFECUT_ORT_CUDA_OPTIONS as set by the caller
    and BENCH_SESSION (JSON) over the product's session settings."""
    from safecut.engines import ben2
    from safecut.runtime import providers

    settings = dict(ben2.session_settings(path, cuda=device == "CUDA"), **json.loads(os.environ.get("BENCH_SESSION") or "{}"))
    base = _gpu_memory_mib()
    t = time.perf_counter()
    sess, _ = providers.create_ort_session(path, device, strict=True, cuda=ben2.CUDA_OPTIONS, **settings)
    load = time.perf_counter() - t
    after_load = _gpu_memory_mib()
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in inp.shape], np.float32)
    r = _timed(lambda: sess.run(None, {inp.name: x})[0], runs)
    out = np.asarray(r["last"], np.float32)
    return {"load_s": round(load, 2), "first_call_s": r["first_s"], "steady_s": r["steady_s"], "min_s": r["min_s"],
            "gpu_mib_loaded": after_load - base, "gpu_mib_after_runs": _gpu_memory_mib() - base,
            "out_mean": float(out.mean())}


def cuda_sweep(models: str, runs: int) -> dict:
    path, _ = _standin(models)
    rows = {}
    for name, (opts, session) in SWEEP.items():
        env = dict(os.environ, SAFECUT_ORT_CUDA_OPTIONS=json.dumps(opts), BENCH_SESSION=json.dumps(session))
        p = subprocess.run([sys.executable, "-m", "bench.gpu", "--probe-one", path, "--runs", str(runs)], env=env,
                           capture_output=True, text=True, timeout=300)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        rows[name] = json.loads(line[-1]) if p.returncode == 0 and line else {"error": p.stderr[-300:]}
        print("sweep", name, json.dumps(rows[name]), flush=True)
    return rows


def check_nudenet(runs: int, batch: int = 8) -> dict:
    from safecut.engines import nudenet
    from safecut.runtime.cache import get_cache

    imgs = _images(batch, seed=1)
    r = _timed(lambda: nudenet.detect(imgs, device="auto"), runs)
    get_cache().unload()
    cpu = nudenet.detect(imgs, device="CPU", keep_loaded=False)
    gpu_results = r["last"].results
    diff = max(abs(x.max_score - y.max_score) for x, y in zip(gpu_results, cpu.results))
    same = all(x.is_unsafe == y.is_unsafe and len(x.detections) == len(y.detections)
               for x, y in zip(gpu_results, cpu.results))
    return {"model": os.path.basename(r["first"].model), "batch": batch, **_row(r),
            "cpu_s": round(cpu.seconds - cpu.load_seconds, 3),
            "max_score_diff_vs_cpu": round(float(diff), 5), "same_verdicts_and_counts": same}


def check_florence(models: str, which: str, runs: int, batch: int = 4) -> dict:
    from safecut.engines import florence

    if which == "base":
        from .models import FLORENCE_NAME, build_florence_base

        path = os.path.join(models, "florence2", FLORENCE_NAME)
        t = time.perf_counter()
        built = "cached"
        if not os.path.isdir(path):
            build_florence_base(path)
            built = f"built in {time.perf_counter() - t:.0f} s"
    else:
        from safecut.testkit.tiny_florence import build_tiny_florence, is_complete

        path = os.path.join(models, "florence2", "tiny")
        built = "cached" if is_complete(path) else "built"
        if not is_complete(path):
            build_tiny_florence(path)
    imgs = _images(batch, seed=2)
    # max_new_tokens fixed: random weights never say </s>, so every call generates the same token count
    r = _timed(lambda: florence.caption_images(imgs, path, device="auto", max_new_tokens=20, batch_size=batch), runs)
    return {"model": f"Florence-2 {which}-shaped (random weights)", "built": built, "dtype": r["first"].dtype,
            "batch": batch, "max_new_tokens": 20, "num_beams": 3, **_row(r)}


def check_llama() -> dict:
    """Only the device plan: a CUDA build of llama-cpp-python is compiled on the machine that runs it."""
    from safecut.engines import guard

    try:
        choice, layers = guard.plan_device(-1)
        return {"device": choice.describe(), "n_gpu_layers": layers}
    except Exception as exc:   # a missing llama_cpp is reported, not hidden
        return {"device": f"not checked: {type(exc).__name__}: {exc}"}


def _explain(error: str) -> str:
    """ORT's arena error in a table cell: which node ran out and by how much, else the error's last line."""
    node = re.search(r"(\w+) node\. Name:'([^']+)'", error)
    asked = re.search(r"Available memory of (\d+) is smaller than requested bytes of (\d+)", error)
    if node and asked:
        left, want = (int(v) >> 20 for v in asked.groups())
        return f"out of arena memory at {node.group(1)} `{node.group(2)}` (asked {want} MiB, {left} MiB left)"
    return error.strip().splitlines()[-1][:160] if error.strip() else "failed"


def to_markdown(res: dict) -> str:
    env = res["env"]
    lines = [f"GPU check ({res['date']}): {env.get('gpu')}; onnxruntime {env.get('onnxruntime')} "
             f"(providers {', '.join(env.get('ort_providers', []))}); torch {env.get('torch')} CUDA {env.get('torch_cuda')}; "
             f"{env.get('cpu_count')} CPUs.", "",
             "| model | `auto` used | load | first call | steady (median) | GPU memory | vs CPU |",
             "|---|---|---|---|---|---|---|"]
    for name, row in res["models"].items():
        if name == "sweep":
            continue
        if "error" in row:
            lines.append(f"| {name} | error: {row['error']} | | | | | |")
            continue
        if "steady_s" not in row:
            lines.append(f"| {name} | {row.get('device')} | | | | | |")
            continue
        extra = {"ben2": lambda r: f"CPU {r['cpu_s']} s; mask mean abs diff {r['mask_mean_abs_diff_vs_cpu']}, IoU {r['mask_iou_vs_cpu']}",
                 "nudenet": lambda r: f"CPU {r['cpu_s']} s; max score diff {r['max_score_diff_vs_cpu']}, same verdicts: {r['same_verdicts_and_counts']}",
                 }.get(name, lambda r: r.get("dtype", ""))(row)
        what = f"{name} ({row.get('batch', 1)} image{'s' if row.get('batch', 1) > 1 else ''} a call)"
        lines.append(f"| {what} | {row['device']} | {row['load_s']} s | {row['first_call_s']} s | {row['steady_s']} s "
                     f"(min {row['min_s']}, max {row['max_s']}, {row['runs']} runs) | {row['gpu_mib']} MiB | {extra} |")
    sweep = res["models"].get("sweep")
    if sweep and "error" not in sweep:
        lines += ["", "BEN2 at 1024² on CUDA, each row a fresh process (onnxruntime CUDA provider options):", "",
                  "| options | load | first call | steady (median) | GPU memory after load | after the runs |",
                  "|---|---|---|---|---|---|"]
        for name, r in sweep.items():
            if "error" in r:
                lines.append(f"| {name} | failed: {_explain(r['error'])} | | | | |")
                continue
            lines.append(f"| {name} | {r['load_s']} s | {r['first_call_s']} s | {r['steady_s']} s | "
                         f"{r['gpu_mib_loaded']} MiB | {r['gpu_mib_after_runs']} MiB |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from .models import default_models_dir

    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench/results/gpu")
    ap.add_argument("--models", default=default_models_dir())
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--florence", choices=["base", "tiny", "none"], default="base")
    ap.add_argument("--only", default="ben2,nudenet,florence,llama,sweep")
    ap.add_argument("--render", metavar="JSON", help="print the markdown of a saved gpu.json and exit")
    ap.add_argument("--probe-one", metavar="ONNX", help=argparse.SUPPRESS)   # the sweep's fresh-process worker
    ap.add_argument("--probe-device", default="CUDA", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.render:
        with open(a.render) as f:
            print(to_markdown(json.load(f)), end="")
        return 0
    if a.probe_one:
        print(json.dumps(probe_one(a.probe_one, a.runs, a.probe_device)))
        return 0
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "env": environment(), "models": {}}
    print(json.dumps(res["env"]), flush=True)
    checks = {"ben2": lambda: check_ben2(a.models, a.runs), "nudenet": lambda: check_nudenet(a.runs),
              "florence": lambda: check_florence(a.models, a.florence, a.runs), "llama": check_llama,
              "sweep": lambda: cuda_sweep(a.models, a.runs)}
    for name in a.only.split(","):
        if name == "florence" and a.florence == "none":
            continue
        t = time.perf_counter()
        try:
            res["models"][name] = checks[name]()
        except Exception as exc:   # one failing model must not hide the others' figures
            res["models"][name] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        print(name, f"{time.perf_counter() - t:.0f} s", json.dumps(res["models"][name]), flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "gpu.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = to_markdown(res)
    with open(os.path.join(a.out, "gpu.md"), "w") as f:
        f.write(md)
    print(md)
    return 1 if any("error" in r for r in res["models"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
