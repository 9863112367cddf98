"""The only place that touches ComfyUI's own modules at import time, and only when they exist.

* registers SafeCut's model folders with ``folder_paths`` (append, never overwrite: keeps
  extra_model_paths.yaml entries) and points the engine's model finder at them;
* makes ComfyUI's "Unload models" / ``POST /free`` also empty SafeCut's cache, by wrapping
  ``comfy.model_management.unload_all_models`` (idempotent, signature-agnostic, never fatal);
* gives GPU memory back when ComfyUI needs it: its ``free_memory(memory_required, device)`` (called before it loads
  a model) first unloads SafeCut's GPU models when the device has less free than required. ONNX Runtime keeps its
  CUDA arena until the session closes (BEN2 at 1024²: 5.4 GB on an H200), which ComfyUI cannot see or free;
* serves the nodes' SEARCH_ALIASES at ``GET /safecut/search_aliases``: ComfyUI 0.3.64's /object_info leaves them
  out for V1 nodes (newer servers send them), so js/safecut.js fills them into the node definitions.
"""
from __future__ import annotations

import functools
import logging
import os

from ..safecut.models import modelfiles
from ..safecut.runtime.cache import get_cache, on_gpu

log = logging.getLogger("safecut")
_MARK = "_safecut_wrapped"


def install() -> bool:
    try:
        import folder_paths  # type: ignore
    except ImportError:
        return False  # not inside ComfyUI (tests, CLI)
    register_folders(folder_paths)
    wrap_unload()
    wrap_free_memory()
    add_alias_route()
    return True


def search_aliases() -> dict[str, list[str]]:
    """{class id: SEARCH_ALIASES} of every SafeCut node (one source: the node classes)."""
    from . import NODE_CLASS_MAPPINGS

    return {cid: list(getattr(cls, "SEARCH_ALIASES", [])) for cid, cls in NODE_CLASS_MAPPINGS.items()}


def add_alias_route() -> bool:
    try:
        from aiohttp import web  # type: ignore
        from server import PromptServer  # type: ignore

        routes = PromptServer.instance.routes
    except Exception as exc:  # not inside a running ComfyUI server (tests, scripts): nothing to serve
        log.debug("SafeCut: no search-alias route (%s)", exc)
        return False

    @routes.get("/safecut/search_aliases")
    async def _aliases(request):
        return web.json_response(search_aliases())

    return True


def register_folders(folder_paths) -> None:
    base = getattr(folder_paths, "models_dir", None)
    for kind, names in modelfiles.FOLDERS.items():
        for name in names:  # add_model_folder_path appends and de-duplicates
            if base:
                folder_paths.add_model_folder_path(name, os.path.join(base, name))
    modelfiles.set_folder_provider(folder_paths.get_folder_paths)


def wrap_unload() -> None:
    try:
        import comfy.model_management as mm  # type: ignore
    except Exception as exc:
        log.warning("SafeCut: comfy.model_management not available (%s); use the SafeCut Unload Models node", exc)
        return
    original = getattr(mm, "unload_all_models", None)
    if original is None or getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def unload_all_models(*args, **kwargs):
        try:
            get_cache().unload()
        except Exception as exc:  # our cache must never break ComfyUI's own unload
            log.warning("SafeCut: cache unload failed: %s", exc)
        return original(*args, **kwargs)

    setattr(unload_all_models, _MARK, True)
    mm.unload_all_models = unload_all_models


def wrap_free_memory() -> None:
    try:
        import comfy.model_management as mm  # type: ignore
    except Exception:
        return  # wrap_unload already said so
    original = getattr(mm, "free_memory", None)
    if original is None or getattr(original, _MARK, False):
        return

    @functools.wraps(original)  # *args/**kwargs: keep_loaded, and 0.33's for_dynamic/pins_required/ram_required
    def free_memory(memory_required, device, *args, **kwargs):
        try:   # ComfyUI's own calls look this module global up at call time, so they come through here too
            if getattr(device, "type", None) != "cpu" and mm.get_free_memory(device) < memory_required:
                get_cache().unload(where=on_gpu)   # closing also empties torch's CUDA cache (cache._close_all)
        except Exception as exc:  # never break ComfyUI's own memory management
            log.warning("SafeCut: could not free SafeCut's GPU models: %s", exc)
        return original(memory_required, device, *args, **kwargs)

    setattr(free_memory, _MARK, True)
    mm.free_memory = free_memory
