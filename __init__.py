"""SafeCut - ComfyUI node pack: BEN2 cutouts, Florence-2 captions, keyword gate, Llama safety, NudeNet.

Importing this pack is cheap: no torch/onnxruntime/transformers/llama_cpp, no downloads, no installs.
"""
if __package__:  # ComfyUI imports the folder as a package
    from .nodes import IMPORT_ERRORS, NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported as a loose file (e.g. a test runner collecting the repo root): nothing to register
    IMPORT_ERRORS, NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}, {}

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY", "IMPORT_ERRORS"]
