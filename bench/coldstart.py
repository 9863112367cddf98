"""Cold-start child: ``python -m bench.coldstart --profile cpu-fast|cpu-full --ben2 P [--florence P --llama P]``.

Runs in a fresh process and prints one JSON line with absolute wall-clock stamps (``time.time()``) so the
parent can split process start → first result into interpreter start, imports, model loads and first
inferences. Every model goes through the SafeCut engines' public calls (and so through the model cache,
the ORT optimized-graph cache when ``SAFECUT_ORT_OPT_CACHE=1``, and llama.cpp's mmap'd GGUF).
"""
from __future__ import annotations

import time

T_MAIN = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", required=True, choices=["cpu-fast", "cpu-full"])
    ap.add_argument("--ben2", required=True)
    ap.add_argument("--florence")
    ap.add_argument("--llama")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--size", default="768x1024")
    a = ap.parse_args(argv)
    full = a.profile == "cpu-full"
    h, w = (int(v) for v in a.size.split("x"))
    from .common import quiet_fds

    out = {"t_main": T_MAIN, "load": {}, "first": {}}
    t = time.perf_counter()
    import numpy as np
    import onnxruntime  # noqa: F401

    from safecut.engines import ben2, gate

    if full:
        import llama_cpp  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401

        from safecut.engines import florence, guard, nudenet
    out["import"] = time.perf_counter() - t
    from .sections import make_images

    img = make_images(1, (h, w), seed=2)[0]

    def timed(name, fn):
        t0 = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t0
        load = getattr(r, "load_seconds", None)
        if load is None:
            load = 0.0
        out["load"][name] = load
        out["first"][name] = dt - load
        return r

    timed("ben2", lambda: ben2.remove_background([img], a.ben2, device="CPU"))
    if full:
        cap = timed("florence", lambda: florence.caption_images([img], a.florence, task="more detailed caption",
                                                              device="CPU", max_new_tokens=a.tokens))
        timed("nudenet", lambda: nudenet.detect([img], device="CPU"))
        clf = guard.SafetyClassifier(a.llama, threads=0)
        with quiet_fds():
            t0 = time.perf_counter()
            ds = gate.KeywordGate().decide_all(cap.captions)
            gate.settle(ds, clf.classify)
            dt = time.perf_counter() - t0
        load = clf.last_run.get("load_seconds", 0.0)
        out["load"]["llama"] = load
        out["first"]["llama+gate"] = dt - load
    out["t_result"] = time.time()
    out["pid"] = os.getpid()
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
