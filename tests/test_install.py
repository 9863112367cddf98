"""install.py (ComfyUI-Manager's install hook): what it installs, decided with pip mocked out."""
import importlib.util
import os
import re
import subprocess

import pytest

from conftest import ROOT


@pytest.fixture
def inst(monkeypatch):
    """install.py with a fake set of installed packages and a recording pip."""
    spec = importlib.util.spec_from_file_location("safecut_install", os.path.join(ROOT, "install.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.dists = {"torch": "2.13.0+cpu", "numpy": "2.1.0", "onnxruntime-gpu": "1.22.0", "nudenet": "3.4.2"}
    mod.calls = []          # (args, env, constraints text)
    mod.fail = set()        # "wheel" / "build": pip calls that exit non-zero
    monkeypatch.setattr(mod, "version", lambda d: mod.dists.get(d))
    monkeypatch.setattr(mod, "has_compiler", lambda: True)

    def check_call(cmd, env=None):
        assert cmd[:4] == [mod.sys.executable, "-m", "pip", "install"]
        args = cmd[4:]
        text = open(args[args.index("-c") + 1]).read() if "-c" in args else ""
        mod.calls.append((args, env, text))
        kind = "wheel" if "--only-binary=llama-cpp-python" in args else "build"
        if any("llama-cpp-python" in a for a in args) and kind in mod.fail:
            raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(mod.subprocess, "check_call", check_call)
    monkeypatch.delenv("SAFECUT_BUILD_LLAMA", raising=False)
    monkeypatch.delenv("CMAKE_ARGS", raising=False)
    return mod


def test_keeps_onnxruntime_gpu_and_skips_llama_unless_asked(inst, capsys):
    inst.main()
    assert inst.calls == []  # onnxruntime-gpu present, nudenet present, llama not asked for
    out = capsys.readouterr().out
    assert "keeping the installed ONNX Runtime (onnxruntime-gpu)" in out
    assert "SAFECUT_BUILD_LLAMA=1" in out and inst.WHEEL_CMD in out and inst.BUILD_CMD in out


def test_installs_cpu_onnxruntime_and_nudenet_when_missing(inst):
    inst.dists = {"torch": "2.13.0"}
    inst.main()
    assert [c[0] for c in inst.calls] == [["onnxruntime>=1.18"], ["--no-deps", "nudenet>=3.4.2"]]


def test_prebuilt_wheel_first_with_torch_and_ort_pinned(inst, monkeypatch, capsys):
    monkeypatch.setenv("SAFECUT_BUILD_LLAMA", "1")
    inst.main()
    assert len(inst.calls) == 1
    args, env, constraints = inst.calls[0]
    assert "--only-binary=llama-cpp-python" in args and inst.LLAMA_CPU_INDEX in args
    assert set(constraints.splitlines()) == {"torch==2.13.0+cpu", "numpy==2.1.0", "onnxruntime-gpu==1.22.0"}
    assert "restart ComfyUI" in capsys.readouterr().out


def test_compiles_portable_build_when_no_wheel(inst, monkeypatch, capsys):
    monkeypatch.setenv("SAFECUT_BUILD_LLAMA", "yes")
    inst.fail = {"wheel"}
    inst.main()
    assert len(inst.calls) == 2
    args, env, constraints = inst.calls[1]
    assert f"llama-cpp-python=={inst.LLAMA_VERSION}" in args and "-v" in args  # -v: compiler steps stream
    assert env["CMAKE_ARGS"] == "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"
    assert "torch==2.13.0+cpu" in constraints and "onnxruntime-gpu==1.22.0" in constraints
    out = capsys.readouterr().out
    assert "several minutes" in out and out.index("compiling") < out.index("restart ComfyUI")


def test_failed_build_never_fails_the_pack_install(inst, monkeypatch, capsys):
    monkeypatch.setenv("SAFECUT_BUILD_LLAMA", "1")
    inst.fail = {"wheel", "build"}
    inst.main()  # no exception: ComfyUI-Manager would mark the whole pack as failed
    out = capsys.readouterr().out
    assert "could NOT be installed" in out and inst.BUILD_CMD in out
    used = {args[args.index("-c") + 1] for args, _, _ in inst.calls}
    assert used and not any(os.path.exists(p) for p in used)  # the constraints file is cleaned up


def test_no_compiler_says_what_to_install(inst, monkeypatch, capsys):
    monkeypatch.setenv("SAFECUT_BUILD_LLAMA", "1")
    monkeypatch.setattr(inst, "has_compiler", lambda: False)
    inst.fail = {"wheel"}
    inst.main()
    assert len(inst.calls) == 1  # the wheel attempt only
    assert "no C++ compiler" in capsys.readouterr().out


def test_already_installed_llama_is_left_alone(inst, monkeypatch):
    monkeypatch.setenv("SAFECUT_BUILD_LLAMA", "1")
    inst.dists["llama-cpp-python"] = "0.3.16"
    inst.main()
    assert inst.calls == []


def test_llama_version_matches_the_cpu_image():
    text = open(os.path.join(ROOT, "deploy", "Dockerfile.cpu")).read()
    spec = importlib.util.spec_from_file_location("safecut_install2", os.path.join(ROOT, "install.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert re.search(r"ARG LLAMA_CPP_VERSION=(\S+)", text).group(1) == mod.LLAMA_VERSION
    assert mod.LLAMA_CMAKE_ARGS in text
