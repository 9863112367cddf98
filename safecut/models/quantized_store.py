"""Where a model's INT8 version lives: beside the model, keyed by the source file's sha256.

``<model folder>/safecut-int8/<model stem>-<sha256[:16]>.xml`` (+ ``.bin``): an OpenVINO IR made by
``python -m safecut models quantize <model>``. A changed source file has another sha256, so a stale INT8 model is
never picked up; the folder is not a model name the loaders list (they list ``.onnx`` files and model folders).
"""
from __future__ import annotations

import os

from .hashing import file_sha256

FOLDER = "safecut-int8"


def int8_path(source_path: str) -> str:
    stem = os.path.splitext(os.path.basename(source_path))[0]
    return os.path.join(os.path.dirname(os.path.abspath(source_path)), FOLDER,
                        f"{stem}-{file_sha256(source_path)[:16]}.xml")


def make_command(source_path: str) -> str:
    return f"python -m safecut models quantize {os.path.basename(source_path)}"
