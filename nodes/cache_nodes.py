"""SafeCut Unload Models: frees SafeCut's model cache on demand."""
from __future__ import annotations

from ..safecut.runtime.cache import get_cache
from .common import CATEGORY, combo, dumps, ui_result

KINDS = ["all", "ben2", "florence2", "llama", "nudenet"]


class SafeCutUnloadModels:
    DESCRIPTION = ("Unloads SafeCut's cached models (all, or one kind) and reports cache statistics. "
                   "ComfyUI's own 'Unload Models' button and POST /free also empty SafeCut's cache.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["unload models", "free memory", "free vram", "clear cache", "purge"]
    FUNCTION = "run"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "*")
    RETURN_NAMES = ("stats", "passthrough")
    OUTPUT_TOOLTIPS = ("Cache statistics after unloading (JSON).", "Whatever was connected to 'trigger'.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"kind": combo(KINDS, "all", "Which models to unload.")},
                "optional": {"trigger": ("*", {"tooltip": "Connect any output to unload after that node ran."})}}

    @classmethod
    def IS_CHANGED(cls, **_):
        return float("nan")  # always runs when queued

    @classmethod
    def VALIDATE_INPUTS(cls, input_types=None, **_):
        return True  # 'trigger' accepts any type

    def run(self, kind, trigger=None):
        cache = get_cache()
        removed = cache.unload(None if kind == "all" else kind)
        stats = cache.stats()
        stats["unloaded"] = removed
        text = f"unloaded {removed} model(s); {stats['resident_models']} resident"
        return ui_result((dumps(stats), trigger), text=text)


NODE_CLASS_MAPPINGS = {"SafeCutUnloadModels": SafeCutUnloadModels}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutUnloadModels": "SafeCut Unload Models"}
