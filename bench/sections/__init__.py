"""The bench sections, one module per concern. Each section takes a :class:`Ctx` and fills a
:class:`bench.common.Section`; see :mod:`bench.sections.base` for the timing rules."""
from __future__ import annotations

from .base import CAPTIONS, SAFE_SHARE, Ctx, make_images
from .ben2 import section_ben2
from .cpu import section_cpu
from .env import section_env, section_import
from .florence import section_florence
from .gate import section_gate
from .llama import section_llama, section_quant
from .pipeline import section_coldstart, section_pipeline
from .tune import section_tune_ben2, section_tune_florence, section_tune_llama

__all__ = ["CAPTIONS", "SAFE_SHARE", "Ctx", "make_images", "SECTIONS", "DEFAULT", "TUNE"]

SECTIONS = {
    "env": ("Machine and GEMM limit", section_env),
    "import": ("Pack import", section_import),
    "ben2": ("BEN2 background removal (one image; the real architecture)", section_ben2),
    "cpu": ("CPU numerics: each engine's CPU runtime and precision on this CPU", section_cpu),
    "llama": ("Llama safety classifier, per caption", section_llama),
    "quant": ("Llama quantizations (the dropdown)", section_quant),
    "florence": ("Florence-2-base captions", section_florence),
    "gate": ("Keyword gate on a caption mix (60 % clearly safe)", section_gate),
    "pipeline": ("Full CPU pipeline (headline)", section_pipeline),
    "coldstart": ("Cold start: process start → first result", section_coldstart),
    "tune-ben2": ("Tuning: ORT session settings for BEN2", section_tune_ben2),
    "tune-florence": ("Tuning: Florence-2 generation settings", section_tune_florence),
    "tune-llama": ("Tuning: Llama classifier settings", section_tune_llama),
}
DEFAULT = ["env", "import", "ben2", "cpu", "llama", "quant", "florence", "gate", "pipeline", "coldstart"]
TUNE = ["tune-ben2", "tune-florence", "tune-llama"]
