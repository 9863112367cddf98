"""Check an INT8 BEN2, or another CPU runtime (OpenVINO f32/bf16), against ONNX Runtime fp32 on your own images
(quality cannot be tested here without the real weights).

  python -m bench.iou IMAGES_DIR --model BEN2_Base.onnx --int8 BEN2_Base.int8.onnx [--threshold 0.5]
  python -m bench.iou IMAGES_DIR --model BEN2_Base.onnx --runtime "OpenVINO bf16"

For every image: both masks through SafeCut's BEN2 engine (same pre/post-processing), IoU of the
binarised masks, mean absolute difference of the soft masks, and the time of each. Prints a table and a
summary; ``--json FILE`` writes the numbers. Rule of thumb: IoU ≥ 0.98 on average and no image below
0.95 means the INT8 file is a safe swap for your kind of images.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def iou(a: np.ndarray, b: np.ndarray, threshold: float = 0.5) -> float:
    x, y = a >= threshold, b >= threshold
    union = np.logical_or(x, y).sum()
    return 1.0 if union == 0 else float(np.logical_and(x, y).sum() / union)


def compare(images_dir: str, model: str, int8: str | None, *, threshold: float = 0.5, limit: int = 0,
            device: str = "CPU", runtime: str = "auto") -> list[dict]:
    """The reference is ``model`` on ONNX Runtime fp32; the candidate ``int8`` (or ``model`` when None) on
    ``runtime``. The result keys keep their names: ``fp32_s`` the reference, ``int8_s`` the candidate."""
    from safecut.engines import ben2
    from safecut import imaging

    files = imaging.list_images(images_dir, sort="natural")
    if limit:
        files = files[:limit]
    if not files:
        raise SystemExit(f"no images in {images_dir}")
    rows = []
    for f in files:
        rgb = imaging.decode_image(f).rgb
        t0 = time.perf_counter()
        m32 = ben2.remove_background([rgb], model, device=device, runtime="ONNX Runtime").masks[0]
        t32 = time.perf_counter() - t0
        t0 = time.perf_counter()
        m8 = ben2.remove_background([rgb], int8 or model, device=device, runtime=runtime).masks[0]
        t8 = time.perf_counter() - t0
        rows.append({"file": os.path.relpath(f, images_dir), "iou": iou(m32, m8, threshold),
                     "mae": float(np.abs(m32 - m8).mean()), "fp32_s": t32, "int8_s": t8})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.iou", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images_dir")
    ap.add_argument("--model", required=True, help="fp32 BEN2 ONNX (name in models/ben2 or a path)")
    ap.add_argument("--int8", help="its INT8 copy (python -m safecut models quantize ...)")
    ap.add_argument("--runtime", default="auto", help="the candidate's CPU runtime: auto, ONNX Runtime, OpenVINO f32, "
                                                      "OpenVINO bf16 (the reference is always ONNX Runtime fp32)")
    ap.add_argument("--threshold", type=float, default=0.5, help="mask binarisation threshold for IoU")
    ap.add_argument("--limit", type=int, default=0, help="first N images only")
    ap.add_argument("--device", default="CPU", choices=["auto", "CPU", "CUDA"])
    ap.add_argument("--json", help="write the per-image numbers here")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    rows = compare(a.images_dir, a.model, a.int8, threshold=a.threshold, limit=a.limit, device=a.device,
                   runtime=a.runtime)
    print(f"{'image':40s} {'IoU':>7s} {'MAE':>8s} {'fp32 s':>8s} {'int8 s':>8s}")
    for r in rows:
        print(f"{r['file'][:40]:40s} {r['iou']:7.4f} {r['mae']:8.5f} {r['fp32_s']:8.2f} {r['int8_s']:8.2f}")
    ious = [r["iou"] for r in rows]
    # the first call of each model includes its load: leave it out of the speed summary when there are more
    t32 = [r["fp32_s"] for r in rows[1:]] or [rows[0]["fp32_s"]]
    t8 = [r["int8_s"] for r in rows[1:]] or [rows[0]["int8_s"]]
    summary = {"images": len(rows), "iou_mean": statistics.mean(ious), "iou_min": min(ious),
               "mae_mean": statistics.mean(r["mae"] for r in rows), "fp32_median_s": statistics.median(t32),
               "int8_median_s": statistics.median(t8)}
    summary["speedup"] = summary["fp32_median_s"] / summary["int8_median_s"]
    print(f"\n{summary['images']} images: IoU mean {summary['iou_mean']:.4f}, min {summary['iou_min']:.4f}; "
          f"MAE {summary['mae_mean']:.5f}; fp32 {summary['fp32_median_s']:.2f} s, int8 {summary['int8_median_s']:.2f} s "
          f"(×{summary['speedup']:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"summary": summary, "images": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
