"""ComfyUI adapters. Each family lives in its own module; a module that fails to import is recorded
in IMPORT_ERRORS and the others still load."""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger("safecut")

_MODULES = ["cache_nodes", "loader_nodes", "ben2_nodes", "save_nodes", "florence_nodes", "gate_nodes",
            "guard_nodes", "nudenet_nodes"]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
IMPORT_ERRORS: dict[str, str] = {}

for _name in _MODULES:
    try:
        _mod = importlib.import_module(f".{_name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.endswith(_name):
            continue  # family not built yet
        IMPORT_ERRORS[_name] = f"{type(exc).__name__}: {exc}"
        log.error("SafeCut: node module %s failed to import: %s", _name, exc)
        continue
    except Exception as exc:  # one broken family never takes the pack down
        IMPORT_ERRORS[_name] = f"{type(exc).__name__}: {exc}"
        log.error("SafeCut: node module %s failed to import: %s", _name, exc)
        continue
    NODE_CLASS_MAPPINGS.update(getattr(_mod, "NODE_CLASS_MAPPINGS", {}))
    NODE_DISPLAY_NAME_MAPPINGS.update(getattr(_mod, "NODE_DISPLAY_NAME_MAPPINGS", {}))

from . import comfy_hooks  # noqa: E402

comfy_hooks.install()
