"""Known models: where they come from, how big they are, and their sha256.

Data only. ``size``/``sha256`` of ``None`` means the value could not be confirmed when this entry was
written: such files are still downloaded to a temp name and size-checked where the size is known, and
``python -m safecut models verify`` prints their hashes so a deployment can pin them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    path: str                  # path inside the repo (and inside the model dir for directory models)
    size: int | None = None
    sha256: str | None = None
    url: str | None = None     # direct URL for files that are not on the Hugging Face hub


@dataclass(frozen=True)
class ModelSpec:
    name: str                  # file name (single-file models) or directory name (HF-layout models)
    kind: str                  # ben2 | florence2 | llm | nudenet
    repo_id: str
    files: tuple[RemoteFile, ...]
    revision: str | None = None
    license: str = ""
    note: str = ""
    is_dir: bool = False
    params: tuple = ()         # model-specific settings as (key, value) pairs, e.g. preprocessing

    def param(self, key: str, default=None):
        return dict(self.params).get(key, default)


def _single(name, kind, repo, size=None, sha=None, path=None, url=None, **kw) -> ModelSpec:
    return ModelSpec(name, kind, repo, (RemoteFile(path or name, size, sha, url),), **kw)


_FLORENCE_FILES = ("added_tokens.json", "config.json", "generation_config.json", "merges.txt", "model.safetensors",
                   "preprocessor_config.json", "processor_config.json", "special_tokens_map.json", "tokenizer.json",
                   "tokenizer_config.json", "vocab.json")
_FLORENCE = [
    ("base-ft", "0b03b6f15a4a211370fb204aee4e7dd48887ea37", 463_178_864,
     "ab06dea66b16d5e54513256d64854be2194443452fd0d84353b40a278bf87d42"),
    ("base", "00921df66db728a9ceb750f5eca43e5c203a2051", 463_178_864,
     "62f3e696da74f8869a68ddb529a9b3e14eb25b21c592cb3dea6179bf944df6a0"),
    ("large", "4271c66b88cdbc05735372ec13b2360108de5317", 1_553_541_016,
     "7715423d6549bf1e71188bdd84f4ac960cc0597886af24a5ef7b66f128660685"),
    ("large-ft", "26b734a54fdfbf9c398351eedfabb7f27fc470b7", None, None),
]

QUANTS = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q8_0")
# (file stem, separator before the quant, default repo, license)
_LLM_FAMILIES = [
    ("Llama-Guard-3-1B", "-", "tensorblock/Llama-Guard-3-1B-GGUF", "Llama 3.2 Community License"),
    ("Llama-3.2-1B-Instruct", "-", "tensorblock/Llama-3.2-1B-Instruct-GGUF", "Llama 3.2 Community License"),
    ("Meta-Llama-3.1-8B-Instruct", "-", "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF", "Llama 3.1 Community License"),
    ("Phi-3-mini-4k-instruct", ".", "mradermacher/Phi-3-mini-4k-instruct-GGUF", "MIT"),
    ("tinyllama-1.1b-chat-v1.0", ".", "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", "Apache-2.0"),
]
# Files whose size + sha256 (+ revision) several independent public projects pin; the rest are verified by
# `python -m safecut models verify` on first use and should be pinned here once confirmed.
_LLM_PINNED = {
    "Llama-3.2-1B-Instruct-Q4_K_M.gguf": ("bartowski/Llama-3.2-1B-Instruct-GGUF", "067b946cf014b7c697f3654f621d577a3e3afd1c",
                                          807_694_464, "6f85a640a97cf2bf5b8e764087b1e83da0fdb51d7c9fab7d0fece9385611df83"),
    "Llama-3.2-1B-Instruct-Q8_0.gguf": ("bartowski/Llama-3.2-1B-Instruct-GGUF", "067b946cf014b7c697f3654f621d577a3e3afd1c",
                                        1_321_083_008, "432f310a77f4650a88d0fd59ecdd7cebed8d684bafea53cbff0473542964f0c3"),
    "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf": ("bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
                                               "bf5b95e96dac0462e2a09145ec66cae9a3f12067", 4_920_739_232,
                                               "7b064f5842bf9532c91456deda288a1b672397a54fa729aa665952863033557c"),
    "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf": ("TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", "52e7645ba7c309695bec7ac98f4f005b139cf465",
                                             668_788_096, "9fecc3b3cd76bba89d504f29b616eedf7da85b96540e490ca5824d3f7d2776a0"),
    "tinyllama-1.1b-chat-v1.0.Q8_0.gguf": ("TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", "52e7645ba7c309695bec7ac98f4f005b139cf465",
                                           1_170_781_568, "a4c9bb1dbaa372f6381a035fa5c02ef087aaa1ff1f843a56a22328114f03fc59"),
}


def _llm_entries() -> list:
    out = []
    for stem, sep, repo, lic in _LLM_FAMILIES:
        for q in QUANTS:
            name = f"{stem}{sep}{q}.gguf"
            prepo, rev, size, sha = _LLM_PINNED.get(name, (repo, None, None, None))
            out.append(_single(name, "llm", prepo, size, sha, revision=rev, license=lic,
                               note="GGUF for the Llama safety classifier"))
    return out


REGISTRY_LIST: list[ModelSpec] = [
    # The published ONNX takes RGB scaled to 0..1 with no mean/std (its own onnx_run.py); the PyTorch
    # checkpoint uses ImageNet normalisation instead. Preprocessing is therefore a per-model property.
    _single("BEN2_Base.onnx", "ben2", "PramaLLC/BEN2", 222_932_053,
            "22cea62108ff53b7ccc20f7a008bf30494228d84b1687f29ecbe76936a998101",
            revision="e48a20765fb421d19dcdb0bf3cc61e802ca5ec8f", license="MIT",
            note="Official BEN2 ONNX export (fp32/fp16 mixed, output declared float16).",
            params=(("size", 1024), ("mean", (0.0, 0.0, 0.0)), ("std", (1.0, 1.0, 1.0)))),
    _single("320n.onnx", "nudenet", "notAI-tech/NudeNet", 12_150_158,
            "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f", license="AGPL-3.0 (weights)",
            url="https://github.com/notAI-tech/NudeNet/releases/download/v3.4-weights/320n.onnx",
            note="Also bundled with the nudenet pip package; SafeCut uses that copy when present."),
    # --- florence2 entries (safecut/engines/florence.py owner) ---
    # Converted checkpoints for transformers' native Florence2 classes (>= 4.56, no remote code), pinned to a
    # revision. model.safetensors size/sha256 are the values public projects pin for these revisions; the
    # small JSON/text files are not LFS objects (no published sha256) and are fetched at the pinned revision.
    *[ModelSpec(f"Florence-2-{v}", "florence2", f"florence-community/Florence-2-{v}",
                tuple(RemoteFile(f, size if f == "model.safetensors" else None, sha if f == "model.safetensors" else None)
                      for f in _FLORENCE_FILES),
                revision=rev, license="MIT", is_dir=True,
                note=f"Florence-2 {v} (Microsoft), converted to transformers' native Florence2 format.")
      for v, rev, size, sha in _FLORENCE],
    # --- llm entries (safecut/engines/guard.py owner) ---
    *_llm_entries(),
    # --- nudenet entries ---
    # NudeNet 3.4 YOLOv8m export, 640 px input, same 18 labels as 320n. Size/sha256 are the values several
    # independent public projects pin for this release asset (they pin 320n.onnx with the same sha256 as
    # above); the download is verified against them, a mismatch is refused.
    _single("640m.onnx", "nudenet", "notAI-tech/NudeNet", 103_538_690,
            "04fe3d77980780c1f8297dc6d7f942fd5b3abe6942a188f742a85241e4f634eb", license="AGPL-3.0 (weights)",
            url="https://github.com/notAI-tech/NudeNet/releases/download/v3.4-weights/640m.onnx",
            note="More accurate, ~4-5x slower than 320n on CPU.", params=(("size", 640),)),
]

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in REGISTRY_LIST}


def register(spec: ModelSpec) -> None:
    REGISTRY[spec.name] = spec
