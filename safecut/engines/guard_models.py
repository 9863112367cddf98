"""Llama classifier model choice: families, quantizations, naming variants and resolution to a GGUF on disk.

A choice is a family + quantization (resolved to a file such as ``Llama-Guard-3-1B-Q4_K_M.gguf`` in
models/LLM or models/llm_gguf, a few naming variants accepted) or ``custom: <file>.gguf``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..models import modelfiles
from ..errors import BadInputError, ModelNotFoundError
from ..models.registry import REGISTRY

QUANTIZATIONS = ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q8_0"]
DEFAULT_FAMILY = "Llama-Guard-3-1B"
DEFAULT_QUANT = "Q4_K_M"
CUSTOM_PREFIX = "custom: "

@dataclass(frozen=True)
class Family:
    """A model family of the dropdown (a docstring also spares dataclass an inspect call at import)."""

    name: str
    stems: tuple[str, ...]     # file-name stems, first = the registry's; matched case-insensitively
    task: str                  # "guard" (Llama Guard prompt) | "instruct" (chat prompt asking safe/unsafe)
    style: str                 # chat template used when the GGUF's own template is not recognised


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("Llama-Guard-3-1B", ("Llama-Guard-3-1B",), "guard", "llama3"),
    Family("Llama-3.2-1B-Instruct", ("Llama-3.2-1B-Instruct",), "instruct", "llama3"),
    Family("Llama-3.1-8B-Instruct", ("Meta-Llama-3.1-8B-Instruct", "Llama-3.1-8B-Instruct"), "instruct", "llama3"),
    Family("Phi-3-mini-4k-instruct", ("Phi-3-mini-4k-instruct",), "instruct", "phi3"),
    Family("TinyLlama-1.1B-Chat", ("tinyllama-1.1b-chat-v1.0", "TinyLlama-1.1B-Chat"), "instruct", "zephyr"),
]}
_SEPARATORS = ("-", ".", "_")

# ---- model files ---------------------------------------------------------------------------------
def family_choices() -> list[str]:
    """Dropdown entries: the families, then ``custom: <file>`` for every GGUF on disk."""
    return list(FAMILIES) + [CUSTOM_PREFIX + n for n in modelfiles.list_models("llm")]


def candidate_names(family: str, quant: str) -> list[str]:
    fam = FAMILIES[family]
    out: list[str] = []
    for stem in fam.stems:
        for sep in _SEPARATORS:
            name = f"{stem}{sep}{quant}.gguf"
            if name.lower() not in (o.lower() for o in out):
                out.append(name)
    return out


def canonical_name(family: str, quant: str) -> str:
    """The registry's file name for (family, quant), e.g. ``Llama-Guard-3-1B-Q4_K_M.gguf``."""
    names = candidate_names(family, quant)
    for n in names:
        if n in REGISTRY:
            return n
    return names[0]


def _quant_pattern(family: str) -> re.Pattern:
    stems = "|".join(re.escape(s) for s in FAMILIES[family].stems)
    return re.compile(rf"^(?:{stems})[-._]([A-Za-z0-9_]+)\.gguf$", re.IGNORECASE)


def present_quantizations(family: str) -> list[str]:
    """Quantizations of ``family`` found on disk (upper-case labels, sorted)."""
    pat = _quant_pattern(family)
    found = set()
    for rel in modelfiles.list_models("llm"):
        m = pat.match(rel.rsplit("/", 1)[-1])
        if m:
            found.add(m.group(1).upper())
    order = {q: i for i, q in enumerate(QUANTIZATIONS)}
    return sorted(found, key=lambda q: (order.get(q, 99), q))


def _find_family_file(family: str, quant: str) -> str | None:
    wanted = [n.lower() for n in candidate_names(family, quant)]
    for rel in modelfiles.list_models("llm"):
        if rel.rsplit("/", 1)[-1].lower() in wanted:
            return modelfiles.find("llm", rel)
    return None


def quant_from_name(name: str) -> str:
    m = re.search(r"(?i)(?:^|[-._])((?:I?Q\d(?:_[A-Z0-9]+)*)|BF16|F16|F32)\.gguf$", os.path.basename(name))
    return m.group(1).upper() if m else ""


def family_from_name(name: str) -> Family | None:
    base = os.path.basename(name).lower()
    for fam in FAMILIES.values():
        if any(base.startswith(s.lower()) for s in fam.stems):
            return fam
    return None


@dataclass(frozen=True)
class ResolvedModel:
    """A model choice resolved to a GGUF on disk."""

    path: str
    name: str                  # file name as shown to the user
    family: Family | None      # None: a custom GGUF of unknown family
    quant: str
    task: str                  # guard | instruct


def resolve_model(choice: str, quantization: str = DEFAULT_QUANT, *,
                  allow_download: bool | None = None) -> ResolvedModel:
    """(family, quantization) or ``custom: <file>`` / a file name / a path -> the GGUF on disk.

    Missing family file: fetched when downloads are allowed and the registry knows it; otherwise a
    ModelNotFoundError naming the quantizations of that family on disk and the fetch command."""
    choice = (choice or "").strip()
    if choice in FAMILIES:
        quant = (quantization or DEFAULT_QUANT).strip().upper()
        path = _find_family_file(choice, quant)
        canonical = canonical_name(choice, quant)
        if path is None and quant not in QUANTIZATIONS:
            present = present_quantizations(choice)
            raise BadInputError(f"quantization '{quantization}' is not known for {choice}: use one of "
                                f"{', '.join(QUANTIZATIONS)}"
                                + (f" (on disk: {', '.join(present)})" if present else "") + ".")
        if path is None:
            spec = REGISTRY.get(canonical)
            allowed = modelfiles.downloads_allowed() if allow_download is None else allow_download
            if spec is not None and allowed:
                path = modelfiles.resolve("llm", canonical, allow_download=True)
            else:
                present = present_quantizations(choice)
                hint = (f"Quantizations of {choice} on disk: {', '.join(present)} (pick one of those in "
                        f"'quantization')." if present else f"No quantization of {choice} is on disk.")
                if not allowed and spec is not None:
                    hint += " Downloads are off (HF_HUB_OFFLINE / SAFECUT_OFFLINE / the pack setting)."
                raise ModelNotFoundError(canonical, modelfiles.search_dirs("llm"),
                                         modelfiles.fetch_command(canonical) if spec is not None else None, hint=hint)
        spec = REGISTRY.get(os.path.basename(path))
        if spec is not None:
            modelfiles.check_files(spec, path)
        fam = FAMILIES[choice]
        return ResolvedModel(path, os.path.basename(path), fam, quant, fam.task)
    name = choice[len("custom:"):].strip() if choice.lower().startswith("custom:") else choice
    if not name:
        raise BadInputError("input 'model_family' is empty: pick a model family or a 'custom: <file>.gguf' entry")
    if not name.lower().endswith(".gguf"):
        raise BadInputError(f"input 'model_family': '{name}' is neither a known family ({', '.join(FAMILIES)}) "
                            f"nor a .gguf file")
    path = modelfiles.find("llm", name)
    if path is None:
        if name in REGISTRY:
            path = modelfiles.resolve("llm", name, allow_download=allow_download)
        else:
            raise ModelNotFoundError(name, modelfiles.search_dirs("llm"), None,
                                     hint="Put the GGUF file in one of these folders (subfolders work too).")
    fam = family_from_name(path)
    task = "guard" if "guard" in os.path.basename(path).lower() else (fam.task if fam else "instruct")
    return ResolvedModel(path, name, fam, quant_from_name(path), task)
