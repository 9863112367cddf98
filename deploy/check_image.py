"""Build-time checks of a SafeCut worker image; the last step of deploy/Dockerfile.cpu and .gpu.

    python check_image.py --flavour cpu --profile cpu-full

Runs with the Python ComfyUI runs from (/opt/venv/bin/python in worker-comfyui) and fails the build
(exit 1) listing every problem: the wrong ONNX Runtime flavour (or both), the wrong torch build, llama-cpp-python
missing or without CUDA, the pack not importing (or missing nodes), profile models not on disk, the SafeCut
section missing from extra_model_paths.yaml, and ComfyUI itself not loading the pack (its own --quick-test-for-ci).
Standard library only, plus what it checks.
"""
from __future__ import annotations

import argparse
import glob
import importlib.metadata as md
import importlib.util
import os
import subprocess
import sys
import tempfile

ORT_FLAVOURS = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}
REQUIRED_NODES = ("SafeCutLoadImageBatch", "SafeCutSaveCutout")
YAML_SECTION = "safecut_network_volume"


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def check_onnxruntime(flavour: str) -> list[str]:
    have = sorted({_norm(d.metadata["Name"]) for d in md.distributions()
                   if d.metadata["Name"] and _norm(d.metadata["Name"]).startswith("onnxruntime")})
    want = ORT_FLAVOURS[flavour]
    print(f"check: ONNX Runtime distributions: {have}")
    if have != [want]:
        return [f"expected exactly one ONNX Runtime, '{want}', found {have or 'none'} (two flavours share the "
                "'onnxruntime' module and overwrite each other's files)"]
    return []


def check_torch(flavour: str) -> list[str]:
    try:
        import torch
    except Exception as exc:
        return [f"torch does not import: {exc}"]
    print(f"check: torch {torch.__version__} (CUDA {torch.version.cuda})")
    if flavour == "cpu" and torch.version.cuda is not None:
        return [f"CPU image has a CUDA torch build ({torch.__version__}); reinstall the CPU wheels"]
    if flavour == "gpu" and torch.version.cuda is None:
        return [f"GPU image has a CPU-only torch build ({torch.__version__})"]
    return []


def check_llama(flavour: str) -> list[str]:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.origin:
        return ["llama-cpp-python is not installed"]
    print(f"check: llama-cpp-python {md.version('llama-cpp-python')}")
    if flavour == "cpu":
        try:
            import llama_cpp  # noqa: F401  (the CPU build imports anywhere)
        except Exception as exc:
            return [f"llama_cpp does not import: {exc}"]
        return []
    # A CUDA build cannot be imported here: the build has no NVIDIA driver (libcuda.so.1). Look for its CUDA lib.
    pkg = os.path.dirname(spec.origin)
    libs = [os.path.basename(p) for p in glob.glob(os.path.join(pkg, "**", "*.so*"), recursive=True)]
    if not any("cuda" in name.lower() for name in libs):
        return [f"llama-cpp-python has no CUDA library ({libs}): a CPU-only wheel or sdist build was installed"]
    return []


def check_pack(pack: str) -> list[str]:
    name = "comfyui_safecut_check"
    spec = importlib.util.spec_from_file_location(name, os.path.join(pack, "__init__.py"),
                                                  submodule_search_locations=[pack])
    if spec is None or spec.loader is None:
        return [f"no pack at {pack}"]
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        return [f"the pack does not import: {type(exc).__name__}: {exc}"]
    problems = []
    errors = getattr(mod, "IMPORT_ERRORS", None)
    if errors:
        problems.append(f"pack node modules failed to import: {errors}")
    missing = [n for n in REQUIRED_NODES if n not in getattr(mod, "NODE_CLASS_MAPPINGS", {})]
    if missing:
        problems.append(f"pack lacks nodes {missing}")
    print(f"check: pack nodes: {sorted(getattr(mod, 'NODE_CLASS_MAPPINGS', {}))}")
    return problems


def check_models(pack: str, profile: str, models_dir: str) -> list[str]:
    os.environ["SAFECUT_MODELS_DIR"] = models_dir
    sys.path.insert(0, pack)
    try:
        from safecut.models import modelfiles
        from safecut.models.profiles import PROFILES
        from safecut.models.registry import REGISTRY
    finally:
        sys.path.remove(pack)
    problems = []
    for name in PROFILES[profile]:
        spec = REGISTRY.get(name)
        if spec is None:
            problems.append(f"profile {profile}: '{name}' is not in the registry")
            continue
        try:
            path = modelfiles.resolve(spec.kind, name, allow_download=False)
            print(f"check: model {spec.kind}/{name}: {path}")
        except Exception as exc:
            problems.append(f"profile {profile}: model '{name}' not found under {models_dir}: {exc}")
    return problems


def check_yaml(comfyui: str) -> list[str]:
    path = os.path.join(comfyui, "extra_model_paths.yaml")
    try:
        import yaml

        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except Exception as exc:
        return [f"{path}: {exc}"]
    problems = []
    if YAML_SECTION not in doc:
        problems.append(f"{path} has no '{YAML_SECTION}' section")
    if "runpod_worker_comfy" not in doc:
        problems.append(f"{path} lost worker-comfyui's own 'runpod_worker_comfy' section")
    return problems


def check_comfyui(comfyui: str, pack: str, extra: list[str] | None = None) -> list[str]:
    """ComfyUI's own start-up (--quick-test-for-ci exits once custom nodes are loaded)."""
    with tempfile.TemporaryDirectory() as tmp:
        user = os.path.join(tmp, "user")
        os.makedirs(user)
        cmd = [sys.executable, "main.py", "--cpu", "--quick-test-for-ci", "--user-directory", user,
               "--temp-directory", os.path.join(tmp, "temp"), "--database-url", "sqlite:///:memory:", *(extra or [])]
        try:
            run = subprocess.run(cmd, cwd=comfyui, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return ["ComfyUI --quick-test-for-ci did not finish in 900 s"]
    log = run.stdout + run.stderr
    tail = "\n".join(log.splitlines()[-40:])
    if run.returncode != 0:
        return [f"ComfyUI --quick-test-for-ci exited {run.returncode}:\n{tail}"]
    lines = [ln for ln in log.splitlines() if ln.rstrip().endswith(pack.rstrip("/")) and "seconds" in ln]
    print("check: ComfyUI: " + (lines[0].strip() if lines else "pack not listed"))
    if not lines:
        return [f"ComfyUI did not list {pack} among its custom nodes:\n{tail}"]
    if any("IMPORT FAILED" in ln for ln in lines):
        return [f"ComfyUI could not import {pack}:\n{tail}"]
    return []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flavour", required=True, choices=sorted(ORT_FLAVOURS))
    p.add_argument("--profile", required=True)
    p.add_argument("--comfyui", default="/comfyui")
    p.add_argument("--pack", default="/comfyui/custom_nodes/comfyui-safecut")
    p.add_argument("--models", default="/comfyui/models")
    p.add_argument("--comfyui-arg", action="append", default=[], help="extra ComfyUI argument (local testing)")
    p.add_argument("--skip", nargs="*", default=[], choices=["onnxruntime", "torch", "llama", "pack", "models",
                                                              "yaml", "comfyui"])
    a = p.parse_args(argv)
    print(f"check: python {sys.executable} ({sys.version.split()[0]}), prefix {sys.prefix}")
    checks = {
        "onnxruntime": lambda: check_onnxruntime(a.flavour),
        "torch": lambda: check_torch(a.flavour),
        "llama": lambda: check_llama(a.flavour),
        "pack": lambda: check_pack(a.pack),
        "models": lambda: check_models(a.pack, a.profile, a.models),
        "yaml": lambda: check_yaml(a.comfyui),
        "comfyui": lambda: check_comfyui(a.comfyui, a.pack, a.comfyui_arg),
    }
    problems: list[str] = []
    for name, fn in checks.items():
        if name not in a.skip:
            problems += fn()
    for pr in problems:
        print(f"IMAGE CHECK FAILED: {pr}", file=sys.stderr)
    if not problems:
        print(f"check: SafeCut {a.flavour} image OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
