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
    # --- florence2 entries (safecut/florence.py owner) ---
    # --- llm entries (safecut/guard.py owner) ---
    # --- nudenet entries ---
]

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in REGISTRY_LIST}


def register(spec: ModelSpec) -> None:
    REGISTRY[spec.name] = spec
