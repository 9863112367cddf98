"""Optional heavy dependencies, imported lazily with an actionable message when missing."""
from __future__ import annotations

import importlib

from ..errors import MissingDependencyError

# module -> (pip package, what for, install line)
_KNOWN = {
    "onnxruntime": ("onnxruntime", "BEN2 background removal and NudeNet",
                    "pip install onnxruntime   (or onnxruntime-gpu for CUDA; never both)"),
    "torch": ("torch", "Florence-2 captions", "install PyTorch as ComfyUI's README says (SafeCut never installs torch)"),
    "transformers": ("transformers", "Florence-2 captions", "pip install 'transformers>=4.56'"),
    "llama_cpp": ("llama-cpp-python", "the Llama safety classifier",
                  "SAFECUT_BUILD_LLAMA=1 python custom_nodes/comfyui-safecut/install.py   (CPU; CUDA "
                  "wheels: see SafeCut README, 'GPU install')"),
    "huggingface_hub": ("huggingface_hub", "model downloads", "pip install huggingface_hub"),
    "PIL": ("pillow", "image loading", "pip install pillow"),
    "openvino": ("openvino", "the OpenVINO CPU runtime (BEN2 f32/bf16/int8)", "pip install openvino"),
    "nncf": ("nncf", "making BEN2's INT8 model (python -m safecut models quantize)", "pip install nncf"),
}


def require(module: str):
    """Import ``module`` or raise MissingDependencyError naming the pip package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg, purpose, install = _KNOWN.get(module, (module, "this feature", f"pip install {module}"))
        missing = getattr(exc, "name", None) or ""
        top = module.split(".")[0]
        inner = missing if missing and missing.split(".")[0] != top else ""   # the package is there, a dependency is not
        raise MissingDependencyError(pkg, purpose, install, inner) from exc


def available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
