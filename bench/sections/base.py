"""Shared helpers of the bench sections. Each section takes a :class:`Ctx` and fills a :class:`bench.common.Section`.

Timing rules: every number is wall-clock ``time.perf_counter`` on this machine; warm numbers come after
one untimed warm-up call; ``runs`` timed repetitions for calls under ~10 s, ``heavy_runs`` for longer
ones (BEN2 at 1024², Florence batches, the naive classifier, the full pipeline); tables show median
(min–max, n).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Caption mix for the classifier and the gate: 6 of 10 (60 %) are settled SAFE by the default keyword
# gate; 4 need the classifier (sensitive words, or nothing the gate knows).
CAPTIONS = [
    "A product shot of a brown leather handbag on a white background.",
    "A ceramic coffee mug with a blue logo on a wooden table.",
    "A golden retriever dog running on the beach at sunset.",
    "A mountain landscape with a lake and pine trees under a clear sky.",
    "A pair of white sneakers photographed from the side on a grey floor.",
    "A bowl of fresh fruit with apples, bananas and grapes on a kitchen table.",
    "A man holding a kitchen knife while cutting vegetables on a board.",
    "A woman in red lingerie posing in front of a mirror.",
    "A person lying on the ground next to a pool of blood.",
    "Two people talking at a crowded concert with bright stage lights.",
]
SAFE_SHARE = 0.6


@dataclass
class Ctx:
    quick: bool
    runs: int
    heavy_runs: int
    out: str
    paths: dict
    builds: dict
    florence_tokens: int = 32
    florence_batch: int = 8
    pipeline_images: int = 2     # per run (BEN2 at 1024² is ~25 s an image on 2 cores)
    log: object = print
    shared: dict = field(default_factory=dict)     # results one section hands to another

    @property
    def size(self) -> tuple[int, int]:
        return (192, 256) if self.quick else (768, 1024)


def make_images(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """Deterministic photo-like test images: a gradient background, a bright ellipse 'subject', noise."""
    rng = np.random.default_rng(seed)
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        bg = np.stack([0.2 + 0.3 * xx / w, 0.25 + 0.2 * yy / h, np.full_like(xx, 0.3 + 0.05 * i)], -1)
        cy, cx = h * (0.4 + 0.2 * rng.random()), w * (0.4 + 0.2 * rng.random())
        ry, rx = h * (0.2 + 0.1 * rng.random()), w * (0.15 + 0.1 * rng.random())
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        col = rng.random(3).astype(np.float32) * 0.5 + 0.5
        img = np.where(inside[..., None], col, bg) + rng.normal(0, 0.02, (h, w, 3)).astype(np.float32)
        out.append(np.clip(img, 0, 1).astype(np.float32))
    return out


def _pil(im: np.ndarray):
    from PIL import Image

    return Image.fromarray((np.clip(im, 0, 1) * 255 + 0.5).astype(np.uint8), "RGB")


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as tl

        tl.disable_progress_bar()
        tl.set_verbosity_error()
    except Exception:
        pass


def _unload_all():
    from safecut.runtime.cache import get_cache

    get_cache().unload()


def _fs(st: dict) -> str:
    from ..common import fmt_stat

    return fmt_stat(st)


def page_env(huge: bool) -> dict:
    """The child's environment with or without glibc's huge-page tunable (safecut/runtime/hugepages.py), whatever the
    bench itself was started with: rows say which they ran on."""
    from safecut.runtime import hugepages

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "SAFECUT_HUGEPAGES_REEXEC")}
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t and t != hugepages.TUNABLE]
    if tunables:
        env["GLIBC_TUNABLES"] = ":".join(tunables)
    return hugepages.with_tunable(env) if huge else env
