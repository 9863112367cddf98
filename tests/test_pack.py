"""The pack as ComfyUI sees it: import by path, cheap import, optional deps, ComfyUI hooks."""
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from conftest import ROOT

HEAVY = ("torch", "onnxruntime", "transformers", "llama_cpp", "cv2", "huggingface_hub")


def _run(code: str, env=None) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=dict(os.environ, **(env or {})), timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


LOAD = """
import importlib.util, json, sys, time
path = {path!r}
t = time.perf_counter()
spec = importlib.util.spec_from_file_location({name!r}, path + "/__init__.py", submodule_search_locations=[path])
mod = importlib.util.module_from_spec(spec); sys.modules[{name!r}] = mod; spec.loader.exec_module(mod)
dt = time.perf_counter() - t
"""


@pytest.fixture(scope="module")
def odd_clone(tmp_path_factory):
    """The pack under a folder name ComfyUI might use (git clone of a renamed repo, registry id…)."""
    d = tmp_path_factory.mktemp("custom_nodes") / "ComfyUI-SafeCut-main"
    os.symlink(ROOT, d)
    return str(d)


def test_pack_loads_by_path_under_any_folder_name_cheaply(odd_clone):
    code = LOAD.format(path=odd_clone, name="ComfyUI-SafeCut-main") + f"""
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
print(json.dumps(dict(dt=dt, nodes=sorted(mod.NODE_CLASS_MAPPINGS), errors=mod.IMPORT_ERRORS, heavy=heavy,
                      numpy="numpy" in sys.modules,
                      web=mod.WEB_DIRECTORY, names=mod.NODE_DISPLAY_NAME_MAPPINGS)))
"""
    env = {"PYTHONDONTWRITEBYTECODE": ""}  # like a ComfyUI install: .pyc files are written and reused
    _run(code, env)  # first run compiles .pyc files
    best = min((_run(code, env) for _ in range(3)), key=lambda r: r["dt"])
    assert best["errors"] == {}
    assert best["heavy"] == [], f"heavy modules imported at load: {best['heavy']}"
    assert best["numpy"] is False      # safecut.runtime.lazy: ~160 ms of a fresh process, imported on first use
    assert best["web"] == "./js" and os.path.isdir(os.path.join(ROOT, "js"))
    assert {"SafeCutBEN2RemoveBackground", "SafeCutKeywordGate", "SafeCutUnloadModels"} <= set(best["nodes"])
    assert set(best["names"]) == set(best["nodes"])
    assert all(n.startswith("SafeCut ") for n in best["names"].values())
    # The 150 ms target is measured by the benchmark (bench/); here only a gross regression (e.g. torch
    # imported at load, ~2 s) fails, so a busy CI machine cannot make this flaky.
    assert best["dt"] < 1.0, f"pack import took {best['dt'] * 1000:.0f} ms"


def test_missing_onnxruntime_keeps_other_nodes_and_names_the_install(odd_clone):
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'onnxruntime':
            raise ImportError('blocked for the test')
sys.meta_path.insert(0, Block())
""" + LOAD.format(path=odd_clone, name="pk") + """
import numpy as np, torch
node = mod.NODE_CLASS_MAPPINGS['SafeCutBEN2RemoveBackground']()
msg = ''
try:
    node.run(torch.zeros(1, 8, 8, 3), 'x.onnx', 'auto', 0, 'alpha', '', False, True)
except Exception as e:
    msg = str(e)
print(json.dumps(dict(nodes=sorted(mod.NODE_CLASS_MAPPINGS), msg=msg)))
"""
    import tempfile

    with tempfile.TemporaryDirectory() as models:
        os.makedirs(os.path.join(models, "ben2"))
        open(os.path.join(models, "ben2", "x.onnx"), "wb").write(b"0")
        r = _run(code, env={"SAFECUT_MODELS_DIR": models})
    assert "SafeCutKeywordGate" in r["nodes"] and "SafeCutBEN2RemoveBackground" in r["nodes"]
    assert "onnxruntime" in r["msg"] and "pip install onnxruntime" in r["msg"]


def test_importing_does_not_download_or_install(odd_clone):
    code = """
import socket, subprocess, json
calls = []
socket.socket.connect = lambda *a, **k: calls.append('net')
subprocess.Popen.__init__ = lambda *a, **k: calls.append('proc')
""" + LOAD.format(path=odd_clone, name="pk2") + """
print(json.dumps(dict(calls=calls)))
"""
    assert _run(code)["calls"] == []


# ---- ComfyUI hooks with stand-in ComfyUI modules -------------------------------------------------
@pytest.fixture()
def fake_comfy(monkeypatch, tmp_path):
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {"LLM": ([str(tmp_path / "yaml" / "LLM")], {".gguf"})}

    def add_model_folder_path(name, path, is_default=False):
        paths, exts = fp.folder_names_and_paths.setdefault(name, ([], set()))
        if path not in paths:
            paths.append(path)

    fp.add_model_folder_path = add_model_folder_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    mm = types.ModuleType("comfy.model_management")
    calls = []
    mm.unload_all_models = lambda: calls.append("original")
    comfy = types.ModuleType("comfy")
    comfy.model_management = mm
    monkeypatch.setitem(sys.modules, "folder_paths", fp)
    monkeypatch.setitem(sys.modules, "comfy", comfy)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    return fp, mm, calls


def test_hooks_register_folders_without_overwriting_yaml_paths(pack, fake_comfy):
    fp, mm, calls = fake_comfy
    hooks = pack.nodes.comfy_hooks
    try:
        assert hooks.install() is True
        llm_paths = fp.get_folder_paths("LLM")
        assert llm_paths[0].endswith(os.path.join("yaml", "LLM"))           # extra_model_paths.yaml entry kept
        assert llm_paths[1] == os.path.join(fp.models_dir, "LLM")
        assert fp.get_folder_paths("ben2") == [os.path.join(fp.models_dir, "ben2")]
        assert pack.safecut.models.modelfiles.search_dirs("llm")[0].endswith(os.path.join("yaml", "LLM"))
    finally:
        pack.safecut.models.modelfiles.set_folder_provider(None)


def test_comfy_unload_also_empties_our_cache_and_wrap_is_idempotent(pack, fake_comfy):
    fp, mm, calls = fake_comfy
    hooks = pack.nodes.comfy_hooks
    cache = pack.safecut.runtime.cache.get_cache()
    try:
        hooks.wrap_unload()
        hooks.wrap_unload()
        closed = []
        cache.get(pack.safecut.runtime.cache.ModelKey("t", "/x"), lambda: object(), closer=closed.append)
        mm.unload_all_models()
        assert calls == ["original"] and len(closed) == 1 and not cache.contains(pack.safecut.runtime.cache.ModelKey("t", "/x"))
    finally:
        pack.safecut.models.modelfiles.set_folder_provider(None)


def test_comfy_free_memory_takes_back_our_gpu_models_only_under_pressure(pack, fake_comfy):
    fp, mm, calls = fake_comfy
    hooks = pack.nodes.comfy_hooks
    cache_mod = pack.safecut.runtime.cache
    cache = cache_mod.get_cache()
    Choice = pack.safecut.runtime.providers.DeviceChoice
    free = {"bytes": 10 << 30}
    mm.get_free_memory = lambda dev=None, torch_free_too=False: free["bytes"]
    mm.free_memory = lambda memory_required, device, keep_loaded=[]: calls.append(("free", memory_required))
    cuda, cpu = types.SimpleNamespace(type="cuda"), types.SimpleNamespace(type="cpu")
    models = {"ben2-gpu": types.SimpleNamespace(device=Choice("auto", "CUDA")),
              "nudenet-cpu": types.SimpleNamespace(device=Choice("auto", "CPU")),
              "florence-gpu": types.SimpleNamespace(torch_device="cuda"),
              "florence-cpu": types.SimpleNamespace(torch_device="cpu")}
    try:
        for name, m in models.items():
            cache.get(cache_mod.ModelKey(name, "/" + name), lambda m=m: m, closer=lambda m: None)
        hooks.wrap_free_memory()
        hooks.wrap_free_memory()                       # idempotent
        mm.free_memory(4 << 30, cuda)                  # enough free: ours stay
        mm.free_memory(64 << 30, cpu)                  # CPU memory is the cache budget's business, not this hook's
        assert len(cache.keys()) == 4
        free["bytes"] = 1 << 30
        mm.free_memory(4 << 30, cuda, [])              # pressure: our GPU models go, CPU ones stay
        assert sorted(k.kind for k in cache.keys()) == ["florence-cpu", "nudenet-cpu"]
        assert calls == [("free", 4 << 30), ("free", 64 << 30), ("free", 4 << 30)]   # ComfyUI's own always runs
        mm.get_free_memory = lambda *a, **k: 1 / 0    # a failure in our part never breaks ComfyUI's
        mm.free_memory(4 << 30, cuda)
        assert calls[-1] == ("free", 4 << 30)
    finally:
        cache.unload()


def test_unload_node(pack):
    cache = pack.safecut.runtime.cache.get_cache()
    cache.get(pack.safecut.runtime.cache.ModelKey("ben2", "/a"), lambda: object(), closer=lambda m: None)
    cache.get(pack.safecut.runtime.cache.ModelKey("llama", "/b"), lambda: object(), closer=lambda m: None)
    node = pack.NODE_CLASS_MAPPINGS["SafeCutUnloadModels"]()
    out = node.run("ben2", trigger="x")
    stats = json.loads(out["result"][0])
    assert stats["unloaded"] == 1 and out["result"][1] == "x"
    assert [k.kind for k in cache.keys()] == ["llama"]
    node.run("all")
    assert cache.keys() == []
