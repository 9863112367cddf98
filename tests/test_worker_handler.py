"""worker-comfyui's own handler against a real ComfyUI running SafeCut: the verdicts reach the API result.

Opt-in: needs a ComfyUI checkout and a checkout of runpod-workers/worker-comfyui, neither of which is part of
this repository (the handler is loaded from there at run time, never copied here):

    COMFYUI_DIR=/work/comfyui WORKER_COMFYUI_DIR=/tmp/worker-comfyui \\
        .venv/bin/python -m pytest tests/test_worker_handler.py -v

    optional: COMFYUI_PYTHON (default $COMFYUI_DIR/.venv/bin/python, else this Python); COMFYUI_DIRS instead of
    COMFYUI_DIR runs every test once per ComfyUI listed (CI: 0.3.64 and 0.33.0; tests/comfyui_harness.py).

The test starts ComfyUI through tests/comfyui_harness.py (--cpu, 127.0.0.1, random port) with a temporary
--base-directory whose custom_nodes/comfyui-safecut links to this repository and whose models/ holds the tiny
test models, then calls the handler's ``handler(job)`` exactly as RunPod would, for each API workflow: upload the
images, queue the workflow, wait, collect ``ui.images`` from /history and /view. ``runpod`` (only used for S3
uploads and serverless.start) and, when websocket-client is not installed, ``websocket`` are replaced by small
stand-ins; the stand-in WebSocket reports completion by polling /history instead of listening.
"""
from __future__ import annotations

import base64
import importlib.util
import json
import os
import sys
import threading
import time
import types
import urllib.request

import numpy as np
import pytest

import comfyui_harness as H
from safecut.app import client

ROOT = str(H.ROOT)
WORKER_DIR = os.environ.get("WORKER_COMFYUI_DIR", "")
TINY_BEN2 = H.TINY_BEN2
API_WORKFLOWS = sorted(p.stem for p in (H.ROOT / "api_workflows").glob("*.json"))

pytestmark = [
    pytest.mark.comfyui,
    pytest.mark.skipif(not (H.comfyui_dirs() and WORKER_DIR),
                       reason="set COMFYUI_DIR (a ComfyUI checkout) and WORKER_COMFYUI_DIR (a checkout of "
                              "runpod-workers/worker-comfyui) to run the handler end-to-end test"),
]


# ---- stand-ins for modules the handler imports but the test does not exercise ---------------------------------
def _runpod_stub() -> dict[str, types.ModuleType]:
    runpod = types.ModuleType("runpod")
    serverless = types.ModuleType("runpod.serverless")
    utils = types.ModuleType("runpod.serverless.utils")
    rp_upload = types.ModuleType("runpod.serverless.utils.rp_upload")

    def upload_image(*_a, **_k):
        raise RuntimeError("S3 upload is not part of this test (unset BUCKET_ENDPOINT_URL)")

    rp_upload.upload_image = upload_image
    utils.rp_upload = rp_upload
    serverless.utils = utils
    serverless.start = lambda *_a, **_k: None
    runpod.serverless = serverless
    return {"runpod": runpod, "runpod.serverless": serverless, "runpod.serverless.utils": utils,
            "runpod.serverless.utils.rp_upload": rp_upload}


def _websocket_shim(give_up_s: float = 240.0) -> types.ModuleType:
    """Just enough of websocket-client for the handler: recv() yields the messages the handler waits for
    ('executing' with node None, or 'execution_error'), found by polling GET /history."""
    ws_mod = types.ModuleType("websocket")

    class WebSocketException(Exception):
        pass

    class WebSocketTimeoutException(WebSocketException):
        pass

    class WebSocketConnectionClosedException(WebSocketException):
        pass

    class WebSocket:
        def __init__(self):
            self.connected = False
            self._http = ""
            self._sent: set[str] = set()
            self._deadline = 0.0

        def connect(self, url, timeout=None):
            hostport = url.split("://", 1)[1].split("/", 1)[0]
            self._http = f"http://{hostport}"
            urllib.request.urlopen(self._http + "/", timeout=timeout or 10).read()
            self.connected = True
            self._deadline = time.monotonic() + give_up_s

        def recv(self):
            while time.monotonic() < self._deadline:
                with urllib.request.urlopen(self._http + "/history", timeout=10) as r:
                    hist = json.loads(r.read())
                for pid, entry in hist.items():
                    st = entry.get("status") or {}
                    if pid in self._sent or not (st.get("completed") or st.get("status_str") == "error"):
                        continue
                    self._sent.add(pid)
                    if st.get("status_str") == "error":
                        data = next((m[1] for m in st.get("messages", []) if m[0] == "execution_error"), {})
                        return json.dumps({"type": "execution_error", "data": {**data, "prompt_id": pid}})
                    return json.dumps({"type": "executing", "data": {"node": None, "prompt_id": pid}})
                time.sleep(0.2)
            raise WebSocketException(f"shim: no prompt finished within {give_up_s:.0f}s")

        def close(self):
            self.connected = False

    ws_mod.WebSocket = WebSocket
    ws_mod.WebSocketException = WebSocketException
    ws_mod.WebSocketTimeoutException = WebSocketTimeoutException
    ws_mod.WebSocketConnectionClosedException = WebSocketConnectionClosedException
    ws_mod.enableTrace = lambda *_a, **_k: None
    return ws_mod


def load_worker_handler():
    candidates = [os.path.join(WORKER_DIR, "handler.py"), os.path.join(WORKER_DIR, "src", "handler.py")]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        pytest.skip(f"no handler.py in {WORKER_DIR} (or its src/): is it a worker-comfyui checkout? "
                    "(git clone, or `git --git-dir=<mirror> archive HEAD | tar -x -C <dir>`)")
    stubs = {}
    if importlib.util.find_spec("runpod") is None:
        stubs.update(_runpod_stub())
    if importlib.util.find_spec("websocket") is None:
        stubs["websocket"] = _websocket_shim()
    if importlib.util.find_spec("requests") is None:
        pytest.skip("the worker handler needs requests")
    saved_path = list(sys.path)
    saved_mods = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    sys.path[:0] = [os.path.dirname(path), os.path.join(WORKER_DIR, "src")]  # network_volume.py lives in src/
    try:
        spec = importlib.util.spec_from_file_location("worker_comfyui_handler", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved_path
        for k, v in saved_mods.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    mod._safecut_stubs = sorted(stubs)
    return mod


# ---- ComfyUI ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=H.comfyui_params())
def comfy(request, tmp_path_factory):
    """A real ComfyUI with SafeCut and the tiny models (tests/comfyui_harness.py), once per ComfyUI."""
    H.skip_unless_runnable(request.param)
    base = H.make_base(tmp_path_factory.mktemp("comfy_base"))
    H.build_tiny_models(base / "models", ben2=True, florence=True, gguf_quants=("Q4_K_M", "Q8_0"))
    with H.serving(base, request.param) as server:
        yield server


@pytest.fixture(scope="module")
def worker(comfy, tmp_path_factory):
    mod = load_worker_handler()
    pid_file = tmp_path_factory.mktemp("pid") / "comfyui.pid"
    pid_file.write_text(str(comfy.pid))  # the handler polls ComfyUI only while this process lives
    mod.COMFY_HOST = f"127.0.0.1:{comfy.port}"
    mod.COMFY_PID_FILE = str(pid_file)
    os.environ.pop("BUCKET_ENDPOINT_URL", None)
    return mod


def run_handler(mod, payload: dict, job_id: str, timeout: float = 300.0) -> dict:
    box: dict = {}

    def target():
        try:
            box["result"] = mod.handler({"id": job_id, "input": payload["input"]})
        except BaseException as exc:  # surfaced below
            box["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"the worker handler did not return within {timeout:.0f}s")
    if "exc" in box:
        raise box["exc"]
    return box["result"]


def input_images(tmp_path, names=("shot_a.png", "shot_b.png")) -> list[str]:
    from PIL import Image

    paths = []
    for i, name in enumerate(names):
        arr = np.full((48, 64, 3), 12, np.uint8)
        arr[10:38, 14 + i * 4:46 + i * 4] = (240, 230, 220)  # a bright subject on a dark background
        p = tmp_path / name
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


def _from_node_classes() -> dict:
    """Load -> BEN2 -> Save built from the nodes' own INPUT_TYPES (widget defaults), for when neither
    api_workflows/ nor the frozen contract exist yet."""
    from conftest import load_pack

    maps = load_pack().NODE_CLASS_MAPPINGS

    def widgets(cls_name: str) -> dict:
        it = maps[cls_name].INPUT_TYPES()
        out = {}
        for section in ("required", "optional"):
            for name, spec in it.get(section, {}).items():
                typ, opts = spec[0], (spec[1] if len(spec) > 1 else {}) or {}
                if isinstance(typ, (list, tuple)):
                    out[name] = opts.get("default", typ[0] if typ else "")
                elif typ in ("INT", "FLOAT", "STRING", "BOOLEAN") and not opts.get("forceInput") and "default" in opts:
                    out[name] = opts["default"]
        return out

    def out_index(cls_name: str, name: str) -> int:
        cls = maps[cls_name]
        return list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)).index(name)

    load, ben2, save = "SafeCutLoadImageBatch", "SafeCutBEN2RemoveBackground", "SafeCutSaveCutout"
    return {
        "1": {"class_type": load, "inputs": widgets(load)},
        "2": {"class_type": ben2, "inputs": {**widgets(ben2), "image": ["1", out_index(load, "image")]}},
        "3": {"class_type": save, "inputs": {**widgets(save), "image": ["2", out_index(ben2, "rgba")],
                                             "mask": ["2", out_index(ben2, "mask")],
                                             "filenames": ["1", out_index(load, "filenames")]}},
    }


def safecut_fast_workflow() -> tuple[dict, str]:
    """api_workflows/safecut_cpu_fast.json when it exists, else generated by safecut.app.workflows, else built
    from the node classes."""
    path = os.path.join(ROOT, "api_workflows", "safecut_cpu_fast.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f), path
    try:
        from safecut.app import workflows

        return workflows.to_api(workflows.GRAPHS["safecut_cpu_fast"]), "safecut.app.workflows (generated)"
    except Exception as exc:  # no contract.json yet, module missing, …
        return _from_node_classes(), f"built from the node classes ({type(exc).__name__}: {exc})"


# ---- tests -----------------------------------------------------------------------------------------------
def test_handler_returns_core_saveimage_output(worker, comfy, tmp_path):
    """Harness check with core nodes only: upload -> LoadImage -> SaveImage comes back as base64."""
    wf = {"1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "harness"}}}
    payload = client.make_payload(wf, input_images(tmp_path, ("harness_in.png",)))
    result = run_handler(worker, payload, "job-core")
    assert "error" not in result, result
    files = [i for i in result["images"] if i["type"] == "base64"]
    assert len(files) == 1 and base64.b64decode(files[0]["data"]).startswith(b"\x89PNG")


@pytest.mark.parametrize("name", API_WORKFLOWS)
def test_safecut_report_and_png_verdicts_reach_the_result(worker, comfy, tmp_path, name):
    """Each shipped API workflow, with the tiny models, through the stock handler. Save Cutout's save_unsafe is
    switched on (the tiny classifier may call both images UNSAFE, and a gated workflow as shipped would then
    return no PNG): every image comes back as a PNG carrying the verdict its report row has."""
    wf = H.tiny_api_workflow(H.load_api_workflow(name))
    for nid in H.nodes_of(wf, "SafeCutSaveCutout"):
        wf[nid]["inputs"]["save_unsafe"] = True
    images = input_images(tmp_path)
    payload = client.make_payload(wf, images)
    result = run_handler(worker, payload, f"job-{name}")
    assert "error" not in result, (name, result, comfy.log_tail(3000))
    assert not result.get("errors"), result["errors"]
    names = [i["filename"] for i in result["images"]]
    assert any(n.endswith("_report.json") for n in names), names
    assert sum(n.endswith(".png") for n in names) == len(images), names

    res = client.collect_worker_output(result)
    lines, errors = client.save_and_report(res, str(tmp_path / "out"))
    assert not res.errors and not errors
    pngs = [ln for ln in lines if ln.file.endswith(".png")]
    assert len(pngs) == len(images)
    report_path = next(os.path.join(tmp_path, "out", n) for n in os.listdir(tmp_path / "out")
                       if n.endswith("_report.json"))
    with open(report_path) as f:
        report = json.load(f)
    rows = {r.get("source") or r.get("file"): r for r in client.report_entries(report)}
    assert sorted(rows) == ["shot_a.png", "shot_b.png"]
    gated = bool(H.nodes_of(wf, "SafeCutKeywordGate"))
    for ln in pngs:  # every returned PNG carries its verdict entry in the "safecut" text chunk
        meta, note = client.read_png_verdict(ln.file)
        assert meta is not None, note
        row = rows[meta.get("source")]
        assert meta.get("verdict") == row.get("verdict"), (meta, row)
        assert not gated or meta["verdict"] in ("SAFE", "UNSAFE"), meta
    # the stand-ins used (reported so a run with the real modules can be told apart)
    print(f"ComfyUI {comfy.version}; {name}: verdicts {[r.get('verdict') for r in rows.values()]}; worker handler "
          f"from {WORKER_DIR}; stand-ins: {worker._safecut_stubs}")


def test_missing_upload_is_an_error_not_a_silent_success(worker, comfy, tmp_path):
    wf, _ = safecut_fast_workflow()
    for node in wf.values():
        if node["class_type"] == "SafeCutBEN2RemoveBackground":
            node["inputs"]["model"] = TINY_BEN2
        if node["class_type"] == "SafeCutLoadImageBatch":
            node["inputs"]["uploads"] = "never_uploaded_xyz.png"
    result = run_handler(worker, {"input": {"workflow": wf}}, "job-missing")
    assert "error" in result or result.get("errors"), result
    assert client.collect_worker_output(result).errors



def test_client_local_mode_against_real_comfyui(comfy, tmp_path, capsys):
    """`python -m safecut client --local` does what the worker does, against the same real ComfyUI."""
    from safecut.app import cli

    wf, _ = safecut_fast_workflow()
    for node in wf.values():
        if node["class_type"] == "SafeCutBEN2RemoveBackground":
            node["inputs"]["model"] = TINY_BEN2
            node["inputs"]["provider"] = "CPU"
    p = tmp_path / "wf.json"
    p.write_text(json.dumps(wf))
    images = input_images(tmp_path, ("local_a.png", "local_b.png"))
    rc = cli.main(["client", str(p), "--local", comfy.url, "--images", *images, "--out", str(tmp_path / "o"),
                   "--poll", "0.2", "--timeout", "120"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rows = [ln.split("\t") for ln in cap.out.splitlines()[1:]]
    assert len(rows) == 2 and all(r[0].endswith(".png") for r in rows), cap.out
    assert any(n.endswith("_report.json") for n in os.listdir(tmp_path / "o"))
