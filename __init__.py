"""SafeCut - ComfyUI node pack: BEN2 cutouts, Florence-2 captions, keyword gate, Llama safety, NudeNet.

Importing this pack is cheap: no torch/onnxruntime/transformers/llama_cpp, no downloads, no installs.
"""
from .nodes import IMPORT_ERRORS, NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "IMPORT_ERRORS"]
