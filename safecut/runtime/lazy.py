"""``numpy`` imported on first use, so that importing the pack stays cheap (numpy alone is ~160 ms of a fresh
process; ComfyUI has it loaded already, a bare ``import`` of the pack does not)."""
from __future__ import annotations

import importlib


class LazyModule:
    """Stands in for a module until an attribute is first read; then copies the module's namespace into
    itself, so later reads are plain attribute lookups (no per-call import machinery)."""

    def __init__(self, name: str):
        self.__dict__["_lazy_name"] = name

    def __getattr__(self, attr: str):
        mod = importlib.import_module(self.__dict__["_lazy_name"])
        self.__dict__.update(mod.__dict__)
        return getattr(mod, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_name']!r}>"


numpy = LazyModule("numpy")
