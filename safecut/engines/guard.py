"""Llama safety classifier for captions (llama-cpp-python, GGUF models).

How a caption is judged
* The prompt is split in three: a fixed *prefix* (instructions, categories, everything before the caption),
  the sanitized caption, and a short fixed *tail* (end of the turn + the assistant header). The prefix is
  evaluated once per loaded model and stays in the KV cache; for each caption the context is rewound to
  the end of the prefix and only caption + tail are evaluated. Llama Guard prompts are the official chat
  template rendered with jinja2, token for token (see :mod:`safecut.engines.guard_prompt`); the model's own first
  output "\n\n" (it closes the assistant header) is evaluated before scoring.
* The verdict comes from the next-token logits, Llama Guard's own scoring: P(unsafe) is the softmax mass
  of the first tokens of "unsafe"/" unsafe"/"Unsafe"… against that of "safe"/" safe"/"Safe"… . UNSAFE
  when P(unsafe) >= threshold.
* Categories are generated only for UNSAFE captions: "unsafe\\n" is appended and a grammar
  (LlamaGrammar) restricts a short greedy continuation to the category codes of the prompt (S1, S2, …).
* Fail closed: a load error, a decoding error, non-finite logits, an empty caption… give UNSAFE with
  decided_by "error" and the error text. Never SAFE.

Model choice lives in :mod:`safecut.engines.guard_models`, prompts and captions in :mod:`safecut.engines.guard_prompt`
(their public names are re-exported here).
"""
from __future__ import annotations

import logging
import math
import os
import re
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

from ..runtime.lazy import numpy as np

from ..runtime import cpu, providers
from ..runtime.cache import ModelKey, get_cache
from ..runtime.deps import require
from ..errors import BadInputError, DeviceUnavailableError, SafeCutError
from .guard_models import (  # noqa: F401  (re-exported: the classifier's public API)
    CUSTOM_PREFIX, DEFAULT_FAMILY, DEFAULT_QUANT, FAMILIES, QUANTIZATIONS, Family, ResolvedModel, candidate_names,
    canonical_name, family_choices, family_from_name, present_quantizations, quant_from_name, resolve_model)
from .guard_prompt import (  # noqa: F401
    DEFAULT_IMAGE_CATEGORIES, LLAMA_GUARD_CATEGORIES, MAX_CATEGORIES, MAX_REPORTED_CATEGORIES, PromptParts,
    Tokenize, build_prompt, category_grammar, detect_style, fit_caption, is_guard_template, parse_categories,
    render_guard, sanitize_caption, suffix_tokens)
from ..runtime.providers import DeviceChoice

log = logging.getLogger("safecut.engines.guard")

SAFE, UNSAFE = "SAFE", "UNSAFE"
DEFAULT_N_CTX = 1024
MIN_N_CTX, MAX_N_CTX = 256, 32768
MAX_CATEGORY_TOKENS = 16
MIN_CAPTION_TOKENS = 16
MIN_ANSWER_MASS = 1e-3   # below this the model is not answering safe/unsafe at all: its score means nothing
SAFE_VARIANTS = ("safe", " safe", "Safe", " Safe")
UNSAFE_VARIANTS = ("unsafe", " unsafe", "Unsafe", " Unsafe")


# ---- results -------------------------------------------------------------------------------------
@dataclass
class GuardResult:
    """The classifier's answer for one caption."""

    verdict: str                        # SAFE / UNSAFE
    p_unsafe: float                     # 0..1 (1.0 on errors)
    categories: list[str]               # "S1: Violent Crimes", … only for UNSAFE
    decided_by: str                     # "classifier" / "error"
    error: str | None = None
    seconds: float = 0.0
    truncated: bool = False             # the caption was cut to fit n_ctx
    answer_mass: float | None = None    # softmax mass on the safe/unsafe first tokens (model "on task")
    caption_tokens: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def error_result(message: str, seconds: float = 0.0) -> GuardResult:
    return GuardResult(UNSAFE, 1.0, [], "error", message, seconds)



# ---- device ---------------------------------------------------------------------------------------
_gpu_probe: tuple[str | None, str] | None = None


def _gpu_backend() -> tuple[str | None, str]:
    """(GPU name or None, reason when None). A CPU-only wheel silently ignores n_gpu_layers: probe it."""
    global _gpu_probe
    if _gpu_probe is not None:
        return _gpu_probe
    llama_cpp = require("llama_cpp")
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception:
        offload = False
    if not offload:
        result: tuple[str | None, str] = (None, "this llama-cpp-python build is CPU-only "
                                                "(llama_supports_gpu_offload() is False; see README 'GPU install')")
    elif sys.platform == "darwin":
        result = ("Metal", "")
    elif os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        result = (None, "CUDA_VISIBLE_DEVICES hides every GPU")
    else:
        driver = providers.gpu_driver()
        result = (driver, "") if driver else (None, "no GPU driver (libcuda / libamdhip64) was found")
    _gpu_probe = result
    return result


def plan_device(n_gpu_layers: int = -1, *, strict: bool = False) -> tuple[DeviceChoice, int]:
    """n_gpu_layers: -1 = auto (all layers on the GPU when one is really usable, else CPU), 0 = CPU,
    N > 0 = N layers on the GPU (CPU with a warning when there is none). Returns (choice, layers to use)."""
    n = int(n_gpu_layers)
    if n == 0:
        return DeviceChoice("CPU", "CPU"), 0
    requested = "auto" if n < 0 else "CUDA"
    gpu, reason = _gpu_backend()
    if gpu is not None:
        return DeviceChoice(requested, gpu), (-1 if n < 0 else n)
    if n > 0:
        msg = f"n_gpu_layers={n} asks for GPU offload but {reason}; running the Llama classifier on CPU"
        if strict:
            raise DeviceUnavailableError(msg + " (strict mode: refusing to fall back).")
        providers.warn_once(msg)
        return DeviceChoice(requested, "CPU", note="GPU offload unavailable"), 0
    if providers.gpu_driver():   # auto beside a GPU this build cannot use: CPU, but not silently
        providers.warn_once(f"a GPU is present but {reason}; running the Llama classifier on CPU")
        return DeviceChoice(requested, "CPU", note="GPU unused: llama-cpp-python is CPU-only"), 0
    return DeviceChoice(requested, "CPU"), 0



def p_unsafe_from_logits(logits: np.ndarray, safe_ids: Sequence[int], unsafe_ids: Sequence[int]) -> tuple[float, float]:
    """(P(unsafe | the answer starts with safe or unsafe), softmax mass of both answers) from next-token
    logits. Raises on NaN anywhere or non-finite answer logits (the caller turns that into UNSAFE)."""
    x = np.asarray(logits, dtype=np.float64).reshape(-1)
    ids = list(safe_ids) + list(unsafe_ids)
    if not safe_ids or not unsafe_ids or max(ids) >= x.size or min(ids) < 0:
        raise SafeCutError("answer token ids are missing or outside the vocabulary")
    if np.isnan(x).any() or not np.all(np.isfinite(x[ids])):
        raise SafeCutError("the model returned non-finite logits (NaN/inf)")
    top = float(x[ids].max())
    s_safe = float(np.exp(x[list(safe_ids)] - top).sum())
    s_unsafe = float(np.exp(x[list(unsafe_ids)] - top).sum())
    p = s_unsafe / (s_safe + s_unsafe)
    finite = x[np.isfinite(x)]
    m = max(float(finite.max()), top)
    mass = (s_safe + s_unsafe) * math.exp(top - m) / float(np.exp(finite - m).sum())
    if not (0.0 <= p <= 1.0):
        raise SafeCutError(f"P(unsafe) is not a probability ({p})")
    return p, min(max(mass, 0.0), 1.0)


# ---- the loaded model ----------------------------------------------------------------------------
@dataclass
class _Prepared:
    """A prompt tokenized for one loaded model."""

    prefix: list[int]
    tail: list[int]
    safe_ids: list[int]
    unsafe_ids: list[int]
    forced: list[int]          # answer_lead + "unsafe" + category lead
    grammar: str
    parts: PromptParts


class LlamaRuntime:
    """A loaded llama.cpp model + its lock + the prefix state of its KV cache. Not thread-safe by itself:
    hold ``lock`` while using ``llm``."""

    def __init__(self, llm, path: str, device: DeviceChoice, n_gpu_layers: int, load_seconds: float):
        self.llm = llm
        self.path = path
        self.device = device
        self.n_gpu_layers = n_gpu_layers
        self.load_seconds = load_seconds
        self.lock = threading.Lock()
        self.kv_valid = False                  # input_ids[:n_tokens] really are in the KV cache
        self.prepared: dict[tuple, _Prepared] = {}
        self.counters = {"prefix_evals": 0, "prefix_tokens": 0, "suffix_tokens": 0, "category_tokens": 0,
                         "captions": 0}
        llama_cpp = require("llama_cpp")
        try:
            self.recurrent = bool(llama_cpp.llama_model_is_recurrent(llm.model)) or bool(
                llama_cpp.llama_model_is_hybrid(llm.model))
        except Exception:
            self.recurrent = False
        self.metadata = dict(getattr(llm, "metadata", {}) or {})

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            llm.close()


def _check_gguf(path: str) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise SafeCutError(f"GGUF model '{path}' cannot be read: {exc}") from exc
    if magic != b"GGUF":
        raise SafeCutError(f"'{path}' is not a GGUF file (it does not start with 'GGUF'): delete it and fetch it "
                           f"again, or pick another model.")


_ISA_BELOW_AVX512 = ("AVX_VNNI", "AVX2", "AVX", "NEON")   # widest first


def build_isa(system_info: str) -> str:
    """The widest x86/ARM instruction set a llama.cpp build was compiled for, from llama_print_system_info()
    ("CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | … | AVX512 = 1 | …"): 'AVX-512 (VNNI, BF16)', 'AVX2', …"""
    on = {part.split("=")[0].strip() for part in system_info.replace("CPU :", "|").split("|")
          if part.strip().endswith("= 1")}
    if "AVX512" in on:
        ext = [e.split("_", 1)[1] for e in ("AVX512_VNNI", "AVX512_VBMI", "AVX512_BF16") if e in on]
        return "AVX-512" + (f" ({', '.join(ext)})" if ext else "")
    return next((i.replace("_", "-") for i in _ISA_BELOW_AVX512 if i in on), "baseline")


def _check_build_isa(llama_cpp) -> str:
    """The build's ISA; warns once when this CPU has AVX-512 and the build stops below it (measured on an AMX
    Xeon: AVX-512 build 161 vs portable 108 tokens/s)."""
    try:
        info = llama_cpp.llama_print_system_info()
        isa = build_isa(info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info))
    except Exception:   # an old binding without it: nothing to show
        return ""
    if cpu.cpu_class() in ("AMX", "AVX-512") and not isa.startswith("AVX-512"):
        providers.warn_once(f"llama-cpp-python was built for {isa} but this CPU has AVX-512 ({cpu.describe()}); an "
                            f"AVX-512 build classifies ~1.5x faster: rebuild it with SAFECUT_BUILD_LLAMA=1 python "
                            f"install.py (it adds the flags this CPU has) or CMAKE_ARGS=\"$(python -m safecut.runtime.cpu "
                            f"--llama-cmake-args)\" pip install --force-reinstall --no-cache-dir llama-cpp-python")
    return isa


def load_runtime(path: str, *, n_ctx: int, threads: int, n_gpu_layers: int, device: DeviceChoice) -> LlamaRuntime:
    llama_cpp = require("llama_cpp")
    _check_gguf(path)
    if device.used == "CPU":   # shows the build's instruction set on the node: "CPU · llama.cpp AVX2"
        isa = _check_build_isa(llama_cpp)
        device = replace(device, runtime=f"llama.cpp {isa}") if isa else device
    t0 = time.perf_counter()
    try:
        llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=min(512, n_ctx), n_ubatch=min(512, n_ctx),
                              n_threads=threads, n_threads_batch=threads, n_gpu_layers=n_gpu_layers,
                              logits_all=False, embedding=False, verbose=False)
    except Exception as exc:
        raise SafeCutError(
            f"GGUF model '{os.path.basename(path)}' could not be loaded by llama.cpp ({type(exc).__name__}: {exc}). "
            f"The file is probably truncated or damaged, or needs a newer llama-cpp-python: delete it and fetch "
            f"it again.") from exc
    return LlamaRuntime(llm, path, device, n_gpu_layers, time.perf_counter() - t0)


def _first_tokens(llm, variants: Sequence[str], min_chars: int) -> list[int]:
    """First token of each spelling of an answer word. A first token covering fewer than ``min_chars``
    letters of the word (e.g. "S" of "Safe" in some vocabularies) is left out: it starts too many other
    words ("Sure", …) to count as that answer."""
    out: list[int] = []
    for v in variants:
        toks = llm.tokenize(v.encode("utf-8"), add_bos=False, special=False)
        if not toks:
            continue
        piece = llm.detokenize([toks[0]]).decode("utf-8", "ignore").strip()
        if (len(piece) >= min_chars or piece == v.strip()) and v.strip().lower().startswith(piece.lower()) \
                and int(toks[0]) not in out:
            out.append(int(toks[0]))
    return out


def answer_token_ids(llm) -> tuple[list[int], list[int]]:
    """(safe ids, unsafe ids) for next-token scoring. Safe-side tokens must be specific (>= 3 letters);
    unsafe-side ones may be short ("un"): a loose match there can only push towards UNSAFE."""
    safe_ids = _first_tokens(llm, SAFE_VARIANTS, 3)
    unsafe_ids = _first_tokens(llm, UNSAFE_VARIANTS, 2)
    shared = set(safe_ids) & set(unsafe_ids)
    return [t for t in safe_ids if t not in shared], [t for t in unsafe_ids if t not in shared]


def _tokenizer(llm) -> Tokenize:
    return lambda text, special: llm.tokenize(text.encode("utf-8"), add_bos=False, special=special)


def _kv_truncate(llm, n: int) -> bool:
    """Drop KV cells from position ``n`` on. False when the model cannot remove a partial range."""
    llama_cpp = require("llama_cpp")
    if not hasattr(llama_cpp, "llama_get_memory"):  # llama-cpp-python before the memory API
        return bool(llm._ctx.kv_cache_seq_rm(-1, n, -1))
    mem = llama_cpp.llama_get_memory(llm.ctx)
    if mem is None:
        return False
    return bool(llama_cpp.llama_memory_seq_rm(mem, 0, n, -1))


def _read_logits(llm) -> np.ndarray:
    """Next-token logits after the last eval (a copy)."""
    llama_cpp = require("llama_cpp")
    ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    if not ptr:
        raise SafeCutError("llama.cpp returned no logits for the last token")
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def _is_eog(llm, token: int) -> bool:
    llama_cpp = require("llama_cpp")
    try:
        return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), int(token)))
    except Exception:
        return int(token) == llm.token_eos()


# ---- the classifier handle -----------------------------------------------------------------------
class SafetyClassifier:
    """A cheap handle: configuration only. The model loads on the first :meth:`classify` with captions,
    through SafeCut's model cache (shared with every handle that asks for the same file and settings)."""

    def __init__(self, model: str = DEFAULT_FAMILY, quantization: str = DEFAULT_QUANT, *, n_gpu_layers: int = -1,
                 threads: int = 0, n_ctx: int = DEFAULT_N_CTX, threshold: float = 0.5,
                 custom_categories: str | Sequence[str] | None = "", keep_loaded: bool = True,
                 strict_device: bool = False, min_answer_mass: float = MIN_ANSWER_MASS):
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            threshold = float("nan")
        if not (0.0 <= threshold <= 1.0):
            raise BadInputError(f"input 'threshold' must be between 0 and 1; got {threshold}")
        n_ctx = int(n_ctx) if n_ctx else DEFAULT_N_CTX
        if not (MIN_N_CTX <= n_ctx <= MAX_N_CTX):
            raise BadInputError(f"input 'n_ctx' must be between {MIN_N_CTX} and {MAX_N_CTX}; got {n_ctx}")
        self.model = model
        self.quantization = quantization
        self.n_gpu_layers = int(n_gpu_layers)
        self.threads = providers.default_threads(threads)
        self.n_ctx = n_ctx
        self.threshold = threshold
        self.categories = parse_categories(custom_categories)
        self.keep_loaded = bool(keep_loaded)
        self.strict_device = bool(strict_device)
        self.min_answer_mass = float(min_answer_mass)
        self._resolved: ResolvedModel | None = None
        self.device: DeviceChoice | None = None      # what really ran, after the first classify()
        self.last_run: dict[str, Any] = {}

    @classmethod
    def from_choice(cls, choice: str, quantization: str = DEFAULT_QUANT, **kwargs) -> "SafetyClassifier":
        """``choice``: a family name, ``custom: <file>``, a file name or a path (the pipeline's llm_model)."""
        return cls(choice or DEFAULT_FAMILY, quantization, **kwargs)

    def __repr__(self) -> str:
        return (f"SafetyClassifier({self.model!r}, {self.quantization!r}, threshold={self.threshold}, "
                f"n_ctx={self.n_ctx}, n_gpu_layers={self.n_gpu_layers})")

    # -- configuration ---------------------------------------------------------------------------
    def resolve(self) -> ResolvedModel:
        if self._resolved is None or not os.path.isfile(self._resolved.path):
            self._resolved = resolve_model(self.model, self.quantization)
        return self._resolved

    def cache_key(self, resolved: ResolvedModel | None = None) -> tuple[ModelKey, DeviceChoice, int]:
        r = resolved or self.resolve()
        choice, layers = plan_device(self.n_gpu_layers, strict=self.strict_device)
        key = ModelKey("llama", r.path, choice.used.lower(), r.quant, self.threads, extra=(self.n_ctx, layers))
        return key, choice, layers

    def device_description(self) -> str:
        if self.device is not None:
            return self.device.describe()
        return "not loaded yet"

    # -- classification --------------------------------------------------------------------------
    def classify(self, captions: Sequence[str], progress: Callable[[int], None] | None = None) -> list[GuardResult]:
        """One GuardResult per caption, in order. Never raises for model/caption problems: those are
        UNSAFE results with decided_by "error". Exceptions raised by ``progress`` (interrupts) propagate."""
        captions = list(captions)
        self.last_run = {"captions": len(captions), "prefix_tokens": 0, "suffix_tokens": 0, "category_tokens": 0,
                         "prefix_seconds": 0.0, "caption_seconds": [], "suffix_seconds": [], "category_seconds": [],
                         "loaded": False, "load_seconds": 0.0}
        if not captions:
            return []
        t_all = time.perf_counter()
        results: list[GuardResult] = []
        loaded: dict[str, float] = {}
        with ExitStack() as stack:
            try:
                resolved = self.resolve()
                key, choice, layers = self.cache_key(resolved)

                def loader():
                    rt = load_runtime(resolved.path, n_ctx=self.n_ctx, threads=self.threads, n_gpu_layers=layers,
                                      device=choice)
                    loaded["seconds"] = rt.load_seconds
                    return rt

                rt = stack.enter_context(get_cache().use(key, loader, files=[resolved.path],
                                                         closer=lambda m: m.close(), keep_loaded=self.keep_loaded))
            except Exception as exc:  # no model: every caption fails closed
                msg = f"{type(exc).__name__}: {exc}"
                log.error("SafeCut: Llama classifier unavailable: %s", msg)
                for _ in captions:
                    results.append(error_result(msg, (time.perf_counter() - t_all) / len(captions)))
                    if progress:
                        progress(1)
                self.last_run["seconds"] = time.perf_counter() - t_all
                return results
            self.device = rt.device
            self.last_run.update(loaded=bool(loaded), load_seconds=loaded.get("seconds", 0.0))
            with rt.lock:
                before = dict(rt.counters)
                try:
                    prepared, prep_error = self._prepare(rt, resolved), None
                except Exception as exc:
                    prepared, prep_error = None, f"{type(exc).__name__}: {exc}"
                try:
                    for cap in captions:
                        t0 = time.perf_counter()
                        res = error_result(prep_error) if prepared is None else self._classify_one(rt, prepared, cap)
                        res.seconds = time.perf_counter() - t0
                        self.last_run["caption_seconds"].append(res.seconds)
                        results.append(res)
                        rt.counters["captions"] += 1
                        if progress:
                            progress(1)
                finally:
                    for k in ("prefix_evals", "prefix_tokens", "suffix_tokens", "category_tokens"):
                        self.last_run[k] = rt.counters[k] - before[k]
        self.last_run["seconds"] = time.perf_counter() - t_all
        return results

    def _prepare(self, rt: LlamaRuntime, resolved: ResolvedModel) -> _Prepared:
        if resolved.family is not None:
            default_style = resolved.family.style
        else:
            default_style = "llama3" if resolved.task == "guard" else "plain"
        style = detect_style(rt.metadata, default_style)
        key = (resolved.task, style, tuple(self.categories))
        prep = rt.prepared.get(key)
        if prep is not None:
            return prep
        llm = rt.llm
        parts = self._parts(rt, resolved.task, style)
        prefix = llm.tokenize(parts.prefix.encode("utf-8"), add_bos=not parts.prefix_has_bos, special=True)
        tail = _tokenizer(llm)(parts.tail + parts.header_close, True)
        safe_ids, unsafe_ids = answer_token_ids(llm)
        if not safe_ids or not unsafe_ids:
            raise SafeCutError("this model's vocabulary cannot tell 'safe' from 'unsafe' by their first token")
        forced = llm.tokenize((parts.answer_lead + "unsafe" + parts.category_lead).encode("utf-8"),
                              add_bos=False, special=False)
        need = len(prefix) + len(tail) + MIN_CAPTION_TOKENS + len(forced) + MAX_CATEGORY_TOKENS + 1
        if need > self.n_ctx:
            raise SafeCutError(f"n_ctx={self.n_ctx} is too small for this prompt ({len(prefix) + len(tail)} tokens "
                               f"without the caption); use n_ctx >= {need}")
        prep = _Prepared(prefix, tail, safe_ids, unsafe_ids, forced, category_grammar(parts.codes), parts)
        rt.prepared[key] = prep
        return prep

    def _parts(self, rt: LlamaRuntime, task: str, style: str) -> PromptParts:
        """Llama Guard: the GGUF's own chat template when it is a Llama Guard one, else the packaged
        official template (GGUFs of other families, or one whose template does not render)."""
        own = str(rt.metadata.get("tokenizer.chat_template") or "")
        if task == "guard" and is_guard_template(own):
            try:
                return build_prompt(task, style, self.categories, template=own)
            except Exception as exc:
                log.warning("SafeCut: the GGUF's Llama Guard chat template does not render (%s); using the "
                            "packaged official template", exc)
        return build_prompt(task, style, self.categories)

    def _ensure_prefix(self, rt: LlamaRuntime, prefix: list[int]) -> None:
        """Leave the context at exactly ``prefix``: reuse what the KV cache already holds of it and evaluate
        only the rest (nothing, for every caption after the first)."""
        llm = rt.llm
        n = int(llm.n_tokens)
        common = 0
        if rt.kv_valid and not rt.recurrent and n > 0:
            have = np.asarray(llm.input_ids[:min(n, len(prefix))])
            diff = np.nonzero(have != np.asarray(prefix[:len(have)]))[0]
            common = int(diff[0]) if diff.size else len(have)
        rt.kv_valid = False
        if common == 0 or not _kv_truncate(llm, common):
            llm.reset()
            _kv_truncate(llm, 0)
            common = 0
        llm.n_tokens = common
        if common < len(prefix):
            t0 = time.perf_counter()
            llm.eval(prefix[common:])
            rt.counters["prefix_evals"] += 1
            rt.counters["prefix_tokens"] += len(prefix) - common
            self.last_run["prefix_seconds"] = self.last_run.get("prefix_seconds", 0.0) + time.perf_counter() - t0
        rt.kv_valid = True

    def _classify_one(self, rt: LlamaRuntime, prep: _Prepared, caption: Any) -> GuardResult:
        llm = rt.llm
        try:
            text, truncated = sanitize_caption(caption, max_chars=4 * self.n_ctx)
            if not text:
                return error_result("empty caption: nothing to classify (is the captioner connected?)")
            tokenize = _tokenizer(llm)
            budget = self.n_ctx - len(prep.prefix) - len(prep.tail) - len(prep.forced) - MAX_CATEGORY_TOKENS - 2
            text, n_cap, cut = fit_caption(tokenize, lambda ids: llm.detokenize(ids).decode("utf-8", "ignore"),
                                           prep.parts, text, budget)
            truncated = truncated or cut
            suffix = suffix_tokens(tokenize, prep.parts, text)  # caption and tail tokenised together
            if len(prep.prefix) + len(suffix) + len(prep.forced) + MAX_CATEGORY_TOKENS > self.n_ctx:
                raise SafeCutError("the prompt does not fit n_ctx")  # cannot happen with the slack above
            self._ensure_prefix(rt, prep.prefix)
            rt.kv_valid = False
            t0 = time.perf_counter()
            llm.eval(suffix)
            rt.kv_valid = True
            rt.counters["suffix_tokens"] += len(suffix)
            logits = _read_logits(llm)
            p, mass = p_unsafe_from_logits(logits, prep.safe_ids, prep.unsafe_ids)
            self.last_run["suffix_seconds"].append(time.perf_counter() - t0)
            if mass < self.min_answer_mass:  # unparseable: the model is not answering safe/unsafe
                res = error_result(f"the model did not answer 'safe' or 'unsafe' (answer probability {mass:.2g} < "
                                   f"{self.min_answer_mass:g}); is the chat template right for this GGUF?")
                res.answer_mass, res.caption_tokens, res.truncated = mass, n_cap, truncated
                return res
            verdict = UNSAFE if p >= self.threshold else SAFE
            res = GuardResult(verdict, p, [], "classifier", None, 0.0, truncated, mass, n_cap)
            if verdict == UNSAFE:
                t0 = time.perf_counter()
                res.categories = self._categories(rt, prep, prep.prefix + suffix)
                self.last_run["category_seconds"].append(time.perf_counter() - t0)
            return res
        except Exception as exc:
            rt.kv_valid = False  # whatever happened, the next caption starts from a clean prefix
            return error_result(f"{type(exc).__name__}: {exc}")

    def _categories(self, rt: LlamaRuntime, prep: _Prepared, context: list[int]) -> list[str]:
        llama_cpp = require("llama_cpp")
        llm = rt.llm
        grammar = llama_cpp.LlamaGrammar.from_string(prep.grammar, verbose=False)
        out: list[int] = []
        rt.kv_valid = False
        gen = llm.generate(context + prep.forced, temp=0.0, top_k=1, repeat_penalty=1.0, grammar=grammar, reset=True)
        try:
            for tok in gen:
                if _is_eog(llm, tok) or len(out) >= MAX_CATEGORY_TOKENS:
                    break
                out.append(int(tok))
        finally:
            gen.close()
            llm._sampler = None  # drop the grammar sampler generate() leaves behind
        rt.kv_valid = True
        rt.counters["category_tokens"] += len(prep.forced) + len(out)
        text = llm.detokenize(out).decode("utf-8", "replace")
        names = dict(prep.parts.codes)
        found: list[str] = []
        for code in re.findall(r"S\d+", text):
            if code in names and code not in found:
                found.append(code)
        return [f"{c}: {names[c]}" for c in found]


def classify(captions: Sequence[str], model: str = DEFAULT_FAMILY, quantization: str = DEFAULT_QUANT,
             progress: Callable[[int], None] | None = None, **kwargs) -> list[GuardResult]:
    """One-call convenience: ``SafetyClassifier(model, quantization, **kwargs).classify(captions)``."""
    return SafetyClassifier(model, quantization, **kwargs).classify(captions, progress)
