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
    monkeypatch.delenv("SAFECUT_OPENVINO", raising=False)
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", AVX2)   # the tests below choose the CPU they install on
    monkeypatch.setattr(mod, "torch_is_gpu", lambda: False)
    return mod


AVX2 = "avx avx2 fma f16c"
ZEN4 = "avx avx2 fma avx512f avx512cd avx512vl avx512dq avx512bw avx512_vnni avx512vbmi avx512_bf16"


def test_keeps_onnxruntime_gpu_and_skips_llama_unless_asked(inst, capsys):
    inst.main()
    assert inst.calls == []  # onnxruntime-gpu present (so no OpenVINO either), nudenet present, llama not asked for
    out = capsys.readouterr().out
    assert "keeping the installed ONNX Runtime (onnxruntime-gpu)" in out
    assert "SAFECUT_BUILD_LLAMA=1" in out and inst.WHEEL_CMD in out and inst.BUILD_CMD in out


def test_installs_cpu_onnxruntime_nudenet_and_openvino_when_missing(inst):
    inst.dists = {"torch": "2.13.0", "numpy": "2.1.0"}
    inst.main()
    assert [c[0][-1] for c in inst.calls] == ["onnxruntime>=1.18", "nudenet>=3.4.2", inst.OPENVINO]
    assert "numpy==2.1.0" in inst.calls[2][2]   # OpenVINO may not move numpy (nor torch, nor ORT)


@pytest.mark.parametrize("gpu_ort, gpu_torch, env, expect", [
    ("onnxruntime-gpu", False, None, False),   # a GPU install is not disturbed
    (None, True, None, False),                 # CUDA/ROCm torch: a GPU install too
    (None, False, None, True),                 # a CPU install gets the fast CPU path without extra steps
    (None, False, "0", False), ("onnxruntime-gpu", False, "1", True),   # the user's word wins
])
def test_openvino_only_on_cpu_installs(inst, monkeypatch, gpu_ort, gpu_torch, env, expect):
    inst.dists = {"torch": "2.13.0", "nudenet": "3.4.2", "onnxruntime": "1.22.0"}
    if gpu_ort:
        inst.dists = {"torch": "2.13.0", "nudenet": "3.4.2", gpu_ort: "1.22.0"}
    monkeypatch.setattr(inst, "torch_is_gpu", lambda: gpu_torch)
    if env:
        monkeypatch.setenv("SAFECUT_OPENVINO", env)
    inst.main()
    assert ([inst.OPENVINO] in [c[0][-1:] for c in inst.calls]) == expect


def test_openvino_failure_is_reported_not_fatal(inst, monkeypatch, capsys):
    inst.dists = {"torch": "2.13.0", "nudenet": "3.4.2", "onnxruntime": "1.22.0"}
    real = inst.subprocess.check_call

    def fail_ov(cmd, env=None):
        if inst.OPENVINO in cmd:
            raise subprocess.CalledProcessError(1, cmd)
        return real(cmd, env)

    monkeypatch.setattr(inst.subprocess, "check_call", fail_ov)
    inst.main()
    assert "OpenVINO could not be installed" in capsys.readouterr().out


def test_torch_version_module_tells_a_gpu_build(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("safecut_install3", os.path.join(ROOT, "install.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    class Dist:
        def __init__(self, text):
            self.text = text

        def locate_file(self, _):
            p = tmp_path / "version.py"
            p.write_text(self.text)
            return p

    for text, gpu in [("cuda: Optional[str] = None\nhip: Optional[str] = None\n", False),
                      ("cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n", True),
                      ("cuda = None\nhip = '6.2.41133'\n", True)]:
        monkeypatch.setattr(mod.md, "distribution", lambda name, t=text: Dist(t))
        assert mod.torch_is_gpu() is gpu


def test_avx512_cpu_compiles_for_its_extensions_first(inst, monkeypatch, capsys):
    monkeypatch.setenv("SAFECUT_BUILD_LLAMA", "1")
    monkeypatch.setenv("SAFECUT_CPU_FLAGS", ZEN4)
    inst.main()
    assert len(inst.calls) == 1   # no prebuilt (AVX2) wheel: the AVX-512 build succeeded
    args, env, constraints = inst.calls[0]
    assert env["CMAKE_ARGS"].startswith("-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_AVX512=ON")
    assert "-DGGML_AVX_VNNI=ON" not in env["CMAKE_ARGS"] and "--no-cache-dir" in args
    inst.calls.clear()
    inst.fail = {"build"}          # that build fails: the prebuilt wheel still gets installed
    inst.main()
    assert [("--only-binary=llama-cpp-python" in a) for a, _, _ in inst.calls] == [False, True]


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
