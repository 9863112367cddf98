"""Model sets for `python -m safecut models fetch --profile …` (used by deploy/Dockerfile.*)."""

PROFILES: dict[str, list[str]] = {
    "cpu-fast": ["BEN2_Base.onnx"],
    "cpu-full": ["BEN2_Base.onnx", "Florence-2-base-ft", "Llama-Guard-3-1B-Q4_K_M.gguf"],
    "gpu-full": ["BEN2_Base.onnx", "Florence-2-large-ft", "Llama-Guard-3-1B-Q8_0.gguf", "640m.onnx"],
}
