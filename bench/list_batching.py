"""Does batching a list run pay? NudeNet (the bundled real 320n) and Florence-2 (real-size random weights):
the same images one per call (what a list run did before: one node execution per image) vs one batched call.

    .venv/bin/python -m bench.list_batching [--images 8] [--runs 3] [--florence]

Prints seconds per image (median of --runs, after one warm-up) and the speed-up.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(480, 640), (640, 480), (512, 512), (600, 800)]
    return [rng.random(sizes[i % len(sizes)] + (3,), dtype=np.float32) for i in range(n)]


def _median(fn, runs: int) -> float:
    fn()  # warm-up: model load, first-call allocations
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(name: str, one, batched, n: int, runs: int) -> dict:
    per_image = _median(lambda: [one(i) for i in range(n)], runs) / n
    in_batch = _median(batched, runs) / n
    print(f"{name}: one per call {per_image * 1000:.0f} ms/img, batched {in_batch * 1000:.0f} ms/img: "
          f"x{per_image / in_batch:.2f}", flush=True)
    return {"per_image_s": per_image, "batched_s": in_batch, "speedup": per_image / in_batch}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--florence", action="store_true", help="also Florence-2 base size (slow: minutes)")
    a = ap.parse_args(argv)
    from safecut.engines import nudenet

    imgs = _images(a.images)
    compare(f"NudeNet 320n, {a.images} images", lambda i: nudenet.detect([imgs[i]], batch_size=1),
            lambda: nudenet.detect(imgs, batch_size=a.images), a.images, a.runs)
    if a.florence:
        from safecut.engines import florence

        from .models import build_florence_base

        with tempfile.TemporaryDirectory() as d:
            build_florence_base(d)
            fm = florence.load_model(d, "cpu", "fp32")
            fm.model.generation_config.min_new_tokens = 16  # random weights: force the same caption length

            def cap(ims, b):
                return florence.generate_captions(fm, ims, "caption", max_new_tokens=16, num_beams=3, batch_size=b)

            compare(f"Florence-2 base (fp32, 16 tokens, 3 beams), {a.images} images",
                    lambda i: cap([imgs[i]], 1), lambda: cap(imgs, a.images), a.images, a.runs)


if __name__ == "__main__":
    main()
