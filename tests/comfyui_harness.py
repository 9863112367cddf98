"""A real ComfyUI with SafeCut attached, for the opt-in integration tests (not a test module itself).

Used by tests/test_comfyui_integration.py, tests/test_frontend.py and tests/test_worker_handler.py.

* ``COMFYUI_DIRS`` lists ComfyUI checkouts (with main.py; ``:``-separated, CI: 0.3.64 and 0.33.0), else
  ``COMFYUI_DIR`` names one. The tests' ``comfy`` fixtures are parametrized over them (``comfyui_params``), so
  every test runs once per ComfyUI, one server at a time. Nothing in a checkout is modified. ComfyUI runs from
  there with ``--cpu --listen 127.0.0.1 --port <free> --base-directory <tmp>``: the temporary base holds
  ``custom_nodes/comfyui-safecut`` (a symlink to this repository), ``models/`` with the tiny test models,
  ``input/``, ``output/``, ``user/`` and ``temp/``. Its database lives in memory.
* Python: ``$COMFYUI_PYTHON`` (with a single ``COMFYUI_DIR`` only), else the checkout's ``.venv/bin/python``,
  else this interpreter.
* Tiny models (built locally, no network): BEN2 as ``tiny-ben2.onnx`` and Florence-2 as ``tiny-florence``
  (the registry's real names are checksum-verified, so a tiny file under them would be refused), the Llama
  classifier as ``Llama-Guard-3-1B_<quant>.gguf``: an accepted naming variant of the family that is not a
  registry name, so the workflows' ``model_family``/``quantization`` widgets stay as they are.
  NudeNet uses the 320n weights bundled with the ``nudenet`` package of ComfyUI's Python.
* Only 127.0.0.1 is contacted; downloads are switched off in the server's environment.
* ``COMFYUI_FRONTEND_ROOT``: serve that frontend build (``--front-end-root``) instead of the installed one.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACK_FOLDER = "comfyui-safecut"            # the custom_nodes folder name = python_module custom_nodes.<this>
TINY_BEN2 = "tiny-ben2.onnx"
TINY_FLORENCE = "tiny-florence"
TINY_GGUF_PATTERN = "Llama-Guard-3-1B_{quant}.gguf"
START_TIMEOUT_S = float(os.environ.get("COMFYUI_START_TIMEOUT", "300"))   # 2 shared cores: be generous
PROMPT_TIMEOUT_S = float(os.environ.get("COMFYUI_PROMPT_TIMEOUT", "420"))

# Widget values that replace the release models by the tiny ones (by class id, then widget name).
TINY_WIDGETS = {
    "SafeCutBEN2RemoveBackground": {"model": TINY_BEN2},
    "SafeCutFlorence2Caption": {"model": TINY_FLORENCE},
}


# ---- where things are --------------------------------------------------------------------------------------
def comfyui_dirs() -> list[str]:
    """The ComfyUI checkouts the tests run against: $COMFYUI_DIRS, else $COMFYUI_DIR, else none."""
    many = [d for d in os.environ.get("COMFYUI_DIRS", "").split(os.pathsep) if d]
    return many or [d for d in [os.environ.get("COMFYUI_DIR", "")] if d]


def comfyui_version(comfyui: str) -> str:
    try:
        text = Path(comfyui, "comfyui_version.py").read_text()
    except OSError:
        return "unknown"
    m = re.search(r'__version__ = "([^"]+)"', text)
    return m.group(1) if m else "unknown"


def comfyui_params() -> list:
    """pytest params for a ``comfy`` fixture: one per ComfyUI checkout, id ``comfyui-<version>`` (or one that
    skips with the reason when none is set)."""
    import pytest

    dirs = comfyui_dirs()
    return ([pytest.param(d, id=f"comfyui-{comfyui_version(d)}") for d in dirs]
            or [pytest.param("", id="no-comfyui")])


def skip_reason(comfyui: str) -> str | None:
    """Why the tests cannot run against this ComfyUI checkout (None when they can)."""
    if not comfyui:
        return ("set COMFYUI_DIR to a ComfyUI checkout (e.g. COMFYUI_DIR=/work/comfyui), or COMFYUI_DIRS to several "
                "(':'-separated), to run the tests against a real ComfyUI")
    if not os.path.isfile(os.path.join(comfyui, "main.py")):
        return f"{comfyui} has no main.py: not a ComfyUI checkout"
    py = comfyui_python(comfyui)
    if not (os.path.isfile(py) and os.access(py, os.X_OK)):
        return f"ComfyUI's Python {py} is not an executable (give {comfyui} a .venv, or set COMFYUI_PYTHON)"
    return None


def comfyui_python(comfyui: str) -> str:
    if os.environ.get("COMFYUI_PYTHON") and not os.environ.get("COMFYUI_DIRS"):
        return os.environ["COMFYUI_PYTHON"]
    venv = os.path.join(comfyui, ".venv", "bin", "python")
    return venv if os.path.exists(venv) else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- the temporary base directory ---------------------------------------------------------------------------
def make_base(base: Path) -> Path:
    """custom_nodes/comfyui-safecut -> this repository, plus empty input/, output/, models/."""
    base = Path(base)
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_FOLDER
    if not link.exists():
        os.symlink(ROOT, link)
    for sub in ("input", "output", "models", "user", "temp"):
        (base / sub).mkdir(exist_ok=True)
    return base


def build_tiny_models(models_dir: Path, *, ben2: bool = True, florence: bool = False,
                      gguf_quants: tuple[str, ...] = ()) -> dict[str, str]:
    """Builds the requested tiny models into ComfyUI's models folder layout; returns {what: path}."""
    models_dir = Path(models_dir)
    out: dict[str, str] = {}
    if ben2:
        from safecut.testkit.tiny_ben2 import build_tiny_ben2

        out["ben2"] = build_tiny_ben2(str(models_dir / "ben2" / TINY_BEN2))
    if florence:
        from safecut.testkit.tiny_florence import build_tiny_florence

        out["florence2"] = build_tiny_florence(str(models_dir / "florence2" / TINY_FLORENCE))
    for q in gguf_quants:
        from safecut.testkit.tiny_gguf import build_tiny_gguf

        out[f"llm:{q}"] = build_tiny_gguf(str(models_dir / "LLM"), q, family_filename=TINY_GGUF_PATTERN)
    return out


def write_test_images(folder: Path, names=("shot_a.png", "shot_b.png"), size=(64, 48)) -> list[str]:
    """Small PNGs: a bright subject on a dark background (what the tiny BEN2 cuts out)."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    paths = []
    for i, name in enumerate(names):
        arr = np.full((h, w, 3), 12, np.uint8)
        arr[h // 5: 4 * h // 5, w // 5 + i * 3: 4 * w // 5 + i * 3] = (240, 230 - 20 * i, 220)
        p = folder / name
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


# ---- workflows ----------------------------------------------------------------------------------------------
def load_api_workflow(name: str) -> dict:
    with open(ROOT / "api_workflows" / f"{name}.json") as f:
        return json.load(f)


def tiny_api_workflow(wf: dict) -> dict:
    """A copy of an API workflow with the release model names replaced by the tiny models."""
    wf = copy.deepcopy(wf)
    for node in wf.values():
        for widget, value in TINY_WIDGETS.get(node.get("class_type"), {}).items():
            if widget in node.get("inputs", {}):
                node["inputs"][widget] = value
    return wf


def nodes_of(wf: dict, class_type: str) -> list[str]:
    return [nid for nid, n in wf.items() if n.get("class_type") == class_type]


# ---- a running server ---------------------------------------------------------------------------------------
class PromptRejected(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")
        self.status, self.body = status, body


class ComfyUI:
    """HTTP client for one running ComfyUI (127.0.0.1 only)."""

    def __init__(self, url: str, proc: subprocess.Popen, base: Path, log_path: Path, comfyui: str):
        self.url, self.proc, self.base, self.log_path = url, proc, Path(base), Path(log_path)
        self.comfyui, self.version = comfyui, comfyui_version(comfyui)   # the checkout and its version
        self.port = int(url.rsplit(":", 1)[1])
        self.client_id = uuid.uuid4().hex

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    # -- HTTP --
    def request(self, method: str, path: str, body=None, timeout: float = 60) -> tuple[int, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 60):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise AssertionError(f"GET {path}: HTTP {status}: {str(body)[:1000]}")
        return body

    def object_info(self, cls: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{urllib.parse.quote(cls)}" if cls else ""), timeout=120)

    def post_prompt(self, prompt: dict) -> tuple[int, dict]:
        return self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})

    def queue(self, prompt: dict) -> str:
        status, body = self.post_prompt(prompt)
        if status != 200:
            raise PromptRejected(status, body if isinstance(body, dict) else {"raw": body})
        assert not body.get("node_errors"), body
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = PROMPT_TIMEOUT_S) -> dict:
        """The /history entry of a finished prompt (success or error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            hist = self.get(f"/history/{prompt_id}", timeout=30)
            entry = hist.get(prompt_id) if isinstance(hist, dict) else None
            if entry and (entry.get("status") or {}).get("status_str") in ("success", "error"):
                return entry
            time.sleep(0.25)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout:.0f}s:\n{self.log_tail()}")

    def run(self, prompt: dict, timeout: float = PROMPT_TIMEOUT_S) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def free(self, unload_models: bool = True, free_memory: bool = False) -> None:
        status, body = self.request("POST", "/free", {"unload_models": unload_models, "free_memory": free_memory})
        assert status == 200, (status, body)

    def view(self, filename: str, subfolder: str = "", type_: str = "output") -> bytes:
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": type_})
        with urllib.request.urlopen(f"{self.url}/view?{q}", timeout=60) as r:
            return r.read()


def status_of(entry: dict) -> str:
    return (entry.get("status") or {}).get("status_str", "")


def messages(entry: dict, event: str) -> list[dict]:
    return [m[1] for m in (entry.get("status") or {}).get("messages", []) if m and m[0] == event]


def execution_error(entry: dict) -> dict | None:
    errs = messages(entry, "execution_error")
    return errs[0] if errs else None


def describe_failure(entry: dict) -> str:
    err = execution_error(entry)
    if not err:
        return f"status {status_of(entry)}"
    return (f"node {err.get('node_id')} ({err.get('node_type')}): {err.get('exception_type')}: "
            f"{err.get('exception_message')}\n{''.join(err.get('traceback') or [])[-3000:]}")


@contextlib.contextmanager
def running_comfyui(base: Path, comfyui: str, *, env: dict | None = None, extra_args: tuple[str, ...] = (),
                    start_timeout: float = START_TIMEOUT_S):
    """Starts the ComfyUI checkout ``comfyui`` on a free port with ``base`` as --base-directory; stops it on exit."""
    reason = skip_reason(comfyui)
    if reason:
        raise RuntimeError(reason)
    base = make_base(Path(base))
    port = free_port()
    log_path = base / "comfyui.log"
    run_env = dict(os.environ, SAFECUT_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONUNBUFFERED="1", SAFECUT_MODELS_DIR=str(base / "models"))
    run_env.pop("SAFECUT_STRICT_DEVICE", None)  # the tests check the reported CPU fallback
    run_env.update(env or {})
    if os.environ.get("COMFYUI_FRONTEND_ROOT"):  # another frontend build (e.g. the newest on PyPI), served as is
        extra_args = ("--front-end-root", os.environ["COMFYUI_FRONTEND_ROOT"], *extra_args)
    cmd = [comfyui_python(comfyui), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--disable-auto-launch", "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
           *extra_args]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, env=run_env,
                                start_new_session=True)
    server = ComfyUI(f"http://127.0.0.1:{port}", proc, base, log_path, comfyui)
    try:
        deadline = time.monotonic() + start_timeout
        t0 = time.monotonic()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({proc.returncode}):\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(server.url + "/", timeout=5) as r:
                    r.read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ComfyUI did not answer within {start_timeout:.0f}s:\n{server.log_tail()}")
                time.sleep(0.5)
        server.start_seconds = time.monotonic() - t0
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


# ---- for the tests' module-scoped ``comfy`` fixtures (params=comfyui_params()) ---------------------------------
def skip_unless_runnable(comfyui: str) -> None:
    import pytest

    reason = skip_reason(comfyui)
    if reason:
        pytest.skip(reason)


@contextlib.contextmanager
def serving(base: Path, comfyui: str, **kwargs):
    """running_comfyui for a fixture: a ComfyUI that does not start is one clear failure, with its log tail."""
    import pytest

    try:
        with running_comfyui(base, comfyui, **kwargs) as server:
            yield server
    except RuntimeError as exc:
        pytest.fail(str(exc))
