"""SafeCut NudeNet Detector: exposed-content detection (NudeNet 320n/640m on ONNX Runtime), per-image verdicts
for the Keyword Gate, a mask of the flagged boxes and an optionally censored image."""
from __future__ import annotations

import os

from ..safecut.models import modelfiles
from ..safecut.engines import nudenet
from .common import CATEGORY, DEVICE, KEEP_LOADED, THREADS, Progress, combo, dumps, images_to_numpy, timer, \
    to_image_tensor, to_mask_tensor, ui_result

LABELS_TOOLTIP = (
    "Labels that make an image UNSAFE, comma or newline separated ('#' starts a comment). All 18 NudeNet "
    "labels: FEMALE_GENITALIA_COVERED, FACE_FEMALE, BUTTOCKS_EXPOSED, FEMALE_BREAST_EXPOSED, "
    "FEMALE_GENITALIA_EXPOSED, MALE_BREAST_EXPOSED, ANUS_EXPOSED, FEET_EXPOSED, BELLY_COVERED, FEET_COVERED, "
    "ARMPITS_COVERED, ARMPITS_EXPOSED, FACE_MALE, BELLY_EXPOSED, MALE_GENITALIA_EXPOSED, ANUS_COVERED, "
    "FEMALE_BREAST_COVERED, BUTTOCKS_COVERED. The default is the five exposed sexual labels. An unknown "
    "label is an error (a typo must not switch a label off). Every label is still detected and listed in "
    "detections_json; only these decide is_unsafe, the mask and the censoring.")


THRESHOLDS_TOOLTIP = (
    "Optional per-label overrides of 'threshold', one LABEL=score a line (or comma separated; '#' starts a "
    "comment), e.g. FEMALE_BREAST_EXPOSED=0.4: that label needs 0.4, every other label keeps 'threshold'. An "
    "override sets the score a label needs, not whether it counts: list the label in unsafe_labels for it to make "
    "an image UNSAFE. An unknown label or a score outside (0, 1] is an error. Empty: one threshold for all.")


def model_choices() -> list[str]:
    """The bundled 320n first, then what models/nudenet holds, then registry models that can be fetched."""
    names = [nudenet.BUNDLED_MODEL]
    names += [n for n in modelfiles.choices("nudenet") if n not in names]
    return names


class SafeCutNudeNetDetector:
    DESCRIPTION = ("Detects exposed body parts with NudeNet (YOLOv8, ONNX Runtime). An image is UNSAFE when one of "
                   "the unsafe labels scores at least the threshold. Connect 'nudenet' to the Keyword Gate: an "
                   "unsafe hit decides UNSAFE without the LLM. Also outputs a mask of the flagged boxes and a "
                   "censored copy. Note: NudeNet's model weights are AGPL-3.0 (its code is MIT).")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["nsfw", "nudity", "nude detector", "moderation", "censor", "nsfw filter"]
    FUNCTION = "run"
    RETURN_TYPES = ("SAFECUT_NUDENET", "BOOLEAN", "FLOAT", "STRING", "MASK", "IMAGE")
    RETURN_NAMES = ("nudenet", "is_unsafe", "max_score", "detections_json", "mask", "censored")
    OUTPUT_IS_LIST = (False, True, True, False, False, False)
    OUTPUT_TOOLTIPS = (
        "Per-image results {is_unsafe, max_score, detections} for the SafeCut Keyword Gate.",
        "One boolean per image: an unsafe label scored >= its threshold (label_thresholds, else threshold).",
        "One number per image: the highest unsafe-label score found (also below the threshold, to tune it).",
        "JSON: model, device, threshold, label_thresholds, unsafe labels and, per image, every detection "
        "{label, score, box [x, y, w, h] in original pixels, unsafe}.",
        "1 inside the boxes of the unsafe detections, 0 elsewhere [B,H,W].",
        "The input with the unsafe boxes blurred / pixelated / blacked out (unchanged with censor = none).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Images to check (a batch, or a list: one run per item)."}),
            "model": combo(model_choices(), nudenet.DEFAULT_MODEL,
                           "NudeNet ONNX model. 320n.onnx (fast, 320 px) ships inside the 'nudenet' pip package; "
                           "640m.onnx (more accurate, 640 px, slower) and other .onnx files go in models/nudenet "
                           "(640m.onnx is downloaded on first use when downloads are allowed)."),
            "device": DEVICE,
            "threshold": ("FLOAT", {"default": nudenet.DEFAULT_THRESHOLD, "min": 0.01, "max": 1.0, "step": 0.01,
                          "tooltip": "Minimum label score for a detection (labels in label_thresholds use their "
                          "own). 0.25 is NudeNet's own: the nudenet package reports a detection from a score of "
                          "0.25. Higher flags less, lower flags more; "
                          "'max_score' shows each image's highest unsafe-label score, to choose a value."}),
            "unsafe_labels": ("STRING", {"default": "\n".join(nudenet.DEFAULT_UNSAFE), "multiline": True,
                              "tooltip": LABELS_TOOLTIP}),
            "censor": combo(nudenet.CENSOR_MODES, "none",
                            "What 'censored' does to the unsafe boxes: none (pass the image through), blur, "
                            "pixelate, or black (filled). Pixels outside the boxes are never changed."),
            "threads": THREADS,
            "keep_model_loaded": KEEP_LOADED,
        }, "optional": {
            "label_thresholds": ("STRING", {"default": "", "multiline": True, "tooltip": THRESHOLDS_TOOLTIP}),
        }}

    def run(self, image, model, device, threshold, unsafe_labels, censor, threads, keep_model_loaded,
            label_thresholds=""):
        t0 = timer()
        frames = images_to_numpy(image)
        labels = nudenet.parse_labels(unsafe_labels)           # fail before the model loads
        overrides = nudenet.parse_label_thresholds(label_thresholds)
        res = nudenet.detect(frames, model=model, device=device, threshold=threshold, unsafe_labels=labels,
                             label_thresholds=overrides, threads=threads, keep_loaded=keep_model_loaded,
                             strict=os.environ.get("SAFECUT_STRICT_DEVICE") == "1",
                             progress=Progress(len(frames)))
        masks = [nudenet.mask_from_detections(r.detections, f.shape[0], f.shape[1])
                 for f, r in zip(frames, res.results)]
        if censor == "none":
            passthrough = hasattr(image, "detach") and image.ndim == 4 and image.shape[-1] == 3
            censored = image if passthrough else to_image_tensor(frames)
        else:
            censored = to_image_tensor([nudenet.censor(f, r.detections, censor) for f, r in zip(frames, res.results)])
        seconds = timer() - t0
        flagged = sum(r.is_unsafe for r in res.results)
        report = {"model": os.path.basename(res.model), "device": res.device.describe(), "input_size": res.input_size,
                  "threshold": float(threshold), "label_thresholds": overrides, "unsafe_labels": list(labels),
                  "images": [dict(r.as_dict(), index=i) for i, r in enumerate(res.results)]}
        info = (f"NudeNet {os.path.basename(res.model)} on {res.device.describe()}: {flagged}/{len(frames)} unsafe "
                f"in {seconds:.2f}s")
        if not labels:
            info += " (no unsafe labels selected: nothing can be flagged)"
        result = ([r.as_dict() for r in res.results], [bool(r.is_unsafe) for r in res.results],
                  [float(r.max_score) for r in res.results], dumps(report), to_mask_tensor(masks), censored)
        return ui_result(result, device=res.device.describe(), seconds=round(seconds, 3), text=info)


NODE_CLASS_MAPPINGS = {"SafeCutNudeNetDetector": SafeCutNudeNetDetector}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutNudeNetDetector": "SafeCut NudeNet Detector"}
