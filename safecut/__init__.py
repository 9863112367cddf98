"""SafeCut engines: pure Python, no ComfyUI imports, no heavy imports at module load.

Heavy libraries (torch, onnxruntime, transformers, llama_cpp) are imported inside functions,
once, when a model is first loaded through :mod:`safecut.runtime.cache`.
"""
__version__ = "0.1.0"
