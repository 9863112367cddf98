"""How close a candidate's masks are to f32's: the figures the precision probe records, and the bar they must meet.

A cutout is judged where it matters: the subject/background decision (IoU of the masks thresholded at 0.5), the
overall alpha (mean |Δ|), and the edge, where a lower precision shows first (the 95th percentile of |Δ| within
``EDGE_PX`` pixels of f32's 0.5 contour). Masks are float arrays in [0, 1], one per image, any size.

Thresholds (``LIMITS``), set from figures measured here (README "Which CPU"): OpenVINO f32 against ONNX Runtime fp32
differs by at most 0.0006 anywhere, bf16 with AMX by a mean of 0.004 on the stand-in; ONNX Runtime's static QDQ
INT8 moved the mean by 0.058 and visibly shifted edges. A candidate passes when IoU ≥ 0.99 (at most 1 % of the
subject flips side), mean |Δ| ≤ 0.005 (bf16's own level) and edge p95 ≤ 0.10 (a soft edge may move by a tenth of
its alpha, no more); every limit must hold on every probe image, not only on average.
"""
from __future__ import annotations

from ..runtime.lazy import numpy as np

EDGE_PX = 3
LIMITS = {"iou": 0.99, "mean_abs": 0.005, "edge_p95": 0.10}   # iou: at least; the others: at most


def _dilate(m, px: int):
    """Boolean dilation by a (2px+1)² square, numpy only (no scipy in the pack)."""
    out = m.copy()
    h, w = m.shape
    for dy in range(-px, px + 1):
        for dx in range(-px, px + 1):
            out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                m[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _edge_band(mask, px: int):
    """Pixels within ``px`` of both sides of the ``mask >= 0.5`` boundary."""
    fg = mask >= 0.5
    return _dilate(fg, px) & _dilate(~fg, px)


def compare_one(ref, cand) -> dict:
    ref, cand = np.asarray(ref, np.float32), np.asarray(cand, np.float32)
    if ref.shape != cand.shape:
        raise ValueError(f"mask shapes differ: {ref.shape} vs {cand.shape}")
    a, b = ref >= 0.5, cand >= 0.5
    union = int(np.count_nonzero(a | b))
    iou = 1.0 if union == 0 else float(np.count_nonzero(a & b)) / union
    diff = np.abs(ref - cand)
    band = _edge_band(ref, EDGE_PX)
    edge = float(np.percentile(diff[band], 95)) if band.any() else 0.0
    return {"iou": iou, "mean_abs": float(diff.mean()), "edge_p95": edge}


def compare(refs, cands) -> dict:
    """The worst figure over all images (the bar holds per image), plus each image's figures."""
    per = [compare_one(r, c) for r, c in zip(refs, cands, strict=True)]
    if not per:
        raise ValueError("no masks to compare")
    worst = {"iou": min(p["iou"] for p in per), "mean_abs": max(p["mean_abs"] for p in per),
             "edge_p95": max(p["edge_p95"] for p in per)}
    return {**worst, "images": per}


def judge(fig: dict) -> tuple[bool, str]:
    """(passed, why): why names every limit that failed, or the figures when all held."""
    failed = []
    if fig["iou"] < LIMITS["iou"]:
        failed.append(f"IoU {fig['iou']:.4f} < {LIMITS['iou']}")
    for k in ("mean_abs", "edge_p95"):
        if fig[k] > LIMITS[k]:
            failed.append(f"{'mean |Δ|' if k == 'mean_abs' else 'edge p95 |Δ|'} {fig[k]:.4f} > {LIMITS[k]}")
    if failed:
        return False, "; ".join(failed)
    return True, f"IoU {fig['iou']:.3f}, mean |Δ| {fig['mean_abs']:.4f}, edge p95 {fig['edge_p95']:.3f}"
