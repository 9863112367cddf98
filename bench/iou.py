"""Check a BEN2 CPU runtime (OpenVINO int8 / f32 / bf16) against ONNX Runtime fp32 on your own images, one row
per image (quality cannot be tested here without the real weights).

  python -m bench.iou IMAGES_DIR --model BEN2_Base.onnx [--runtime "OpenVINO int8"] [--limit N] [--json FILE]

``OpenVINO int8`` needs the INT8 model made first (``python -m safecut models quantize BEN2_Base.onnx``). For every
image: both masks through SafeCut's BEN2 engine (same pre/post-processing), compared with the quality probe's own
figures and thresholds (safecut.engines.mask_quality: IoU at 0.5, mean |Δ|, 95th-percentile |Δ| near edges), and
the time of each. The product's verdict, the one that lets ``auto`` use a lower precision, comes from ``python -m
safecut models verify --precision int8 [--folder DIR]``: the same comparison, recorded per model sha256.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def compare(images_dir: str, model: str, *, limit: int = 0, device: str = "CPU",
            runtime: str = "OpenVINO int8") -> list[dict]:
    """Per image: ``model`` on ONNX Runtime fp32 (``ref_s``) and on ``runtime`` (``cand_s``), and the figures."""
    from safecut import imaging
    from safecut.engines import ben2, mask_quality

    files = imaging.list_images(images_dir, sort="natural", limit=limit)
    if not files:
        raise SystemExit(f"no images in {images_dir}")
    rows = []
    for f in files:
        rgb = imaging.decode_image(f).rgb
        t0 = time.perf_counter()
        ref = ben2.remove_background([rgb], model, device=device, runtime="ONNX Runtime").masks[0]
        t1 = time.perf_counter()
        cand = ben2.remove_background([rgb], model, device=device, runtime=runtime).masks[0]
        t2 = time.perf_counter()
        fig = mask_quality.compare_one(ref, cand)
        rows.append(dict(fig, file=os.path.relpath(f, images_dir), passed=mask_quality.judge(fig)[0],
                         ref_s=t1 - t0, cand_s=t2 - t1))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.iou", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images_dir")
    ap.add_argument("--model", required=True, help="BEN2 ONNX (name in models/ben2 or a path)")
    ap.add_argument("--runtime", default="OpenVINO int8", help="the candidate's CPU runtime (default OpenVINO int8; "
                                                               "auto, OpenVINO f32, OpenVINO bf16): the reference is "
                                                               "always ONNX Runtime fp32")
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    ap.add_argument("--device", default="CPU", choices=["auto", "CPU", "CUDA"])
    ap.add_argument("--json", help="write the per-image numbers here")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rows = compare(a.images_dir, a.model, limit=a.limit, device=a.device, runtime=a.runtime)
    print(f"{'image':40s} {'IoU':>7s} {'mean|Δ|':>8s} {'edge p95':>8s} {'pass':>5s} {'fp32 s':>8s} {'cand. s':>8s}")
    for r in rows:
        print(f"{r['file'][:40]:40s} {r['iou']:7.4f} {r['mean_abs']:8.5f} {r['edge_p95']:8.4f} "
              f"{'yes' if r['passed'] else 'NO':>5s} {r['ref_s']:8.2f} {r['cand_s']:8.2f}")
    # the first call of each runtime includes its load: left out of the speed summary when there are more
    ref_t = [r["ref_s"] for r in rows[1:]] or [rows[0]["ref_s"]]
    cand_t = [r["cand_s"] for r in rows[1:]] or [rows[0]["cand_s"]]
    summary = {"images": len(rows), "iou_min": min(r["iou"] for r in rows),
               "mean_abs_max": max(r["mean_abs"] for r in rows), "edge_p95_max": max(r["edge_p95"] for r in rows),
               "passed": all(r["passed"] for r in rows), "ref_median_s": statistics.median(ref_t),
               "cand_median_s": statistics.median(cand_t)}
    print(f"\n{summary['images']} images, worst: IoU {summary['iou_min']:.4f}, mean |Δ| {summary['mean_abs_max']:.5f}, "
          f"edge p95 {summary['edge_p95_max']:.4f} ({'passes' if summary['passed'] else 'FAILS'} the probe's "
          f"thresholds); ONNX Runtime fp32 {summary['ref_median_s']:.2f} s, {a.runtime} "
          f"{summary['cand_median_s']:.2f} s (×{summary['ref_median_s'] / summary['cand_median_s']:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "images": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
