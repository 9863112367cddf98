"""SafeCut BEN2 Remove Background."""
from __future__ import annotations

import os


from ..safecut.engines import ben2
from ..safecut.models import modelfiles
from .common import CATEGORY, CPU_RUNTIME, DEVICE, KEEP_LOADED, THREADS, Progress, combo, images_to_numpy, timer, \
    to_image_tensor, to_mask_tensor, ui_result


class SafeCutBEN2RemoveBackground:
    DESCRIPTION = ("Cuts the subject out with BEN2 (ONNX Runtime on CUDA; on CPU ONNX Runtime or OpenVINO, as "
                   "cpu_runtime picks for this CPU). Outputs the cutout on the chosen background, "
                   "the subject MASK (1 = subject) and the RGBA cutout for SafeCut Save Cutout. The published "
                   "BEN2_Base.onnx has a static batch of 1: images run one per model call (no batching gain). "
                   "INT8 (cpu_runtime 'OpenVINO int8', made once by python -m safecut models quantize) runs "
                   "under auto only after SafeCut's quality probe passed on your own weights.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["remove background", "background removal", "rembg", "bg remover", "cutout", "matting",
                      "transparent background", "ben2"]
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("image", "mask", "rgba", "info")
    OUTPUT_TOOLTIPS = ("Cutout composited on the chosen background (RGB).",
                       "Subject mask, 1 = subject, 0 = background.",
                       "RGBA cutout (4 channels, alpha = mask), what Save Cutout writes.",
                       "Device actually used and timings.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Images to cut out (a batch or a list)."}),
            "model": combo(modelfiles.choices("ben2"), ben2.DEFAULT_MODEL,
                           "BEN2 ONNX file from models/ben2 (or models/ben2_onnx). Not on disk yet: it is "
                           "downloaded on first use when downloads are allowed. Its INT8 version is not a file to "
                           "pick here: choose cpu_runtime 'OpenVINO int8' (or auto) after `python -m safecut models "
                           "quantize <model>`."),
            "provider": DEVICE,
            "threads": THREADS,
            "background": combo(ben2.BACKGROUNDS, "alpha",
                                "alpha: subject on black in 'image' with the real alpha in 'mask'/'rgba'; "
                                "white/black/custom: subject composited on that colour."),
            "custom_color": ("STRING", {"default": "#00FF00", "tooltip": "Background for 'custom': #RRGGBB or R,G,B."}),
            "refine_edges": ("BOOLEAN", {"default": False, "tooltip":
                             "Estimate clean foreground colours at soft edges (removes background colour "
                             "bleeding; slower)."}),
            "keep_model_loaded": KEEP_LOADED,
        }, "optional": {
            "batch_size": ("INT", {"default": 0, "min": 0, "max": 64, "tooltip":
                           "Images per model call for models with a dynamic batch; 0 = auto (2 on CPU, 4 on "
                           "CUDA). The published BEN2_Base.onnx has a static batch of 1: it always runs one image "
                           "per call, whatever this says."}),
            "cpu_runtime": CPU_RUNTIME,
        }}

    def run(self, image, model, provider, threads, background, custom_color, refine_edges, keep_model_loaded,
            batch_size=0, cpu_runtime="auto"):
        t0 = timer()
        frames = images_to_numpy(image)
        if background == "custom":
            ben2.parse_color(custom_color)  # fail before the model runs
        result = ben2.remove_background(frames, model, device=provider, threads=threads, batch_size=batch_size,
                                        keep_loaded=keep_model_loaded,
                                        strict=os.environ.get("SAFECUT_STRICT_DEVICE") == "1",
                                        progress=Progress(len(frames)), runtime=cpu_runtime,
                                        probe_progress=Progress)
        out_rgb, out_rgba = [], []
        for frame, mask in zip(frames, result.masks):
            fg = ben2.refine_foreground(frame, mask) if refine_edges else frame
            rgb, rgba = ben2.composite(fg, mask, background, custom_color)
            out_rgb.append(rgb)
            out_rgba.append(rgba)
        seconds = timer() - t0
        info = (f"BEN2 {os.path.basename(model)} on {result.device.describe()}: {len(frames)} image(s) in "
                f"{seconds:.2f}s (model load {result.load_seconds:.2f}s)")
        same_size = len({a.shape for a in out_rgb}) == 1
        if not same_size:  # a batch tensor always has one size; lists of mixed sizes come one per call
            raise ValueError("input 'image' mixes sizes in one batch; use Load Image Batch in list mode")
        return ui_result((to_image_tensor(out_rgb), to_mask_tensor(result.masks), to_image_tensor(out_rgba), info),
                         device=result.device.describe(), seconds=round(seconds, 3), text=info)


NODE_CLASS_MAPPINGS = {"SafeCutBEN2RemoveBackground": SafeCutBEN2RemoveBackground}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutBEN2RemoveBackground": "SafeCut BEN2 Remove Background"}
