"""SafeCut Florence-2 Caption."""
from __future__ import annotations

import os

from ..safecut.engines import florence
from ..safecut.models import modelfiles
from .common import CATEGORY, DEVICE, KEEP_LOADED, Progress, check_interrupt, combo, flatten, images_to_numpy, \
    timer, ui_result


def _first(v, default=None):
    return (v[0] if v else default) if isinstance(v, (list, tuple)) else v


class SafeCutFlorence2Caption:
    DESCRIPTION = ("Captions every image with Florence-2 (native transformers, no remote code). Deterministic: "
                   "the same image always gets the same caption. Feed 'caption' to SafeCut Keyword Gate.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["caption", "image caption", "describe image", "florence", "img2txt", "interrogate"]
    FUNCTION = "run"
    # A list run (Load Image Batch, mode list) arrives here as ONE call with every image, so batch_size batches
    # across the list (a plain node would run once per image and never batch). Widget values come as lists.
    INPUT_IS_LIST = True
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("caption", "info")
    OUTPUT_IS_LIST = (True, False)
    OUTPUT_TOOLTIPS = ("One caption per input image, in order (a list).",
                       "Device and precision actually used, and timings.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Images to caption: a batch or a list (every item is captioned, batch_size at a time)."}),
            "model": combo(modelfiles.choices("florence2"), florence.DEFAULT_MODEL,
                           "Florence-2 model folder (Hugging Face layout with config.json) in models/florence2 or "
                           "models/LLM. Use the converted florence-community/Florence-2-* repos. Not on disk yet: "
                           "it is downloaded on first use when downloads are allowed."),
            "task": combo(list(florence.TASKS), "caption",
                          "caption: one short sentence (fastest). detailed / more detailed caption: longer "
                          "descriptions (max_new_tokens 0 gives each task a limit that fits it)."),
            "device": DEVICE,
            "precision": combo(florence.PRECISIONS, "auto",
                               "auto: fp16 on CUDA; on CPU bf16 where the CPU has AMX (about 2x faster there), "
                               "else fp32. bf16 on a CPU without AVX512-BF16/AMX would be emulated (about 4x "
                               "slower): fp32 runs and 'info' says so; fp16 on CPU runs fp32. The precision "
                               "actually used is shown in 'info'."),
            "max_new_tokens": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip":
                               "Longest caption in tokens; bounds the time per batch. 0 = the task's default "
                               "(caption 64, detailed caption 256, more detailed caption 512). 'info' says when a "
                               "caption was cut by this limit (its end, often where the content is, is lost)."}),
            "num_beams": ("INT", {"default": 3, "min": 1, "max": 8, "tooltip":
                          "Beam search width (3 as in Florence-2's own examples). 1 = greedy, fastest. "
                          "Decoding never samples, so results are repeatable."}),
            "batch_size": ("INT", {"default": 8, "min": 1, "max": 64, "tooltip":
                           "Images per generate call. Larger is faster on CUDA; on CPU 4-8 is plenty."}),
            "keep_model_loaded": KEEP_LOADED,
        }}

    def run(self, image, model, task, device, precision, max_new_tokens, num_beams, batch_size, keep_model_loaded):
        t0 = timer()
        frames = [f for t in flatten(image) if t is not None for f in images_to_numpy(t)]
        model, task, device, precision = _first(model), _first(task), _first(device), _first(precision)
        max_new_tokens, num_beams, batch_size = int(_first(max_new_tokens)), int(_first(num_beams)), \
            int(_first(batch_size))
        keep_model_loaded = bool(_first(keep_model_loaded, True))
        result = florence.caption_images(
            frames, model, task=task, device=device, precision=precision, max_new_tokens=max_new_tokens,
            num_beams=num_beams, batch_size=batch_size, keep_loaded=keep_model_loaded,
            strict=os.environ.get("SAFECUT_STRICT_DEVICE") == "1", progress=Progress(len(frames)),
            interrupt=check_interrupt)
        seconds = timer() - t0
        info = (f"Florence-2 {os.path.basename(str(model).rstrip('/'))} '{task}' on {result.device.describe()}, "
                f"{result.dtype}{' (' + result.note + ')' if result.note else ''}: {len(frames)} caption(s) in "
                f"{seconds:.2f}s (model load {result.load_seconds:.2f}s)")
        cut = [i for i, c in enumerate(result.cut) if c]
        if cut:
            info += (f"; CUT at max_new_tokens={result.max_new_tokens}: caption(s) {', '.join(map(str, cut[:10]))}"
                     f"{' …' if len(cut) > 10 else ''} (raise max_new_tokens)")
        return ui_result((list(result.captions), info), caption=list(result.captions),
                         device=result.device.describe(), dtype=result.dtype, seconds=round(seconds, 3), text=info,
                         cut=[bool(c) for c in result.cut])


NODE_CLASS_MAPPINGS = {"SafeCutFlorence2Caption": SafeCutFlorence2Caption}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutFlorence2Caption": "SafeCut Florence-2 Caption"}
