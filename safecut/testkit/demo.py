"""Tiny local models for trying the whole pipeline with no downloads (`python -m safecut run --tiny-models`).

Random weights: the cut-outs, captions and verdicts are meaningless; the plumbing (loading, caching,
batching, gate, classifier, reports) is the real one.
"""
from __future__ import annotations

import os

from ..runtime.quiet import output_to_log
from ..userdirs import cache_dir as user_cache_dir

TINY_BEN2 = "tiny-ben2.onnx"
TINY_FLORENCE = "tiny-florence"
TINY_LLM = "tiny-guard-Q4_K_M.gguf"


def default_root() -> str:
    return user_cache_dir("tiny-models")


def prepare(root: str | None = None, *, florence: bool = True, llm: bool = True) -> dict:
    """Build (once) the tiny models under ``root`` in SafeCut's folder layout; returns pipeline option overrides."""
    root = os.path.abspath(root or default_root())
    # building prints transformers warnings, progress bars and llama.cpp logs: into the build log, not the terminal
    with output_to_log("building the tiny models"):
        return _build(root, florence, llm)


def _build(root: str, florence: bool, llm: bool) -> dict:
    from .tiny_ben2 import build_tiny_ben2

    build_tiny_ben2(os.path.join(root, "ben2", TINY_BEN2))
    out = {"models_dir": root, "ben2_model": TINY_BEN2}
    if florence:
        from .tiny_florence import build_tiny_florence

        build_tiny_florence(os.path.join(root, "florence2", TINY_FLORENCE))
        out["florence_model"] = TINY_FLORENCE
    if llm:
        from .tiny_gguf import build_tiny_gguf

        build_tiny_gguf(os.path.join(root, "LLM"), "Q4_K_M", family_filename=TINY_LLM)
        out["llm_model"] = TINY_LLM
    return out
