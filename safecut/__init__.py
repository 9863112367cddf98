"""SafeCut engines: pure Python, no ComfyUI imports, no heavy imports at module load.

Heavy libraries (torch, onnxruntime, transformers, llama_cpp) are imported inside functions,
once, when a model is first loaded through :mod:`safecut.runtime.cache`.
"""
import os as _os

__version__ = "0.1.0"
DATA_DIR = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "data")   # package data (pyproject)
