"""SafeCut Llama Safety Classifier: a GGUF safety classifier (Llama Guard 3 or an instruct model).

Without a caption connected the node only hands out the classifier (a cheap handle, nothing loaded): the
Keyword Gate takes it as a lazy input and runs it only for captions its keywords cannot decide. With a
caption (or a list of captions) connected it classifies them now.
"""
from __future__ import annotations

import os

from ..safecut.runtime import deps
from ..safecut.engines import guard
from .common import CATEGORY, KEEP_LOADED, THREADS, Progress, combo, dumps, flatten, timer, ui_result, \
    verdict_row


def _first(v, default=None):
    if isinstance(v, list):
        return v[0] if v else default
    return default if v is None else v


class SafeCutLlamaSafetyClassifier:
    DESCRIPTION = ("Judges captions SAFE/UNSAFE with a local GGUF model (llama.cpp): Llama Guard 3 1B by default, "
                   "or an instruct model asked 'safe or unsafe'. P(unsafe) is read from the next-token logits; the "
                   "fixed instructions are evaluated once and kept in the KV cache, so each caption costs only its "
                   "own tokens. Errors never yield SAFE. Connect 'classifier' to the Keyword Gate so the model only "
                   "loads when a caption is undecided.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["llama guard", "safety classifier", "moderation", "nsfw", "content moderation", "gguf", "llm"]
    FUNCTION = "run"
    INPUT_IS_LIST = True
    RETURN_TYPES = ("SAFECUT_CLASSIFIER", "STRING", "FLOAT", "STRING", "STRING")
    RETURN_NAMES = ("classifier", "verdict", "p_unsafe", "categories", "json")
    OUTPUT_IS_LIST = (False, True, True, True, False)
    OUTPUT_TOOLTIPS = (
        "The classifier for the Keyword Gate's lazy 'classifier' input (the model loads only when needed).",
        "SAFE / UNSAFE per connected caption (empty when no caption is connected).",
        "P(unsafe) per caption, 0..1, from the first answer token (1.0 when an error forced UNSAFE).",
        "Violated categories per UNSAFE caption, comma separated (empty for SAFE).",
        "JSON list: verdict, p_unsafe, categories, decided_by, error, seconds per caption.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_family": combo(guard.family_choices(), guard.DEFAULT_FAMILY,
                                  "Model family (with 'quantization' it names the GGUF file, e.g. "
                                  "Llama-Guard-3-1B-Q4_K_M.gguf in models/LLM or models/llm_gguf), or "
                                  "'custom: <file>' for any GGUF found there. Llama Guard uses its official prompt; "
                                  "the others are asked 'safe or unsafe' in their chat format."),
            "quantization": combo(guard.QUANTIZATIONS, guard.DEFAULT_QUANT,
                                  "Quantization of the family's file (ignored for 'custom:'). Q4_K_M: good balance; "
                                  "Q8_0: closest to the original; Q2_K/Q3_K_M: smallest, least accurate."),
            "n_gpu_layers": ("INT", {"default": -1, "min": -1, "max": 999, "tooltip":
                             "-1 = auto: every layer on the GPU when llama-cpp-python was built with GPU support and a "
                             "GPU is there, else CPU. 0 = CPU only. N = N layers on the GPU (CPU with a warning when "
                             "this build or machine has no GPU)."}),
            "threads": THREADS,
            "n_ctx": ("INT", {"default": guard.DEFAULT_N_CTX, "min": guard.MIN_N_CTX, "max": guard.MAX_N_CTX,
                              "step": 256, "tooltip":
                              "Context size in tokens (prompt + caption). 1024 fits the prompt and a long caption; "
                              "longer captions are cut to fit, never an error."}),
            "threshold": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                          "UNSAFE when P(unsafe) >= threshold. Lower = stricter (more images blocked)."}),
            "custom_categories": ("STRING", {"default": "", "multiline": True, "tooltip":
                                  "Optional unsafe-content categories, one per line (or comma-separated on one line). "
                                  "Empty: Llama Guard's S1-S13, or SafeCut's image categories for instruct models."}),
            "keep_model_loaded": KEEP_LOADED,
        }, "optional": {
            "caption": ("STRING", {"forceInput": True, "tooltip":
                        "Captions to classify now (a list works). Leave unconnected when the Keyword Gate uses the "
                        "classifier: it then loads the model only for undecided captions."}),
        }}

    def run(self, model_family, quantization, n_gpu_layers, threads, n_ctx, threshold, custom_categories,
            keep_model_loaded, caption=None):
        t0 = timer()
        handle = guard.SafetyClassifier.from_choice(
            _first(model_family, guard.DEFAULT_FAMILY), _first(quantization, guard.DEFAULT_QUANT),
            n_gpu_layers=int(_first(n_gpu_layers, -1)), threads=int(_first(threads, 0)),
            n_ctx=int(_first(n_ctx, guard.DEFAULT_N_CTX)), threshold=float(_first(threshold, 0.5)),
            custom_categories=_first(custom_categories, ""), keep_loaded=bool(_first(keep_model_loaded, True)),
            strict_device=os.environ.get("SAFECUT_STRICT_DEVICE") == "1")
        resolved = handle.resolve()  # a missing file is reported here, with the fetch command, not later
        captions = [c if isinstance(c, str) else "" for c in flatten(caption)] if caption is not None else []
        if not captions:
            # Lazy path: the Keyword Gate classifies and js/safecut.js puts its results on this node afterwards.
            if deps.available("llama_cpp"):
                text = f"{resolved.name}: waiting for the Keyword Gate's undecided captions"
            else:  # the gate will fail closed; say why here, where the user looks
                text = (f"{resolved.name}: llama-cpp-python is not installed: every caption the gate sends here "
                        f"becomes UNSAFE (fail closed). Install it into ComfyUI's Python (SafeCut README).")
            return ui_result((handle, [], [], [], "[]"), text=text, model=resolved.name)
        results = handle.classify(captions, progress=Progress(len(captions)))
        seconds = timer() - t0
        report = [dict(r.as_dict(), index=i) for i, r in enumerate(results)]
        n_unsafe = sum(r.verdict == guard.UNSAFE for r in results)
        errors = sum(r.decided_by == "error" for r in results)
        text = (f"{resolved.name} on {handle.device_description()}: {len(results) - n_unsafe} safe / {n_unsafe} unsafe"
                f"{f' ({errors} errors)' if errors else ''} in {seconds:.2f}s")
        return ui_result((handle, [r.verdict for r in results], [float(r.p_unsafe) for r in results],
                          [", ".join(r.categories) for r in results], dumps(report)),
                         verdict=[r.verdict for r in results], p_unsafe=[round(float(r.p_unsafe), 4) for r in results],
                         rows=[verdict_row(i, "", verdict=r.verdict, decided_by=r.decided_by, p_unsafe=r.p_unsafe,
                                           categories=r.categories, reason=r.error or "")
                               for i, r in enumerate(results)],
                         model=resolved.name, device=handle.device_description(), seconds=round(seconds, 3), text=text)


NODE_CLASS_MAPPINGS = {"SafeCutLlamaSafetyClassifier": SafeCutLlamaSafetyClassifier}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutLlamaSafetyClassifier": "SafeCut Llama Safety Classifier"}
