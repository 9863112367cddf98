"""Florence-2 captions with the native transformers classes (transformers >= 4.56; never remote code).

A model is a directory in the Hugging Face layout (config.json, weights, tokenizer and processor files),
e.g. a copy of ``florence-community/Florence-2-base-ft``. It is loaded once into the process-wide cache
(keyed by path, device and dtype). A whole batch is captioned in batched ``generate`` calls of
``batch_size`` images, with deterministic decoding (beam search, no sampling): the same image always
gets the same caption, alone or in a batch.

Precision: ``auto`` is fp16 on CUDA; on CPU bf16 where the CPU has AMX (measured x2.26 per image on an AMX Xeon)
and fp32 elsewhere (safecut.runtime.cpu). bf16 asked for on a CPU without AVX512-BF16/AMX (emulated) runs fp32 and
says so; with AVX512-BF16 but no AMX it is honoured with a warning (slower there);
fp16 asked for on CPU runs fp32 (about 4x slower otherwise), with one warning and a note in the result.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..runtime.lazy import numpy as np

from ..runtime import cpu, providers
from ..models import modelfiles
from ..runtime.cache import ModelKey, get_cache
from ..runtime.deps import require
from ..errors import BadInputError, SafeCutError

log = logging.getLogger("safecut.engines.florence")

DEFAULT_MODEL = "Florence-2-base-ft"
TASKS: dict[str, str] = {
    "caption": "<CAPTION>",
    "detailed caption": "<DETAILED_CAPTION>",
    "more detailed caption": "<MORE_DETAILED_CAPTION>",
}
# Longest caption per task when max_new_tokens is 0 (the default). A detailed caption cut at 64 tokens loses
# its end, where the content often is; generation stops at the end of the caption anyway, so a generous cap
# only costs time on captions that really are that long.
TASK_MAX_NEW_TOKENS: dict[str, int] = {"caption": 64, "detailed caption": 256, "more detailed caption": 512}
PRECISIONS = ["auto", "fp32", "fp16", "bf16"]
MIN_TRANSFORMERS = "4.56"
_WEIGHT_PATTERNS = ("*.safetensors",)          # never pickled weights (pytorch_model*.bin): no torch.load


@dataclass
class FlorenceModel:
    model: object                 # Florence2ForConditionalGeneration, eval mode, on its device
    processor: object             # Florence2Processor
    torch_device: str             # "cpu" | "cuda"
    dtype: str                    # "fp32" | "fp16" | "bf16": what the weights really are
    path: str

    def close(self) -> None:
        self.model = None         # the cache runs gc and empties the CUDA cache after closing
        self.processor = None

    def nbytes(self) -> int:
        m = self.model
        return int(sum(p.numel() * p.element_size() for p in m.parameters())) if m is not None else 0


@dataclass
class CaptionResult:
    captions: list[str]           # one per input image, in order
    device: providers.DeviceChoice
    dtype: str                    # precision the model really ran in
    seconds: float                # whole call, model load included
    load_seconds: float = 0.0     # 0 when the model came from the cache
    note: str = ""                # e.g. "fp16 requested: CPU runs fp32"
    cut: list[bool] = field(default_factory=list)  # per caption: stopped by max_new_tokens, not by its end
    max_new_tokens: int = 0       # the limit used (the task's default when 0 was asked)

    def describe(self) -> str:
        return f"{self.device.describe()}, {self.dtype}" + (f" ({self.note})" if self.note else "")


# ---- options ------------------------------------------------------------------------------------
def task_token(task: str) -> str:
    t = (task or "caption").strip()
    if t in TASKS.values():
        return t
    key = t.lower().replace("_", " ")
    if key not in TASKS:
        raise BadInputError(f"task '{task}' is not one of: {', '.join(TASKS)}.")
    return TASKS[key]


def max_tokens_for(task: str, max_new_tokens: int | None) -> int:
    """``max_new_tokens`` (> 0), or the task's default for 0/None."""
    n = int(max_new_tokens or 0)
    if n > 0:
        return n
    key = next((k for k, v in TASKS.items() if v == task_token(task)), "caption")
    return TASK_MAX_NEW_TOKENS[key]


def _precision(precision: str) -> str:
    p = (precision or "auto").strip().lower()
    if p not in PRECISIONS:
        raise BadInputError(f"precision '{precision}' is not one of: {', '.join(PRECISIONS)}.")
    return p


# bf16 without AMX, measured (bench section cpu): Florence-2-base, batch 4, 3 beams, 32 tokens
BF16_NO_AMX = "about 4x slower than fp32 (41.6 vs 10.2 s per image measured on a 2-core AVX2 EPYC)"


def resolve_precision(precision: str, device_used: str) -> tuple[str, str]:
    """(dtype to run, note for the user). device_used is DeviceChoice.used ("CPU"/"CUDA")."""
    p = _precision(precision)
    if device_used != "CUDA":
        if p == "auto":
            return cpu.florence_cpu_dtype(), ""   # bf16 with AMX tiles (measured x2.26), fp32 elsewhere
        if p == "bf16" and not cpu.bf16_native():   # emulated bf16 never runs silently: fp32, said on the node
            note = "bf16 asked: emulated on this CPU (about 4x slower), ran fp32"
            providers.warn_once(f"Florence-2 in bf16 on a CPU without AVX512-BF16 or AMX ({cpu.describe()}) would be "
                                f"emulated, {BF16_NO_AMX}: running fp32 (what auto runs here)")
            return "fp32", note
        if p == "bf16" and not cpu.bf16_fast():   # native AVX512-BF16 without AMX: honoured, but said
            providers.warn_once(f"Florence-2 in bf16 on a CPU without AMX ({cpu.describe()}) is slower than fp32 "
                                f"there; precision auto picks fp32")
            return "bf16", "bf16 without AMX: slower than fp32"
        if p == "fp16":
            note = "fp16 requested: CPU runs fp32"
            providers.warn_once(f"{note} (fp16 is no CPU format: about 4x slower than fp32; bf16 pays with AMX)")
            return "fp32", note
        return p, ""
    if p == "auto":
        return "fp16", ""
    if p == "bf16":
        torch = require("torch")
        try:
            try:
                ok = torch.cuda.is_bf16_supported(including_emulation=False)   # emulated bf16 is slow
            except TypeError:                                                 # torch < 2.3
                ok = torch.cuda.is_bf16_supported()
        except Exception:
            ok = False
        if not ok:
            note = "bf16 requested: this GPU has no bf16, running fp16"
            providers.warn_once(note)
            return "fp16", note
    return p, ""


def _torch_dtype(name: str):
    torch = require("torch")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


# ---- files and loading ----------------------------------------------------------------------------
def model_files(path: str) -> list[str]:
    """config.json and the weights of a model directory (what the cache watches for changes)."""
    weights: list[str] = []
    for pattern in _WEIGHT_PATTERNS:
        weights += sorted(glob.glob(os.path.join(path, pattern)))
    return [os.path.join(path, "config.json")] + weights


def _require_transformers():
    require("torch")
    transformers = require("transformers")
    if not hasattr(transformers, "Florence2ForConditionalGeneration"):
        raise SafeCutError(
            f"Florence-2 needs transformers >= {MIN_TRANSFORMERS} (native Florence2ForConditionalGeneration); "
            f"this Python has transformers {getattr(transformers, '__version__', '?')}. Upgrade it in the Python "
            f"that runs ComfyUI: pip install -U 'transformers>={MIN_TRANSFORMERS}'")
    return transformers


def _check_layout(path: str) -> None:
    name = os.path.basename(path.rstrip("/\\"))
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as exc:
        raise SafeCutError(f"Florence-2 model '{name}': config.json in {path} cannot be read ({exc}).") from exc
    text_type = (cfg.get("text_config") or {}).get("model_type")
    vision_type = (cfg.get("vision_config") or {}).get("model_type")
    remote = text_type == "florence2_language" or vision_type in ("davit", "florence2_vision")  # microsoft/* layout
    if cfg.get("model_type") != "florence2" or remote:
        raise SafeCutError(
            f"'{name}' in {path} is not a Florence-2 model in the native transformers format "
            f"(model_type={cfg.get('model_type')!r}{', a remote-code repo' if remote else ''}). "
            f"SafeCut never runs remote code: use the converted repos florence-community/Florence-2-base-ft "
            f"(or -base, -large, -large-ft), e.g. `python -m safecut models fetch {DEFAULT_MODEL}`.")
    if not model_files(path)[1:]:
        if glob.glob(os.path.join(path, "*.bin")) or glob.glob(os.path.join(path, "*.pt*")):
            raise SafeCutError(f"Florence-2 model '{name}' in {path} has no weights in safetensors format, only "
                               f"pickled PyTorch files (.bin/.pt), which SafeCut never loads (they can run code). "
                               f"Use the converted repos, e.g. `python -m safecut models fetch {DEFAULT_MODEL}`.")
        raise SafeCutError(f"Florence-2 model '{name}' in {path} has no weights (model.safetensors): "
                           f"the download is incomplete; delete the folder and fetch it again.")


def _check_weights_fit(path: str, model, info) -> None:
    """transformers fills weights missing from the checkpoint with random values (a warning only): a folder
    whose safetensors belong to another model would caption garbage. Refuse when most tensors are missing."""
    missing = list((info or {}).get("missing_keys") or [])
    total = len(model.state_dict())
    if missing and len(missing) > max(8, total // 4):
        raise SafeCutError(f"the weights in {path} do not belong to a Florence-2 model: {len(missing)} of {total} "
                           f"tensors are missing (e.g. {missing[0]}). Fetch the model again, e.g. "
                           f"`python -m safecut models fetch {DEFAULT_MODEL}`.")


def load_model(path: str, torch_device: str = "cpu", dtype: str = "fp32") -> FlorenceModel:
    """Load model + processor from a local directory only (never the network, never remote code)."""
    transformers = _require_transformers()
    _check_layout(path)
    kwargs = dict(dtype=_torch_dtype(dtype), local_files_only=True, use_safetensors=True, output_loading_info=True)
    try:
        try:
            model, info = transformers.Florence2ForConditionalGeneration.from_pretrained(
                path, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError) as exc:  # sdpa not available in this torch/transformers pair
            if "sdpa" not in str(exc).lower() and "attention" not in str(exc).lower():
                raise
            model, info = transformers.Florence2ForConditionalGeneration.from_pretrained(path, **kwargs)
        _check_weights_fit(path, model, info)
        processor = transformers.Florence2Processor.from_pretrained(path, local_files_only=True)
    except SafeCutError:
        raise
    except Exception as exc:
        raise SafeCutError(f"Florence-2 model in {path} could not be loaded ({type(exc).__name__}: {exc}). "
                           f"A file is probably missing or truncated: delete the folder and fetch it again.") from exc
    model.eval()
    if torch_device != "cpu":
        model.to(torch_device)
    return FlorenceModel(model, processor, torch_device, dtype, path)


# ---- inference ----------------------------------------------------------------------------------
def _check_image(i: int, im) -> None:
    shape = getattr(im, "shape", None)
    if shape is None or len(shape) not in (2, 3) or shape[0] < 1 or shape[1] < 1 or (len(shape) == 3 and shape[2] < 3):
        raise BadInputError(f"image {i} has shape {shape}; Florence-2 needs HxWx3 RGB images.")


def _to_pil(im):
    """HxWx3 float 0..1 (or uint8) -> RGB PIL image, as the processor expects (it rescales by 1/255)."""
    from PIL import Image

    a = np.asarray(im)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a), "RGB")


def _stopping(interrupt: Callable[[], None] | None):
    """A StoppingCriteria that only calls ``interrupt()`` at each decoding step (it raises to cancel)."""
    if interrupt is None:
        return None
    transformers = require("transformers")
    torch = require("torch")

    class _Interrupt(transformers.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            interrupt()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return transformers.StoppingCriteriaList([_Interrupt()])


def generate_captions(fm: FlorenceModel, images: list, task: str = "caption", *, max_new_tokens: int = 0,
                      num_beams: int = 3, batch_size: int = 8, progress: Callable[[int], None] | None = None,
                      interrupt: Callable[[], None] | None = None, cut: list | None = None) -> list[str]:
    """Caption ``images`` (HxWx3 float 0..1 or uint8) with a loaded model, ``batch_size`` per generate call.
    ``max_new_tokens`` 0: the task's default. ``cut``: a list that gets, per caption, whether it was stopped
    by the token limit (no end-of-sequence token generated)."""
    torch = require("torch")
    prompt = task_token(task)
    for i, im in enumerate(images):                           # every image is checked before any work
        _check_image(i, im)
    step = max(1, int(batch_size or 8))
    dtype = _torch_dtype(fm.dtype)
    stopping = _stopping(interrupt)
    gen_kwargs = dict(max_new_tokens=max_tokens_for(task, max_new_tokens), num_beams=max(1, int(num_beams)),
                      do_sample=False)
    eos = getattr(getattr(fm.model, "generation_config", None), "eos_token_id", None)
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    if stopping is not None:
        gen_kwargs["stopping_criteria"] = stopping
    captions: list[str] = []
    with torch.inference_mode():
        for s in range(0, len(images), step):
            chunk = [_to_pil(im) for im in images[s:s + step]]   # converted per chunk: bounded memory
            inputs = fm.processor(text=[prompt] * len(chunk), images=chunk, return_tensors="pt")
            batch = {k: v.to(fm.torch_device) for k, v in inputs.items() if hasattr(v, "to")}
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
            out = fm.model.generate(**batch, **gen_kwargs)
            # skip_special_tokens also drops the <pad> that fills shorter captions of a batch
            texts = fm.processor.batch_decode(out, skip_special_tokens=True)
            captions += [" ".join(t.split()) for t in texts]
            if cut is not None:  # position 0 is the decoder start token (BART: the eos id itself)
                cut += [bool(eos) and not eos & set(row[1:].tolist()) for row in out]
            if progress is not None:
                progress(len(chunk))   # ComfyUI's interrupt is also raised here, between chunks
    return captions


def caption_images(images: list, model: str = DEFAULT_MODEL, *, task: str = "caption", device: str = "auto",
                   precision: str = "auto", max_new_tokens: int = 0, num_beams: int = 3, batch_size: int = 8,
                   keep_loaded: bool = True, strict: bool = False, progress: Callable[[int], None] | None = None,
                   interrupt: Callable[[], None] | None = None) -> CaptionResult:
    """Caption every image. ``model`` is a name in models/florence2 (or models/LLM) or, outside ComfyUI, a path.
    ``max_new_tokens`` 0: the task's default (TASK_MAX_NEW_TOKENS)."""
    t0 = time.perf_counter()
    task_token(task)                                  # bad options and images fail before anything is loaded
    _precision(precision)
    for i, im in enumerate(images):
        _check_image(i, im)
    _require_transformers()
    limit = max_tokens_for(task, max_new_tokens)
    path = modelfiles.resolve("florence2", model)
    cache = get_cache()
    loads_before = cache.stats()["load_seconds"]

    def attempt(dev: str) -> CaptionResult:
        choice = providers.torch_device(dev, strict=strict)
        dtype, note = resolve_precision(precision, choice.used)
        tdev = providers.torch_name(choice)
        if len(images) == 0:
            return CaptionResult([], choice, dtype, time.perf_counter() - t0, 0.0, note)
        key = ModelKey("florence2", path, tdev, dtype, extra=("sdpa",))
        cut: list[bool] = []
        with cache.use(key, lambda: load_model(path, tdev, dtype), size=lambda m: m.nbytes(),
                       files=model_files(path), keep_loaded=keep_loaded) as fm:
            captions = generate_captions(fm, images, task, max_new_tokens=max_new_tokens, num_beams=num_beams,
                                         batch_size=batch_size, progress=progress, interrupt=interrupt, cut=cut)
        return CaptionResult(captions, choice, dtype, time.perf_counter() - t0,
                             cache.stats()["load_seconds"] - loads_before, note, cut, limit)

    return providers.oom_guard("Florence-2", device, attempt, strict=strict)
