"""SafeCut Load Image Batch: a folder (or the images worker-comfyui uploaded) as a list or one batch.

Outputs are always lists (OUTPUT_IS_LIST = True, True, True, False, False; ComfyUI fixes this per class):
* mode "list":  one [1,H,W,3] IMAGE and one [1,H,W] MASK per file, each at its native size; downstream
                nodes run once per image.
* mode "batch": a ONE-element list holding the whole [B,H,W,3] IMAGE / [B,H,W] MASK, every image brought
                to the first image's size by batch_fit; downstream nodes run once on the batch.
'filenames' is the list of loaded names (relative to the folder) in both modes, 'count' the number of
images loaded, 'errors' a JSON list of {"file", "error"} for files that were skipped.
MASK follows core LoadImage: 1 - alpha (zeros without alpha; padding added by batch_fit "pad" is 1).
"""
from __future__ import annotations

import os

from ..safecut import imaging
from ..safecut.errors import BadInputError, SafeCutError
from ..safecut.app.workflows import INPUT_FOLDER
from .common import CATEGORY, Progress, combo, dumps, to_image_tensor, to_mask_tensor, ui_result


def input_root() -> str:
    """ComfyUI's input folder; outside ComfyUI SAFECUT_INPUT_DIR or the current folder."""
    try:
        import folder_paths  # type: ignore

        return os.path.abspath(folder_paths.get_input_directory())
    except ImportError:
        return os.path.abspath(os.environ.get("SAFECUT_INPUT_DIR") or os.getcwd())


def resolve_folder(directory: str | None) -> str:
    """The real folder ``directory`` names inside the input folder (BadInputError when it is unsafe or
    missing). INPUT_FOLDER, the shipped workflows' folder, is created on first use so a new user finds
    where images go."""
    root = input_root()
    if (directory or "").strip().strip("/") == INPUT_FOLDER:
        try:
            os.makedirs(os.path.join(root, INPUT_FOLDER), exist_ok=True)
        except OSError:
            pass  # read-only input folder or a file of that name: resolve_dir says what is wrong
    return imaging.resolve_dir(directory or "", root, imaging.allowed_roots_from_env())


def select_files(directory: str = "", pattern: str = "*", sort: str = "natural", start_index: int = 0,
                 limit: int = 0, uploads: str = "") -> imaging.FileList:
    """The files a run will load (shared by run and IS_CHANGED)."""
    root = input_root()
    if uploads and uploads.strip():
        # upload names are relative to the input folder itself: worker-comfyui writes them there
        files = imaging.select_uploads(root, uploads, imaging.allowed_roots_from_env())
        start = max(int(start_index or 0), 0)
        end = start + int(limit) if limit and int(limit) > 0 else None
        # start/limit apply to the uploads' combined order (refused names are reported, not counted)
        return imaging.FileList(files[start:end], base=files.base, refused=files.refused)
    folder = resolve_folder(directory)
    files = imaging.list_images(folder, pattern, sort, start_index, limit,
                                roots=[root] + imaging.allowed_roots_from_env())
    if not files and not files.refused:
        raise BadInputError(f"no images matching '{pattern or '*'}' in folder '{directory or '.'}'"
                            + (f" from index {start_index}" if start_index else "")
                            + f". Put your images in {folder} or set 'directory' to the folder that holds them "
                            f"('' = the whole input folder). SafeCut reads {', '.join(imaging.IMAGE_EXTENSIONS)}.")
    return files


class SafeCutLoadImageBatch:
    DESCRIPTION = ("Loads every image of a folder inside ComfyUI's input folder (or the images uploaded with a "
                   "worker-comfyui request) as a list (native sizes) or as one batch. Bad files are listed "
                   "clearly: 'fail' stops with all of them named, 'skip' loads the rest and reports them.")
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["load images", "load image batch", "image folder", "load folder", "batch images", "bulk load",
                      "directory"]
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "INT", "STRING")
    RETURN_NAMES = ("image", "mask", "filenames", "count", "errors")
    OUTPUT_IS_LIST = (True, True, True, False, False)
    OUTPUT_TOOLTIPS = (
        "list mode: one image per file, native size. batch mode: a single [B,H,W,3] batch (first image's size).",
        "1 - alpha, like core Load Image (zeros without alpha; 'pad' padding is 1).",
        "Loaded file names, relative to the folder, in output order (connect to Save Cutout).",
        "Number of images loaded.",
        "JSON list of {file, error} for files that were skipped ([] when none).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "directory": ("STRING", {"default": "", "tooltip":
                          "Folder inside ComfyUI's input folder ('' = the input folder itself, 'shots/day1' = a "
                          f"sub-folder; '{INPUT_FOLDER}', the example workflows' folder, is created when missing). "
                          "Absolute paths only inside SAFECUT_ALLOWED_ROOTS; '..' is refused."}),
            "pattern": ("STRING", {"default": "*", "tooltip":
                        "File-name glob, case-insensitive: '*', '*.png', 'shot_*'. Only png/jpg/jpeg/webp/bmp/"
                        "tif/tiff/gif files are read; hidden files are ignored."}),
            "sort": combo(imaging.SORTS, "natural",
                          "natural: img2 before img10; name: plain text order; mtime: oldest first."),
            "start_index": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip":
                            "Skip this many files (after sorting)."}),
            "limit": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip":
                      "Load at most this many files; 0 = all."}),
            "mode": combo(imaging.MODES, "list",
                          "list: one image per file at its own size (downstream nodes run per image). batch: "
                          "one batch tensor, every image brought to the first image's size."),
            "batch_fit": combo(imaging.FITS, "pad",
                               "batch mode only. pad: scale to fit, keep aspect, black borders (mask 1 there); "
                               "resize: stretch; crop: scale to cover, centre-crop."),
            "on_error": combo(imaging.ON_ERROR, "fail",
                              "fail: stop and name every bad file. skip: load the others and list the bad ones "
                              "in 'errors'."),
        }, "optional": {
            "uploads": ("STRING", {"default": "", "multiline": False, "tooltip":
                        "Images uploaded with a worker-comfyui request: names ('a.png, b.png') or a name "
                        "prefix ('req42_', or 'req42/' for a sub-folder). When set, these are loaded from the "
                        "input folder itself instead of 'directory'/'pattern': names in the order given, prefixes in "
                        "natural order; start_index/limit still apply. A listed name that is missing counts as "
                        "a bad file."}),
        }}

    @classmethod
    def IS_CHANGED(cls, directory="", pattern="*", sort="natural", start_index=0, limit=0, mode="list",
                   batch_fit="pad", on_error="fail", uploads=""):
        try:
            files = select_files(directory, pattern, sort, start_index, limit, uploads)
        except SafeCutError:
            return float("nan")  # run() raises the clear error
        return imaging.fingerprint(files)

    @classmethod
    def VALIDATE_INPUTS(cls, directory=None):
        # ComfyUI blames every input named in this signature for a failure (execution.validate_inputs adds
        # one custom_validation_failed error per argument), so only `directory` is checked before the run:
        # its errors land on its widget. pattern and uploads are checked by run(), in errors naming them.
        if directory is None:  # linked, not typed: checked in run()
            return True
        try:
            resolve_folder(directory)
        except SafeCutError as exc:
            return str(exc)
        return True

    def run(self, directory="", pattern="*", sort="natural", start_index=0, limit=0, mode="list",
            batch_fit="pad", on_error="fail", uploads=""):
        files = select_files(directory, pattern, sort, start_index, limit, uploads)
        res = imaging.load_batch(files, mode=mode, fit=batch_fit, on_error=on_error,
                                 progress=Progress(len(files)))
        if mode == "batch":
            images, masks = [to_image_tensor(res.images)], [to_mask_tensor(res.masks)]
        else:
            images = [to_image_tensor([im]) for im in res.images]
            masks = [to_mask_tensor([m]) for m in res.masks]
        text = f"loaded {len(res.images)} image(s)"
        if res.size:
            text += f" as one {res.size[0]}x{res.size[1]} batch ({batch_fit})"
        if res.errors:
            text += f"; skipped {len(res.errors)}: " + ", ".join(e["file"] for e in res.errors)
        return ui_result((images, masks, list(res.names), len(res.images), dumps(res.errors)), text=text)


NODE_CLASS_MAPPINGS = {"SafeCutLoadImageBatch": SafeCutLoadImageBatch}
NODE_DISPLAY_NAME_MAPPINGS = {"SafeCutLoadImageBatch": "SafeCut Load Image Batch"}
