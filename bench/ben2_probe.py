"""One BEN2 configuration in a fresh process: load, calls until stable, peak memory. Prints one JSON line.

``python -m bench.ben2_probe MODE MODEL [--runs N] [--size H,W] [--save-mask OUT.npy]``

MODE: ``safecut`` (``safecut.engines.ben2.remove_background``, the engine and its cache), ``plain`` (an
``onnxruntime.InferenceSession`` with default options, input prepared with numpy), ``naive`` (the seeds' node,
:class:`bench.naive.NaiveBEN2`). Why a fresh process: ``ru_maxrss`` is a process high-water mark, and ORT's
arena keeps what it grew; configurations measured in one process would charge each other.

Calls: the first call after load is timed on its own; warm-up calls follow until two consecutive calls differ by
≤ 10 % (at least 2 warm-ups including the first, at most ``--max-warmup``); then ``runs`` timed calls. "Steady" =
the median of every call after the first (``--max-warmup 1 --runs 0``: one call, which is then all there is).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent (the
    bench, which may have built models), so a fresh child would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


DEVICE: list[str] = []   # what the SafeCut engine reported it ran on ("CPU · OpenVINO f32", …)


def make_caller(mode: str, model: str, runtime: str = "auto"):
    """Returns (call(image) -> mask HxW float32, load_seconds)."""
    import numpy as np

    t0 = time.perf_counter()
    if mode == "safecut":
        from safecut.engines import ben2

        # auto: what it resolves to here (a lower precision once the quality probe passed; a probe that still has
        # to run counts in the load, as at a product's first call)
        runtime = ben2._resolve_auto(model, "CPU", 0, runtime, None)[0]
        m = ben2.preload(model, "CPU", runtime=runtime)   # into the engine's cache; the first call is a cache hit
        load = time.perf_counter() - t0
        DEVICE[:] = [m.device.describe()]
        return (lambda img: ben2.remove_background([img], model, device="CPU", runtime=runtime).masks[0]), load
    if mode == "naive":
        from .naive import NaiveBEN2

        n = NaiveBEN2(model)
        return (lambda img: n(img)[..., 3]), n.load_seconds
    if mode == "plain":
        import onnxruntime as ort

        sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        load = time.perf_counter() - t0
        inp = sess.get_inputs()[0]
        h, w = inp.shape[2:]

        def call(img):
            from PIL import Image

            x = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c]), "F").resize((w, h)), np.float32)
                          for c in range(3)])[None]
            out = np.asarray(sess.run(None, {inp.name: x})[0], np.float32)[0, 0]
            return out

        return call, load
    raise SystemExit(f"unknown mode {mode}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ben2_probe")
    ap.add_argument("mode", choices=["safecut", "plain", "naive"])
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--size", default="768,1024", help="image H,W")
    ap.add_argument("--max-warmup", type=int, default=4)
    ap.add_argument("--save-mask", default="")
    ap.add_argument("--runtime", default="auto", help="safecut mode: the CPU runtime (safecut.runtime.sessions.CHOICES)")
    a = ap.parse_args(argv)
    sys.path.insert(0, ROOT)
    os.environ.setdefault("SAFECUT_OFFLINE", "1")
    import numpy as np

    from bench.sections.base import make_images

    img = make_images(1, tuple(int(v) for v in a.size.split(",")), seed=3)[0]
    base_rss, base_peak = rss_mb(), peak_mb()
    call, load = make_caller(a.mode, a.model, a.runtime)
    res = {"mode": a.mode, "model": a.model, "runtime": a.runtime, "device": DEVICE[0] if DEVICE else "", "load_s": load, "rss_after_load_mb": rss_mb(),
           "peak_after_load_mb": peak_mb(), "base_rss_mb": base_rss, "base_peak_mb": base_peak}
    warm, mask = [], None
    while True:
        t = time.perf_counter()
        mask = call(img)
        warm.append(time.perf_counter() - t)
        if len(warm) == 1:
            res["peak_after_first_mb"] = peak_mb()
        if len(warm) >= a.max_warmup or (len(warm) >= 2 and abs(warm[-1] - warm[-2]) <= 0.1 * warm[-2]):
            break
    timed = []
    for _ in range(a.runs):
        t = time.perf_counter()
        mask = call(img)
        timed.append(time.perf_counter() - t)
    steady = warm[1:] + timed or warm   # every call after the first (the warm-ups that agreed included); one call: it
    res.update(first_s=warm[0], warmup_s=warm, timed_s=timed, steady_samples_s=steady, peak_mb=peak_mb(),
               rss_end_mb=rss_mb(), steady_s=float(np.median(steady)))
    if a.save_mask:
        np.save(a.save_mask, np.asarray(mask, np.float32))
    print("PROBE " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
